"""LUT Tensor Core-style array (`lut-tc`): event counts of its datapath (rtl/gen/lut_tc.py).

Per accepted input beat (one K-chunk of all rows and columns):
- table precompute: one table per row, 2^(K-1) entries of TW bits, each a K-term sum (K-1 adds);
- B plane cycles: every (m, n) PE does one table lookup (a 2^(K-1):1 mux of TW bits plus a conditional
  negation) and one Horner add (part = 2 part + lookup, PTW bits; the x2 is wiring);
- one group-accumulator add per PE (ACCW bits) and one row-sum add per row (S, SUMW bits).
Per group and output (epilogue): the zero-point correction (a (B+2) x SUMW multiply and an ACCW add),
the dyadic multiply P = acc * mant (ACCW x (MW+1)), the rounding shift (a PW add) and the Y add (YW).
Register bit writes: tables and plane-major weights per beat, `part` per plane, acc2 per beat, and the
shadow bank / Y shift registers per group.
"""

from __future__ import annotations

from hwsim import golden as gm


def events(cfg: gm.ArrayConfig, beats: int, groups: int) -> dict:
    M, N, K, B = cfg.M, cfg.N, cfg.K, cfg.bits
    E = 1 << (K - 1)
    TW, ACCW, SUMW, PW, YW, MW = cfg.table_bits, cfg.acc_bits, cfg.sum_bits, cfg.prod_bits, cfg.y_bits, cfg.mant_bits
    PTW = TW + B - 1
    mn = M * N
    return {
        "table_builds": beats * M,
        "adds": {
            TW: beats * M * E * (K - 1),  # table entries
            PTW: beats * B * mn,  # Horner shift-accumulate, one per plane
            ACCW: beats * mn + groups * mn,  # group accumulators; epilogue correction add
            SUMW: beats * M,  # row sums S
            PW + 1: groups * mn,  # rounding add of the dyadic shift
            YW: groups * mn,  # Y accumulation
        },
        "lookups": {(TW, E): beats * B * mn},  # (entry bits, entries) -> reads
        "negations": {TW: beats * B * mn},
        "mults": {(B + 2, SUMW): groups * mn, (ACCW, MW + 1): groups * mn},
        "shifts": {PW + 1: groups * mn},
        "reg_bit_writes": beats * (M * E * TW + N * B * K) + beats * B * mn * PTW + beats * mn * ACCW
        + groups * mn * (ACCW + YW) * 2,
        "epilogue_ops": groups * mn,
    }
