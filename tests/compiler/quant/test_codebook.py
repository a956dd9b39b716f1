"""Codebook weights (compiler.quant.codebook, SqueezeLLM): per-row tables by weighted k-means, codes the nearest
entry, GPTQ onto the tables; the graph, the bits and the targets that refuse them."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from compiler.errors import LowbitError
from compiler.quant.bpw import spec_bpw
from compiler.quant.codebook import fit_tables, nearest, quantize_codebook
from compiler.quant.gptq import hessian_from_inputs, quantize_gptq
from compiler.quant.rtn import quantize_rtn
from compiler.quant.spec import parse_spec


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 6), k=st.integers(8, 96), bits=st.sampled_from([2, 3, 4]), seed=st.integers(0, 2**31 - 1))
def test_codes_are_the_nearest_entry_of_sorted_fp16_tables(n, k, bits, seed):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, k)).astype(np.float32)
    q = quantize_codebook(w, bits)
    t = q.table
    assert t.shape == (n, 1 << bits) and np.all(np.diff(t, axis=1) >= 0)
    np.testing.assert_array_equal(t, t.astype(np.float16).astype(np.float32))  # stored precision
    d = np.abs(w[:, :, None] - t[:, None, :])
    best = d.min(axis=-1)
    chosen = np.take_along_axis(d, q.codes[:, :, None].astype(np.int64), axis=-1)[..., 0]
    np.testing.assert_array_equal(chosen, best)  # no entry is closer than the chosen one
    np.testing.assert_array_equal(q.dequantize(), np.take_along_axis(t, q.codes.astype(np.int64), axis=1))


def test_kmeans_beats_the_uniform_grid_on_heavy_tails():
    # Laplace-distributed rows: a non-uniform table spends its levels where the weights are
    rng = np.random.default_rng(1)
    w = rng.laplace(size=(64, 512)).astype(np.float32)
    cb = quantize_rtn(w, parse_spec("w3cb"))
    uni = quantize_rtn(w, parse_spec("w3pc-asym"))
    e_cb, e_uni = np.linalg.norm(w - cb.dequantize()), np.linalg.norm(w - uni.dequantize())
    print(f"\nw3 per row: uniform {e_uni:.2f}, k-means codebook {e_cb:.2f}")
    assert e_cb < 0.9 * e_uni


def test_importance_moves_the_table_to_the_features_that_matter():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((32, 256)).astype(np.float32)
    imp = np.ones(256)
    imp[:32] = 100.0
    plain, weighted = fit_tables(w, 2), fit_tables(w, 2, imp)
    err = lambda t: float(np.sum(imp * (w - np.take_along_axis(t, nearest(w, t).astype(np.int64), axis=1)) ** 2))  # noqa: E731
    assert err(weighted) < err(plain)


@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_onto_the_tables_lowers_the_output_error(act_order):
    rng = np.random.default_rng(3)
    k = 256
    z = rng.standard_normal((2048, k))
    a = rng.standard_normal((k, k)) / np.sqrt(k)
    a[32:] *= 0.05
    x = (z @ a).astype(np.float32)
    w = rng.standard_normal((64, k)).astype(np.float32)
    spec = parse_spec("w3cb")
    qg = quantize_gptq(w, hessian_from_inputs(x), spec, act_order=act_order)
    qr = quantize_rtn(w, spec)
    eg, er = (float(np.linalg.norm(x @ (w - q.dequantize()).T)) for q in (qg, qr))
    assert qg.table is not None and eg < 0.9 * er


def test_diagonal_hessian_gptq_is_rtn():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((16, 128)).astype(np.float32)
    for t in ("w3cb", "w2cb-sp1"):
        q, r = quantize_gptq(w, np.eye(128), parse_spec(t), block_size=32), quantize_rtn(w, parse_spec(t))
        for f in ("codes", "table", "sparse_cols", "sparse_vals"):
            np.testing.assert_array_equal(getattr(q, f), getattr(r, f), err_msg=f"{t} {f}")


def test_spec_bits_and_refusals(tmp_path):
    s = parse_spec("w3cb")
    assert s.codebook and s.name == "w3cb" and s.group_for(576) == 576
    assert spec_bpw(s, 512) == 3 + 8 * 16 / 512  # codes + 8 fp16 entries per row
    for bad in ("w8cb", "ternarycb", "w3cb-min", "w3cb-asym"):
        with pytest.raises(LowbitError, match="codebook"):
            parse_spec(bad)
    from compiler.compile import compile_model

    with pytest.raises(LowbitError, match="codebook"):
        compile_model("llama-tiny", tmp_path / "a", "w3cb", targets="mixpe", progress=False)
    assert not (tmp_path / "a").exists()
    compile_model("llama-tiny", tmp_path / "b", "w3cb", targets="ref", progress=False)
    from compiler.export.gguf import export_gguf

    with pytest.raises(LowbitError, match="codebook"):
        export_gguf(tmp_path / "b", tmp_path / "b.gguf")
