"""LLM.int8()-style activation outlier features (compiler/passes/act_outliers.py): the rewrite keeps the float
model up to the fp16 rounding of the outlier columns, the features are the calibration's largest, and at A8
the int8 product no longer pays for them."""

import json

import numpy as np
import pytest

from compiler.errors import LowbitError
from compiler.frontend.llama import empty_cache
from compiler.passes.act_outliers import act_outlier_graph, activation_max
from compiler.quant.apply import quantize_graph
from compiler.quant.calib import calibration_feeds
from compiler.quant.spec import parse_spec
from compiler.reference import Interpreter
from tests.compiler.passes.test_smooth import with_outlier_channels
from tests.helpers import run_cli

A8 = parse_spec("w8g64a8")


def feeds_of(graph, n=37):
    ids = np.arange(3, 3 + n, dtype=np.int64)
    return {"input_ids": ids, "positions": np.arange(n), **empty_cache(graph, n)}


def test_the_rewrite_is_exact_up_to_the_fp16_outlier_columns(llama_tiny):
    g0 = with_outlier_channels(llama_tiny.graph, factor=30.0)
    calib = calibration_feeds(llama_tiny, n_samples=2, seqlen=32)
    g1, record = act_outlier_graph(g0, calib, 4, lambda w: A8)
    ops = [n.op for n in g1.nodes]
    assert ops.count("sparse_matmul") == ops.count("linear") - 1 == 4 * 7  # every block linear; the head stays as it was
    assert ops.count("mul") - [n.op for n in g0.nodes].count("mul") == len(record) == 4 * 4  # one mask per input value
    # the float model with each linear's outlier columns rounded to fp16 is what the rewrite computes
    g2 = g0.copy()
    for x, r in record.items():
        f = np.asarray(r["features"])
        for w in r["weights"]:
            v = g0.consts[w].copy()
            v[:, f] = v[:, f].astype(np.float16).astype(np.float32)
            g2.consts[w] = v
    fd = feeds_of(g0)
    a, b = Interpreter(g2).run(fd)["logits"], Interpreter(g1).run(fd)["logits"]
    np.testing.assert_allclose(b, a, atol=1e-5 * float(np.abs(a).max()))


def test_features_are_the_largest_on_the_calibration_tokens(llama_tiny):
    g0 = with_outlier_channels(llama_tiny.graph, factor=30.0)
    calib = calibration_feeds(llama_tiny, n_samples=2, seqlen=32)
    _, record = act_outlier_graph(g0, calib, 3, lambda w: A8)
    stats = activation_max(g0, set(record), calib)
    for x, r in record.items():
        assert r["features"] == sorted(np.argsort(-stats[x], kind="stable")[:3].tolist())
    # the planted norm channels 3 and 17 are outliers of every normed input
    normed = [x for x in record if x.endswith(("attn_in", "mlp_in"))]
    assert normed and all({3, 17} <= set(record[x]["features"]) for x in normed)


def test_a8_error_drops_with_outlier_features(llama_tiny):
    g0 = with_outlier_channels(llama_tiny.graph, factor=30.0)
    calib = calibration_feeds(llama_tiny, n_samples=2, seqlen=32)
    g1, _ = act_outlier_graph(g0, calib, 2, lambda w: A8)
    fd = feeds_of(g0)
    ref = Interpreter(g0).run(fd)["logits"]
    plain = Interpreter(quantize_graph(g0, A8)).run(fd)["logits"]
    with_fp = Interpreter(quantize_graph(g1, A8)).run(fd)["logits"]
    e0, e1 = np.linalg.norm(plain - ref), np.linalg.norm(with_fp - ref)
    print(f"\nlogits error vs float at w8g64a8: plain {e0:.4f}, 2 outlier features in fp16 {e1:.4f}")
    assert e1 < 0.5 * e0


def test_composes_with_weight_outliers_and_gptq(llama_tiny):
    spec = parse_spec("w4g32a8-sp1")
    calib = calibration_feeds(llama_tiny, n_samples=4, seqlen=32)
    g1, _ = act_outlier_graph(llama_tiny.graph, calib, 2, lambda w: spec)
    g = quantize_graph(g1, spec, "gptq", calib)
    ops = [n.op for n in g.nodes]
    assert ops.count("sparse_matmul") == 2 * ops.count("qlinear")  # the act side and the weight outliers
    out = Interpreter(g).run(feeds_of(g))["logits"]
    assert np.all(np.isfinite(out))


def test_needs_a8_layers_and_a_count_below_k(llama_tiny):
    calib = calibration_feeds(llama_tiny, n_samples=1, seqlen=16)
    with pytest.raises(LowbitError, match="A8"):
        act_outlier_graph(llama_tiny.graph, calib, 2, lambda w: parse_spec("w4g32"))
    with pytest.raises(LowbitError, match="not below"):
        act_outlier_graph(llama_tiny.graph, calib, 256, lambda w: A8)


def test_cli_records_the_features(tmp_path, capsys):
    out = tmp_path / "a"
    code, _, err = run_cli(["compile", "llama-tiny", "--quant", "w4g32a8", "--act-outliers", "2", "-o", out], capsys)
    assert code == 0, err
    rec = json.loads((out / "manifest.json").read_text())["quant"]["act_outliers"]
    assert rec["count"] == 2 and all(len(r["features"]) == 2 for r in rec["inputs"].values())
    code, _, err = run_cli(["compile", "llama-tiny", "--quant", "w4g32", "--act-outliers", "2", "-o", tmp_path / "b"], capsys)
    assert code != 0 and "A8" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()
