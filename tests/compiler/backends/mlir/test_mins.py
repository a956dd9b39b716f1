"""Scale-and-minimum groups (qlinear attr mins, w = s q + m) and qembedding (a quantized table's rows, the
tied LM head's table read once) on mlir-cpu, against compiler.reference, and mlir-cuda's build of them.

Tolerances: the GEMV's as in test_gemv.py (A8 group sums are exact, so A8 agrees to fp32 rounding of the
dequantization, 1e-6; A16 to fp32 summation order, 1e-5); whole graphs the agreement table's compiler rows
(tests/helpers.py COMPILER_TOL: A16 5e-3, A8 2e-2, which cover a flipped int8 rounding downstream of a
float op); qembedding rows s (q - z) bit for bit (one multiply, as the reference), s q + m to 1e-6 of the
largest row value (LLVM fuses the multiply-add: one rounding instead of the reference's two)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.frontend.llama import build_llama, empty_cache
from compiler.ir import Graph, Node, TensorType
from compiler.quant.apply import qlinear_node
from compiler.quant.rtn import quantize_rtn, quantize_rtn_min
from compiler.quant.spec import parse_spec
from compiler.reference import Interpreter, QLinearWeights, qlinear
from tests.compiler.backends.mlir.common import InMemoryMLIR, rt  # noqa: F401 (skips without IREE)
from tests.helpers import COMPILER_TOL, IDS
from tests.helpers import check_close as check

# ----------------------------------------------------------------------------------------------------------
# the GEMV (benchmarks' kernel, the same qlinear lowering as whole models)


@pytest.mark.parametrize(
    "spec,lanes",
    [("w4g32", None), ("w4g32a8", None), ("w8g32a8", None), ("w3g32a8", 0)],
    ids=["w4-a16-blocked", "w4-a8-blocked-f32", "w8-a8-blocked-i32", "w3-a8-groupsum"],
)
def test_mins_gemv_matches_contract(spec, lanes):
    """Blocked (N = 64) and stored-layout (lanes 0) forms, A16 and A8 (fp32-exact and int32 group sums);
    the stored-layout A16 form runs in test_qembedding_rows_and_tied_head (V = 40)."""
    from compiler.backends.mlir.gemv import build_gemv

    g = build_gemv(64, 256, spec, threads=1, rotate=False, lanes=lanes, mins=True)
    assert g._attrs["mins"] and g._host[2].dtype == np.float32
    x = np.random.default_rng(4).standard_normal((1, 256)).astype(np.float32)
    tol = 1e-6 if "a8" in spec else 1e-5
    assert g.max_rel_err_vs_ref(x) < tol
    # the minimums carry real weight here: the contract without them is > 1e-2 away, far outside tol
    attrs = dict(g._attrs)
    ref = qlinear(x, QLinearWeights(*g._host, attrs), attrs["act"])
    no_min = qlinear(x, QLinearWeights(g._host[0], g._host[1], np.zeros_like(g._host[2]), attrs), attrs["act"])
    assert np.abs(ref - no_min).max() > 1e-2 * np.abs(ref).max()


# ----------------------------------------------------------------------------------------------------------
# qembedding with a tied head


def _table_graph(v: int, h: int, bits: int, group: int, mins: bool, act: str):
    """ids -> qembedding(T) -> rows; rows -> qlinear(T) -> logits: one quantized table T [V, H], read twice."""
    w = np.random.default_rng(7).standard_normal((v, h)).astype(np.float32) * np.float32(0.05)
    spec = parse_spec(f"w{bits}g{group}{'a8' if act == 'a8' else ''}")
    qw = quantize_rtn_min(w, bits, group) if mins else quantize_rtn(w, spec, name="t")
    g = Graph("table")
    ids = g.add_input("input_ids", TensorType(("S",), "i64"))
    g.add_const("t.weight", w)
    head = qlinear_node(g, Node("linear", ["rows", "t.weight"], ["logits"], {}), qw, spec)
    emb_attrs = {k: head.attrs[k] for k in ("bits", "group_size", "n", "k", "layout", "ternary")}
    if mins:
        emb_attrs["mins"] = True
    g.nodes = [Node("qembedding", [ids, *head.inputs[1:4]], ["rows"], emb_attrs), head]
    del g.consts["t.weight"]
    g.infer_types()
    g.set_outputs(["rows", "logits"])
    g.verify()
    return g


@pytest.fixture(
    scope="module",
    params=[(96, 4, True, "a16"), (40, 2, True, "a16"), (64, 3, False, "a8")],
    ids=["w4-mins-blocked", "w2-mins-stored", "w3-zeros-a8-blocked"],
)
def table(request):
    """V = 96 / 64: the head is blocked and the gather reads its blocked copy; V = 40: both read the stored
    layout (the head in the groupsum form)."""
    v, bits, mins, act = request.param
    g = _table_graph(v, 64, bits, 32, mins, act)
    return g, InMemoryMLIR(g), Interpreter(g), v, mins, act


def _check_rows(out, ref, mins):
    if mins:  # LLVM contracts s q + m into one FMA (one rounding, not two): <= 1 ulp of the terms, |terms| <= 2 max|w|
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-6 * max(np.abs(ref).max(), 1e-30))
    else:  # s (q - z): one multiply, as the reference
        np.testing.assert_array_equal(out, ref)


def test_qembedding_rows_and_tied_head(table):
    """The rows, the head on them, and the table passed to the module once, in one layout."""
    g, m, ref_i, v, mins, act = table
    ids = np.array([0, 5, v - 1, 17, 3, 5], np.int64)
    out, ref = m.run({"input_ids": ids}), ref_i.run({"input_ids": ids})
    _check_rows(out["rows"], ref["rows"], mins)
    assert np.abs(out["rows"][0] - out["rows"][1]).max() > 1e-3  # different ids, different rows
    check({"logits": out["logits"]}, {"logits": ref["logits"]}, COMPILER_TOL[act], "tied head")
    table_keys = {p["key"].split("@")[0] for p in m.lowered.params}
    assert table_keys == {"t.qweight", "t.scales", "t.mins" if mins else "t.zeros"}  # each once
    sources = {p["source"] for p in m.lowered.params}
    assert sources == ({"relayout"} if v % 32 == 0 else {"weights"})
    assert m.lowered.kernels["t.qweight"].endswith("-mins") == mins


@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_qembedding_gathers_any_ids(table, data):
    """Any ids, repeated or out of range (clipped to [0, V - 1], as the float embedding's gather)."""
    g, m, ref_i, v, mins, _ = table
    ids = np.array(data.draw(st.lists(st.integers(-3, v + 3), min_size=1, max_size=12)), np.int64)
    _check_rows(m.run({"input_ids": ids})["rows"], ref_i.run({"input_ids": np.clip(ids, 0, v - 1)})["rows"], mins)


# ----------------------------------------------------------------------------------------------------------
# a tiny llama: every linear with minimums, the embedding a qembedding of the tied head's table

CFG = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 1,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "vocab_size": 128,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": True,
}


def tiny_llama_mins(group: int = 32):
    """Every linear w4g32 with minimums: the attention projections A8, the MLP and the head A16 (both
    activation modes in one compile); the embedding a qembedding of the head's table."""
    rng = np.random.default_rng(11)
    h, f, v = CFG["hidden_size"], CFG["intermediate_size"], CFG["vocab_size"]
    kv = CFG["num_key_value_heads"] * CFG["head_dim"]

    def mat(n, k):
        return (rng.standard_normal((n, k)) * 0.08).astype(np.float32)

    w = {"model.embed_tokens.weight": mat(v, h) * 4, "model.norm.weight": np.ones(h, np.float32)}
    for i in range(CFG["num_hidden_layers"]):
        p = f"model.layers.{i}"
        w[p + ".input_layernorm.weight"] = np.ones(h, np.float32)
        w[p + ".post_attention_layernorm.weight"] = np.ones(h, np.float32)
        for name, shape in (("self_attn.q_proj", (h, h)), ("self_attn.k_proj", (kv, h)), ("self_attn.v_proj", (kv, h)), ("self_attn.o_proj", (h, h))):
            w[f"{p}.{name}.weight"] = mat(*shape)
        for name, shape in (("mlp.gate_proj", (f, h)), ("mlp.up_proj", (f, h)), ("mlp.down_proj", (h, f))):
            w[f"{p}.{name}.weight"] = mat(*shape)
    g = build_llama(CFG, w, "llama-mins")
    a8, a16 = parse_spec(f"w4g{group}a8"), parse_spec(f"w4g{group}")
    for i, n in enumerate(g.nodes):
        if n.op == "linear":  # every block linear and the (float, tied) head
            spec = a8 if ".self_attn." in n.inputs[1] else a16
            g.nodes[i] = qlinear_node(g, n, quantize_rtn_min(g.consts[n.inputs[1]], 4, group), spec)
    head = next(n for n in g.nodes if n.op == "qlinear" and "logits" in n.outputs)
    e = next(i for i, n in enumerate(g.nodes) if n.op == "embedding")
    attrs = {k: head.attrs[k] for k in ("bits", "group_size", "n", "k", "layout", "ternary", "mins")}
    g.nodes[e] = Node("qembedding", [g.nodes[e].inputs[0], *head.inputs[1:4]], list(g.nodes[e].outputs), attrs)
    used = {i for n in g.nodes for i in n.inputs}
    for c in [c for c in g.consts if c not in used]:  # the float weights the qlinears and the qembedding replace
        del g.consts[c]
    g.infer_types()
    g.verify()
    return g


def test_llama_with_mins_and_qembedding_agrees_with_ref():
    """Prefill and a decode step on the cache, within the A8 row of the tolerance table (the graph has A8
    layers; A16 alone is checked to 1e-5 above)."""
    g = tiny_llama_mins()
    m = InMemoryMLIR(g)
    act = "a8"
    assert sum(n.op == "qlinear" and n.attrs.get("mins") for n in g.nodes) == 7 + 1
    assert {n.attrs["act"] for n in g.nodes if n.op == "qlinear"} == {"a8", "a16"}
    assert "model.embed_tokens.weight" not in g.consts  # the float table is gone: the head's table serves both
    feeds = {"input_ids": np.array(IDS, np.int64), "positions": np.arange(len(IDS), dtype=np.int64), **empty_cache(g, len(IDS) + 1)}
    ref = Interpreter(g).run(feeds)
    out = m.run(feeds)
    check(out, ref, COMPILER_TOL[act], "llama mins")
    assert np.abs(out["logits"][0] - out["logits"][1]).max() > 1e-3  # the logits depend on the tokens
    # a decode step on the cache
    step = {"input_ids": np.array([9], np.int64), "positions": np.array([len(IDS)], np.int64)}
    step.update({k.replace("present_", "past_"): v for k, v in ref.items() if k.startswith("present_")})
    check(m.run(step), Interpreter(g).run(step), COMPILER_TOL[act], "llama mins decode")
    assert set(m.lowered.kernels.values()) == {"blocked32-f32-mins", "blocked32-f32-a8exact-mins"}
    relaid = [p["key"] for p in m.lowered.params if p["key"].startswith("model.embed_tokens")]
    assert len(relaid) == len(set(relaid)) == 3  # the tied table once: codes, scales, minimums


def test_mlir_cuda_builds_mins_and_qembedding(tmp_path):
    """The lowering for cuda (no llvm-cpu tile configurations) of a mins A8 head and a qembedding of its
    table compiles to an sm_80 vmfb (run on a GPU machine by test_artifact.py's mlir-cuda test)."""
    from compiler.backends.mlir.build import build_target

    info = build_target(_table_graph(64, 64, 4, 32, True, "a8"), "mlir-cuda", tmp_path / "mlir-cuda")
    vmfb = (tmp_path / "mlir-cuda" / "model.vmfb").read_bytes()
    assert info["cuda_arch"] == "sm_80" and b"cuda-nvptx-fb" in vmfb
    assert info["kernels"] == {"t.qweight": "blocked32-f32-a8exact-mins"}
