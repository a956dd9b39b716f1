"""Dense-and-sparse weights (compiler.quant.outliers): the split is exact in float, the quantizers keep each
row's outliers as fp16 residuals (RTN and GPTQ), the graph computes qlinear + sparse_matmul, bits are counted."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from compiler.errors import LowbitError
from compiler.frontend.llama import empty_cache
from compiler.quant import outliers
from compiler.quant.apply import quantize_graph, quantize_head
from compiler.quant.bpw import graph_bpw, spec_bpw
from compiler.quant.calib import calibration_feeds
from compiler.quant.gptq import hessian_from_inputs, quantize_gptq
from compiler.quant.rtn import quantize_rtn
from compiler.quant.spec import parse_spec
from compiler.reference import Interpreter, QLinearWeights


def planted(seed=0, n=48, k=256, frac=0.01, boost=8.0):
    """Gaussian weights with a fraction of entries scaled up (the outliers a group's range should not pay for)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, k)).astype(np.float32)
    hot = rng.random((n, k)) < frac
    w[hot] = np.sign(w[hot]) * (boost + np.abs(w[hot]))
    return w, hot


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 12), groups=st.integers(1, 4), count=st.integers(1, 16), seed=st.integers(0, 2**31 - 1))
def test_split_is_exact_in_float(n, groups, count, seed):
    k = 16 * groups
    count = min(count, k)
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((n, k)) * 10.0 ** rng.integers(-30, 30, (n, k))).astype(np.float32)
    cols = outliers.select(w, count, 16)
    dense, vals = outliers.split(w, cols)
    # bit for bit: the dense part is 0 at the outliers and holds every other weight as it is
    np.testing.assert_array_equal(dense + outliers.scatter(cols, vals, w.shape), w)
    assert np.all(dense[outliers.mask_of(cols, w.shape)] == 0)
    x = rng.standard_normal((3, k)).astype(np.float32)
    y = x @ dense.T + outliers.sparse_matmul(x, cols, vals)  # the rewrite: dense linear + side matrix
    ref = x.astype(np.float64) @ w.astype(np.float64).T
    scale = np.abs(x).astype(np.float64) @ np.abs(w).astype(np.float64).T
    assert np.all(np.abs(y - ref) <= 1e-5 * scale + 1e-30)  # float32 summation order only


def test_select_takes_the_planted_outliers():
    w, hot = planted(frac=0.004, boost=20.0)
    count = int(hot.sum(axis=1).max())
    cols = outliers.select(w, count, 32)
    assert cols.dtype == np.int16 and cols.shape == (w.shape[0], count)
    assert np.all(np.diff(cols.astype(int), axis=1) > 0)  # ascending, no repeats
    chosen = outliers.mask_of(cols, w.shape)
    assert np.all(chosen[hot])  # every planted outlier is kept (the other picks fill the row's count)


def test_select_weighs_by_importance():
    w = np.zeros((1, 32), np.float32)
    w[0, 3], w[0, 20] = 5.0, 4.0
    imp = np.ones(32)
    assert outliers.select(w, 1, 32, imp).tolist() == [[3]]
    imp[20] = 10.0  # the smaller weight in a feature that matters ten times more
    assert outliers.select(w, 1, 32, imp).tolist() == [[20]]


@pytest.mark.parametrize("spec_text", ["w3g32-sp1", "w3g32-min-sp1", "w2g16k-min-sp1", "w4g64-asym-sp2", "ternary-sp1"])
def test_rtn_keeps_outliers_as_fp16_residuals(spec_text):
    spec = parse_spec(spec_text)
    w, _ = planted()
    q = quantize_rtn(w, spec)
    c = spec.outlier_count(w.shape[1])
    assert q.sparse_cols.shape == (w.shape[0], c) and q.sparse_vals.dtype == np.float16
    mask = outliers.mask_of(q.sparse_cols, w.shape)
    dq, eff = q.dequantize(), q.effective()
    # at an outlier the layer computes w up to the fp16 rounding of the residual w - dq
    assert np.all(np.abs(eff[mask] - w[mask]) <= np.abs(w[mask] - dq[mask]) * 2.0**-11 + 1e-12)
    np.testing.assert_array_equal(eff[~mask], dq[~mask])
    # the dense part is plain RTN of the weights with the outliers filled by their group's median, each
    # outlier's code the nearest on its group's grid
    base = quantize_rtn(outliers.fill(w, q.sparse_cols, q.group_size), parse_spec(spec_text.rsplit("-sp", 1)[0]))
    np.testing.assert_array_equal(q.codes[~mask], base.codes[~mask])
    np.testing.assert_array_equal(q.scales, base.scales)
    assert np.all(np.abs(w[mask] - dq[mask]) <= np.abs(w[mask] - base.dequantize()[mask]) + 1e-6)
    plain = quantize_rtn(w, parse_spec(spec_text.rsplit("-sp", 1)[0]))
    err_sp, err_plain = np.linalg.norm(w - eff), np.linalg.norm(w - plain.dequantize())
    print(f"\n{spec_text}: weight error plain {err_plain:.2f}, dense-and-sparse {err_sp:.2f}")
    assert err_sp < 0.9 * err_plain


@pytest.mark.parametrize("spec_text", ["w3g32-sp1", "w2g16-min-sp1", "w4g32-asym-sp0.5"])
def test_gptq_with_a_diagonal_hessian_is_rtn(spec_text):
    # nothing to compensate: the same outliers (the diagonal is one importance for all), codes and residuals
    spec = parse_spec(spec_text)
    w, _ = planted(seed=3, n=16, k=128)
    q = quantize_gptq(w, np.eye(128) * 2.0, spec, block_size=32)
    r = quantize_rtn(w, spec)
    for f in ("codes", "scales", "zeros", "sparse_cols", "sparse_vals"):
        np.testing.assert_array_equal(getattr(q, f), getattr(r, f), err_msg=f)


@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_outliers_lower_the_output_error(act_order):
    rng = np.random.default_rng(5)
    w, _ = planted(seed=5, n=64, k=256)
    x = (rng.standard_normal((1024, 256)) * np.linspace(0.2, 3.0, 256)).astype(np.float32)
    h = hessian_from_inputs(x)
    errs = {}
    for t in ("w3g32-min", "w3g32-min-sp1"):
        q = quantize_gptq(w, h, parse_spec(t), act_order=act_order)
        errs[t] = float(np.linalg.norm(x @ (w - q.effective()).T))
    print(f"\nact_order={act_order}: {errs}")
    assert errs["w3g32-min-sp1"] < 0.8 * errs["w3g32-min"]


def test_spec_grammar():
    s = parse_spec("w2g16k-min-sp0.5")
    assert s.outliers == 0.5 and s.minimum and s.sub_bits == 6 and s.name == "w2g16k-min-sp0.5"
    assert parse_spec("w3g32-sp1").name == "w3g32-sp1" and parse_spec("w4g32").outliers == 0
    assert s.outlier_count(576) == 3 and s.outlier_count(64) == 1  # at least one per row
    for bad in ("w4g32-sp0", "w4g32-sp11", "w4g32-sp"):
        with pytest.raises(LowbitError):
            parse_spec(bad)


def test_bits_per_weight_count_the_outliers():
    # 32 bits per outlier (fp16 value, int16 column): 1% of K = 512 is 5 per row, 160 bits, 0.3125 bpw
    assert spec_bpw(parse_spec("w3g32-sp1"), 512) == spec_bpw(parse_spec("w3g32"), 512) + 5 * 32 / 512


def test_graph_adds_the_side_matrix_to_the_qlinear(llama_tiny):
    g = quantize_graph(llama_tiny.graph, parse_spec("w3g32a32-sp1"))
    ops = [n.op for n in g.nodes]
    assert ops.count("sparse_matmul") == ops.count("qlinear") == 4 * 7
    i = ops.index("sparse_matmul")
    assert ops[i - 1] == "qlinear" and ops[i + 1] == "add" and g.nodes[i + 1].outputs == [g.nodes[i - 1].outputs[0].removesuffix(".dense")]
    assert "sparse" not in g.nodes[i - 1].attrs  # the quantizer's marker is gone
    assert graph_bpw(g) == pytest.approx(sum(spec_bpw(parse_spec("w3g32-sp1"), n.attrs["k"]) * n.attrs["n"] * n.attrs["k"] for n in g.nodes if n.op == "qlinear")
                                         / sum(n.attrs["n"] * n.attrs["k"] for n in g.nodes if n.op == "qlinear"))
    # at A32 the graph computes the float model of the effective weights (dequantized + side matrix)
    f = llama_tiny.graph.copy()
    for n in g.nodes:
        if n.op == "qlinear":
            base = n.inputs[1].removesuffix(".qweight")
            cols, vals = g.consts[base + ".sp_cols"], g.consts[base + ".sp_vals"]
            dense = QLinearWeights(*(g.consts[c] for c in n.inputs[1:4]), n.attrs).rows(np.arange(n.attrs["n"]))
            f.consts[base + ".weight"] = (dense + outliers.scatter(cols, vals, dense.shape)).astype(np.float32)
    feeds = {"input_ids": np.arange(3, 40, dtype=np.int64), "positions": np.arange(37), **empty_cache(llama_tiny.graph, 37)}
    a, b = Interpreter(f).run(feeds)["logits"], Interpreter(g).run(feeds)["logits"]
    assert np.max(np.abs(a - b)) <= 1e-4 * np.max(np.abs(a))


def test_gptq_graph_with_outliers_beats_plain_gptq(llama_tiny):
    calib = calibration_feeds(llama_tiny, n_samples=16, seqlen=64, seed=1)
    rng = np.random.default_rng(7)
    ids = rng.integers(3, 512, 64).astype(np.int64)
    feeds = {"input_ids": ids, "positions": np.arange(64), **empty_cache(llama_tiny.graph, 64)}
    ref = Interpreter(llama_tiny.graph).run(feeds)["logits"]
    err = {}
    for t in ("w2g32-min", "w2g32-min-sp5"):
        g = quantize_graph(llama_tiny.graph, parse_spec(t), "gptq", calib, damp=0.01)
        err[t] = float(np.linalg.norm(Interpreter(g).run(feeds)["logits"] - ref))
    print(f"\nlogits error vs float: {err}")
    assert err["w2g32-min-sp5"] < 0.95 * err["w2g32-min"]


def test_head_takes_no_outliers(llama_tiny):
    with pytest.raises(LowbitError, match="LM head"):
        quantize_head(llama_tiny.graph, parse_spec("w4g32-sp1"))
