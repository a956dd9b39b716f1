"""Memory hierarchy around one array: weight / activation / output SRAMs, their ports, and DRAM.

The model (used by hwsim.arrays.simulate_linear; hwsim.arrays.layer_timing implements it):

- A layer y[M, N] = x[M, K] W[N, K]^T is cut into jobs of cfg.M rows x cfg.N columns with the full K
  (cfg.group-sized weight groups). Jobs run column block by column block: for each block of cfg.N output
  channels, every row block streams through (weight-stationary over the row blocks).
- DRAM feeds the SRAMs in chunks, each loaded into one half of its double buffer while the previous chunk
  computes. Weight SRAM: when a column block's codes and group fields (zeros, dyadic mantissas and shifts)
  fit one half, a chunk is that block, loaded once and reused by every row block; otherwise a chunk is one
  job's weights, streamed again for every row block.
- Activation SRAM: the layer's whole (integer) activation matrix is loaded once, before the first chunk,
  when it fits; otherwise each chunk re-reads the activations it needs.
- Output SRAM: Y of a chunk is written there and drained to DRAM during the next chunk, sharing the bus
  with that chunk's load (`out_bytes` per value: the per-channel / per-row float scaling of Y happens on
  the way out, default fp16).
- Time: the first chunk's load is exposed, then each chunk takes max(its compute, the next load plus the
  previous outputs), then the last outputs drain; plus the array's stream head and tail. Stall cycles =
  total - compute (the array's own no-stall stream time, hwsim.arrays.stream_cycles). tests/hwsim check
  this against the RTL's per-beat schedule fed by a DRAM stream (within 5%).
- Several arrays (`arrays` > 1): the column blocks are dealt out to the arrays, each with its own SRAMs
  (activations are broadcast: one DRAM read fills every array's activation SRAM); they run in lock-step
  rounds and share the DRAM bandwidth. With
  one array (the default) this is the RTL's single job stream.
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

# Upper bounds (far above any accelerator of this kind; they keep a typo from describing an impossible machine)
LIMITS = {"weight_sram_kib": 1 << 20, "act_sram_kib": 1 << 20, "out_sram_kib": 1 << 20, "weight_port_bytes": 1 << 16,
          "act_port_bytes": 1 << 16, "out_port_bytes": 1 << 16, "dram_gbps": 100_000.0, "clock_ghz": 10.0, "out_bytes": 8, "arrays": 4096}


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
    arrays: int = 1  # identical arrays, each with the SRAMs above, sharing the DRAM; column blocks dealt out

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not v > 0:  # (NaN too)
                raise ValueError(f"MemoryConfig.{f.name} must be > 0, got {v}")
            if f.name in LIMITS and v > LIMITS[f.name]:
                raise ValueError(f"MemoryConfig.{f.name}={v} exceeds the limit of {LIMITS[f.name]}")

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
    fields_ = cfg.N * ng * (cfg.zero_bits + cfg.mant_bits + cfg.shift_bits)  # zero (none for E2M1), dyadic mantissa, shift
    return {"codes": codes, "fields": fields_}


def act_bits_per_row(cfg, K: int) -> int:
    """Bits of one activation row: AW-bit integers plus one SW-bit BFP exponent offset per group (A16); an
    array that streams its LUT tables (cfg.table "stream") reads each K-chunk's table (E entries of TW bits)."""
    ng = K // cfg.group
    own = -(-K // cfg.K) * cfg.table_entries * cfg.table_bits if cfg.streams_tables else K * cfg.act_bits
    return own + (ng * cfg.shift_bits if cfg.act == "a16" else 0)
