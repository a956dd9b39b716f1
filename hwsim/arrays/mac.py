"""MAC baseline array (`mac`): event counts of its datapath (rtl/gen/mac.py).

Per accepted input beat: per column and feature a (B+1)-bit subtract and the dequantization multiply
wd = (q - z) * mant ((B+1) x (MW+1) bits, shared by the rows); per PE and feature a full multiply
a * wd (AW x (B+1+MW) bits) and an add into the P accumulator (PW bits). Per group and output: the
rounding shift and the Y add (no multiply: the mantissa was applied to the weights).
"""

from __future__ import annotations

from hwsim import golden as gm


def events(cfg: gm.ArrayConfig, beats: int, groups: int) -> dict:
    M, N, K, B = cfg.M, cfg.N, cfg.K, cfg.bits
    AW, PW, YW, MW = cfg.act_bits, cfg.prod_bits, cfg.y_bits, cfg.mant_bits
    WDW = B + MW + 1
    mn = M * N
    return {
        "adds": {
            B + 1: beats * N * K,
            PW: beats * mn * K,
            PW + 1: groups * mn,
            YW: groups * mn,
        },
        "mults": {(B + 1, MW + 1): beats * N * K, (AW, WDW): beats * mn * K},
        "shifts": {PW + 1: groups * mn},
        "reg_bit_writes": beats * mn * PW + groups * mn * (PW + YW) * 2,
        "epilogue_ops": groups * mn,
    }
