"""Llama family (Llama 2/3, Mistral, Qwen2, BitNet-style ternary Llama): RMSNorm, RoPE, GQA, SwiGLU.

Graph inputs: input_ids i64[S], positions i64[S], past_key.i / past_value.i f32[P, Hkv, D] per layer.
Outputs: logits f32[S, V] and present_key.i / present_value.i f32[P+S, Hkv, D] (the grown KV cache).
Weights keep their Hugging Face names. Nodes of transformer block i carry attrs block=i, and the linears
that quantization may replace carry quantize=True (the LM head and embeddings stay float).
"""

from __future__ import annotations

import numpy as np

from compiler.errors import LowbitError
from compiler.ir import Graph, TensorType

ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "BitNetForCausalLM")


def hparams(cfg: dict) -> dict:
    h = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    return {
        "hidden": h,
        "inter": cfg["intermediate_size"],
        "layers": cfg["num_hidden_layers"],
        "heads": nh,
        "kv_heads": cfg.get("num_key_value_heads") or nh,
        "head_dim": cfg.get("head_dim") or h // nh,
        "vocab": cfg["vocab_size"],
        "eps": float(cfg.get("rms_norm_eps", 1e-6)),
        "theta": float(cfg.get("rope_theta", 10000.0)),
        "rope_scaling": cfg.get("rope_scaling"),
        "tied": bool(cfg.get("tie_word_embeddings", False)),
    }


def build_llama(cfg: dict, w: dict[str, np.ndarray], name: str) -> Graph:
    hp = hparams(cfg)
    nh, nkv, hd, L = hp["heads"], hp["kv_heads"], hp["head_dim"], hp["layers"]
    g = Graph(name)
    g.meta.update(family="llama", causal=True, hparams=hp)

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
        b = dict(block=i)
        pk = g.add_input(f"past_key.{i}", TensorType(("P", nkv, hd)))
        pv = g.add_input(f"past_value.{i}", TensorType(("P", nkv, hd)))
        a = g.add_node("rmsnorm", [x, const(p + ".input_layernorm.weight")], f"l{i}.attn_in", eps=hp["eps"], **b)[0]
        q = linear(a, p + ".self_attn.q_proj", f"l{i}.q", i)
        k = linear(a, p + ".self_attn.k_proj", f"l{i}.k", i)
        v = linear(a, p + ".self_attn.v_proj", f"l{i}.v", i)
        q = g.add_node("reshape", [q], f"l{i}.q_heads", shape=[0, nh, hd], **b)[0]
        k = g.add_node("reshape", [k], f"l{i}.k_heads", shape=[0, nkv, hd], **b)[0]
        v = g.add_node("reshape", [v], f"l{i}.v_heads", shape=[0, nkv, hd], **b)[0]
        q = g.add_node("rope", [q, pos], f"l{i}.q_rot", theta=hp["theta"], scaling=hp["rope_scaling"], **b)[0]
        k = g.add_node("rope", [k, pos], f"l{i}.k_rot", theta=hp["theta"], scaling=hp["rope_scaling"], **b)[0]
        kc = g.add_node("concat", [pk, k], f"present_key.{i}", axis=0, **b)[0]
        vc = g.add_node("concat", [pv, v], f"present_value.{i}", axis=0, **b)[0]
        present += [kc, vc]
        o = g.add_node("attention", [q, kc, vc], f"l{i}.attn", causal=True, scale=1.0 / float(np.sqrt(hd)), **b)[0]
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


def empty_cache(g: Graph) -> dict[str, np.ndarray]:
    """past_key/past_value inputs for an empty KV cache (P = 0)."""
    hp = g.meta["hparams"]
    z = np.zeros((0, hp["kv_heads"], hp["head_dim"]), np.float32)
    return {k: z for k in g.inputs if k.startswith(("past_key.", "past_value."))}
