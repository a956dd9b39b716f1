"""compressed-tensors checkpoints in the pack-quantized format (quant_method "compressed-tensors", llm-compressor);
the float-quantized format (FP8 weights) is read by compiler.frontend.prequant.fp8.

Per linear "<prefix>": weight_packed int32 [N, ceil(K / (32 // bits))] (32 // bits codes per word along K, low
bits first, the last word zero-padded), weight_scale [N, K / g] (group), [N, 1] (channel) or [1] (tensor),
weight_shape [2] = [N, K], optional weight_zero_point and weight_g_idx. Codes are signed integers in
[-2^(b-1), 2^(b-1) - 1] stored with the offset 2^(b-1), i.e. as our unsigned codes; w = s * (q - zp). An
asymmetric zero point is packed the same way along N (int32 [ceil(N / (32 // bits)), K / g]); older files keep
it unpacked and signed ([N, K / g]). Symmetric layers have zp = 0, our z = 2^(b-1).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from compiler.errors import LowbitError
from compiler.frontend.prequant.common import Layer, check_bits, flag, group_of, make_weight, prefixes, scales_f32, tensor, type_name, unpack_fields

M = "compressed-tensors"
FORMAT = "pack-quantized"
FLOAT_FORMAT = "float-quantized"  # FP8 E4M3 weights: compiler.frontend.prequant.fp8


def _groups(qc: dict, where: Path) -> list[tuple[list[str], dict, str]]:
    """(targets, weight args, format) of every config group that quantizes weights."""
    top = str(qc.get("format") or "")
    groups = qc.get("config_groups") or {}
    fix = "use the config.json that came with the weights"
    if not isinstance(groups, dict):
        raise LowbitError(f"{M} checkpoint {where}: quantization_config.config_groups is not an object", fix)
    out = []
    for name, grp in groups.items():
        if not isinstance(grp, dict) or not grp.get("weights"):
            continue
        targets = grp.get("targets") or []
        if not isinstance(grp["weights"], dict) or not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            raise LowbitError(f"{M} checkpoint {where}: config group {name!r} needs a weights object and a list of target names", fix)
        out.append((targets, grp["weights"], str(grp.get("format") or top)))
    return out


def _matches(target: str, prefix: str) -> bool:
    if target.startswith("re:"):
        return re.match(target[3:], prefix) is not None
    return target == "Linear" or prefix == target or prefix.endswith("." + target)


def _scheme(groups, prefix: str, where: Path) -> tuple[dict, str]:
    if len(groups) == 1:
        return groups[0][1], groups[0][2]
    named = [g for g in groups if any(_matches(t, prefix) for t in g[0] if t != "Linear")]
    found = named or [g for g in groups if "Linear" in g[0]]
    if not found:
        raise LowbitError(
            f"{M} layer {prefix} in {where} matches no config group of quantization_config", "use the config.json that came with the weights"
        )
    return found[0][1], found[0][2]


def _zeros(weights: dict, p: str, bits: int, n: int, n_groups: int, symmetric: bool, where: Path) -> np.ndarray:
    """Our unsigned zero points [N, J]."""
    off = 1 << (bits - 1)
    name = p + ".weight_zero_point"
    if name not in weights:
        if not symmetric:
            raise LowbitError(f"{M} layer {p} in {where} is asymmetric but has no weight_zero_point", "check the checkpoint is complete")
        return np.full((n, n_groups), off, np.uint8)
    zp = weights[name]
    per = 32 // bits
    if zp.dtype == np.int32 and zp.shape == (-(-n // per), n_groups) and n > 1:
        return unpack_fields(zp, bits, axis=0, count=n)  # packed with the offset
    if zp.dtype.kind not in "iu" or zp.reshape(-1).size != n * n_groups:
        raise LowbitError(
            f"{M} tensor '{name}' in {where} is {zp.dtype} {list(zp.shape)}, expected [{n}, {n_groups}] integers",
            "use the checkpoint as its quantizer wrote it",
        )
    z = zp.reshape(n, n_groups).astype(np.int64) + off
    if z.min() < 0 or z.max() >= 1 << bits:
        raise LowbitError(
            f"{M} tensor '{name}' in {where} holds zero points outside the {bits}-bit range", "use the checkpoint as its quantizer wrote it"
        )
    return z.astype(np.uint8)


def import_ct(qc: dict, weights: dict, where: Path) -> dict[str, Layer]:
    groups = _groups(qc, where)
    top = str(qc.get("format") or "")
    layers = {}
    found = prefixes(weights, ".weight_packed")
    if not found and (top == FLOAT_FORMAT or any(g[2] == FLOAT_FORMAT for g in groups)):
        from compiler.frontend.prequant.fp8 import import_ct_float

        def scheme(p):
            args, fmt = _scheme(groups, p, where)
            if fmt != FLOAT_FORMAT:
                raise LowbitError(f"{M} layer {p} in {where} has format {fmt!r}", f"lowbit imports the {FORMAT} and {FLOAT_FORMAT} formats")
            return args

        return import_ct_float(weights, where, scheme, M)
    if not found and any(k.endswith((".weight_scale", ".weight_packed")) for k in weights):
        raise LowbitError(
            f"{M} checkpoint {where} has format {top!r}", f"lowbit imports the {FORMAT} format; re-save the model with format='{FORMAT}'"
        )
    for p in found:
        args, fmt = _scheme(groups, p, where)
        if fmt != FORMAT:
            raise LowbitError(
                f"{M} layer {p} in {where} has format {fmt!r}", f"lowbit imports the {FORMAT} format; re-save the model with format='{FORMAT}'"
            )
        if str(args.get("type", "int")) != "int":
            raise LowbitError(f"{M} checkpoint {where} has {args.get('type')!r} weights", "lowbit imports integer (type 'int') weights")
        bits = check_bits(args.get("num_bits"), M, where)
        strategy = str(args.get("strategy") or "group")
        if strategy not in ("group", "channel", "tensor"):
            raise LowbitError(f"{M} checkpoint {where} has strategy {strategy!r}", "lowbit imports the group, channel and tensor strategies")
        symmetric = flag(args, "symmetric", True, M, where)
        packed = tensor(weights, p + ".weight_packed", where, M, int32=True)
        shape = tensor(weights, p + ".weight_shape", where, M).reshape(-1)
        if shape.size != 2:
            raise LowbitError(f"{M} tensor '{p}.weight_shape' in {where} is not [N, K]", "use the checkpoint as its quantizer wrote it")
        n, k = int(shape[0]), int(shape[1])
        per = 32 // bits
        if packed.shape != (n, -(-k // per)):
            raise LowbitError(
                f"{M} layer {p} in {where}: weight_packed {list(packed.shape)} does not hold a [{n}, {k}] {bits}-bit weight",
                "check num_bits in config.json",
            )
        sc_name = p + ".weight_scale"
        scales = scales_f32(tensor(weights, sc_name, where, M), sc_name, where, M)
        if strategy == "tensor" and scales.size == 1:
            scales = np.full((n, 1), scales.reshape(-1)[0], np.float32)
        if scales.ndim != 2 or scales.shape[0] != n:
            raise LowbitError(
                f"{M} layer {p} in {where}: weight_scale {list(scales.shape)} does not fit a [{n}, {k}] weight",
                "use the checkpoint as its quantizer wrote it",
            )
        group = args.get("group_size") if strategy == "group" else -1
        g = group_of(group, k, scales.shape[1], M, p, where)
        g_idx = weights.get(p + ".weight_g_idx")
        if g_idx is not None and not np.array_equal(g_idx.reshape(-1).astype(np.int64), np.arange(k) // g):
            raise LowbitError(
                f"{M} layer {p} in {where} is act-order (weight_g_idx is not k // group_size)",
                "lowbit does not permute columns: quantize with actorder 'weight' or none",
            )
        codes = unpack_fields(packed, bits, axis=1, count=k)
        zeros = _zeros(weights, p, bits, n, scales.shape[1], symmetric, where)
        qw = make_weight(codes, scales, zeros, bits, g, M, p, where)
        used = [p + s for s in (".weight_packed", ".weight_scale", ".weight_shape", ".weight_zero_point", ".weight_g_idx") if p + s in weights]
        layers[p] = Layer(qw, type_name(M, bits, g, k, symmetric), used)
    return layers
