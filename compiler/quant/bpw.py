"""Bits per weight as GGUF would store a layer: the codes plus one fp16 scale per group, and one more fp16 per
group (a minimum or a zero point) for `-asym` / `-min` groups. w4g32 = 4.5 (Q4_0), w4g32-min = 5.0 (Q4_1),
w8g32 = 8.5 (Q8_0), w2g32 = 2.5. One definition, read by `lowbit compile --bpw` (compiler.quant.mixed) and by
benchmarks/quality.py, so their figures compare with llama.cpp's (its tensors' bytes per element).

The average is over the block linears (the quantizable linears: attention and MLP projections); the LM head
and the embedding are not counted, nor is a layer kept float.
"""

from __future__ import annotations

import numpy as np

from compiler.ir import Graph
from compiler.quant.spec import QuantSpec

SCALE_BITS = 16  # fp16 scale (and fp16 minimum / zero point) per group, as GGUF stores them


def layer_bits(rows: int, k: int, bits: int, group: int, two_params: bool) -> int:
    """Bits of one [rows, k] layer: codes plus 16 (symmetric, ternary) or 32 (asymmetric, minimum) per group."""
    return rows * k * bits + rows * (k // group) * SCALE_BITS * (2 if two_params else 1)


def spec_bits(spec: QuantSpec, rows: int, k: int) -> int:
    """Bits of a [rows, k] layer at spec, with the group QuantSpec.group_for(k) gives it."""
    return layer_bits(rows, k, spec.bits, spec.group_for(k), not spec.symmetric or spec.minimum)


def spec_bpw(spec: QuantSpec, k: int) -> float:
    """Bits per weight of a layer with k input features at spec."""
    return spec_bits(spec, 1, k) / k


def qlinear_bits(graph: Graph, node) -> int:
    """Bits of a compiled qlinear: zero-point groups whose offsets are all the symmetric midpoint count as
    symmetric (one fp16 per group), as the GGUF export stores them."""
    a = node.attrs
    off = graph.consts[node.inputs[3]]
    sym = not a.get("mins") and bool(np.all(off == (1 if a.get("ternary") else 1 << (a["bits"] - 1))))
    return layer_bits(a["n"], a["k"], a["bits"], a["group_size"], not sym)


def graph_bpw(graph: Graph) -> float | None:
    """Bits per weight of a quantized graph's block linears (every qlinear but the LM head); None if none."""
    bits = elems = 0
    for n in graph.nodes:
        if n.op != "qlinear" or "logits" in n.outputs:
            continue
        bits += qlinear_bits(graph, n)
        elems += n.attrs["n"] * n.attrs["k"]
    return bits / elems if elems else None
