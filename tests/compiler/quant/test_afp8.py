"""AFP8 activations (per-token dynamic FP8 E4M3, the `afp8` act mode): the spec grammar, the reference quantizer
(every value an E4M3 value, the row's largest at 448, within half a step of x / sa), the TVM and MLIR quantizers
bit for bit against it, whole models on tvm-cpu and mlir-cpu against ref, and the targets that refuse it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from compiler.errors import LowbitError
from compiler.quant.floatfmt import e4m3_encode, e4m3_table
from compiler.quant.spec import parse_spec
from compiler.reference import QLinearWeights, qlinear, quantize_activations_fp8
from tests.helpers import run_cli


@pytest.mark.parametrize("text, bits, fp", [("w8pcafp8", 8, ""), ("fp8afp8", 8, "fp8"), ("w4g32afp8-asym", 4, ""), ("mxfp4afp8", 4, "mxfp4")])
def test_spec_parses_and_names_itself(text, bits, fp):
    s = parse_spec(text)
    assert s.act == "afp8" and s.bits == bits and getattr(s, "fp", "") == fp
    assert parse_spec(s.name) == s


@pytest.mark.parametrize("text", ["w4afp16", "w4g32afp4", "w4g32af8"])
def test_bad_activation_modes_are_named(text):
    with pytest.raises(LowbitError) as e:
        parse_spec(text)
    assert text in str(e.value)


def _rows(draw_shape=(st.integers(1, 4), st.integers(1, 40))):
    return hnp.arrays(np.float32, st.tuples(*draw_shape), elements=st.floats(-1e4, 1e4, width=32, allow_subnormal=False))


@settings(max_examples=200, deadline=None)
@given(_rows(), st.sampled_from([1.0, 1e-30, 1e20]))
def test_reference_quantizer_gives_e4m3_values(x, scale):
    x = (x * np.float32(scale)).astype(np.float32)
    xa, sa = quantize_activations_fp8(x)
    assert xa.dtype == np.float32 and sa.shape == (x.shape[0],)
    assert np.array_equal(e4m3_table()[e4m3_encode(xa)], xa)  # every value an E4M3 value
    assert np.abs(xa).max(initial=0) <= 448
    y = x / sa[:, None]
    half_step = np.maximum(2.0 ** (np.floor(np.log2(np.maximum(np.abs(y), 2.0**-6))) - 4), 0)
    assert np.all(np.abs(xa.astype(np.float64) - y) <= half_step * (1 + 1e-6))  # the nearest value, to half a step
    amax = np.abs(x).max(axis=1)
    big = amax > np.finfo(np.float32).tiny * 448 * 4  # sa a normal float: amax / sa rounds back to 448
    assert np.all(np.abs(xa[big]).max(axis=1) == 448)  # the row's largest goes to the top of the range
    assert np.all(sa[amax == 0] == 1) and np.all(xa[amax == 0] == 0)


def _edge_rows():
    """Rows with a zero row, exact E4M3 midpoints (ties to even), subnormals and a large dynamic range."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 64)).astype(np.float32) * 3
    x[1] = 0.0
    x[2, 0] = 448.0  # sa = 1: x itself is rounded
    x[2, 1:9] = [1.0625, 1.1875, -1.0625, 17.0, 19.0, 0.5 * 2.0**-9, 1.5 * 2.0**-9, 432.0]  # midpoints
    x[3] *= np.float32(1e-3)
    x[3, 0] = 1e3
    x[4] = np.float32(2.0) ** rng.integers(-20, 20, 64).astype(np.float32) * np.sign(rng.standard_normal(64)).astype(np.float32)
    return x


def test_tvm_quantizer_matches_reference_bit_for_bit():
    pytest.importorskip("tvm")
    from tests.compiler.backends.tvm.test_kernels import build

    from compiler.backends.tvm import qlinear_te

    x = _edge_rows()
    f = build(qlinear_te.act_quant_fp8, [(("S", 64), "float32")], "aq", qlinear_te.schedule_act_quant("cpu", "fp8"))
    xa, sa = (t.numpy() for t in f(x))
    xr, sr = quantize_activations_fp8(x)
    np.testing.assert_array_equal(sa, sr)
    np.testing.assert_array_equal(xa, xr)
    assert np.array_equal(xr[2, :5], [448.0, 1.0, 1.25, -1.0, 16.0])  # ties to the even mantissa


def test_mlir_quantizer_matches_reference_bit_for_bit():
    pytest.importorskip("iree.runtime")
    from compiler.backends.mlir import qlinear as mq
    from tests.compiler.backends.mlir.common import run_function

    x = _edge_rows()
    m, k = x.shape
    xa, sa = run_function(lambda B, a: mq.quantize_fp8(B, a, m, k), [((m, k), "f32")], [((m, k), "f32"), ((m,), "f32")], x)
    xr, sr = quantize_activations_fp8(x)
    np.testing.assert_array_equal(sa, sr)
    np.testing.assert_array_equal(xa, xr)


def test_reference_qlinear_differs_from_a32_by_the_fp8_rounding():
    """y = sa * sum_j s_j acc_j: FP8 rounding (3 mantissa bits) moves a W8 layer's output by ~1-3%, never 0."""
    from compiler.backends.mlir.gemv import qlinear_attrs, quantized_layer
    from compiler.quant.pack import storage_layout

    from compiler.quant.pack import pack

    qw, spec = quantized_layer(64, 256, "w8pcafp8")
    attrs = qlinear_attrs(qw, spec, 64, 256)
    w = QLinearWeights(pack(qw.codes, 8, storage_layout(8)), qw.scales, qw.zeros, attrs)
    x = np.random.default_rng(1).standard_normal((3, 256)).astype(np.float32)
    y8, y32 = qlinear(x, w, "afp8"), qlinear(x, w, "a32")
    rel = np.linalg.norm(y8 - y32) / np.linalg.norm(y32)
    assert 1e-3 < rel < 5e-2
    xa, sa = quantize_activations_fp8(x)
    np.testing.assert_allclose(y8, qlinear(xa, w, "a32") * sa[:, None], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("spec", ["w4g128afp8", "w8pcafp8", "w4g128afp8-min"])
def test_mlir_gemv_meets_the_contract(spec):
    pytest.importorskip("iree.runtime")
    from compiler.backends.mlir.gemv import build_gemv

    mins = spec.endswith("-min")
    g = build_gemv(128, 512, spec.removesuffix("-min"), threads=1, rotate=False, mins=mins)
    x = np.random.default_rng(3).standard_normal((1, 512)).astype(np.float32)
    assert g.max_rel_err_vs_ref(x) < 1e-5


def test_cli_act_flag_compiles_and_runs_afp8(tmp_path, capsys):
    """`--act afp8` on a spec without ACT; the whole-model agreement of both CPU compilers with ref is in
    tests/runtime/backends/test_agreement.py."""
    import json

    out = tmp_path / "a"
    code, so, se = run_cli(["compile", "llama-tiny", "-o", out, "--quant", "w4g32", "--act", "afp8", "--target", "ref,tvm-cpu"], capsys)
    assert code == 0, se
    q = json.loads((out / "manifest.json").read_text())["quant"]
    assert q["name"] == "w4g32afp8" and q["act"] == "afp8"
    code, so, se = run_cli(["run", out, "--backend", "tvm-cpu", "--compare", "ref", "--ids", "3,4,5,6,7", "--tokens", "3"], capsys)
    assert code == 0, se
    assert float(so.split("cosine similarity (logits)")[1].split("│")[1]) >= 0.9999


@pytest.mark.parametrize("target, line", [
    ("tvm-cuda", "afp8 activations: target tvm-cuda has no FP8 activation kernel"),
    ("mlir-cuda", "afp8 activations: target mlir-cuda has no FP8 activation kernel"),
    ("mac", "has afp8 activations; the mac array takes a8 or a16"),
])
def test_targets_without_fp8_activations_refuse(tmp_path, capsys, target, line):
    code, so, se = run_cli(["compile", "llama-tiny", "-o", tmp_path / "b", "--quant", "w4g32", "--act", "afp8", "--target", target], capsys)
    assert code == 2 and line in se and len(se.strip().splitlines()) == 1, se
    assert not (tmp_path / "b").exists()
