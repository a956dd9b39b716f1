"""Memory hierarchy around one array: weight / activation / output SRAMs, their ports, and DRAM.

The model (used by hwsim.arrays.simulate_linear):

- A layer y[M, N] = x[M, K] W[N, K]^T is cut into jobs of cfg.M rows x cfg.N columns with the full K
  (cfg.group-sized weight groups). Jobs run column block by column block: for each block of cfg.N output
  channels, every row block streams through (weight-stationary over the row blocks).
- Weight SRAM: a column block's codes and group fields (zeros, dyadic mantissas and shifts) are loaded from
  DRAM once and reused by every row block when the block fits in one half of the weight SRAM (double
  buffering: the next block loads while this one computes). A block that does not fit is streamed from DRAM
  again for every row block (the SRAM then only smooths the stream).
- Activation SRAM: the layer's whole (integer) activation matrix stays resident when it fits (loaded once,
  before the first job); otherwise it is re-read from DRAM with every column block.
- Output SRAM: Y of a job is written there and drained to DRAM in the background (`out_bytes` per value:
  the per-channel / per-row float scaling of Y happens on the way out, default fp16).
- DRAM: `dram_gbps` GB/s at `clock_ghz` GHz -> bytes per array cycle. With double buffering the time of a
  column block is max(its compute, the next block's load); the first block's load is exposed. Stall
  cycles = total - compute (the array's own no-stall stream time, hwsim.arrays.stream_cycles).
- SRAM ports: each buffer delivers `*_port_bytes` per cycle; a design whose per-cycle demand exceeds a
  port's width is slowed by the ratio (the defaults are wide enough for every default array, so the
  SRAMs never stall them; the sweep can narrow them).

Defaults: SRAM sizes of the order of the LUT Tensor Core paper's evaluation setting (a few hundred KiB of
on-chip buffer per core), DRAM 64 GB/s (one LPDDR5-6400 x64 channel pair: 6400 MT/s * 8 B = 51.2 GB/s per
x64; we take 64 GB/s as a round edge-accelerator figure), clock 1 GHz. They are inputs, not measurements:
change them with MemoryConfig(...) or `lowbit sweep`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class MemoryConfig:
    weight_sram_kib: int = 1024  # weight buffer (two halves when double_buffer)
    act_sram_kib: int = 256  # activation buffer
    out_sram_kib: int = 64  # output buffer
    weight_port_bytes: int = 512  # bytes per cycle the weight SRAM delivers
    act_port_bytes: int = 64
    out_port_bytes: int = 64
    dram_gbps: float = 64.0  # DRAM bandwidth, GB/s (1e9 bytes/s)
    clock_ghz: float = 1.0  # array clock
    double_buffer: bool = True
    out_bytes: int = 2  # bytes per output value written back (fp16 after scaling)

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v <= 0:
                raise ValueError(f"MemoryConfig.{f.name} must be > 0, got {v}")

    @property
    def dram_bytes_per_cycle(self) -> float:
        return self.dram_gbps / self.clock_ghz

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MemoryConfig":
        names = {f.name for f in fields(cls)}
        bad = set(d) - names
        if bad:
            raise ValueError(f"unknown MemoryConfig fields {sorted(bad)}; known: {sorted(names)}")
        return cls(**d)


def weight_block_bits(cfg, K: int) -> dict:
    """Bits of one column block (cfg.N channels x K features) in the array's formats."""
    ng = K // cfg.group
    codes = cfg.N * K * cfg.bits
    fields_ = cfg.N * ng * (cfg.bits + cfg.mant_bits + cfg.shift_bits)  # zero, dyadic mantissa, shift
    return {"codes": codes, "fields": fields_}


def act_bits_per_row(cfg, K: int) -> int:
    """Bits of one activation row: AW-bit integers plus one SW-bit BFP exponent offset per group (A16)."""
    ng = K // cfg.group
    return K * cfg.act_bits + (ng * cfg.shift_bits if cfg.act == "a16" else 0)
