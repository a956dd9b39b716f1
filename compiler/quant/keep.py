"""`--quant keep`: a checkpoint's own quantization, kept where it maps exactly onto ours, and a documented rule
for the stored types that do not.

A weight in `Model.prequant` (the frontend's exact map) becomes a qlinear with exactly that `QuantizedWeight`,
named by `weight_format`. The GGUF types decoded exactly (compiler/frontend/gguf_quant.py; dequantize() equals
gguf's bit for bit), as they are kept:

  Q8_0 w8g32   Q4_0 w4g32   Q4_1 w4g32-min   Q5_0 w8g32   Q5_1 w8g32-min
  Q2_K w2g16k4-min   Q3_K w3g16k   Q4_K w4g32k-min   Q5_K w8g32k-min   Q6_K w8g16k8
(the 5-bit types' codes use 32 of the 256 w8 codes, Q6_K's 64; the K-quants keep their two-level scales, `k`,
which artifacts store as such; Q3_K's and Q6_K's sub-block scales are signed and may be negative), and a GPTQ / AWQ checkpoint's own codes. A weight in `Model.prequant_types` without an exact map
(IQ*, MXFP4, NVFP4, TQ*, an unmapped "gptq-w4g128", or a mapped type that reached keep without its decoded
weight) is re-quantized from its dequantized float value (the float of the checkpoint) at `requant_spec(type)`:

- bits: the nearest supported width at or above the stored one (2, 3, 4, 8): Q5_* and Q6_K -> 8, Q3_K -> 3;
- groups of 32 (llama.cpp's block, and the K-quants' largest sub-block);
- symmetry by the type's own form: one scale per block (Q4_0, Q5_0, Q8_0) -> symmetric; sub-block scales
  without minimums (Q3_K, Q6_K) -> `-asym`; types with minimums (Q4_1, Q5_1, Q2_K, Q4_K, Q5_K) -> `-min`;
- ternary types (TQ1_0, TQ2_0: one scale per 256 weights) -> ternaryg128, which recovers them exactly.

Measured by benchmarks/requant_error.py (relative RMS error of the re-quantized weight against the dequantized one;
256 x 1536 random blocks of each type decoded by gguf 0.19; Q5_0 / Q5_1 quantized by gguf from Gaussian weights),
what the rule costs where it applies, and what the exact decoders above save for the types they cover:
  Q6_K   w8g32 0.0047   w8g32-asym 0.0037   w8g32-min 0.0036   w8g64 0.0053   w8pc 0.0065
  Q5_K   w8g32 0.0040   w8g32-asym 0.0016   w8g32-min 0.0015
  Q5_0   w8g32 0.0039   w8g32-asym 0.0030   w8g32-min 0.0035
  Q5_1   w8g32 0.0056   w8g32-asym 0.0037   w8g32-min 0.0041
  Q3_K   w3g32 0.129    w3g32-asym 0.098    w3g32-min 0.094    (w4g32-min 0.047)
  Q2_K   w2g32 0.366    w2g32-asym 0.160    w2g32-min 0.118
  Q4_K   w4g32 0.061    w4g32-asym 0.018    w4g32-min 0.0018
`-asym` where it matches `-min` (Q3_K, Q6_K) because a zero point is one byte and a minimum four.
Other stored types (IQ*, MXFP4, an unmapped "gptq-w4g128") take the bits (and a supported group) named in
the type and `-asym`.
"""

from __future__ import annotations

import re

import numpy as np

from compiler.errors import LowbitError
from compiler.groups import GROUP_SIZES
from compiler.quant.qweight import QuantizedWeight
from compiler.quant.spec import WEIGHT_BITS, QuantSpec

_SYMMETRIC = {"Q4_0", "Q5_0", "Q8_0"}
_MINS = {"Q4_1", "Q5_1", "Q2_K", "Q4_K", "Q5_K"}


def requant_spec(stored: str, act: str = "a16") -> QuantSpec:
    """Our format for a stored type that does not map exactly (the rule in the module doc)."""
    t = stored.upper()
    if t.startswith("TQ"):
        return QuantSpec(bits=2, group_size=128, act=act, ternary=True)
    m = re.search(r"W(\d+)", t) or re.search(r"(\d+)", t)
    if m is None:
        raise LowbitError(f"--quant keep: no rule for the stored type '{stored}'",
                          "give a spec for it with --quant-layer PATTERN=SPEC, or --quant SPEC")
    b = int(m.group(1))
    bits = min((w for w in WEIGHT_BITS if w >= b), default=None)
    if bits is None:
        raise LowbitError(f"--quant keep: the stored type '{stored}' has {b} bits, wider than 8",
                          "keep that layer float with --quant-layer PATTERN=none")
    g = re.search(r"G(\d+)", t)
    group = int(g.group(1)) if g and int(g.group(1)) in GROUP_SIZES else 32
    sym = t in _SYMMETRIC
    return QuantSpec(bits=bits, group_size=group, act=act, symmetric=sym, minimum=t in _MINS)


def weight_format(qw: QuantizedWeight, act: str = "a16") -> QuantSpec:
    """The spec that names a kept weight's format (the module doc's table): symmetric where every zero point is
    2^(bits-1) (Q8_0 -> w8g32, Q6_K -> w8g16k8, Q3_K -> w3g16k), `-min` with minimums (Q2_K -> w2g16k4-min),
    `k` with two-level scales."""
    k = qw.shape[1]
    group = 0 if qw.group_size == k else qw.group_size
    if qw.fp:  # a float format (an FP8 checkpoint: fp8 per tensor / channel / group, fp8b in 128 x 128 blocks)
        return QuantSpec(bits=qw.bits, group_size=group if qw.fp == "fp8" else qw.group_size, act=act, codebook=True, fp=qw.fp)
    if qw.ternary:
        return QuantSpec(bits=2, group_size=group, act=act, ternary=True)
    sym = not qw.has_mins and bool(np.all(qw.zeros == 1 << (qw.bits - 1)))
    return QuantSpec(bits=qw.bits, group_size=group, act=act, symmetric=sym, minimum=qw.has_mins, sub_bits=qw.sub_bits)
