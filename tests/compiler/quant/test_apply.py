"""The quantize pass on whole models: every marked linear becomes a qlinear; GPTQ's block-sequential
calibration beats RTN on held-out inputs from the calibration distribution."""

import numpy as np
import pytest

from compiler.frontend.llama import empty_cache
from compiler.quant.apply import quantize_graph
from compiler.quant.calib import calibration_feeds
from compiler.quant.spec import parse_spec
from compiler.reference import Interpreter
from runtime.compare import cosine


def test_rtn_replaces_every_block_linear(llama_tiny):
    g = quantize_graph(llama_tiny.graph, parse_spec("w4g128"))
    ops = [n.op for n in g.nodes]
    assert ops.count("qlinear") == 4 * 7
    assert ops.count("linear") == 1  # the LM head stays float
    assert not any(k.endswith("proj.weight") for k in g.consts)  # float block weights are gone
    q = g.consts["model.layers.0.mlp.up_proj.qweight"]
    assert q.dtype == np.uint8 and q.shape == (768, 128)  # nibbles: 2 codes per byte


def test_gptq_beats_rtn_on_held_out_tokens(llama_tiny):
    spec = parse_spec("w3g64")
    calib = calibration_feeds(llama_tiny, n_samples=32, seqlen=64, seed=1)
    g_rtn = quantize_graph(llama_tiny.graph, spec, "rtn")
    g_gptq = quantize_graph(llama_tiny.graph, spec, "gptq", calib, damp=0.01)
    rng = np.random.default_rng(123)
    ids = rng.integers(3, 512, 96).astype(np.int64)
    feeds = {"input_ids": ids, "positions": np.arange(96), **empty_cache(llama_tiny.graph, 96)}
    ref = Interpreter(llama_tiny.graph).run(feeds)["logits"]
    err_rtn = np.linalg.norm(Interpreter(g_rtn).run(feeds)["logits"] - ref)
    err_gptq = np.linalg.norm(Interpreter(g_gptq).run(feeds)["logits"] - ref)
    print(f"logits error vs float: RTN {err_rtn:.4f}, GPTQ {err_gptq:.4f}")
    assert err_gptq < 0.9 * err_rtn


def test_gptq_needs_calibration(llama_tiny):
    from compiler.errors import LowbitError

    with pytest.raises(LowbitError, match="calibration"):
        quantize_graph(llama_tiny.graph, parse_spec("w4g128"), "gptq", None)


@pytest.mark.parametrize("spec", ["w8g128", "w4g128-asym", "w3g128", "w2g64a8", "ternaryg64"])
def test_bert_specs_keep_embeddings_close(bert_tiny, spec):
    g = quantize_graph(bert_tiny.graph, parse_spec(spec))
    feeds = {"input_ids": np.arange(3, 40, dtype=np.int64), "positions": np.arange(37)}
    a = Interpreter(bert_tiny.graph).run(feeds)["embedding"]
    b = Interpreter(g).run(feeds)["embedding"]
    # Pooled embeddings of a 2-layer random BERT move little; a broken pass moves them a lot.
    assert cosine(a, b) > 0.98
