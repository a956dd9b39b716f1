import json

import numpy as np
import pytest

from compiler.ir import Graph, IRError, TensorType


def small_graph():
    g = Graph("t")
    x = g.add_input("x", TensorType(("S", 8)))
    w = g.add_const("w", np.ones((4, 8), np.float32))
    y = g.add_node("linear", [x, w], "y")[0]
    z = g.add_node("reshape", [y], "z", shape=[0, 2, 2])[0]
    g.set_outputs([z])
    return g


def test_shape_inference_keeps_symbols():
    g = small_graph()
    assert g.types["y"] == TensorType(("S", 4))
    assert g.types["z"] == TensorType(("S", 2, 2))


def test_concat_of_symbolic_dims():
    g = Graph("c")
    a = g.add_input("a", TensorType(("P", 2, 4)))
    b = g.add_input("b", TensorType(("S", 2, 4)))
    g.add_node("concat", [a, b], "c", axis=0)
    assert g.types["c"].shape == ("P+S", 2, 4)


def test_verifier_rejects_malformed_graphs():
    g = Graph("bad")
    x = g.add_input("x", TensorType(("S", 8)))
    with pytest.raises(IRError, match="not defined before use"):
        g.add_node("add", [x, "nope"], "y")
    with pytest.raises(IRError, match="K=8"):
        g.add_node("linear", [x, g.add_const("w", np.ones((4, 6), np.float32))], "y")
    with pytest.raises(IRError, match="unknown op"):
        g.add_node("frobnicate", [x], "y")
    g2 = small_graph()
    g2.nodes.append(g2.nodes[0])  # redefines y
    with pytest.raises(IRError, match="defined twice"):
        g2.verify()


def test_text_form_lists_every_node_with_types():
    text = str(small_graph())
    assert "%y = linear(%x, @w) : f32[S,4]" in text
    assert "%z = reshape(%y) {shape=[0, 2, 2]} : f32[S,2,2]" in text
    assert text.strip().endswith("}")


def test_json_round_trip(llama_tiny):
    g = llama_tiny.graph
    d = json.loads(json.dumps(g.to_json()))
    g2 = Graph.from_json(d, g.consts)
    assert str(g2) == str(g)
    with pytest.raises(IRError, match="missing"):
        Graph.from_json(d, {})


def test_presets_verify(llama_tiny, bert_tiny):
    for m in (llama_tiny, bert_tiny):
        m.graph.verify()
    ops = {n.op for n in llama_tiny.graph.nodes} | {n.op for n in bert_tiny.graph.nodes}
    kv = {"concat"} if llama_tiny.graph.meta["kv"] == "concat" else {"kv_write", "cache_attention"}  # the KV cache's form
    assert {"embedding", "linear", "rmsnorm", "layernorm", "rope", "attention", "silu", "gelu", "add", "mul", "reshape", "mean"} | kv <= ops
