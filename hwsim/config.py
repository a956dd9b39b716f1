"""The parameters of one accelerator array and of its jobs (`ArrayConfig`): design, shape, number formats,
and the bit widths they imply (hwsim/golden.py's docstring derives them). Shared by the generators, the
golden model, hwsim, the testbenches and the compiler's accelerator backend."""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, replace

from hwsim import designs


def _bitlen_signed(bound: int) -> int:
    """Bits of a two's complement number that holds every value in [-bound, bound]."""
    return int(bound).bit_length() + 1


# Largest arrays a configuration may describe: far above any design point (the defaults are 4 x 64..128 PEs,
# K=4), low enough that the models, generators and simulations of one stay within memory.
LIMITS = {"M": 1024, "N": 8192, "K": 64, "group": 1 << 16, "bfp_bits": 16, "mant_bits": 24, "shift_bits": 6, "guard_bits": 16}
MIN = {"M": 1, "N": 1, "K": 1, "group": 1, "bfp_bits": 2, "mant_bits": 1, "shift_bits": 1, "guard_bits": 0, "lanes": 1}
MAX_PES = 1 << 20  # M x N processing elements
WEIGHT_FORMATS = ("int", "e2m1")
# where a LUT design's tables come from (ArrayConfig.table): built by the array from each input beat's
# activations, or streamed in, precomputed once per row block by the program (its fused precompute)
TABLE_SOURCES = ("build", "stream")
# fields only some designs take (Design.table_params), left out of to_dict at their defaults so the
# dicts, module names and cache keys of every other configuration stay as they were
VARIANT_DEFAULTS = {"table": "build", "sym": True}


@dataclass(frozen=True)
class ArrayConfig:
    """Parameters of one generated array and of its jobs (shared by generators, golden model, testbenches)."""

    design: str  # a name in hwsim.designs.DESIGNS
    M: int = 2  # activation rows per tile
    N: int = 64  # output channels (columns)
    K: int = 4  # features per input beat (lut-tc: activations per table)
    bits: int = 4  # weight code bits B (ternary: 2)
    ternary: bool = False
    act: str = "a8"  # "a8" or "a16" (BFP)
    group: int = 128  # weight group size G along K
    bfp_bits: int = 12  # A16 BFP mantissa bits AB (signed)
    mant_bits: int = 16  # dyadic scale mantissa bits MW (unsigned)
    shift_bits: int = 5  # dyadic shift bits SW (unsigned), for d and for da
    lanes: int = 8  # epilogue lanes = output values per output beat
    guard_bits: int = 8  # Y guard bits: exact over up to 2^guard_bits groups
    weight_format: str = "int"  # WEIGHT_FORMATS: "int" (codes q - z) or "e2m1" (FP4 codes, w' = 2 x value; golden.py 1b)
    table: str = "build"  # TABLE_SOURCES (lut-tc): the array builds its tables per beat, or takes them on in_tbl
    sym: bool = True  # lut-tc: symmetrized 2^(K-1)-entry tables and a sign, or all 2^K entries read directly

    def __post_init__(self):
        rec = designs.get(self.design)  # ValueError naming the known designs
        if self.weight_format not in WEIGHT_FORMATS:
            raise ValueError(f"weight_format must be one of {', '.join(WEIGHT_FORMATS)}, got {self.weight_format!r}")
        if self.table not in TABLE_SOURCES:
            raise ValueError(f"table must be one of {', '.join(TABLE_SOURCES)}, got {self.table!r}")
        if not isinstance(self.sym, bool):
            raise ValueError(f"sym must be true or false, got {self.sym!r}")  # noqa: TRY004 - callers turn ValueError into the user-facing message
        if not rec.table_params and (self.table, self.sym) != (VARIANT_DEFAULTS["table"], VARIANT_DEFAULTS["sym"]):
            takers = ", ".join(d.name for d in designs.DESIGNS.values() if d.table_params)
            raise ValueError(f"{self.design} has no LUT tables: table= and sym= apply to {takers} only")
        if self.e2m1:
            if self.ternary:
                raise ValueError("e2m1 weights are not ternary")
            object.__setattr__(self, "bits", 4)  # E2M1 codes are 4 bits whatever `bits` said (as ternary fixes 2)
        if self.ternary and self.bits != 2:
            object.__setattr__(self, "bits", 2)
        for k, lo in MIN.items():
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise ValueError(f"{k} must be a whole number, got {v!r}")  # noqa: TRY004 - callers turn ValueError into the user-facing message
            if v < lo:
                raise ValueError(f"{k}={v} is below the minimum of {lo}")
            if k in LIMITS and v > LIMITS[k]:
                raise ValueError(f"{k}={v} exceeds the limit of {LIMITS[k]}")
        if self.M * self.N > MAX_PES:
            raise ValueError(f"M x N = {self.M * self.N} processing elements exceeds the limit of {MAX_PES}")
        if not 1 <= self.bits <= 4:
            raise ValueError(f"weight bits must be 1..4, got {self.bits}")
        if self.act not in ("a8", "a16"):
            raise ValueError(f"act must be a8 or a16, got {self.act!r}")
        if self.group % self.K:
            raise ValueError(f"group {self.group} must be a multiple of K={self.K}")
        if self.K < rec.min_k:
            raise ValueError(f"{self.design} needs K >= {rec.min_k} features per beat")
        if self.N % self.lanes:
            raise ValueError(f"lanes={self.lanes} must divide N={self.N}")
        if self.y_bits > 62:
            raise ValueError(f"Y width {self.y_bits} exceeds 62 bits; lower mant_bits or guard_bits")

    @property
    def design_record(self) -> designs.Design:
        return designs.get(self.design)

    # --- derived widths (hwsim/golden.py's docstring) ---
    @property
    def act_bits(self) -> int:
        return 8 if self.act == "a8" else self.bfp_bits

    @property
    def e2m1(self) -> bool:
        return self.weight_format == "e2m1"

    @property
    def w_max(self) -> int:
        """Largest |w'| of the integer weights (golden.py 1, 1b): 2^B - 1, or 12 for E2M1 (2 x 6)."""
        return 12 if self.e2m1 else (1 << self.bits) - 1

    @property
    def zero_bits(self) -> int:
        """Bits of the per-group zero point field (E2M1 codes have none)."""
        return 0 if self.e2m1 else self.bits

    @property
    def planes(self) -> int:
        """Weight bit-planes of the LUT form: B, or 5 for E2M1 (w' + 16 as five offset-binary planes, golden.py 1b)."""
        return 5 if self.e2m1 else self.bits

    @property
    def acc_bound(self) -> int:
        return self.group * (1 << (self.act_bits - 1)) * self.w_max

    @property
    def acc_bits(self) -> int:
        return _bitlen_signed(self.acc_bound)

    @property
    def acc2_bits(self) -> int:
        """Width of the LUT form's plane sum acc2 = sum_b 2^b T_b (|acc2| <= (2^planes - 1) G 2^(AW-1)); equal to
        acc_bits for integer codes, wider for E2M1's five planes."""
        return _bitlen_signed(self.group * (1 << (self.act_bits - 1)) * ((1 << self.planes) - 1))

    @property
    def table_entries(self) -> int:
        """Stored entries of one LUT table: 2^(K-1) symmetrized (a sign gives the rest), else 2^K."""
        return 1 << (self.K - 1) if self.sym else 1 << self.K

    @property
    def streams_tables(self) -> bool:
        """The tables arrive precomputed on in_tbl (no table-build adders in the array)."""
        return self.table == "stream"

    @property
    def table_bits(self) -> int:
        return _bitlen_signed(self.K * (1 << (self.act_bits - 1)))

    @property
    def sum_bits(self) -> int:
        """Width of the per-row activation sum S over a group (lut-tc correction)."""
        return _bitlen_signed(self.group * (1 << (self.act_bits - 1)))

    @property
    def prod_bits(self) -> int:
        return _bitlen_signed(self.acc_bound * ((1 << self.mant_bits) - 1))

    @property
    def y_bits(self) -> int:
        return self.prod_bits + self.guard_bits

    @property
    def chunks_per_group(self) -> int:
        return self.group // self.K

    @property
    def cycles_per_beat(self) -> int:
        """Input beats accepted at most every this many cycles (bit-serial designs take one plane a cycle)."""
        return self.planes if self.design_record.bit_serial else 1

    @property
    def drain_cycles(self) -> int:
        """Cycles the epilogue needs per group (M*N slots, `lanes` per cycle)."""
        return self.M * self.N // self.lanes

    @property
    def steady_macs_per_cycle(self) -> float:
        """Throughput with no stalls: a group takes max(compute, epilogue drain) cycles (they overlap)."""
        compute = self.chunks_per_group * self.cycles_per_beat
        return self.M * self.N * self.group / max(compute, self.drain_cycles)

    @property
    def macs_per_beat(self) -> int:
        return self.M * self.N * self.K

    @property
    def name(self) -> str:
        w = "ternary" if self.ternary else "e2m1" if self.e2m1 else f"w{self.bits}"
        variant = ("_tstream" if self.streams_tables else "") + ("" if self.sym else "_nosym")
        return f"{self.design.replace('-', '')}_{w}{self.act}g{self.group}_m{self.M}n{self.N}k{self.K}{variant}"

    def to_dict(self) -> dict:
        d = asdict(self)
        for k, default in VARIANT_DEFAULTS.items():
            if d[k] == default:
                del d[k]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ArrayConfig:
        return cls(**d)

    def with_(self, **kw) -> ArrayConfig:
        return replace(self, **kw)
