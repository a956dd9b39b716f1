"""`mixpe`: MixPE-style array (rtl/gen/mixpe.py): shift-and-add PEs, per-group integer accumulation, one
dequantization per group.

Datapath events per accepted input beat: per column and feature one (B+1)-bit subtract w' = q - z (shared
by the rows); per PE and feature a shift-and-add product over the B+1 bits of w' (B adds of PRW = AW+B+1
bits; the shifts are wiring, the bits of w' gate the shifted copies), then K adds into the group
accumulator (ACCW bits). Per group and output (epilogue): P = acc * mant (ACCW x (MW+1)), the rounding
shift (PW add) and the Y add (YW). Register bit writes: the accumulators per beat, shadow bank and Y per
group.
E2M1 weights (weight_format "e2m1", hwsim/golden.py 1b): no zero point and no subtract; each product is
two shifted copies of a chosen by the code's exponent and mantissa bits (a << e, a << max(e-1, 0)), one add
and a conditional negation by the sign bit (PRW = AW + 4 bits).
Scale-and-minimum layers add the minimum term and its row sums (hwsim.arrays.min_events).
"""

from __future__ import annotations

from hwsim import golden
from hwsim.designs.base import Claim, Design

MIXPE_PAPER = "MixPE (arXiv 2411.16158)"


def group_acc(cfg, a, codes, zeros):
    if cfg.e2m1:
        return golden.mixpe_e2m1_group_acc(a, codes, cfg.group)
    return golden.mixpe_group_acc(a, codes, zeros, cfg.bits, cfg.group)


def product_bits(cfg) -> int:
    """PRW: the signed width of one PE product, |a w'| <= 2^(AW-1) w_max (E2M1: 12 < 2^4)."""
    return cfg.act_bits + (4 if cfg.e2m1 else cfg.bits + 1)


def events(cfg, beats: int, groups: int) -> dict:
    M, N, K, B = cfg.M, cfg.N, cfg.K, cfg.bits
    ACCW, PW, YW, MW = cfg.acc_bits, cfg.prod_bits, cfg.y_bits, cfg.mant_bits
    PRW = product_bits(cfg)
    mn = M * N
    if cfg.e2m1:  # two shifted copies (two 4:1 selects), one add, one conditional negation per product
        return {
            "adds": {PRW: beats * mn * K, ACCW: beats * mn * K, PW + 1: groups * mn, YW: groups * mn},
            "lookups": {(PRW, 4): 2 * beats * mn * K},
            "negations": {PRW: beats * mn * K},
            "mults": {(ACCW, MW + 1): groups * mn},
            "shifts": {PW + 1: groups * mn},
            "reg_bit_writes": beats * mn * ACCW + groups * mn * (ACCW + YW) * 2,
            "epilogue_ops": groups * mn,
        }
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


def area_counts(cfg, variant: str | None = None) -> dict:
    M, N, K, B, EL = cfg.M, cfg.N, cfg.K, cfg.bits, cfg.lanes
    MW, SW, ACCW = cfg.mant_bits, cfg.shift_bits, cfg.acc_bits
    PRW = product_bits(cfg)
    mn = M * N
    if cfg.e2m1:
        return {
            "ff_bits": mn * ACCW * 2 + N * (MW + SW) + M * SW,
            "add_bits": mn * K * (2 * PRW) + mn * K * ACCW,  # the two-term add and the negation's
            "and_bits": 0,
            "mult_bits2": EL * ACCW * (MW + 1),
            "mux_bits": mn * K * (2 * 3 * PRW + PRW),  # two 4:1 selects and the negation's select
        }
    return {
        "ff_bits": mn * ACCW * 2 + N * (MW + SW) + M * SW,
        "add_bits": N * K * (B + 1) + mn * K * (B * PRW) + mn * K * ACCW,
        "and_bits": mn * K * (B + 1) * PRW,
        "mult_bits2": EL * ACCW * (MW + 1),
        "mux_bits": 0,
    }


DESIGN = Design(
    name="mixpe",
    title="MixPE-style array: shift-and-add PEs, one dequantization per group after the integer group sum",
    label="MixPE",
    order=20,
    color="#2ca02c",
    generator="rtl.gen.mixpe",
    # 4 x 64 PEs, K = 4 features per beat, 8 epilogue lanes: a group of 128 takes 32 compute cycles and 32
    # drain cycles (balanced)
    default_array=dict(M=4, N=64, K=4, lanes=8),
    sim_defaults=dict(M=2, N=64, K=4, bits=4, act="a8", group=128, lanes=8),
    bit_serial=False,
    min_k=1,
    group_acc=group_acc,
    events=events,
    area_counts=area_counts,
    mma_op="SHIFT_ADD_MMA",
    weight_layout="dense",
    precompute_tables=False,
    claims=(
        Claim("speed_area", "mac", "2.6x", f"{MIXPE_PAPER}: speedup vs quantization accelerators (dequantize baseline)",
              versus_as="dequantize baseline (mac)"),
        Claim("speed_shape", "mac", "2.6x", f"{MIXPE_PAPER}: speedup vs quantization accelerators (dequantize baseline)",
              versus_as="dequantize baseline (mac)"),
        Claim("energy", "mac", "1.4x", f"{MIXPE_PAPER}: energy reduction vs the same baselines",
              versus_as="dequantize baseline (mac)"),
    ),
)
