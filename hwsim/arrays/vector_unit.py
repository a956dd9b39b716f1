"""Cycle-exact model of the vector unit's RTL (rtl/gen/vector_unit.py): one row of L values per job.

Every unit is sequential with one lane and the same handshake: in_ready = idle; a row (and its scale
fields) is taken on an edge where in_valid and in_ready are high (edge c0); the unit then steps through its
phases, one edge each step, and holds out_valid with the whole output row until out_ready; it is idle again
on the edge after the output is taken. Phases (steps):

    rmsnorm    sum of squares L, isqrt TW/2, divide QW, outputs L
    layernorm  row sum L, then as rmsnorm
    shiftmax   max L, exponentials and their sum L, divide 17, outputs L
    silu/gelu  per element: exponentials 1, divide 17, output 1
    requant    per element: multiply, round, clamp L                  (one output a step)
    add        per element pair: two multiplies, add, round, clamp L
    mul        per element pair: a b, times mant, round, clamp L
    rope       per rotation pair (x_j, x_{j+L/2}): four multiplies, two outputs L/2

QW = NormShape.recip_bits for the norms and 17 (F + 16 over a divisor >= 2^F: a quotient <= 2^16) for the
rest; the restoring divider makes one quotient bit per step. So, with out_ready high,
    latency  = steps + 1     edges from the accepting edge to the edge the output is taken
    interval = latency + 1   edges between two accepted rows, inputs always offered
`schedule` gives every accept and output edge under any out_ready pattern; rtl/tb/vector_tb.py checks
both the closed form and the schedule against the simulation. `rows_cycles` times rows dealt to several
copies of a unit (the vector unit's lanes; hwsim.cost.vector) as each copy's stream_cycles.

The configuration also supplies what rtl.sim's runner needs (name, to_dict, design_record.generator).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from types import SimpleNamespace

from compiler.errors import LowbitError
from hwsim import vector as vec

UNITS = ("rmsnorm", "layernorm", "silu", "gelu", "shiftmax", "requant", "add", "mul", "rope")
IN_BITS = {"rmsnorm": (8, 16), "layernorm": (8, 16), "silu": (8,), "gelu": (8,), "shiftmax": (8, 32),
           "requant": (8, 16, 32), "add": (8, 16, 32), "mul": (8,), "rope": (8, 16)}
OUT_BITS = {"requant": (8, 16), "add": (16, 8, 32)}  # the units with a choice of output width, default first; the rest give 8
EPS_PORT = {8: (1 << 16) - 1, 16: (1 << 32) - 1}  # the largest eps_int of a norm with int8 / int16 inputs (compiler/backends/accel/vector.py)
GATE_DIV_BITS = vec.RECIP_EXTRA + 1  # quotient bits of recip(F + 16, d), d >= 2^F


@dataclass(frozen=True)
class VectorUnitConfig:
    unit: str
    L: int = 8  # values per row
    in_bits: int = 8  # Shiftmax: 8 or 32 (scores straight from the QK^T accumulators); norms 8 or 16 (a residual stream); gates 8
    F: int = vec.F_BITS
    eps_max: int = (1 << 16) - 1  # norms: the largest eps_int the port takes
    out_bits: int | None = None  # requant (8 or 16) and add (16, 8 or 32: the residual stream at int32); None: the unit's default (OUT_BITS), 8 for the rest

    def __post_init__(self):
        if self.unit not in UNITS:
            raise LowbitError(f"unknown vector unit '{self.unit}'", f"use one of {', '.join(UNITS)}")
        if not 1 <= self.L <= 1024:
            raise LowbitError(f"vector unit row length L={self.L} is outside 1..1024", "give 1 <= L <= 1024")
        ok = IN_BITS[self.unit]
        if self.in_bits not in ok:
            raise LowbitError(f"{self.unit} takes {' or '.join(f'int{b}' for b in ok)} inputs, not int{self.in_bits}", f"give in_bits={ok[0]}")
        outs = OUT_BITS.get(self.unit, (8,))
        if self.out_bits is None:
            object.__setattr__(self, "out_bits", outs[0])  # resolved, so to_dict() round-trips
        elif self.out_bits not in outs:
            raise LowbitError(f"{self.unit} gives {' or '.join(f'int{b}' for b in outs)} outputs, not int{self.out_bits}", f"give out_bits={outs[0]}")
        if self.unit == "rope" and self.L % 2:
            raise LowbitError(f"rope rows of L={self.L} values: the rotation pairs x_j with x_(j+L/2)", "give an even L")
        if not 2 <= self.F <= 16:
            raise LowbitError(f"exponential fraction bits F={self.F} outside 2..16", "give 2 <= F <= 16")
        if self.norm:
            self.norm_shape  # checks the widths

    @property
    def norm(self) -> bool:
        return self.unit in vec.NORMS

    @property
    def norm_shape(self) -> vec.NormShape:
        return vec.NormShape(self.unit, self.L, self.eps_max, self.in_bits)

    @property
    def div_bits(self) -> int:
        """Quotient bits of the row's division = the divide phase's steps."""
        return self.norm_shape.recip_bits if self.norm else GATE_DIV_BITS

    @property
    def steps(self) -> int:
        return row_steps(self.unit, self.L, self.eps_max, self.in_bits)

    @property
    def latency(self) -> int:
        return self.steps + 1

    @property
    def interval(self) -> int:
        return self.latency + 1

    @property
    def eltwise(self) -> bool:
        return self.unit in vec.ELTWISE

    @property
    def name(self) -> str:
        if self.unit in OUT_BITS:
            return f"vu_{self.unit}_l{self.L}_i{self.in_bits}_o{self.out_bits}"
        if self.eltwise:  # no exponential: F plays no part
            return f"vu_{self.unit}_l{self.L}_i{self.in_bits}"
        return f"vu_{self.unit}_l{self.L}_i{self.in_bits}_f{self.F}"

    @property
    def design_record(self):
        return SimpleNamespace(generator="rtl.gen.vector_unit")

    def to_dict(self) -> dict:
        return asdict(self)


def row_steps(unit: str, L: int, eps_max: int = VectorUnitConfig.eps_max, in_bits: int = 8) -> int:
    """The steps of one row of L values (module docstring), for any L: the cost model (hwsim.cost.vector)
    reads rows longer than the 1024 the generator is checked at with the same phases."""
    if unit in vec.NORMS:
        ns = vec.NormShape(unit, L, eps_max, in_bits)
        return L * (2 if unit == "layernorm" else 1) + ns.root_bits + ns.recip_bits + L
    if unit == "shiftmax":
        return 2 * L + GATE_DIV_BITS + L
    if unit in vec.GATES:
        return L * (1 + GATE_DIV_BITS + 1)
    if unit in ("requant", "add", "mul"):
        return L
    if unit == "rope":
        if L % 2:
            raise LowbitError(f"rope rows of L={L} values", "give an even L (head_dim)")
        return L // 2
    raise LowbitError(f"unknown vector unit '{unit}'", f"use one of {', '.join(UNITS)}")


def rows_cycles(unit: str, L: int, rows: int, lanes: int = 1, eps_max: int = VectorUnitConfig.eps_max, in_bits: int = 8) -> int:
    """`rows` rows dealt round-robin to `lanes` copies of the one-lane unit, out_ready high: the busiest
    lane's stream_cycles, (rows - 1) intervals of steps + 2 and the last row's steps + 2 (0 for no rows)."""
    if rows <= 0:
        return 0
    return -(-rows // lanes) * (row_steps(unit, L, eps_max, in_bits) + 2)


def stream_cycles(cfg: VectorUnitConfig, rows: int) -> int:
    """Edges from the first row's accept to the last row's output, inclusive, out_ready high."""
    if rows < 1:
        raise ValueError("need at least one row")
    return (rows - 1) * cfg.interval + cfg.latency + 1


def schedule(cfg: VectorUnitConfig, rows: int, out_ready: list[int] | None = None) -> tuple[list[int], list[int]]:
    """(accept edges, output edges) of `rows` rows offered back to back from edge 0, out_ready[c] the
    out_ready level at edge c (high past the list)."""
    ready = out_ready or []
    acc, out = [], []
    c = 0
    for _ in range(rows):
        acc.append(c)
        c += cfg.latency  # the first edge out_valid is high
        while c < len(ready) and not ready[c]:
            c += 1
        out.append(c)
        c += 1
    return acc, out
