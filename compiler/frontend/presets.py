"""Built-in models with seeded random weights, made in memory (no download): for tests, examples and
benchmarks at real shapes. Configs are Hugging Face config.json dicts, so presets go through the same
graph builders as imported models; weights keep Hugging Face names."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Preset:
    name: str
    family: str
    config: dict
    about: str
    ternary: bool = False  # linear weights are exactly ternary x per-row scale (BitNet b1.58 style)


def _llama_cfg(h, inter, layers, heads, kv, vocab, **extra):
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": h,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "head_dim": h // heads,
        "vocab_size": vocab,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": 2048,
        "tie_word_embeddings": False,
        **extra,
    }


PRESETS = {
    p.name: p
    for p in (
        Preset("llama-tiny", "llama", _llama_cfg(256, 768, 4, 8, 4, 512), "Llama, 4 layers, hidden 256, GQA 8/4 heads, byte tokens"),
        Preset(
            "bitnet-tiny",
            "llama",
            _llama_cfg(256, 768, 4, 8, 4, 512),
            "Llama shapes with ternary linear weights (BitNet b1.58 style), byte tokens",
            ternary=True,
        ),
        Preset(
            "bert-tiny",
            "bert",
            {
                "architectures": ["BertModel"],
                "model_type": "bert",
                "hidden_size": 128,
                "intermediate_size": 512,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "vocab_size": 512,
                "max_position_embeddings": 512,
                "type_vocab_size": 2,
                "layer_norm_eps": 1e-12,
                "hidden_act": "gelu",
            },
            "BERT encoder, 2 layers, hidden 128, mean pooling, byte tokens",
        ),
        Preset(
            "llama-1b",
            "llama",
            _llama_cfg(
                2048,
                8192,
                16,
                32,
                8,
                128256,
                rope_theta=500000.0,
                tie_word_embeddings=True,
                max_position_embeddings=131072,
                rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
            ),
            "Llama-3.2-1B shapes (1.24 B parameters), random weights, for benchmarks",
        ),
    )
}


def preset_weights(p: Preset, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded weights: N(0, 0.02) matrices like Hugging Face's initializer, norms near 1, small biases."""
    rng = np.random.default_rng(seed)
    c = p.config

    def mat(n, k):  # drawn later, in parallel, each matrix from its own seeded stream
        return _Matrix(n, k)

    def draw(m: _Matrix, seq) -> np.ndarray:
        r = np.random.default_rng(seq)
        w = r.standard_normal((m.n, m.k), dtype=np.float32)
        w *= np.float32(0.02)
        if p.ternary and m.n != c["vocab_size"]:
            t = np.sign(w) * (r.random((m.n, m.k), dtype=np.float32) > 1 / 3)
            scale = np.float32(0.03) * np.exp(r.normal(0, 0.2, (m.n, 1))).astype(np.float32)
            w = (t * scale).astype(np.float32)
        return w

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    def vec(n):
        return (0.02 * rng.standard_normal(n)).astype(np.float32)

    w: dict[str, np.ndarray] = {}
    h, inter = c["hidden_size"], c["intermediate_size"]
    if p.family == "llama":
        hd = c["head_dim"]
        w["model.embed_tokens.weight"] = mat(c["vocab_size"], h)
        for i in range(c["num_hidden_layers"]):
            q = f"model.layers.{i}."
            w[q + "input_layernorm.weight"] = norm(h)
            w[q + "self_attn.q_proj.weight"] = mat(c["num_attention_heads"] * hd, h)
            w[q + "self_attn.k_proj.weight"] = mat(c["num_key_value_heads"] * hd, h)
            w[q + "self_attn.v_proj.weight"] = mat(c["num_key_value_heads"] * hd, h)
            w[q + "self_attn.o_proj.weight"] = mat(h, c["num_attention_heads"] * hd)
            w[q + "post_attention_layernorm.weight"] = norm(h)
            w[q + "mlp.gate_proj.weight"] = mat(inter, h)
            w[q + "mlp.up_proj.weight"] = mat(inter, h)
            w[q + "mlp.down_proj.weight"] = mat(h, inter)
        w["model.norm.weight"] = norm(h)
        if not c["tie_word_embeddings"]:
            w["lm_head.weight"] = mat(c["vocab_size"], h)
    else:
        w["embeddings.word_embeddings.weight"] = mat(c["vocab_size"], h)
        w["embeddings.position_embeddings.weight"] = mat(c["max_position_embeddings"], h)
        w["embeddings.token_type_embeddings.weight"] = mat(c["type_vocab_size"], h)
        w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"] = norm(h), vec(h)
        for i in range(c["num_hidden_layers"]):
            q = f"encoder.layer.{i}."
            for part, (n, k) in {
                "attention.self.query": (h, h),
                "attention.self.key": (h, h),
                "attention.self.value": (h, h),
                "attention.output.dense": (h, h),
                "intermediate.dense": (inter, h),
                "output.dense": (h, inter),
            }.items():
                w[q + part + ".weight"], w[q + part + ".bias"] = mat(n, k), vec(n)
            for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
                w[q + ln + ".weight"], w[q + ln + ".bias"] = norm(h), vec(h)
    # numpy's generators release the GIL while filling, so threads draw the matrices in parallel (llama-1b:
    # 1.2 G samples); one SeedSequence child per matrix, in insertion order, keeps the weights deterministic
    todo = [key for key, v in w.items() if isinstance(v, _Matrix)]
    seqs = np.random.SeedSequence([seed, 0x10B17]).spawn(len(todo))
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for key, arr in zip(todo, pool.map(lambda a: draw(w[a[0]], a[1]), zip(todo, seqs))):
            w[key] = arr
    return w


@dataclass(frozen=True)
class _Matrix:
    n: int
    k: int
