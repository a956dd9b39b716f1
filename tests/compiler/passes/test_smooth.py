"""The smoothing pass (compiler/passes/smooth.py): an exact float rewrite that moves per-channel activation
range from norm outputs into the weights of the linears that read them."""

import numpy as np
import pytest

from compiler.frontend.llama import empty_cache
from compiler.passes.smooth import smooth_graph, smooth_scales, smoothing_sites
from compiler.quant.apply import quantize_graph
from compiler.quant.calib import calibration_feeds
from compiler.quant.spec import parse_spec
from compiler.reference import Interpreter


def bert_feeds(n=37):
    return {"input_ids": np.arange(3, 3 + n, dtype=np.int64), "positions": np.arange(n)}


def with_outlier_channels(graph, factor=30.0):
    """A copy whose layernorms feeding linears have a few channels `factor` x larger (BERT's outlier
    features): the case smoothing is for."""
    g = graph.copy()
    for p in smoothing_sites(g):
        for c in g.nodes[p].inputs[1:]:
            v = g.consts[c].copy()
            v[[3, 17]] *= factor
            g.consts[c] = v
    return g


def test_bert_float_graph_is_unchanged(bert_tiny):
    g0 = with_outlier_channels(bert_tiny.graph)
    calib = calibration_feeds(bert_tiny, n_samples=4, seqlen=16)
    g1 = smooth_graph(g0, calib, 0.5)
    # post-LN BERT: the norms also feed the residual stream, so each site gets its own copy of the norm
    n_sites = len(smoothing_sites(g0))
    assert [n.op for n in g1.nodes].count("layernorm") == [n.op for n in g0.nodes].count("layernorm") + n_sites
    assert n_sites == 2 * bert_tiny.graph.meta["hparams"]["layers"]
    for fd in (bert_feeds(), bert_feeds(9)):
        a = Interpreter(g0).run(fd)["embedding"]
        b = Interpreter(g1).run(fd)["embedding"]
        np.testing.assert_allclose(b, a, atol=1e-5)
    for k, v in g0.consts.items():  # the input graph is not modified
        assert g0.consts[k] is v


def test_llama_norms_are_rescaled_in_place(llama_tiny):
    g0 = with_outlier_channels(llama_tiny.graph)
    calib = calibration_feeds(llama_tiny, n_samples=2, seqlen=16)
    g1 = smooth_graph(g0, calib, 0.5)
    assert len(g1.nodes) == len(g0.nodes)  # pre-norm: the norms feed only the linears
    ids = np.arange(3, 40, dtype=np.int64)
    fd = {"input_ids": ids, "positions": np.arange(len(ids)), **empty_cache(g0, len(ids))}
    a = Interpreter(g0).run(fd)["logits"]
    b = Interpreter(g1).run(fd)["logits"]
    np.testing.assert_allclose(b, a, atol=1e-4 * float(np.abs(a).max()))


def test_smoothing_lowers_a8_error(bert_tiny):
    g0 = with_outlier_channels(bert_tiny.graph)
    calib = calibration_feeds(bert_tiny, n_samples=4, seqlen=16)
    g1 = smooth_graph(g0, calib, 0.5)
    spec = parse_spec("w8pca8")
    outs = [g0.nodes[i].outputs[0] for ids in smoothing_sites(g0).values() for i in ids]  # q/k/v, FFN in
    fd = bert_feeds()

    def values(g):
        it = Interpreter(g)
        env = it.start(fd)
        it.run_nodes(env, range(len(g.nodes)), keep=set(outs))
        return [env[o] for o in outs]

    ref = values(g0)
    err = [np.mean([np.linalg.norm(a - r) / np.linalg.norm(r) for a, r in zip(values(quantize_graph(g, spec)), ref)]) for g in (g0, g1)]
    print(f"w8pca8 relative error of the smoothed layers' outputs: plain {err[0]:.5f}, smoothed {err[1]:.5f}")
    assert err[1] < 0.5 * err[0]


def test_smooth_scales():
    s = smooth_scales(np.array([1.0, 16.0, 0.0, 4.0]), np.array([1.0, 1.0, 2.0, 0.0]), 0.5)
    assert s[2] == 1.0 and s[3] == 1.0  # no activation / no weight: untouched
    assert s[1] / s[0] == pytest.approx(4.0)
    assert np.exp(np.mean(np.log(s[:2]))) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        smooth_graph(None, [], 1.5)


def test_shared_weights_are_left_alone(bert_tiny):
    g0 = bert_tiny.graph.copy()
    sites = smoothing_sites(g0)
    p, readers = next(iter(sites.items()))
    w = g0.nodes[readers[0]].inputs[1]
    extra = g0.add_node("linear", [g0.nodes[p].outputs[0], w], "extra_reader")[0]  # a second reader of w
    g0.set_outputs([*g0.outputs, extra])
    g1 = smooth_graph(g0, calibration_feeds(bert_tiny, n_samples=2, seqlen=16), 0.5)
    assert g1.consts[w] is g0.consts[w]
    a, b = Interpreter(g0).run(bert_feeds()), Interpreter(g1).run(bert_feeds())
    for k in a:
        np.testing.assert_allclose(b[k], a[k], atol=1e-5)
