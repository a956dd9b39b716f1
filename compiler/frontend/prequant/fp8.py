"""FP8 (E4M3) checkpoints, imported exactly: the stored bytes are the codes of lowbit's fp8 formats.

- Hugging Face `quant_method: "fp8"` (transformers' fine-grained FP8; DeepSeek-V3, Qwen3-*-FP8): per linear
  "<prefix>", `weight` F8_E4M3 [N, K] and `weight_scale_inv` float [ceil(N / bn), ceil(K / bk)] for
  `weight_block_size` [bn, bk] (usually [128, 128]); w = e4m3(weight) * weight_scale_inv[n // bn, k // bk].
  Without `weight_block_size` the scale is one per tensor.
- compressed-tensors `float-quantized` (llm-compressor's FP8 / FP8_DYNAMIC / FP8_BLOCK schemes): `weight`
  F8_E4M3 [N, K] and `weight_scale` [1] (tensor), [N, 1] (channel), [N, K / g] (group) or [ceil(N / bn), K / bk]
  (block, `block_structure` [bn, bk]); w = e4m3(weight) * weight_scale.

The contract's scales are one per (row, group along K), so a block's scale is repeated over its rows; K must be a
multiple of the block's width (the scale group). 128 x 128 blocks are the `fp8b` format, other shapes `fp8g<bk>`
(or `fp8`, per channel). The NaN codes (0x7f, 0xff) are refused: a saturating FP8 quantizer never writes them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compiler.errors import LowbitError
from compiler.frontend.prequant.common import Layer, scales_f32, tensor
from compiler.quant.floatfmt import BLOCK_ROWS, table
from compiler.quant.qweight import QuantizedWeight

HF = "fp8"
USE_AS_WRITTEN = "use the checkpoint as its quantizer wrote it"


def _codes(weights: dict, name: str, where: Path, method: str) -> np.ndarray:
    w = tensor(weights, name, where, method)
    if w.dtype != np.uint8 or w.ndim != 2:
        raise LowbitError(f"{method} tensor '{name}' in {where} is {w.dtype} {list(w.shape)}, expected F8_E4M3 [N, K]", USE_AS_WRITTEN)
    if np.any((w & 0x7F) == 0x7F):
        raise LowbitError(f"{method} tensor '{name}' in {where} holds NaN E4M3 codes", "re-quantize the model: its FP8 weights are damaged")
    return np.ascontiguousarray(w).view(np.uint8)  # (without the reader's stored-type note)


def fp8_weight(codes: np.ndarray, scale: np.ndarray, block: tuple[int, int] | None, method: str, prefix: str, where: Path) -> tuple[QuantizedWeight, str]:
    """(the QuantizedWeight, its stored-type name) of E4M3 codes [N, K] with `scale`: one value (tensor), [N, 1]
    (channel), [N, J] (groups of K / J) or, with block (bn, bk), [ceil(N / bn), ceil(K / bk)]."""
    n, k = codes.shape
    s = np.asarray(scale, np.float32)
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise LowbitError(f"{method} layer {prefix} in {where} has scales that are not positive finite numbers", USE_AS_WRITTEN)
    if block is not None:
        bn, bk = block
        want = (-(-n // bn), -(-k // bk))
        if s.reshape(-1).size == 1 and want == (1, 1):
            s = s.reshape(1, 1)
        if s.shape != want:
            raise LowbitError(f"{method} layer {prefix} in {where}: block scales {list(s.shape)} for a [{n}, {k}] weight in {bn} x {bk} blocks (expected {list(want)})", USE_AS_WRITTEN)
        if k % bk:
            raise LowbitError(f"{method} layer {prefix} in {where}: K={k} is not a multiple of the {bk}-wide scale blocks",
                              "lowbit imports FP8 blocks that tile the input features; use a per-channel FP8 checkpoint for this model")
        full = np.repeat(s, bn, axis=0)[:n]
        g, fp = bk, "fp8b" if (bn, bk) == (BLOCK_ROWS, 128) else "fp8"
        kind = f"block{bn}x{bk}"
    elif s.reshape(-1).size == 1:
        full, g, fp, kind = np.full((n, 1), s.reshape(-1)[0], np.float32), k, "fp8", "tensor"
    elif s.ndim == 2 and s.shape[0] == n and s.shape[1] >= 1 and k % s.shape[1] == 0:
        full, g, fp = s, k // s.shape[1], "fp8"
        kind = "channel" if g == k else f"g{g}"
    else:
        raise LowbitError(f"{method} layer {prefix} in {where}: scale {list(s.shape)} does not fit a [{n}, {k}] weight", USE_AS_WRITTEN)
    j = k // g
    qw = QuantizedWeight(codes, np.ascontiguousarray(full, np.float32), np.zeros((n, j), np.uint8), 8, g, table=table("fp8"), fp=fp)
    return qw, f"{method}-e4m3-{kind}"


def _block(value, key: str, where: Path, method: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        raise LowbitError(f"{method} checkpoint {where}: quantization_config {key} is {value!r}, expected [rows, columns]", "use the config.json that came with the weights")
    return value[0], value[1]


def import_hf_fp8(qc: dict, weights: dict, where: Path) -> dict[str, Layer]:
    fmt = str(qc.get("fmt") or "e4m3").lower()
    if fmt != "e4m3":
        raise LowbitError(f"{HF} checkpoint {where} stores {fmt} weights", "lowbit imports E4M3 FP8 weights (fmt 'e4m3')")
    block = _block(qc.get("weight_block_size"), "weight_block_size", where, HF)
    layers = {}
    for name in sorted(k for k in weights if k.endswith(".weight_scale_inv")):
        p = name[: -len(".weight_scale_inv")]
        codes = _codes(weights, p + ".weight", where, HF)
        scale = scales_f32(weights[name], name, where, HF)
        qw, kind = fp8_weight(codes, scale, block, HF, p, where)
        layers[p] = Layer(qw, kind, [p + ".weight", name])
    if not layers:
        raise LowbitError(f"{HF} checkpoint {where} has no '<layer>.weight_scale_inv' tensors", "check the checkpoint is complete (every shard downloaded)")
    return layers


def import_ct_float(weights: dict, where: Path, scheme, method: str) -> dict[str, Layer]:
    """compressed-tensors float-quantized layers: every '<p>.weight' stored as F8_E4M3 with a '<p>.weight_scale';
    scheme(prefix) gives that layer's weights arguments."""
    layers = {}
    for name in sorted(k for k in weights if k.endswith(".weight_scale")):
        p = name[: -len(".weight_scale")]
        args = scheme(p)
        if str(args.get("type", "float")) != "float" or args.get("num_bits", 8) != 8:
            raise LowbitError(f"{method} layer {p} in {where} has {args.get('num_bits')}-bit {args.get('type')} weights in the float-quantized format",
                              "lowbit imports 8-bit float (E4M3) weights from float-quantized checkpoints")
        strategy = str(args.get("strategy") or "tensor")
        if strategy not in ("tensor", "channel", "group", "block"):
            raise LowbitError(f"{method} checkpoint {where} has strategy {strategy!r}", "lowbit imports the tensor, channel, group and block strategies")
        block = _block(args.get("block_structure"), "block_structure", where, method) if strategy == "block" else None
        if strategy == "block" and block is None:
            raise LowbitError(f"{method} layer {p} in {where} has the block strategy without block_structure", "use the config.json that came with the weights")
        codes = _codes(weights, p + ".weight", where, method)
        scale = scales_f32(weights[name], name, where, method)
        qw, kind = fp8_weight(codes, scale, block, method, p, where)
        if strategy == "group" and qw.group_size != args.get("group_size"):
            raise LowbitError(f"{method} layer {p} in {where}: weight_scale {list(scale.shape)} holds groups of {qw.group_size}, config says {args.get('group_size')}",
                              "use the config.json that came with the weights")
        layers[p] = Layer(qw, kind, [p + ".weight", name] + [p + s for s in (".weight_zero_point", ".input_scale") if p + s in weights])
    return layers
