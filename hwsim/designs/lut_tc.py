"""`lut-tc`: LUT Tensor Core-style array (rtl/gen/lut_tc.py): per-row tables of activation sums, read by
bit-serial weight planes, with table symmetrization (8 stored entries and a sign for K = 4).
Variants (ArrayConfig fields): table="stream" takes the program's precomputed tables on in_tbl instead of
building them from each beat's activations (no table precompute below); sym=False stores all 2^K entries
and reads them directly (E = 2^K below, no negation).

Datapath events per accepted input beat (one K-chunk of all rows and columns):
- table precompute: one table per row, E = 2^(K-1) entries of TW bits, each a K-term sum (K-1 adds);
- B plane cycles: every (m, n) PE does one table lookup (an E:1 mux of TW bits plus a conditional
  negation) and one Horner add (part = 2 part + lookup, PTW bits; the x2 is wiring);
- one group-accumulator add per PE (ACCW bits) and one row-sum add per row (S, SUMW bits).
Per group and output (epilogue): the zero-point correction (a (B+2) x SUMW multiply and an ACCW add),
the dyadic multiply P = acc * mant (ACCW x (MW+1)), the rounding shift (a PW add) and the Y add (YW).
Register bit writes: tables and plane-major weights per beat, `part` per plane, acc2 per beat, and the
shadow bank / Y shift registers per group. E2M1 weights (weight_format "e2m1", hwsim/golden.py 1b) run five
planes of w' + 16 (B = 5 above; acc2 is ACC2W = cfg.acc2_bits wide), decoded from each 4-bit code as the beat is
registered, and their correction is c = -1: a subtraction of S, no multiply. Scale-and-minimum layers add the minimum term
(hwsim.arrays.min_events); its row sums are this array's S (`row_sums=True`), so it needs no adders of its own.
"""

from __future__ import annotations

from hwsim import golden
from hwsim.designs.base import Claim, Design

LUT_TC_PAPER = "LUT Tensor Core (arXiv 2408.06003)"


def group_acc(cfg, a, codes, zeros):
    if cfg.e2m1:
        return golden.lut_e2m1_group_acc(a, codes, cfg.group, cfg.K, cfg.sym)
    return golden.lut_group_acc(a, codes, zeros, cfg.bits, cfg.group, cfg.K, cfg.sym)


def events(cfg, beats: int, groups: int) -> dict:
    M, N, K, B = cfg.M, cfg.N, cfg.K, cfg.planes
    E = cfg.table_entries
    builds = 0 if cfg.streams_tables else beats * M  # streamed tables were built once by the program
    TW, ACCW, SUMW, PW, YW, MW = cfg.table_bits, cfg.acc2_bits, cfg.sum_bits, cfg.prod_bits, cfg.y_bits, cfg.mant_bits
    PTW = TW + B - 1
    mn = M * N
    ev = {
        "table_builds": builds,
        "adds": {
            TW: builds * E * (K - 1),  # table entries
            PTW: beats * B * mn,  # Horner shift-accumulate, one per plane
            ACCW: beats * mn + groups * mn,  # group accumulators; epilogue correction add
            SUMW: beats * M,  # row sums S
            PW + 1: groups * mn,  # rounding add of the dyadic shift
            YW: groups * mn,  # Y accumulation
        },
        "lookups": {(TW, E): beats * B * mn},  # (entry bits, entries) -> reads
        "negations": {TW: beats * B * mn if cfg.sym else 0},
        "mults": {(B + 2, SUMW): groups * mn, (cfg.acc_bits, MW + 1): groups * mn},
        "shifts": {PW + 1: groups * mn},
        "reg_bit_writes": beats * (M * E * TW + N * B * K) + beats * B * mn * PTW + beats * mn * ACCW
        + groups * mn * (ACCW + YW) * 2,
        "epilogue_ops": groups * mn,
    }
    if cfg.e2m1:
        # the correction is c = -1 (a subtraction of S, counted in the ACCW adds): no multiply; each code
        # is decoded to its five planes once per beat (an 8:1 magnitude read of 4 bits and a negation)
        del ev["mults"][(B + 2, SUMW)]
        ev["lookups"][(4, 8)] = beats * N * K
        ev["negations"][B] = beats * N * K
    return ev


def area_counts(cfg, variant: str | None = None) -> dict:
    """Flip-flop, adder, mux and multiplier bits of the table unit, PEs and the epilogue's correction.
    variant "unsymmetrized": the plain LUT design before table symmetrization (2^K table entries per row,
    a 2^K:1 read mux per PE, no conditional negation): the component estimate of cfg.sym False, which has RTL;
    cfg.table "stream" has no table-build adders."""
    M, N, K, B, EL = cfg.M, cfg.N, cfg.K, cfg.planes, cfg.lanes
    MW, SW, ACCW, TW, SUMW = cfg.mant_bits, cfg.shift_bits, cfg.acc2_bits, cfg.table_bits, cfg.sum_bits
    sym = variant is None and cfg.sym
    E = 1 << (K - 1) if sym else 1 << K
    NEG = 1 if sym else 0  # the conditional negation of a symmetric table read
    PTW = TW + B - 1
    mn = M * N
    CW = 0 if cfg.e2m1 else B + 2  # the per-column correction c (E2M1: the constant -1)
    ff = mn * ACCW  # shadow
    ff += N * (MW + SW + CW) + M * (SW + SUMW)  # em_r, ed_r, ec_r, eda_r, eS_r
    ff += M * E * TW + N * B * K + M * SUMW + mn * ACCW + (mn * (PTW - 1) if B > 1 else 0)
    add = (0 if cfg.streams_tables else M * E * (K - 1) * TW) + mn * (PTW + ACCW + NEG * TW) + M * SUMW + EL * (ACCW + 1)
    mux = mn * TW * (E - 1) + NEG * (mn * TW + N * (K - 1))
    mult = EL * (cfg.acc_bits * (MW + 1) + CW * SUMW)
    if cfg.e2m1:  # the E2M1 decode per column and feature: 4 magnitude bits from 3, a 5-bit negation
        mux += N * K * (4 * 7 + B)
        add += N * K * B
    return {"ff_bits": ff, "add_bits": add, "mult_bits2": mult, "mux_bits": mux, "and_bits": 0}


DESIGN = Design(
    name="lut-tc",
    title="LUT Tensor Core-style array: table lookup, bit-serial weight planes, table symmetrization",
    label="LUT-TC",
    order=10,
    color="#1f77b4",
    generator="rtl.gen.lut_tc",
    # bit-serial (B cycles per beat) with much smaller PEs than mixpe/mac, so twice the columns at the same
    # epilogue drain per column (16 lanes)
    default_array=dict(M=4, N=128, K=4, lanes=16),
    sim_defaults=dict(M=2, N=64, K=4, bits=2, act="a8", group=128, lanes=8),
    bit_serial=True,
    min_k=2,
    group_acc=group_acc,
    events=events,
    area_counts=area_counts,
    mma_op="LUT_MMA",
    weight_layout="planes",
    precompute_tables=True,
    row_sums=True,
    table_params=True,
    claims=(
        Claim("density", "mac", ">10x", f"{LUT_TC_PAPER}: compute density vs MAC-based tensor cores"),
        Claim("energy", "mac", ">10x", f"{LUT_TC_PAPER}: energy efficiency vs MAC-based tensor cores", metric_as="energy efficiency"),
        Claim("density", "mixpe", "(not claimed)", "LUT-TC vs MixPE compute density"),
        Claim("unmeasured", "earlier LUT accelerators", "1.44x", "LUT Tensor Core (v3): vs the best earlier LUT accelerators",
              note="not measured: our RTL has no earlier LUT design to compare with"),
        Claim("area_variant:unsymmetrized", "", "(part of 1.44x)", "the same array without table symmetrization"),
        Claim("netlist_variant:build-16/build-sym", "", "(part of 1.44x)", "the same array without table symmetrization"),
        Claim("netlist_variant:build-sym/stream-sym", "", "(not claimed)", "the array building its tables per column tile instead of reading the fused precompute"),
    ),
    # the RTL of sym=False measures this from netlists: docs/hwsim/lut_tc_variants.md
    area_variants={"unsymmetrized": "16-entry tables, 16:1 read muxes, no negation (netlist: docs/hwsim/lut_tc_variants.md)"},
)
