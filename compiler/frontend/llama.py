"""Llama family (Llama 2/3, Mistral, Qwen2, BitNet-style ternary Llama): RMSNorm, RoPE, GQA, SwiGLU.

Graph inputs: input_ids i64[S], positions i64[S], past_key.i / past_value.i per layer. Outputs: logits
f32[S, V] and present_key.i / present_value.i. Two forms of the KV cache (`kv`, default the
LOWBIT_KV_CACHE knob; graph meta "kv"):
- "concat": past f32[P, Hkv, D], present f32[P+S, Hkv, D], the grown cache (a copy of it every step);
- "inplace": past f32[C, Hkv, D], a cache of C rows allocated once by the caller; `kv_write` sets rows
  positions[0..S) (in place where the backend can) and present is that cache; `cache_attention` reads rows
  0..positions[i] only, so C may be any capacity above the last position.
Weights keep their Hugging Face names. Nodes of transformer block i carry attrs block=i, and the linears
that quantization may replace carry quantize=True (the LM head and embeddings stay float).
"""

from __future__ import annotations

import numpy as np

from compiler.errors import LowbitError
from compiler.frontend.validate import MATCH, Fields, check_rope_scaling, check_tensors
from compiler.ir import Graph, TensorType
from compiler.knobs import KV_CACHE

ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "BitNetForCausalLM")
KV_FORMS = ("concat", "inplace")


def hparams(cfg: dict, where="the model config") -> dict:
    """The graph's hyperparameters, every field checked for type and range (errors name `where`)."""
    f = Fields(cfg, where)
    h = f.integer("hidden_size")
    nh = f.integer("num_attention_heads")
    nkv = f.integer("num_key_value_heads", nh)
    hd = f.integer("head_dim", None)
    if hd is None:
        if h % nh:
            raise LowbitError(f"{where}: hidden_size {h} is not divisible by num_attention_heads {nh}", MATCH)
        hd = h // nh
    if nh % nkv:
        raise LowbitError(f"{where}: num_key_value_heads {nkv} does not divide num_attention_heads {nh}", MATCH)
    if hd % 2:
        raise LowbitError(f"{where}: the head size {hd} is odd (hidden_size / num_attention_heads, or head_dim)", "RoPE rotates pairs of dimensions: use the model's own config.json")
    f.integer("max_position_embeddings", None)
    return {
        "hidden": h,
        "inter": f.integer("intermediate_size"),
        "layers": f.integer("num_hidden_layers"),
        "heads": nh,
        "kv_heads": nkv,
        "head_dim": hd,
        "vocab": f.integer("vocab_size"),
        "eps": f.number("rms_norm_eps", 1e-6, hi=1.0),
        "theta": f.number("rope_theta", 10000.0),
        "rope_scaling": check_rope_scaling(cfg.get("rope_scaling"), where),
        "tied": f.flag("tie_word_embeddings", False),
    }


def tensor_shapes(hp: dict) -> tuple[dict, dict]:
    """(top-level tensor -> (shape, why), block tensor suffix -> (shape, why)) of what the graph reads; why
    names the config fields each shape follows from."""
    h, i, v, nh, nkv, hd = hp["hidden"], hp["inter"], hp["vocab"], hp["heads"], hp["kv_heads"], hp["head_dim"]
    H, I, V = f"hidden_size {h}", f"intermediate_size {i}", f"vocab_size {v}"
    Q, KV = f"num_attention_heads {nh} x head_dim {hd}", f"num_key_value_heads {nkv} x head_dim {hd}"
    top = {"model.embed_tokens.weight": ((v, h), f"{V}, {H}"), "model.norm.weight": ((h,), H), "lm_head.weight": ((v, h), f"{V}, {H}")}
    block = {"input_layernorm.weight": ((h,), H), "post_attention_layernorm.weight": ((h,), H)}
    for name, n, k, why_n, why_k in (("self_attn.q_proj", nh * hd, h, Q, H), ("self_attn.k_proj", nkv * hd, h, KV, H), ("self_attn.v_proj", nkv * hd, h, KV, H),
                                     ("self_attn.o_proj", h, nh * hd, H, Q), ("mlp.gate_proj", i, h, I, H), ("mlp.up_proj", i, h, I, H), ("mlp.down_proj", h, i, H, I)):
        block[name + ".weight"] = ((n, k), f"{why_n}, {why_k}")
        block[name + ".bias"] = ((n,), why_n)
    return top, block


def check_weights(hp: dict, cfg: dict, w: dict[str, np.ndarray], where, origins: dict | None = None) -> None:
    """Every tensor build_llama reads has the shape `hp` implies (compiler.frontend.validate.check_tensors)."""
    top, block = tensor_shapes(hp)
    check_tensors(w, top, block, "model.layers.", hp["layers"], where, origins)


def build_llama(cfg: dict, w: dict[str, np.ndarray], name: str, kv: str | None = None) -> Graph:
    hp = hparams(cfg)
    nh, nkv, hd, L = hp["heads"], hp["kv_heads"], hp["head_dim"], hp["layers"]
    kv = kv or KV_CACHE.get()
    assert kv in KV_FORMS, kv
    g = Graph(name)
    g.meta.update(family="llama", causal=True, hparams=hp, kv=kv)

    def const(key: str) -> str:
        if key not in w:
            raise LowbitError(f"weight '{key}' is missing from the model files", "check the checkpoint is complete and matches config.json")
        return key if key in g.consts else g.add_const(key, w[key])

    def linear(x: str, prefix: str, out: str, block: int) -> str:
        ins = [x, const(prefix + ".weight")]
        if prefix + ".bias" in w:
            ins.append(const(prefix + ".bias"))
        return g.add_node("linear", ins, out, block=block, quantize=True)[0]

    ids = g.add_input("input_ids", TensorType(("S",), "i64"))
    pos = g.add_input("positions", TensorType(("S",), "i64"))
    x = g.add_node("embedding", [ids, const("model.embed_tokens.weight")], "embed")[0]
    present = []
    for i in range(L):
        p = f"model.layers.{i}"
        b = {"block": i}
        rows = "C" if kv == "inplace" else "P"
        pk = g.add_input(f"past_key.{i}", TensorType((rows, nkv, hd)))
        pv = g.add_input(f"past_value.{i}", TensorType((rows, nkv, hd)))
        a = g.add_node("rmsnorm", [x, const(p + ".input_layernorm.weight")], f"l{i}.attn_in", eps=hp["eps"], **b)[0]
        q = linear(a, p + ".self_attn.q_proj", f"l{i}.q", i)
        k = linear(a, p + ".self_attn.k_proj", f"l{i}.k", i)
        v = linear(a, p + ".self_attn.v_proj", f"l{i}.v", i)
        q = g.add_node("reshape", [q], f"l{i}.q_heads", shape=[0, nh, hd], **b)[0]
        k = g.add_node("reshape", [k], f"l{i}.k_heads", shape=[0, nkv, hd], **b)[0]
        v = g.add_node("reshape", [v], f"l{i}.v_heads", shape=[0, nkv, hd], **b)[0]
        q = g.add_node("rope", [q, pos], f"l{i}.q_rot", theta=hp["theta"], scaling=hp["rope_scaling"], **b)[0]
        k = g.add_node("rope", [k, pos], f"l{i}.k_rot", theta=hp["theta"], scaling=hp["rope_scaling"], **b)[0]
        scale = 1.0 / float(np.sqrt(hd))
        if kv == "inplace":
            kc = g.add_node("kv_write", [pk, k, pos], f"present_key.{i}", **b)[0]
            vc = g.add_node("kv_write", [pv, v, pos], f"present_value.{i}", **b)[0]
            o = g.add_node("cache_attention", [q, kc, vc, pos], f"l{i}.attn", scale=scale, **b)[0]
        else:
            kc = g.add_node("concat", [pk, k], f"present_key.{i}", axis=0, **b)[0]
            vc = g.add_node("concat", [pv, v], f"present_value.{i}", axis=0, **b)[0]
            o = g.add_node("attention", [q, kc, vc], f"l{i}.attn", causal=True, scale=scale, **b)[0]
        present += [kc, vc]
        o = g.add_node("reshape", [o], f"l{i}.attn_flat", shape=[0, nh * hd], **b)[0]
        o = linear(o, p + ".self_attn.o_proj", f"l{i}.attn_out", i)
        x = g.add_node("add", [x, o], f"l{i}.resid1", **b)[0]
        m = g.add_node("rmsnorm", [x, const(p + ".post_attention_layernorm.weight")], f"l{i}.mlp_in", eps=hp["eps"], **b)[0]
        gate = linear(m, p + ".mlp.gate_proj", f"l{i}.gate", i)
        up = linear(m, p + ".mlp.up_proj", f"l{i}.up", i)
        gate = g.add_node("silu", [gate], f"l{i}.gate_act", **b)[0]
        hmid = g.add_node("mul", [gate, up], f"l{i}.swiglu", **b)[0]
        d = linear(hmid, p + ".mlp.down_proj", f"l{i}.down", i)
        x = g.add_node("add", [x, d], f"l{i}.resid2", **b)[0]
    x = g.add_node("rmsnorm", [x, const("model.norm.weight")], "final_norm", eps=hp["eps"])[0]
    head = "model.embed_tokens.weight" if hp["tied"] or "lm_head.weight" not in w else "lm_head.weight"
    logits = g.add_node("linear", [x, const(head)], "logits")[0]
    g.set_outputs([logits, *present])
    return g


def empty_cache(g: Graph, capacity: int = 0) -> dict[str, np.ndarray]:
    """past_key/past_value inputs for an empty KV cache: P = 0 rows (concat form), or `capacity` zero rows,
    one array per input since the in-place form writes into them (inplace form)."""
    from compiler.ir import DTYPES

    rows = capacity if g.meta.get("kv") == "inplace" else 0
    # each input's own type: the float cache f32[rows, H, D], or a quantized cache's codes and scales (compiler.passes.kv_quant)
    # (a quantized cache's float window rings have a fixed row count: their own; -kc key parameters one row per 32)
    from compiler.kvformat import cache_rows

    return {k: np.zeros((cache_rows(t.shape[0], rows), *t.shape[1:]), DTYPES[t.dtype]) for k, t in g.inputs.items() if k.startswith("past_")}
