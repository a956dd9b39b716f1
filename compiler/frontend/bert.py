"""BERT family (BERT, MiniLM, sentence-transformers encoders): LayerNorm, GELU, absolute positions,
mean pooling.

Graph inputs: input_ids i64[S], positions i64[S] (0..S-1). Outputs: last_hidden f32[S, H] and
embedding f32[H] (mean pooled over the sequence; L2-normalized when the sentence-transformers config asks).
One sentence per call, so no padding or attention mask is needed. Token type 0 throughout.
"""

from __future__ import annotations

import numpy as np

from compiler.errors import LowbitError
from compiler.frontend.validate import MATCH, Fields, check_tensors
from compiler.ir import Graph, TensorType

ARCHITECTURES = ("BertModel", "BertForMaskedLM", "BertForPreTraining")


def hparams(cfg: dict, where="the model config") -> dict:
    """The graph's hyperparameters, every field checked for type and range (errors name `where`)."""
    f = Fields(cfg, where)
    h, nh = f.integer("hidden_size"), f.integer("num_attention_heads")
    if h % nh:
        raise LowbitError(f"{where}: hidden_size {h} is not divisible by num_attention_heads {nh}", MATCH)
    act = f.text("hidden_act", "gelu")
    if act not in ("gelu", "gelu_new", "gelu_pytorch_tanh"):
        raise LowbitError(f"unsupported BERT activation '{act}' in {where}", "lowbit supports gelu and gelu_new (tanh)")
    pos = f.text("position_embedding_type", "absolute")
    if pos != "absolute":
        raise LowbitError(f"{where}: position_embedding_type '{pos}' is not supported", "lowbit's BERT reads absolute position embeddings")
    return {
        "hidden": h,
        "heads": nh,
        "head_dim": h // nh,
        "layers": f.integer("num_hidden_layers"),
        "inter": f.integer("intermediate_size"),
        "vocab": f.integer("vocab_size"),
        "max_positions": f.integer("max_position_embeddings", 512),
        "eps": f.number("layer_norm_eps", 1e-12, hi=1.0),
        "gelu": "none" if act == "gelu" else "tanh",
        "normalize": f.flag("normalize_embeddings", False),
    }


def canonical_name(k: str) -> str:
    """Drop a leading 'bert.' and map old gamma/beta LayerNorm names to weight/bias."""
    k = k.removeprefix("bert.")
    return k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")


def _canonical(w: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {canonical_name(k): v for k, v in w.items()}


def tensor_shapes(hp: dict, type_vocab: int = 2) -> tuple[dict, dict]:
    """(top-level tensor -> (shape, why), block tensor suffix -> (shape, why)) of what build_bert reads,
    under canonical names; why names the config fields each shape follows from."""
    h, i, v, p = hp["hidden"], hp["inter"], hp["vocab"], hp["max_positions"]
    H, I = f"hidden_size {h}", f"intermediate_size {i}"
    top = {
        "embeddings.word_embeddings.weight": ((v, h), f"vocab_size {v}, {H}"),
        "embeddings.position_embeddings.weight": ((p, h), f"max_position_embeddings {p}, {H}"),
        "embeddings.token_type_embeddings.weight": ((type_vocab, h), f"type_vocab_size {type_vocab}, {H}"),
        "embeddings.LayerNorm.weight": ((h,), H),
        "embeddings.LayerNorm.bias": ((h,), H),
    }
    block = {}
    for name, n, k, why_n, why_k in (("attention.self.query", h, h, H, H), ("attention.self.key", h, h, H, H), ("attention.self.value", h, h, H, H),
                                     ("attention.output.dense", h, h, H, H), ("intermediate.dense", i, h, I, H), ("output.dense", h, i, H, I)):
        block[name + ".weight"] = ((n, k), f"{why_n}, {why_k}")
        block[name + ".bias"] = ((n,), why_n)
    for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
        block[ln + ".weight"] = block[ln + ".bias"] = ((h,), H)
    return top, block


def check_weights(hp: dict, cfg: dict, weights: dict[str, np.ndarray], where, origins: dict | None = None) -> None:
    """Every tensor build_bert reads has the shape the config implies (compiler.frontend.validate.check_tensors)."""
    top, block = tensor_shapes(hp, Fields(cfg, where).integer("type_vocab_size", 2))
    names = {canonical_name(k): k for k in weights}
    src = {c: (origins or {}).get(k) for c, k in names.items()}
    check_tensors({c: weights[k] for c, k in names.items()}, top, block, "encoder.layer.", hp["layers"], where, src)


def build_bert(cfg: dict, weights: dict[str, np.ndarray], name: str) -> Graph:
    hp = hparams(cfg)
    w = _canonical(weights)
    h, nh, hd = hp["hidden"], hp["heads"], hp["head_dim"]
    g = Graph(name)
    g.meta.update(family="bert", causal=False, hparams=hp)

    def const(key: str) -> str:
        if key not in w:
            raise LowbitError(f"weight '{key}' is missing from the model files", "check the checkpoint is complete and matches config.json")
        return key if key in g.consts else g.add_const(key, w[key])

    def linear(x, prefix, out, block):
        return g.add_node("linear", [x, const(prefix + ".weight"), const(prefix + ".bias")], out, block=block, quantize=True)[0]

    def layernorm(x, prefix, out, **attrs):
        return g.add_node("layernorm", [x, const(prefix + ".weight"), const(prefix + ".bias")], out, eps=hp["eps"], **attrs)[0]

    ids = g.add_input("input_ids", TensorType(("S",), "i64"))
    pos = g.add_input("positions", TensorType(("S",), "i64"))
    tok = g.add_node("embedding", [ids, const("embeddings.word_embeddings.weight")], "tok_embed")[0]
    pe = g.add_node("embedding", [pos, const("embeddings.position_embeddings.weight")], "pos_embed")[0]
    x = g.add_node("add", [tok, pe], "embed_sum")[0]
    if "embeddings.token_type_embeddings.weight" in w:
        tt = w["embeddings.token_type_embeddings.weight"][0].astype(np.float32)
        x = g.add_node("add", [x, g.add_const("embeddings.token_type_row0", tt)], "embed_typed")[0]
    x = layernorm(x, "embeddings.LayerNorm", "embed")
    for i in range(hp["layers"]):
        p = f"encoder.layer.{i}"
        b = {"block": i}
        q = linear(x, p + ".attention.self.query", f"l{i}.q", i)
        k = linear(x, p + ".attention.self.key", f"l{i}.k", i)
        v = linear(x, p + ".attention.self.value", f"l{i}.v", i)
        q, k, v = (g.add_node("reshape", [t], f"l{i}.{n}_heads", shape=[0, nh, hd], **b)[0] for t, n in ((q, "q"), (k, "k"), (v, "v")))
        o = g.add_node("attention", [q, k, v], f"l{i}.attn", causal=False, scale=1.0 / float(np.sqrt(hd)), **b)[0]
        o = g.add_node("reshape", [o], f"l{i}.attn_flat", shape=[0, h], **b)[0]
        o = linear(o, p + ".attention.output.dense", f"l{i}.attn_out", i)
        x = g.add_node("add", [x, o], f"l{i}.resid1", **b)[0]
        x = layernorm(x, p + ".attention.output.LayerNorm", f"l{i}.ln1", **b)
        m = linear(x, p + ".intermediate.dense", f"l{i}.ffn_in", i)
        m = g.add_node("gelu", [m], f"l{i}.gelu", approximate=hp["gelu"], **b)[0]
        m = linear(m, p + ".output.dense", f"l{i}.ffn_out", i)
        x = g.add_node("add", [x, m], f"l{i}.resid2", **b)[0]
        x = layernorm(x, p + ".output.LayerNorm", f"l{i}.ln2", **b)
    if hp["normalize"]:
        pooled = g.add_node("mean", [x], "pooled", axis=0)[0]
        emb = g.add_node("l2norm", [pooled], "embedding", eps=1e-12)[0]
    else:
        emb = g.add_node("mean", [x], "embedding", axis=0)[0]
    g.set_outputs([x, emb])
    g.meta["outputs"] = {"last_hidden": x, "embedding": emb}
    return g
