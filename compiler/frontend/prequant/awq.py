"""AWQ checkpoints in AutoAWQ's GEMM layout (quant_method "awq", version "gemm").

Per linear "<prefix>": qweight int32 [K, N / 8], qzeros int32 [K / g, N / 8], scales fp16 [K / g, N]. Eight
4-bit codes per word along N in AWQ's interleaved order: nibble i of word c holds column 8 c + ORDER[i]. Zero
points are stored as they are (no offset); w = scales * (q - z).
"""

from __future__ import annotations

from pathlib import Path

from compiler.errors import LowbitError
from compiler.frontend.prequant.common import Layer, check_bits, flag, group_of, make_weight, packed_layer, prefixes, type_name, unpack_fields

ORDER = (0, 2, 4, 6, 1, 3, 5, 7)


def import_awq(qc: dict, weights: dict, where: Path) -> dict[str, Layer]:
    m = "AWQ"
    version = str(qc.get("version", "gemm")).lower()
    if version != "gemm":
        raise LowbitError(
            f"AWQ checkpoint {where} has version {qc.get('version')!r}",
            "lowbit imports AutoAWQ's GEMM layout (version gemm); re-save the model with version='gemm'",
        )
    bits = check_bits(qc.get("bits", qc.get("w_bit")), m, where, allowed=(4,))
    group = qc.get("group_size", qc.get("q_group_size", 128))
    if not flag(qc, "zero_point", True, m, where):
        raise LowbitError(f"AWQ checkpoint {where} has zero_point false", "lowbit imports AWQ GEMM checkpoints with zero points (zero_point: true)")
    layers = {}
    for p in prefixes(weights, ".qweight"):
        qweight, qzeros, scales = packed_layer(weights, p, where, m)
        if qweight.ndim != 2 or scales.ndim != 2:
            raise LowbitError(f"AWQ layer {p} in {where}: qweight and scales must be 2-D", "use the checkpoint as its quantizer wrote it")
        k, n = qweight.shape[0], qweight.shape[1] * 8
        n_groups = scales.shape[0]
        if scales.shape[1] != n or qzeros.shape != (n_groups, n // 8):
            raise LowbitError(
                f"AWQ layer {p} in {where}: qweight {list(qweight.shape)}, qzeros {list(qzeros.shape)} and scales {list(scales.shape)} disagree",
                "check group_size in config.json",
            )
        g = group_of(group, k, n_groups, m, p, where)
        codes = unpack_fields(qweight, 4, axis=1, count=n, order=ORDER)  # [K, N]
        zeros = unpack_fields(qzeros, 4, axis=1, count=n, order=ORDER)  # [K / g, N]
        qw = make_weight(codes.T, scales.T, zeros.T, bits, g, m, p, where)
        layers[p] = Layer(qw, type_name("awq", bits, g, k, False), [p + s for s in (".qweight", ".qzeros", ".scales")])
    return layers
