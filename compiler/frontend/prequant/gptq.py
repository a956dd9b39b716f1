"""GPTQ checkpoints in the AutoGPTQ / GPTQModel layout (quant_method "gptq").

Per linear "<prefix>": qweight int32 [K * bits / 32, N] (codes packed along K as one little-endian bit stream,
so 3-bit codes straddle words), qzeros int32 [K / g, N * bits / 32] (packed the same way along N), scales fp16
[K / g, N], g_idx int32 [K] (group of input feature k), optional bias. w = scales * (q - z).

checkpoint_format "gptq" (v1, the default) stores z - 1: GPTQModel restores it by adding 1 to every field of
the packed words (a word-wide add for 2/4/8 bits, which exactly undoes the word-wide subtract it saves v1
with; a per-field add modulo 2^bits for 3 bits); "gptq_v2" stores z. We follow GPTQModel, the loader
transformers uses. Act-order checkpoints (g_idx other than k // g) are refused: we do not permute columns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compiler.errors import LowbitError
from compiler.frontend.prequant.common import Layer, check_bits, flag, group_of, make_weight, packed_layer, prefixes, type_name, unpack_bitstream

FORMATS = ("gptq", "gptq_v2")


def v1_zeros(qzeros: np.ndarray, bits: int, n: int) -> np.ndarray:
    """v1 packed zeros -> z per field, as GPTQModel converts v1 to v2."""
    if bits == 3:
        return (unpack_bitstream(qzeros, 3, axis=1, count=n) + 1) & 7
    one_per_field = sum(1 << (bits * i) for i in range(32 // bits))
    words = (qzeros.view(np.uint32).astype(np.uint64) + one_per_field) & 0xFFFFFFFF
    return unpack_bitstream(words.astype(np.uint32), bits, axis=1, count=n)


def import_gptq(qc: dict, weights: dict, where: Path) -> dict[str, Layer]:
    m = "GPTQ"
    bits = check_bits(qc.get("bits"), m, where)
    fmt = str(qc.get("checkpoint_format") or qc.get("format") or "gptq").lower()
    if fmt not in FORMATS:
        raise LowbitError(
            f"GPTQ checkpoint {where} has checkpoint_format {fmt!r}",
            f"lowbit imports the {' and '.join(FORMATS)} formats; re-save the model with GPTQModel in format gptq_v2",
        )
    group = qc.get("group_size", 128)
    sym = flag(qc, "sym", True, m, where)
    desc_act = flag(qc, "desc_act", False, m, where)
    layers = {}
    for p in prefixes(weights, ".qweight"):
        qweight, qzeros, scales = packed_layer(weights, p, where, m)
        if qweight.ndim != 2 or qzeros.ndim != 2 or scales.ndim != 2:
            raise LowbitError(f"GPTQ layer {p} in {where}: qweight, qzeros and scales must be 2-D", "use the checkpoint as its quantizer wrote it")
        if (qweight.shape[0] * 32) % bits:
            raise LowbitError(
                f"GPTQ layer {p} in {where}: {qweight.shape[0]} qweight rows do not hold whole {bits}-bit codes", "check bits in config.json"
            )
        k, n = qweight.shape[0] * 32 // bits, qweight.shape[1]
        n_groups = scales.shape[0]
        if scales.shape[1] != n or qzeros.shape != (n_groups, n * bits // 32) or (n * bits) % 32:
            raise LowbitError(
                f"GPTQ layer {p} in {where}: qweight {list(qweight.shape)}, qzeros {list(qzeros.shape)} and scales {list(scales.shape)} disagree for {bits}-bit codes",
                "check bits and group_size in config.json",
            )
        g = group_of(group, k, n_groups, m, p, where)
        g_idx = weights.get(p + ".g_idx")
        if g_idx is not None:
            if g_idx.shape != (k,) or not np.array_equal(g_idx.astype(np.int64), np.arange(k) // g):
                raise LowbitError(
                    f"GPTQ layer {p} in {where} is act-order (g_idx is not k // group_size)",
                    "lowbit does not permute columns: use a checkpoint quantized with desc_act=False (or static_groups=True)",
                )
        elif desc_act:
            raise LowbitError(f"GPTQ layer {p} in {where} is act-order (desc_act) but has no g_idx", "use a checkpoint quantized with desc_act=False")
        codes = unpack_bitstream(qweight, bits, axis=0, count=k).T
        if fmt == "gptq":
            zeros = v1_zeros(qzeros, bits, n)
        else:
            zeros = unpack_bitstream(qzeros, bits, axis=1, count=n)
        qw = make_weight(codes, scales.T, zeros.T, bits, g, m, p, where)
        used = [p + s for s in (".qweight", ".qzeros", ".scales", ".g_idx") if p + s in weights]
        layers[p] = Layer(qw, type_name("gptq", bits, g, k, sym), used)
    return layers
