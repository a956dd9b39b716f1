"""The record of one accelerator design: everything hwsim, the RTL generators, the compiler's accelerator
backend, the runtime and the reports need to know about it, in one place."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace

# fields a derived design (`hwsim.designs.derive`) may change: data only, so a derived design can be
# described to another process (a cocotb simulation) by name, base and these values
DERIVABLE = ("title", "label", "order", "color", "default_array", "sim_defaults")


@dataclass(frozen=True)
class Claim:
    """A published claim about a design, measured against another design by `lowbit report`.

    metric: density (peak MACs/cycle per mm^2), energy (pJ/MAC), speed_area (MACs/cycle per mm^2, named as
    a speedup at equal area), speed_shape (cycles at an equal array shape)."""

    metric: str
    versus: str  # the design it is measured against
    paper: str  # the claimed factor, as printed (">10x")
    source: str  # paper and what the claim compares
    versus_as: str = ""  # how the paper names what it is measured against ("dequantize baseline"), if not by label
    metric_as: str = ""  # how the paper names the metric ("energy efficiency"), if not by the metric's own name
    note: str = ""  # an unmeasured claim: why


@dataclass(frozen=True)
class Design:
    name: str  # the target / backend / ArrayConfig.design name
    title: str  # one line: what the array is
    label: str  # how reports and papers write its name ("LUT-TC")
    order: int  # position in listings, reports and plots
    color: str  # plot colour
    generator: str  # module of rtl/gen that emits its Verilog (found by name; `generate(cfg) -> str`)
    default_array: dict  # array shape of `lowbit compile --target NAME` (M, N, K, lanes)
    sim_defaults: dict  # ArrayConfig fields of `lowbit sim --design NAME` and of the synthesis reports
    # Timing and arithmetic (hwsim/arrays/base.py derives the cycle rules from the generated RTL):
    bit_serial: bool  # one weight bit-plane per cycle: a beat takes B cycles, one more pipeline stage
    min_k: int  # fewest features per beat the datapath supports
    group_acc: Callable  # (cfg, a, codes, zeros) -> int64 [M, N, NG]: the design's own exact group sums
    events: Callable  # (cfg, beats, groups) -> datapath event counts (hwsim.arrays.datapath_events's input)
    area_counts: Callable  # (cfg, variant=None) -> design-specific component counts (hwsim.cost.area)
    # Compiler (compiler/backends/accel): how a program drives the array
    mma_op: str  # the program's matrix command (LUT_MMA, SHIFT_ADD_MMA, MAC_MMA)
    weight_layout: str  # "planes" (bit-planes per beat, for bit-serial reads) or "dense" (codes per beat)
    precompute_tables: bool  # the program builds LUT tables once per activation tensor (fused into its producer)
    baseline: bool = False  # the conventional array the others are compared with (synthesis tables, reports)
    claims: tuple[Claim, ...] = ()
    area_variants: dict = field(default_factory=dict)  # name -> what `area_counts(cfg, variant=name)` models
    # (cfg, a, codes, zeros, mant) -> int64 [M, N, NG]: P = acc * mant, for an array that forms it another way
    # than multiplying its group sums (the mac baseline folds mant into the weights); None: group_acc * mant
    group_p: Callable | None = None
    # the datapath already forms the per-row group activation sums S (lut-tc: a table entry), so the minimum
    # term of scale-and-minimum groups (hwsim/golden.py docstring 4b) needs no row-sum adders of its own
    row_sums: bool = False
    # the array takes ArrayConfig.table ("build": tables made from each beat's activations; "stream": the
    # program's precomputed tables on in_tbl) and ArrayConfig.sym (symmetrized or full 2^K-entry tables)
    table_params: bool = False
    base: str | None = None  # the design this one was derived from (`hwsim.designs.derive`)

    def derivation(self) -> dict | None:
        """{"name", "base", changed data fields} of a derived design, None for a design of its own file."""
        if self.base is None:
            return None
        return {"name": self.name, "base": self.base, **{k: getattr(self, k) for k in DERIVABLE}}

    def derive(self, name: str, **changes) -> "Design":
        bad = set(changes) - set(DERIVABLE)
        if bad:
            raise ValueError(f"a derived design may change only {', '.join(DERIVABLE)}, not {', '.join(sorted(bad))}")
        known = {f.name for f in fields(self)}
        assert set(changes) <= known
        changes.setdefault("label", name)
        return replace(self, name=name, base=self.base or self.name, **changes)
