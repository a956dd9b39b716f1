"""Bits per weight as GGUF would store a layer: the codes plus one fp16 scale per group, and one more fp16 per
group (a minimum or a zero point) for `-asym` / `-min` groups. w4g32 = 4.5 (Q4_0), w4g32-min = 5.0 (Q4_1),
w8g32 = 8.5 (Q8_0), w2g32 = 2.5. Two-level scales (`k`) cost their sub-scale bits per group plus an fp16 per
super-block of 256 weights, for the scale and again for the minimum; a zero point (`-asym`) costs the code width:
w4g32k-min = 4.5 (Q4_K), w3g16k = 3.4375 (Q3_K), w2g16k4-min = 2.625 (Q2_K). Sparse outliers (`-spP`) cost 32
bits each (an fp16 value and an int16 column): -sp1 adds 0.32. Codebook weights (`cb`) cost their codes plus 2^b fp16
table entries per row: w3cb at K = 576 is 3.22. The float formats cost their scales: mxfp4 4.25 (E8M0 per 32),
nvfp4 4.5 (E4M3 per 16), nf4 4.25 (fp16 per 64), mxfp8 8.25 (E8M0 per 32), fp8 8 + 32 / K (fp32 per channel). One definition, read by `lowbit compile --bpw` (compiler.quant.mixed) and by
benchmarks/quality.py, so their figures compare with llama.cpp's (its tensors' bytes per element).

The average is over the block linears (the quantizable linears: attention and MLP projections); the LM head
and the embedding are not counted, nor is a layer kept float.
"""

from __future__ import annotations

import numpy as np

from compiler.ir import Graph
from compiler.quant.outliers import SPARSE_BITS
from compiler.quant.spec import QuantSpec
from compiler.quant.twolevel import SUPER

SCALE_BITS = 16  # fp16 scale (and fp16 minimum / zero point) per group, as GGUF stores them


def layer_bits(rows: int, k: int, bits: int, group: int, two_params: bool, sub_bits: int = 0, minimum: bool = False) -> int:
    """Bits of one [rows, k] layer: codes plus 16 (symmetric, ternary) or 32 (asymmetric, minimum) per group;
    with two-level scales (sub_bits > 0) sub_bits per group and 16 per super-block, for the scale and for a
    minimum, and `bits` per group for a zero point."""
    j = k // group
    if not sub_bits:
        return rows * k * bits + rows * j * SCALE_BITS * (2 if two_params else 1)
    supers = -(-k // SUPER)
    per_param = j * sub_bits + supers * SCALE_BITS
    offset = (per_param if minimum else j * bits) if two_params else 0
    return rows * (k * bits + per_param + offset)


def codebook_bits(rows: int, k: int, bits: int) -> int:
    """Codebook weights: the codes plus 2^bits fp16 table entries per row."""
    return rows * (k * bits + (1 << bits) * SCALE_BITS)


FP_SCALE_BITS = {"mxfp4": 8, "nvfp4": 8, "nf4": 16, "mxfp8": 8, "fp8": 32, "fp8b": 32}  # E8M0, E4M3 (the FP32 tensor scale aside), fp16, E8M0, fp32, fp32


def fp_bits(rows: int, k: int, fmt: str, group: int) -> int:
    """Float formats: the codes plus the format's scale per group (the shared table is the format's)."""
    from compiler.quant.floatfmt import BITS

    if fmt == "fp8b":  # one scale per 128 x 128 block, not per row
        from compiler.quant.floatfmt import BLOCK_ROWS

        return rows * k * BITS[fmt] + -(-rows // BLOCK_ROWS) * (k // group) * FP_SCALE_BITS[fmt]
    return rows * (k * BITS[fmt] + (k // group) * FP_SCALE_BITS[fmt])


def spec_bits(spec: QuantSpec, rows: int, k: int) -> int:
    """Bits of a [rows, k] layer at spec, with the group QuantSpec.group_for(k) gives it."""
    if spec.fp:
        return fp_bits(rows, k, spec.fp, spec.group_for(k)) + rows * spec.outlier_count(k) * SPARSE_BITS
    if spec.codebook:
        return codebook_bits(rows, k, spec.bits) + rows * spec.outlier_count(k) * SPARSE_BITS
    dense = layer_bits(rows, k, spec.bits, spec.group_for(k), not spec.symmetric or spec.minimum, spec.sub_bits, spec.minimum)
    return dense + rows * spec.outlier_count(k) * SPARSE_BITS


def spec_bpw(spec: QuantSpec, k: int) -> float:
    """Bits per weight of a layer with k input features at spec (fp8b: over a block's 128 rows)."""
    rows = 128 if spec.fp == "fp8b" else 1
    return spec_bits(spec, rows, k) / (rows * k)


def qlinear_bits(graph: Graph, node) -> int:
    """Bits of a compiled qlinear: zero-point groups whose offsets are all the symmetric midpoint count as
    symmetric (one fp16 per group), as the GGUF export stores them."""
    a = node.attrs
    if a.get("fp"):
        return fp_bits(a["n"], a["k"], a["fp"], a["group_size"])
    if a.get("codebook"):
        return codebook_bits(a["n"], a["k"], a["bits"])
    off = graph.consts[node.inputs[3]]
    sym = not a.get("mins") and bool(np.all(off == (1 if a.get("ternary") else 1 << (a["bits"] - 1))))
    sub = (a.get("two_level") or {}).get("sub_bits", 0)
    return layer_bits(a["n"], a["k"], a["bits"], a["group_size"], not sym, sub, bool(a.get("mins")))


def graph_bpw(graph: Graph) -> float | None:
    """Bits per weight of a quantized graph's block linears (every qlinear but the LM head); None if none."""
    bits = elems = 0
    for n in graph.nodes:
        if n.op == "sparse_matmul":  # the outliers of a block linear (the head takes none)
            bits += graph.consts[n.inputs[1]].size * SPARSE_BITS
        if n.op != "qlinear" or "logits" in n.outputs:
            continue
        bits += qlinear_bits(graph, n)
        elems += n.attrs["n"] * n.attrs["k"]
    return bits / elems if elems else None
