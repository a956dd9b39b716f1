"""MixPE-style array (`mixpe`): event counts of its datapath (rtl/gen/mixpe.py).

Per accepted input beat: per column and feature one (B+1)-bit subtract w' = q - z (shared by the rows);
per PE and feature a shift-and-add product over the B+1 bits of w' (B adds of PRW = AW+B+1 bits; the
shifts are wiring, the bits of w' gate the shifted copies), then K adds into the group accumulator
(ACCW bits). Per group and output (epilogue): P = acc * mant (ACCW x (MW+1)), the rounding shift (PW add)
and the Y add (YW). Register bit writes: the accumulators per beat, shadow bank and Y per group.
"""

from __future__ import annotations

from hwsim import golden as gm


def events(cfg: gm.ArrayConfig, beats: int, groups: int) -> dict:
    M, N, K, B = cfg.M, cfg.N, cfg.K, cfg.bits
    AW, ACCW, PW, YW, MW = cfg.act_bits, cfg.acc_bits, cfg.prod_bits, cfg.y_bits, cfg.mant_bits
    PRW = AW + B + 1
    mn = M * N
    return {
        "adds": {
            B + 1: beats * N * K,  # w' = q - z per column and feature
            PRW: beats * mn * K * B,  # shift-and-add partial products
            ACCW: beats * mn * K,  # accumulate K products per beat
            PW + 1: groups * mn,
            YW: groups * mn,
        },
        "mults": {(ACCW, MW + 1): groups * mn},
        "shifts": {PW + 1: groups * mn},
        "reg_bit_writes": beats * mn * ACCW + groups * mn * (ACCW + YW) * 2,
        "epilogue_ops": groups * mn,
    }
