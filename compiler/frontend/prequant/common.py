"""What the pre-quantized importers share: the imported layer record, bit unpacking of int32 words, tensor
look-ups with one-line errors, and the names of the stored types."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from compiler.errors import LowbitError
from compiler.quant.qweight import QuantizedWeight

WEIGHT_BITS = (2, 3, 4, 8)  # the integer widths QuantizedWeight carries


@dataclass
class Layer:
    weight: QuantizedWeight
    type_name: str  # e.g. "gptq-w4g128-asym"
    consumed: list[str] = field(default_factory=list)  # checkpoint tensors this layer replaces


def type_name(method: str, bits: int, group: int, k: int, symmetric: bool) -> str:
    g = "pc" if group == k else f"g{group}"
    return f"{method}-w{bits}{g}-{'sym' if symmetric else 'asym'}"


def prefixes(weights: dict, suffix: str) -> list[str]:
    return sorted(k[: -len(suffix)] for k in weights if k.endswith(suffix))


def tensor(weights: dict, name: str, where: Path, method: str, *, int32: bool = False) -> np.ndarray:
    if name not in weights:
        raise LowbitError(f"{method} checkpoint {where} lacks the tensor '{name}'", "check the checkpoint is complete (every shard downloaded)")
    t = weights[name]
    if int32 and t.dtype != np.int32:
        raise LowbitError(
            f"{method} tensor '{name}' in {where} is {t.dtype}, the format stores int32", "use the checkpoint as its quantizer wrote it"
        )
    return t


def flag(qc: dict, key: str, default: bool, method: str, where: Path) -> bool:
    """A true / false setting of quantization_config (a string such as "false" would read as true)."""
    v = qc.get(key, default)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise LowbitError(f"{method} checkpoint {where}: quantization_config.{key} is {v!r}, expected true or false", "use the config.json that came with the weights")
    return v


def check_bits(bits, method: str, where: Path, allowed=WEIGHT_BITS) -> int:
    if not isinstance(bits, int) or isinstance(bits, bool) or bits not in allowed:
        raise LowbitError(
            f"{method} checkpoint {where} has {bits!r}-bit weights", f"lowbit imports {method} weights of {', '.join(map(str, allowed))} bits"
        )
    return bits


def unpack_bitstream(words: np.ndarray, bits: int, axis: int, count: int) -> np.ndarray:
    """Codes packed as one little-endian bit stream along `axis` of int32 words (code i at bit bits*i; a 3-bit
    code may straddle two words): uint8, `count` codes along `axis`."""
    w = np.moveaxis(np.ascontiguousarray(words).astype("<u4", copy=False), axis, -1)
    lead = w.shape[:-1]
    stream = np.unpackbits(np.ascontiguousarray(w).view(np.uint8).reshape(*lead, -1), axis=-1, bitorder="little")
    stream = stream[..., : count * bits].reshape(*lead, count, bits).astype(np.uint8)
    codes = np.zeros((*lead, count), np.uint8)
    for b in range(bits):
        codes |= stream[..., b] << b
    return np.moveaxis(codes, -1, axis)


def unpack_fields(words: np.ndarray, bits: int, axis: int, count: int, order: tuple[int, ...] | None = None) -> np.ndarray:
    """Codes packed 32 // bits to an int32 word along `axis`, low bits first (field i of word c holds code
    c * per_word + i, or c * per_word + order[i]); uint8, the first `count` codes along `axis`."""
    per = 32 // bits
    w = np.moveaxis(words, axis, -1).view(np.uint32)
    fields = np.stack([(w >> np.uint32(bits * i)) & np.uint32((1 << bits) - 1) for i in range(per)], axis=-1)
    if order is not None:
        out = np.empty_like(fields)
        out[..., list(order)] = fields
        fields = out
    codes = fields.reshape(*w.shape[:-1], -1)[..., :count].astype(np.uint8)
    return np.moveaxis(codes, -1, axis)


def group_of(group: int, k: int, n_groups: int, method: str, prefix: str, where: Path) -> int:
    """The group length along K: config's group size (-1 or None: per-channel), checked against K and the
    number of groups the scales hold."""
    g = k if group in (-1, 0, None) else group
    if not isinstance(g, int) or isinstance(g, bool):
        raise LowbitError(f"{method} checkpoint {where}: the group size {group!r} is not an integer", "use the config.json that came with the weights")
    if g <= 0 or k % g:
        raise LowbitError(
            f"{method} layer {prefix} in {where}: group size {group} does not divide K={k}",
            "lowbit imports groups that divide the layer's input features",
        )
    if k // g != n_groups:
        raise LowbitError(
            f"{method} layer {prefix} in {where}: {n_groups} scale groups for K={k} and group size {g} (expected {k // g})",
            "use the config.json that came with the weights",
        )
    return g


def scales_f32(s: np.ndarray, name: str, where: Path, method: str) -> np.ndarray:
    if s.dtype.kind != "f":
        raise LowbitError(
            f"{method} tensor '{name}' in {where} is {s.dtype}, scales are floating point", "use the checkpoint as its quantizer wrote it"
        )
    return np.ascontiguousarray(s, dtype=np.float32)  # fp16 / bf16 were widened exactly on reading


def packed_layer(weights: dict, prefix: str, where: Path, method: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(qweight int32, qzeros int32, scales float32) of one GPTQ / AWQ layer, each named in its error."""
    qweight = tensor(weights, prefix + ".qweight", where, method, int32=True)
    qzeros = tensor(weights, prefix + ".qzeros", where, method, int32=True)
    scales = scales_f32(tensor(weights, prefix + ".scales", where, method), prefix + ".scales", where, method)
    return qweight, qzeros, scales


def make_weight(codes, scales, zeros, bits, group, method, prefix, where) -> QuantizedWeight:
    try:
        return QuantizedWeight(np.ascontiguousarray(codes), np.ascontiguousarray(scales), np.ascontiguousarray(zeros), bits, group)
    except ValueError as e:
        raise LowbitError(f"{method} layer {prefix} in {where}: tensors disagree ({e})", "use the checkpoint as its quantizer wrote it") from None
