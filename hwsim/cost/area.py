"""Area of the arrays from the yosys reports of OUR RTL (rtl/reports/synth/*.json), in um^2.

This is an estimate from generic cells, not a placed layout in a real PDK. Steps:

1. yosys `synth` maps each design to its generic gate library ($_AND_, $_XOR_, $_MUX_, flip-flops...);
   rtl/synth.py stores the cell counts. Each generic cell is given the area of the matching cell of the
   NanGate FreePDK45 Open Cell Library [NG45] (drive strength X1, typical corner): the "45nm" numbers.
   Cells with no single NanGate match are built from two (e.g. $_ANDNOT_ = INV_X1 + NOR2_X1; a flip-flop
   with enable = DFF_X1 + MUX2_X1; with synchronous reset also AND2_X1).
2. Other nodes scale by (L / 45 nm)^2 (ideal area scaling; real 45->28 nm libraries shrink somewhat less,
   so 28 nm figures here are optimistic by the same factor for every design: ratios are unaffected).
3. SRAM buffers (hwsim.memory): bits x the published 6T bit-cell area / 0.7 array efficiency (periphery:
   decoders, sense amplifiers; CACTI-style macros are 50-80% cells). Bit cells: 0.346 um^2 at 45 nm
   [INTEL45], 0.127 um^2 at 28 nm [TSMC28]; other nodes scale the 45 nm cell by (L/45)^2.
4. Configurations without a synthesis report (the sweep): a per-component model, fitted on the reports
   (non-negative least squares; fit_component_model() returns each report's relative error, which the
   report prints). Flip-flop bits are counted exactly from the RTL structure (checked against yosys).

[NG45] NanGate FreePDK45 Open Cell Library (NangateOpenCellLibrary_typical.lib, v2011): areas in um^2
       INV_X1 0.532, NAND2_X1 0.798, NOR2_X1 0.798, AND2_X1 1.064, OR2_X1 1.064, XOR2_X1 1.596,
       XNOR2_X1 1.596, MUX2_X1 1.862, AOI21_X1 1.064, OAI21_X1 1.064, AOI22_X1 1.330, OAI22_X1 1.330,
       DFF_X1 4.522, DFFR_X1 5.320.
[INTEL45] K. Mistry et al., "A 45nm logic technology with high-k + metal gate transistors...", IEDM 2007:
       0.346 um^2 SRAM cell.
[TSMC28] TSMC 28 nm high-density 6T SRAM bit cell 0.127 um^2 (S.-Y. Wu et al., IEDM 2009/2011 28 nm
       platform papers).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from hwsim.config import ArrayConfig

INV, NAND2, NOR2, AND2, OR2, XOR2, XNOR2, MUX2 = 0.532, 0.798, 0.798, 1.064, 1.064, 1.596, 1.596, 1.862
AOI21, OAI21, AOI22, OAI22, DFF, DFFR = 1.064, 1.064, 1.330, 1.330, 4.522, 5.320

# yosys generic cell -> um^2 at 45 nm [NG45]
CELL_UM2_45 = {
    "$_NOT_": INV,
    "$_BUF_": 0.0,
    "$_NAND_": NAND2,
    "$_NOR_": NOR2,
    "$_AND_": AND2,
    "$_OR_": OR2,
    "$_ANDNOT_": INV + NOR2,  # A & ~B = NOR(~A, B)
    "$_ORNOT_": INV + NAND2,  # A | ~B = NAND(~A, B)
    "$_XOR_": XOR2,
    "$_XNOR_": XNOR2,
    "$_MUX_": MUX2,
    "$_NMUX_": MUX2 + INV,
    "$_AOI3_": AOI21,
    "$_OAI3_": OAI21,
    "$_AOI4_": AOI22,
    "$_OAI4_": OAI22,
}

SRAM_CELL_UM2 = {"45nm": 0.346, "28nm": 0.127}
SRAM_ARRAY_EFFICIENCY = 0.7
NODES_NM = {"45nm": 45.0, "28nm": 28.0, "22nm": 22.0, "16nm": 16.0, "7nm": 7.0}

REPORTS_DIR = Path(__file__).resolve().parents[2] / "rtl" / "reports" / "synth"


def node_area_scale(node: str) -> float:
    if node not in NODES_NM:
        raise ValueError(f"unknown node {node!r}; choose one of {', '.join(NODES_NM)}")
    return (NODES_NM[node] / 45.0) ** 2


def ff_cell_um2(cell: str) -> float | None:
    """Area of a yosys flip-flop cell (one bit) at 45 nm, None if `cell` is not a flip-flop."""
    if not cell.startswith("$_") or "DFF" not in cell:
        return None
    kind = cell[2:].split("_")[0]  # DFF, DFFE, SDFF, SDFFE, SDFFCE, DFFSR...
    a = DFF
    if kind.endswith("E") or kind.endswith("CE"):
        a += MUX2  # enable: a feedback mux
    if kind.startswith("SDFF"):
        a += AND2  # synchronous reset/set gate
    if kind.startswith("DFFSR"):
        a = DFFR + AND2
    return a


def cells_area_um2(cells: dict, node: str = "45nm") -> dict:
    """{'logic_um2', 'ff_um2', 'total_um2', 'unknown'} from a yosys cell-count dict."""
    logic = ff = 0.0
    unknown = {}
    for cell, n in cells.items():
        f = ff_cell_um2(cell)
        if f is not None:
            ff += n * f
        elif cell in CELL_UM2_45:
            logic += n * CELL_UM2_45[cell]
        else:
            unknown[cell] = n
    s = node_area_scale(node)
    return {"logic_um2": logic * s, "ff_um2": ff * s, "total_um2": (logic + ff) * s, "unknown": unknown}


@lru_cache(maxsize=1)
def load_reports() -> tuple:
    """The committed synthesis reports (rtl/reports/synth/*.json), as dicts."""
    out = []
    for p in sorted(REPORTS_DIR.glob("*.json")):
        d = json.loads(p.read_text())
        d["path"] = str(p.relative_to(REPORTS_DIR.parents[2]))
        out.append(d)
    return tuple(out)


def find_report(cfg: ArrayConfig) -> dict | None:
    want = cfg.to_dict()
    for r in load_reports():
        c = r.get("config")
        # reports written before a field existed hold its default (ArrayConfig.from_dict fills it in)
        if c is not None and {**ArrayConfig(design=c["design"]).to_dict(), **c} == want:
            return r
    return None


# ----------------------------------------------------------------------------------------------------
# Per-component model (for configurations without a report)


def min_counts(cfg: ArrayConfig) -> dict:
    """The extra hardware of an array with the minimum term (hwsim/golden.py docstring 4b): the minimum
    fields' group registers and the epilogue's copies (mm, dm: MW+1+SW bits per column, twice), the row
    sums' shadow (SUMW per row), per lane one SUMW x (MW+1) multiply, its rounding add and barrel
    shifter (PMW+1 bits) and a third Y summand (YW); arrays without row sums (record `row_sums` False) also
    get the row-sum adders and registers (K SUMW-bit adds and a SUMW register per row)."""
    from hwsim.golden import min_prod_bits

    M, N, K, EL = cfg.M, cfg.N, cfg.K, cfg.lanes
    MW, SW, SUMW, YW = cfg.mant_bits, cfg.shift_bits, cfg.sum_bits, cfg.y_bits
    PMW = min_prod_bits(cfg)
    own = not cfg.design_record.row_sums
    return {
        "ff_bits": 2 * N * (MW + 1 + SW) + M * SUMW + (M * SUMW if own else 0),
        "add_bits": EL * (PMW + 1 + YW) + (M * K * SUMW if own else 0),
        "mult_bits2": EL * SUMW * (MW + 1),
        "mux_bits": EL * (PMW + 1) * (SW + 1),
        "and_bits": 0,
    }


def component_counts(cfg: ArrayConfig, variant: str | None = None, mins: bool = False) -> dict:
    """Structural counts of the generated RTL: flip-flop bits, adder bits, multiplier partial-product
    bits (a x b), 2:1 mux bits and AND-gate bits, read off rtl/gen's datapaths (their docstrings): the
    parts every array shares (group-field registers, Y registers, the epilogue's rounding and Y adders and
    shifters) plus the design record's own `area_counts`.

    variant: one of the design's `area_variants`, a variant we have no RTL for (lut-tc: "unsymmetrized")."""
    c = cfg
    M, N, EL = c.M, c.N, c.lanes
    MW, SW, PW, YW = c.mant_bits, c.shift_bits, c.prod_bits, c.y_bits
    rec = c.design_record
    if variant is not None and variant not in rec.area_variants:
        raise ValueError(f"design {c.design} has no area variant {variant!r}")
    own = rec.area_counts(c, variant)
    out = {
        "ff_bits": N * (c.zero_bits + MW + SW) + M * SW + M * N * YW + own["ff_bits"],  # group fields, Y registers
        "add_bits": EL * (PW + 1 + YW) + own["add_bits"],  # epilogue lanes: rounding add, Y add
        "mult_bits2": own["mult_bits2"],
        "mux_bits": EL * (PW + 1) * (SW + 1) + own["mux_bits"],  # the lanes' barrel shifters
        "and_bits": own["and_bits"],
    }
    if mins:  # scale-and-minimum groups: the minimum term (min_counts)
        out = {k: v + min_counts(c)[k] for k, v in out.items()}
    return out


FIT_TERMS = ("add_bits", "mult_bits2", "mux_bits", "and_bits")


@lru_cache(maxsize=1)
def fit_component_model() -> dict:
    """Fit logic um^2 (45 nm) = sum_t coef_t * count_t over the reports (non-negative least squares);
    flip-flop area = ff_bits x a DFF with enable. Returns coefficients and each report's relative error."""
    reps = load_reports()
    X, y, names = [], [], []
    for r in reps:
        cfg = ArrayConfig.from_dict(r["config"])
        cc = component_counts(cfg)
        X.append([cc[t] for t in FIT_TERMS])
        y.append(cells_area_um2(r["cells"])["logic_um2"])
        names.append(r["path"])
    X, y = np.asarray(X, float), np.asarray(y, float)
    coef = _nnls(X / y[:, None], np.ones(len(y)))  # relative-error weighting
    ff_um2 = DFF + MUX2
    errs = []
    for r, xi, yi in zip(reps, X, y):
        cfg = ArrayConfig.from_dict(r["config"])
        pred = float(xi @ coef) + component_counts(cfg)["ff_bits"] * ff_um2
        true = cells_area_um2(r["cells"])["total_um2"]
        errs.append({"report": r["path"], "design": r["design"], "bits": cfg.bits, "synth_um2": true, "model_um2": pred,
                     "rel_err": pred / true - 1, "ff_bits_model": component_counts(cfg)["ff_bits"], "ff_bits_yosys": r["ff_bits"]})
    return {"terms": FIT_TERMS, "coef_um2": dict(zip(FIT_TERMS, map(float, coef))), "ff_um2": ff_um2, "errors": errs,
            "max_abs_rel_err": max(abs(e["rel_err"]) for e in errs) if errs else float("nan")}


def _nnls(A: np.ndarray, b: np.ndarray, iters: int = 2000) -> np.ndarray:
    """Small non-negative least squares (projected coordinate descent; no scipy dependency)."""
    n = A.shape[1]
    scale = np.linalg.norm(A, axis=0)
    scale[scale == 0] = 1
    As = A / scale
    x = np.zeros(n)
    AtA, Atb = As.T @ As, As.T @ b
    for _ in range(iters):
        for i in range(n):
            if AtA[i, i] == 0:
                continue
            r = Atb[i] - AtA[i] @ x + AtA[i, i] * x[i]
            x[i] = max(0.0, r / AtA[i, i])
    return x / scale


HOLDOUT_DIR = Path(__file__).resolve().parent / "holdout"


def model_area_um2(cfg: ArrayConfig, node: str = "45nm", variant: str | None = None, mins: bool = False) -> float:
    """The fitted component model's area for `cfg` (even where a synthesis report exists); variant: one of
    the design's `area_variants`; mins: with the minimum term of scale-and-minimum groups."""
    fit = fit_component_model()
    cc = component_counts(cfg, variant, mins)
    return (sum(fit["coef_um2"][t] * cc[t] for t in FIT_TERMS) + cc["ff_bits"] * fit["ff_um2"]) * node_area_scale(node)


@lru_cache(maxsize=1)
def holdout_errors() -> tuple:
    """The component model against yosys reports it was NOT fitted on (hwsim/cost/holdout/*.json: small
    arrays of other shapes, A16, other group sizes, synthesized with rtl.synth for this check)."""
    out = []
    for p in sorted(HOLDOUT_DIR.glob("*.json")):
        r = json.loads(p.read_text())
        cfg = ArrayConfig.from_dict(r["config"])
        true = cells_area_um2(r["cells"])["total_um2"]
        pred = model_area_um2(cfg)
        out.append({"report": p.name, "design": cfg.design, "config": cfg.name, "synth_um2": true, "model_um2": pred,
                    "rel_err": pred / true - 1, "ff_bits_model": component_counts(cfg)["ff_bits"], "ff_bits_yosys": r["ff_bits"]})
    return tuple(out)


def array_area(cfg: ArrayConfig, node: str = "28nm", mins: bool = False) -> dict:
    """Area of the array `cfg` in um^2: from its synthesis report when one exists, else the fitted model.
    Keys: logic_um2, ff_um2, total_um2, source ('yosys: <path>' or 'component model fit').
    mins: the array with the minimum term (no synthesis report: the array's area plus the fitted model's
    area of `min_counts`)."""
    if mins:
        base = array_area(cfg, node)
        fit = fit_component_model()
        mc = min_counts(cfg)
        s = node_area_scale(node)
        logic = sum(fit["coef_um2"][t] * mc[t] for t in FIT_TERMS) * s
        ff = mc["ff_bits"] * fit["ff_um2"] * s
        out = {**base, "logic_um2": base["logic_um2"] + logic, "ff_um2": base["ff_um2"] + ff}
        out["total_um2"] = out["logic_um2"] + out["ff_um2"]
        out["source"] = f"{base['source']} + component model fit of the minimum term"
        return out
    r = find_report(cfg)
    if r is not None:
        a = cells_area_um2(r["cells"], node)
        a["source"] = f"yosys: {r['path']}"
        a["transistors"] = r.get("transistors")
        return a
    fit = fit_component_model()
    cc = component_counts(cfg)
    s = node_area_scale(node)
    logic = sum(fit["coef_um2"][t] * cc[t] for t in FIT_TERMS) * s
    ff = cc["ff_bits"] * fit["ff_um2"] * s
    return {"logic_um2": logic, "ff_um2": ff, "total_um2": logic + ff, "unknown": {}, "source": "component model fit"}


def sram_area_um2(kib: float, node: str = "28nm") -> float:
    cell = SRAM_CELL_UM2.get(node, SRAM_CELL_UM2["45nm"] * node_area_scale(node))
    return kib * 1024 * 8 * cell / SRAM_ARRAY_EFFICIENCY


def memory_area(mem, node: str = "28nm") -> dict:
    parts = {
        "weight_sram_um2": sram_area_um2(mem.weight_sram_kib, node),
        "act_sram_um2": sram_area_um2(mem.act_sram_kib, node),
        "out_sram_um2": sram_area_um2(mem.out_sram_kib, node),
    }
    parts["total_um2"] = sum(parts.values())
    return parts


def constants_table(node: str = "28nm") -> list[dict]:
    composite = {"$_ANDNOT_": "INV_X1 + NOR2_X1", "$_ORNOT_": "INV_X1 + NAND2_X1", "$_NMUX_": "MUX2_X1 + INV_X1"}
    rows = [{"name": f"yosys {k}", "value": v, "unit": "um^2 @45nm",
             "source": f"NanGate FreePDK45 Open Cell Library: {composite.get(k, 'matching X1 cell')}"}
            for k, v in CELL_UM2_45.items() if v]
    rows.append({"name": "flip-flop bit (DFF_X1)", "value": DFF, "unit": "um^2 @45nm", "source": "NanGate FreePDK45; +MUX2_X1 with enable, +AND2_X1 with sync reset"})
    rows.append({"name": f"area factor 45nm -> {node}", "value": node_area_scale(node), "unit": "x", "source": "ideal (L/45)^2 scaling"})
    for n, v in SRAM_CELL_UM2.items():
        rows.append({"name": f"SRAM 6T bit cell {n}", "value": v, "unit": "um^2", "source": "Intel 45nm IEDM 2007" if n == "45nm" else "TSMC 28nm HD cell"})
    rows.append({"name": "SRAM array efficiency", "value": SRAM_ARRAY_EFFICIENCY, "unit": "", "source": "assumed (CACTI-style macros: 50-80%)"})
    return rows


def variant_netlist_ratio(design: str, bits: int, num: str, den: str, node: str = "45nm") -> float | None:
    """Cell area of `design`'s RTL variant `num` over variant `den` at W`bits`A8 g128, from the committed netlists
    rtl/reports/synth/<design>-variants/<design>-<variant>_w<bits>a8g128.json (lut-tc: build-16, build-sym, stream-16,
    stream-sym, its tables built per column tile or streamed from the program's precompute, 16 entries or
    symmetrized: docs/hwsim/lut_tc_variants.md). None where a report is missing."""
    def area(v):
        path = REPORTS_DIR / f"{design}-variants" / f"{design}-{v}_w{bits}a8g128.json"
        return cells_area_um2(json.loads(path.read_text())["cells"], node)["total_um2"] if path.is_file() else None

    a, b = area(num), area(den)
    return a / b if a and b else None
