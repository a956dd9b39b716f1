"""Writers of small pre-quantized checkpoints in the published layouts (GPTQ, AWQ GEMM, compressed-tensors
pack-quantized), independent of the importer: each packs the integer codes the test chose into int32 words
the way the format's own quantizer does (AutoGPTQ's row loop, AutoAWQ's order map, compressed-tensors'
strided fields), in Python integers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)


def tiny_config(model_type: str = "llama", **extra) -> dict:
    arch = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}[model_type]
    return {
        "architectures": [arch],
        "model_type": model_type,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "vocab_size": 96,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": 256,
        "tie_word_embeddings": False,
        **extra,
    }


def linear_shapes(cfg: dict) -> dict[str, tuple[int, int]]:
    h, i = cfg["hidden_size"], cfg["intermediate_size"]
    q, kv = cfg["num_attention_heads"] * cfg["head_dim"], cfg["num_key_value_heads"] * cfg["head_dim"]
    shapes = ((q, h), (kv, h), (kv, h), (h, q), (i, h), (i, h), (h, i))
    return {f"model.layers.{layer}.{name}": s for layer in range(cfg["num_hidden_layers"]) for name, s in zip(LINEARS, shapes)}


@dataclass
class Written:
    codes: np.ndarray  # uint8 [N, K], our unsigned codes
    scales: np.ndarray  # float32 [N, J], the fp16 values written
    zeros: np.ndarray  # uint8 [N, J], our unsigned zero points
    group: int


def choose(rng, n: int, k: int, bits: int, group: int, symmetric: bool, scale_dtype=np.float16) -> Written:
    j = k // group
    codes = rng.integers(0, 1 << bits, size=(n, k)).astype(np.uint8)
    zeros = np.full((n, j), 1 << (bits - 1), np.uint8) if symmetric else rng.integers(0, 1 << bits, size=(n, j)).astype(np.uint8)
    scales = (rng.uniform(0.5, 2.0, size=(n, j)) / (1 << bits)).astype(scale_dtype).astype(np.float32)
    return Written(codes, scales, zeros, group)


def _words(vals: np.ndarray) -> np.ndarray:
    """Python ints in [0, 2^32) -> int32 words (bit pattern kept)."""
    return np.asarray(vals, dtype=np.int64).astype(np.uint32).view(np.int32)


# ---- GPTQ (AutoGPTQ's pack loop, rows of K for qweight; the same along N for qzeros)


def gptq_pack_rows(intweight: np.ndarray, bits: int) -> np.ndarray:
    """AutoGPTQ QuantLinear.pack: intweight [K, N] -> qweight [K * bits / 32, N]."""
    iw = intweight.astype(np.int64)
    rows = iw.shape[0] * bits // 32
    q = np.zeros((rows, iw.shape[1]), np.int64)
    i = row = 0
    while row < rows:
        if bits in (2, 4, 8):
            for j in range(i, i + 32 // bits):
                q[row] |= iw[j] << (bits * (j - i))
            i += 32 // bits
            row += 1
        else:  # 3 bits: 32 codes in 3 words, two codes split across word boundaries
            for j in range(i, i + 10):
                q[row] |= iw[j] << (3 * (j - i))
            i += 10
            q[row] |= (iw[i] << 30) & 0xFFFFFFFF
            row += 1
            q[row] |= (iw[i] >> 2) & 1
            i += 1
            for j in range(i, i + 10):
                q[row] |= iw[j] << (3 * (j - i) + 1)
            i += 10
            q[row] |= (iw[i] << 31) & 0xFFFFFFFF
            row += 1
            q[row] |= (iw[i] >> 1) & 0x3
            i += 1
            for j in range(i, i + 10):
                q[row] |= iw[j] << (3 * (j - i) + 2)
            i += 10
            row += 1
    return _words(q)


def gptq_tensors(prefix: str, w: Written, bits: int, v1: bool, g_idx: np.ndarray | None = None) -> dict[str, np.ndarray]:
    k = w.codes.shape[1]
    qweight = gptq_pack_rows(w.codes.T, bits)
    if v1 and bits == 3:
        qzeros = gptq_pack_rows(((w.zeros.astype(np.int64) - 1) & 7), bits).T  # [N, J] packed along N -> [J, N*3/32]
    else:
        qzeros = gptq_pack_rows(w.zeros, bits).T
        if v1:  # GPTQModel saves v1 by subtracting 1 from every field with one word-wide subtract
            one = sum(1 << (bits * i) for i in range(32 // bits))
            qzeros = _words((qzeros.view(np.uint32).astype(np.int64) - one) & 0xFFFFFFFF)
    g = np.arange(k, dtype=np.int32) // w.group if g_idx is None else g_idx
    return {
        prefix + ".qweight": qweight,
        prefix + ".qzeros": np.ascontiguousarray(qzeros),
        prefix + ".scales": w.scales.T.astype(np.float16),
        prefix + ".g_idx": g.astype(np.int32),
    }


# ---- AWQ GEMM (AutoAWQ WQLinear_GEMM.from_linear's order map)


def awq_pack_cols(intweight: np.ndarray) -> np.ndarray:
    """[R, N] 4-bit codes -> [R, N / 8] words, nibble i of word c = column 8 c + AWQ_ORDER[i]."""
    iw = intweight.astype(np.int64)
    q = np.zeros((iw.shape[0], iw.shape[1] // 8), np.int64)
    for col in range(iw.shape[1] // 8):
        for i in range(8):
            q[:, col] |= iw[:, col * 8 + AWQ_ORDER[i]] << (i * 4)
    return _words(q)


def awq_tensors(prefix: str, w: Written) -> dict[str, np.ndarray]:
    return {
        prefix + ".qweight": awq_pack_cols(w.codes.T),
        prefix + ".qzeros": awq_pack_cols(w.zeros.T),
        prefix + ".scales": w.scales.T.astype(np.float16),
    }


# ---- compressed-tensors pack-quantized (pack_to_int32: signed int8 values + 2^(b-1), 32 // b per word)


def ct_pack(signed: np.ndarray, bits: int, packed_dim: int = 1) -> np.ndarray:
    v = np.moveaxis(signed.astype(np.int64) + (1 << (bits - 1)), packed_dim, 1)
    per = 32 // bits
    size = -(-v.shape[1] // per)
    v = np.pad(v, [(0, 0), (0, size * per - v.shape[1])])
    out = np.zeros((v.shape[0], size), np.int64)
    for i in range(per):
        out |= v[:, i::per] << (bits * i)
    return np.ascontiguousarray(np.moveaxis(_words(out), 1, packed_dim))


def ct_tensors(prefix: str, w: Written, bits: int, symmetric: bool, packed_zp: bool = True, scale_dtype=np.float16) -> dict[str, np.ndarray]:
    off = 1 << (bits - 1)
    n, k = w.codes.shape
    t = {
        prefix + ".weight_packed": ct_pack(w.codes.astype(np.int64) - off, bits),
        prefix + ".weight_scale": w.scales.astype(scale_dtype),
        prefix + ".weight_shape": np.array([n, k], np.int64),
    }
    if not symmetric:
        zp = w.zeros.astype(np.int64) - off
        t[prefix + ".weight_zero_point"] = ct_pack(zp, bits, packed_dim=0) if packed_zp else zp.astype(np.int8)
    return t


def quant_config(method: str, bits: int, group: int, symmetric: bool = True, **extra) -> dict:
    if method == "gptq":
        return {"quant_method": "gptq", "bits": bits, "group_size": group, "sym": symmetric, "desc_act": False, "checkpoint_format": "gptq", **extra}
    if method == "awq":
        return {
            "quant_method": "awq",
            "bits": bits,
            "group_size": group,
            "zero_point": True,
            "version": "gemm",
            "modules_to_not_convert": None,
            **extra,
        }
    strategy = {"strategy": "group", "group_size": group} if group > 0 else {"strategy": "channel", "group_size": None}
    return {
        "quant_method": "compressed-tensors",
        "format": "pack-quantized",
        "quantization_status": "compressed",
        "config_groups": {
            "group_0": {"targets": ["Linear"], "weights": {"num_bits": bits, "type": "int", "symmetric": symmetric, "dynamic": False, **strategy}}
        },
        "ignore": ["lm_head"],
        **extra,
    }


def write_prequant_dir(
    path: Path,
    method: str,
    bits: int = 4,
    group: int = 32,
    symmetric: bool = False,
    *,
    v1: bool = True,
    model_type: str = "llama",
    bias: bool = False,
    seed: int = 0,
    qc_extra: dict | None = None,
    cfg_extra: dict | None = None,
    packed_zp: bool = True,
) -> tuple[dict[str, Written], dict[str, np.ndarray]]:
    """A tiny llama (2 layers, hidden 64) whose linears are stored in `method`'s layout. Returns the codes,
    scales and zeros written per linear prefix, and the float tensors written (embeddings, norms, head, biases)."""
    rng = np.random.default_rng(seed)
    cfg = tiny_config(model_type, **(cfg_extra or {}))
    qc = quant_config(method, bits, group, symmetric, **(qc_extra or {}))
    if method == "gptq" and not v1:
        qc["checkpoint_format"] = "gptq_v2"
    cfg["quantization_config"] = qc
    h, v = cfg["hidden_size"], cfg["vocab_size"]
    floats = {
        "model.embed_tokens.weight": rng.normal(0, 1, (v, h)),
        "lm_head.weight": rng.normal(0, 0.1, (v, h)),
        "model.norm.weight": rng.uniform(0.5, 1.5, h),
    }
    for layer in range(cfg["num_hidden_layers"]):
        for norm in ("input_layernorm", "post_attention_layernorm"):
            floats[f"model.layers.{layer}.{norm}.weight"] = rng.uniform(0.5, 1.5, h)
    floats = {k: a.astype(np.float16).astype(np.float32) for k, a in floats.items()}
    written, tensors = {}, {}
    for prefix, (n, k) in linear_shapes(cfg).items():
        g = k if group <= 0 else group
        w = choose(rng, n, k, bits, g, symmetric)
        written[prefix] = w
        if method == "gptq":
            tensors.update(gptq_tensors(prefix, w, bits, v1))
        elif method == "awq":
            tensors.update(awq_tensors(prefix, w))
        else:
            tensors.update(ct_tensors(prefix, w, bits, symmetric, packed_zp=packed_zp))
        if bias and prefix.endswith(("q_proj", "k_proj", "v_proj")):
            floats[prefix + ".bias"] = rng.normal(0, 0.1, n).astype(np.float16).astype(np.float32)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(cfg))
    save_tensors(path, {**tensors, **{k: a.astype(np.float16) for k, a in floats.items()}})
    return written, floats


def save_tensors(path: Path, tensors: dict[str, np.ndarray]):
    save_file({k: np.ascontiguousarray(a) for k, a in tensors.items()}, str(path / "model.safetensors"))  # the writer ignores strides
