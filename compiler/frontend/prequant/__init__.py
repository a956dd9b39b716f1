"""Pre-quantized Hugging Face checkpoints (config.json with a `quantization_config`): GPTQ, AWQ,
compressed-tensors pack-quantized and float-quantized (FP8), and transformers' fine-grained FP8 (`fp8`), read from
their published layouts without re-quantization.

Each quantized linear "<prefix>" becomes an exact `QuantizedWeight` keyed by its float const name
"<prefix>.weight", and its dequantized float32 weight s * (q - z) replaces the packed tensors in the weight
dict, so the family builder sees a float checkpoint (the float of the checkpoint). Everything else (embeddings,
norms, an unquantized head, biases) passes through unchanged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compiler.errors import LowbitError
from compiler.frontend.prequant import awq, compressed_tensors, fp8, gptq
from compiler.frontend.prequant.common import Layer
from compiler.quant.qweight import QuantizedWeight

IMPORTERS = {"gptq": gptq.import_gptq, "awq": awq.import_awq, "compressed-tensors": compressed_tensors.import_ct, "fp8": fp8.import_hf_fp8}

_LLAMA_LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def import_prequant(cfg: dict, weights: dict[str, np.ndarray], where: Path, family: str) -> tuple[dict, dict, dict]:
    """(weights with float "<prefix>.weight" for every quantized linear, prequant, prequant_types)."""
    qc = cfg.get("quantization_config")
    if not isinstance(qc, dict):
        raise LowbitError(f"quantization_config in {where / 'config.json'} is not an object", "use the config.json that came with the weights")
    method = str(qc.get("quant_method", "")).lower()
    if method not in IMPORTERS:
        raise LowbitError(
            f"unsupported quant_method {qc.get('quant_method')!r} in {where / 'config.json'}",
            f"lowbit imports {', '.join(sorted(IMPORTERS))} checkpoints; use the model's float checkpoint otherwise",
        )
    layers: dict[str, Layer] = IMPORTERS[method](qc, weights, where)
    expected = _expected_shapes(cfg) if family == "llama" else {}
    out = dict(weights)
    prequant: dict[str, QuantizedWeight] = {}
    types: dict[str, str] = {}
    for prefix, layer in layers.items():
        qw = layer.weight
        want, why = next((s for suffix, s in expected.items() if prefix.endswith(suffix)), (None, ""))
        if want is not None and qw.shape != want:
            raise LowbitError(
                f"{method} layer {prefix} in {where} holds a [{qw.shape[0]}, {qw.shape[1]}] weight, config.json implies [{want[0]}, {want[1]}] ({why})",
                "use the config.json that came with the weights",
            )
        for k in layer.consumed:
            out.pop(k, None)
        name = prefix + ".weight"
        out[name] = qw.dequantize()
        prequant[name] = qw
        types[name] = layer.type_name
    return out, prequant, types


def _expected_shapes(cfg: dict) -> dict[str, tuple[tuple[int, int], str]]:
    """([N, K], the config fields they follow from) of each llama-family linear."""
    from compiler.frontend.llama import hparams, tensor_shapes

    block = tensor_shapes(hparams(cfg))[1]
    return {"." + name: block[name + ".weight"] for name in _LLAMA_LINEARS}
