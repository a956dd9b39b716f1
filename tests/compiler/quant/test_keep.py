"""`--quant keep`, per-layer overrides, the group rule and a tied quantized table stored once, on a tiny tied
llama whose "checkpoint quantization" is built by hand (Q4_1-like scale-and-minimum linears, a Q8_0-like
embedding, a Q6_K-typed down_proj with no exact map), as a GGUF frontend would hand it over."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors import safe_open

from compiler.compile import compile_model
from compiler.errors import LowbitError
from compiler.groups import layer_group
from compiler.quant.keep import requant_spec, weight_format
from compiler.quant.rtn import quantize_rtn, quantize_rtn_min
from compiler.quant.spec import parse_spec
from compiler.reference import Interpreter

EMB = "model.embed_tokens.weight"


def tiny(tied=True, hidden=64, inter=128, seed=0, prequant=True):
    from compiler.frontend import Model, hf
    from compiler.frontend.presets import Preset, _llama_cfg, preset_weights
    from compiler.frontend.tokenizer import ByteTokenizer

    cfg = _llama_cfg(hidden, inter, 2, 4, 2, 320, tie_word_embeddings=tied)
    g = hf.BUILDERS["llama"](cfg, preset_weights(Preset("t", "llama", cfg, ""), seed), "tiny")
    pq, types = {}, {}
    if prequant:
        for n in g.nodes:
            if n.op == "linear" and n.attrs.get("quantize"):
                w = n.inputs[1]
                if "down_proj" in w:
                    types[w] = "Q6_K"
                    continue
                pq[w], types[w] = quantize_rtn_min(g.consts[w], 4, 32), "Q4_1"
                g.consts[w] = pq[w].dequantize()  # the graph holds the dequantized checkpoint
        pq[EMB], types[EMB] = quantize_rtn(g.consts[EMB], parse_spec("w8g32")), "Q8_0"
        g.consts[EMB] = pq[EMB].dequantize()
    return Model("tiny", "llama", cfg, g, ByteTokenizer(add_bos=True), {"kind": "preset", "name": "llama-tiny"}, pq, types)


@pytest.fixture(scope="module")
def model():
    return tiny()


@pytest.fixture(scope="module")
def kept(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("keep") / "a"
    return out, compile_model(model, out, quant="keep", progress=False)


def feeds(graph, n=9):
    ids = np.arange(1, n + 1)
    f = {"input_ids": ids, "positions": np.arange(n)}
    rows = n if graph.meta.get("kv") == "inplace" else 0  # an empty KV cache, or one of n rows (in place)
    for k, t in graph.inputs.items():
        if k not in f:
            f[k] = np.zeros([rows if not isinstance(d, int) else d for d in t.shape], np.float32)
    return f


def test_kept_layers_carry_the_checkpoint_weights_exactly(model, kept):
    from compiler.quant.pack import unpack

    _, r = kept
    g = r["graph"]
    by_weight = {}
    for n in g.nodes:
        if n.op == "qlinear":
            by_weight[n.inputs[1][: -len(".qweight")] + ".weight"] = n
    for w, qw in model.prequant.items():
        n = by_weight[w]
        np.testing.assert_array_equal(unpack(g.consts[n.inputs[1]], n.attrs["bits"], n.attrs["layout"], n.attrs["k"]), qw.codes)
        np.testing.assert_array_equal(g.consts[n.inputs[2]], qw.scales)
        np.testing.assert_array_equal(g.consts[n.inputs[3]], qw.mins if qw.has_mins else qw.zeros)
        assert bool(n.attrs.get("mins")) == qw.has_mins and n.attrs["group_size"] == 32 and n.attrs["act"] == "a32"
    down = [n for w, n in by_weight.items() if "down_proj" in w]
    assert down and all(n.attrs["bits"] == 8 and not n.attrs.get("mins") for n in down)  # Q6_K -> w8g32-asym


def test_manifest_records_what_happened_per_tensor(kept):
    out, r = kept
    q = json.loads((out / "manifest.json").read_text())["quant"]
    assert q["name"] == "keep" and q["act"] == "a32"  # float32 activations unless --act names another mode
    lay = q["layers"]
    assert lay["model.layers.0.self_attn.q_proj.weight"] == {"kept": "Q4_1", "as": "w4g32a32-min"}
    assert lay["model.layers.1.mlp.down_proj.weight"] == {"requantized": "Q6_K", "as": "w8g32a32-asym"}
    assert lay[EMB] == {"kept": "Q8_0", "as": "w8g32a32"}
    assert q["summary"] == {"kept Q4_1 as w4g32a32-min": 12, "requantized Q6_K as w8g32a32-asym": 2, "kept Q8_0 as w8g32a32": 1}


def test_keep_matches_the_dequantized_checkpoint(model, kept, tmp_path):
    """keep (A32) against the float graph of the same (dequantized) weights: only the Q6_K layers' w8 re-quantization
    differs, so logits agree to cosine > 0.9999; with every layer kept exactly (down_proj left float) the two are the
    same model up to float32 summation order (measured 2.9e-7 of max |logit|), while A16 keep is 2.7e-4 away."""
    from runtime.compare import cosine

    g = kept[1]["graph"]
    f = feeds(g)
    a = Interpreter(g).run(f)["logits"]
    b = Interpreter(model.graph).run(f)["logits"]
    assert cosine(a.ravel(), b.ravel()) > 0.9999
    assert np.abs(a - b).max() <= 2e-2 * np.abs(b).max()
    exact = {}
    for act in ("a32", "a16"):
        r = compile_model(model, tmp_path / act, quant="keep", act=None if act == "a32" else act, quant_layer="down_proj=none", progress=False)
        exact[act] = np.abs(Interpreter(r["graph"]).run(f)["logits"] - b).max() / np.abs(b).max()
    assert exact["a32"] <= 1e-6 and exact["a16"] >= 100 * exact["a32"], exact


def test_tied_table_is_stored_once(model, kept):
    out, r = kept
    g = r["graph"]
    emb = next(n for n in g.nodes if n.op in ("qembedding", "embedding"))
    head = next(n for n in g.nodes if "logits" in n.outputs)
    assert emb.op == "qembedding" and head.op == "qlinear" and emb.inputs[1:4] == head.inputs[1:4]
    with safe_open(str(out / "weights.safetensors"), "np") as f:
        names = set(f.keys())
        stored = sum(f.get_tensor(k).nbytes for k in names if k.startswith("model.embed_tokens"))
    assert EMB not in names and {"model.embed_tokens.qweight", "model.embed_tokens.scales", "model.embed_tokens.zeros"} <= names
    v, h = 320, 64
    assert stored == v * h + v * (h // 32) * 4 + v * (h // 32)  # one w8 table: codes, f32 scales, u8 zeros
    it = Interpreter(g)
    env = it.start(feeds(g, 4))
    it.run_nodes(env, range(g.nodes.index(emb) + 1))
    rows = env[emb.outputs[0]]
    np.testing.assert_array_equal(rows, model.prequant[EMB].dequantize()[np.arange(1, 5)])  # the kept Q8_0 rows


def test_quant_head_on_a_tied_model_stores_the_table_once(tmp_path):
    m = tiny(prequant=False)
    float_bytes = m.graph.consts[EMB].nbytes
    r = compile_model(m, tmp_path / "a", quant="w4g32", quant_head="w4g32-min", progress=False)
    g = r["graph"]
    assert EMB not in g.consts and sum(n.op == "qembedding" for n in g.nodes) == 1
    with safe_open(str(tmp_path / "a" / "weights.safetensors"), "np") as f:
        stored = sum(f.get_tensor(k).nbytes for k in f.keys() if k.startswith("model.embed_tokens"))
    assert stored == 320 * 64 // 2 + 2 * 320 * 2 * 4  # nibbles + f32 scales + f32 minimums, once
    assert stored < float_bytes / 5


@pytest.mark.parametrize("act", ["a8", "a16", "a32"])
def test_keep_with_act_applies_to_kept_layers(model, tmp_path, act):
    r = compile_model(model, tmp_path / "a", quant="keep", act=act, progress=False)
    acts = {n.attrs["act"] for n in r["graph"].nodes if n.op == "qlinear"}
    assert acts == {act} and r["quant"]["act"] == act


def test_keep_for_an_accelerator_needs_a8_or_a16_in_one_line(model, tmp_path):
    """keep's default a32 is refused by an accelerator target's check, naming the fix, before anything is written."""
    with pytest.raises(LowbitError, match="a32 activations") as e:
        compile_model(model, tmp_path / "x", quant="keep", targets="ref,mixpe", progress=False)
    assert "\n" not in e.value.line() and "--act a16 or --act a8" in e.value.line() and not (tmp_path / "x").exists()
    with pytest.raises(LowbitError, match="unknown activation mode 'a4'"):
        compile_model(model, tmp_path / "x", quant="keep", act="a4", progress=False)


def test_keep_refuses_a_float_model_in_one_line(tmp_path):
    with pytest.raises(LowbitError, match="stores no quantized weights") as e:
        compile_model("llama-tiny", tmp_path / "x", quant="keep", progress=False)
    assert "\n" not in e.value.line() and not (tmp_path / "x").exists()


def test_keep_with_gptq_requantizes_only_the_unmapped(model, tmp_path):
    r = compile_model(model, tmp_path / "a", quant="keep", method="gptq", calib_samples=2, calib_seqlen=16, progress=False)
    g = r["graph"]
    kept_q = next(n for n in g.nodes if n.op == "qlinear" and n.inputs[1] == "model.layers.0.self_attn.q_proj.qweight")
    np.testing.assert_array_equal(g.consts[kept_q.inputs[2]], model.prequant["model.layers.0.self_attn.q_proj.weight"].scales)
    assert r["quant"]["method"] == "gptq" and r["quant"]["summary"]["requantized Q6_K as w8g32a32-asym"] == 2


@pytest.mark.parametrize("stored,spec", [("Q6_K", "w8g32-asym"), ("Q5_0", "w8g32"), ("Q5_K", "w8g32-min"), ("Q3_K", "w3g32-asym"),
                                         ("Q2_K", "w2g32-min"), ("TQ2_0", "ternaryg128"), ("gptq-w4g128", "w4g128-asym")])
def test_requant_rule(stored, spec):
    assert requant_spec(stored).name == spec


def test_weight_format_names():
    w = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    assert weight_format(quantize_rtn_min(w, 4, 32)).name == "w4g32-min"
    assert weight_format(quantize_rtn(w, parse_spec("w4g32"))).name == "w4g32"
    assert weight_format(quantize_rtn(np.abs(w), parse_spec("w3pc-asym")), "a8").name == "w3pca8-asym"


# ---- the group rule


@pytest.mark.parametrize("k,g,want", [(576, 128, 64), (96, 64, 32), (40, 32, 40), (40, 128, 40), (1536, 128, 128), (576, 0, 576)])
def test_layer_group(k, g, want):
    assert layer_group(k, g) == want


def test_compile_applies_the_group_rule_and_says_so(tmp_path):
    m = tiny(hidden=96, inter=160, prequant=False)  # K=96 with g64 -> g32; K=160 (down_proj) with g64 -> g32
    r = compile_model(m, tmp_path / "a", quant="w4g64", progress=False)
    groups = {n.inputs[1]: n.attrs["group_size"] for n in r["graph"].nodes if n.op == "qlinear"}
    assert groups["model.layers.0.self_attn.q_proj.qweight"] == 32 and groups["model.layers.0.mlp.down_proj.qweight"] == 32
    assert len(r["notes"]) == 1 and "g32" in r["notes"][0] and "K=96" in r["notes"][0]
    assert r["quant"]["layers"]["model.layers.0.mlp.down_proj.weight"] == {"as": "w4g32", "group": "g64 does not divide K=160"}


# ---- per-layer overrides


def test_overrides_set_formats_and_are_recorded(model, tmp_path):
    m = tiny(prequant=False)
    r = compile_model(m, tmp_path / "a", quant="w4g32", quant_layer="down_proj=w8pc,*layers.1.*q_proj*=none,lm_head=w8g32", progress=False)
    nodes = {n.inputs[1]: n for n in r["graph"].nodes if n.op in ("qlinear", "linear", "qembedding")}
    assert nodes["model.layers.0.mlp.down_proj.qweight"].attrs["bits"] == 8 and nodes["model.layers.0.mlp.down_proj.qweight"].attrs["group_size"] == 128
    assert nodes["model.layers.1.self_attn.q_proj.weight"].op == "linear"  # `none`: float
    assert nodes["model.layers.0.self_attn.q_proj.qweight"].attrs["bits"] == 4
    head = next(n for n in r["graph"].nodes if "logits" in n.outputs)
    assert head.op == "qlinear" and head.attrs["bits"] == 8 and head.attrs["group_size"] == 32  # tied head named lm_head
    q = r["quant"]
    assert q["overrides"] == {"down_proj": "w8pc", "*layers.1.*q_proj*": "none", "lm_head": "w8g32"}
    assert q["layers"]["model.layers.1.self_attn.q_proj.weight"] == {"override": "*layers.1.*q_proj*", "as": "float"}


def test_overrides_work_with_keep(model, tmp_path):
    r = compile_model(model, tmp_path / "a", quant="keep", quant_layer="down_proj=w4g32-min", progress=False)
    assert r["quant"]["layers"]["model.layers.0.mlp.down_proj.weight"] == {"requantized": "Q6_K", "override": "down_proj", "as": "w4g32a32-min"}


@pytest.mark.parametrize("layers,quant,msg", [("nosuchlayer=w8pc", "w4g32", "match no layer"), ("down_proj=w8pca8", "w4g32", "activation mode"),
                                              ("down_proj", "w4g32", "PATTERN=SPEC"), ("down_proj=w5g32", "w4g32", "unsupported weight bit width")])
def test_override_errors(tmp_path, layers, quant, msg):
    with pytest.raises(LowbitError, match=msg) as e:
        compile_model(tiny(prequant=False), tmp_path / "x", quant=quant, quant_layer=layers, progress=False)
    assert "\n" not in e.value.line() and not (tmp_path / "x").exists()


def test_overrides_with_gptq(tmp_path):
    r = compile_model(tiny(prequant=False), tmp_path / "a", quant="w4g32", method="gptq", quant_layer="up_proj=w8g32", calib_samples=2, calib_seqlen=16, progress=False)
    ups = [n for n in r["graph"].nodes if n.op == "qlinear" and "up_proj" in n.inputs[1]]
    assert ups and all(n.attrs["bits"] == 8 for n in ups)
