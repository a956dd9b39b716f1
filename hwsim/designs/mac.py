"""`mac`: the conventional baseline array (rtl/gen/mac.py): weights dequantized to integers, ordinary
multipliers.

Datapath events per accepted input beat: per column and feature a (B+1)-bit subtract and the
dequantization multiply wd = (q - z) * mant ((B+1) x (MW+1) bits, shared by the rows); per PE and feature
a full multiply a * wd (AW x (B+1+MW) bits) and an add into the P accumulator (PW bits). Per group and
output: the rounding shift and the Y add (no multiply: the mantissa was applied to the weights).
E2M1 weights (hwsim/golden.py 1b): the subtract is a decode of the 4-bit code to w' (5 bits), otherwise the same.
Scale-and-minimum layers add the minimum term and its row sums (hwsim.arrays.min_events).
"""

from __future__ import annotations

from hwsim import golden
from hwsim.designs.base import Design


def group_acc(cfg, a, codes, zeros):
    return golden.dot_group_acc(a, golden.weight_values(cfg, codes, zeros), cfg.group)


def group_p(cfg, a, codes, zeros, mant):
    return golden.mac_dequant_group_p(a, codes, zeros, mant, cfg.group, cfg.e2m1)


def events(cfg, beats: int, groups: int) -> dict:
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


def area_counts(cfg, variant: str | None = None) -> dict:
    M, N, K, B = cfg.M, cfg.N, cfg.K, cfg.bits
    AW, MW, SW, PW = cfg.act_bits, cfg.mant_bits, cfg.shift_bits, cfg.prod_bits
    WDW = B + MW + 1
    mn = M * N
    return {
        "ff_bits": mn * PW * 2 + N * SW + M * SW,
        "add_bits": N * K * (B + 1) + mn * K * PW,
        "mult_bits2": N * K * (B + 1) * (MW + 1) + mn * K * AW * WDW,
        "mux_bits": 0,
        "and_bits": 0,
    }


DESIGN = Design(
    name="mac",
    title="MAC baseline: weights dequantized to integers, ordinary multipliers",
    label="MAC",
    order=30,
    color="#d62728",
    generator="rtl.gen.mac",
    default_array=dict(M=4, N=64, K=4, lanes=8),
    sim_defaults=dict(M=2, N=64, K=4, bits=4, act="a8", group=128, lanes=8),
    bit_serial=False,
    min_k=1,
    group_acc=group_acc,
    group_p=group_p,
    events=events,
    area_counts=area_counts,
    mma_op="MAC_MMA",
    weight_layout="dense",
    precompute_tables=False,
    baseline=True,
)
