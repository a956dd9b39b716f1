"""The numeric contract of qlinear (docs/DESIGN.md): A8 integer group sums are exact; A16 sums per group in fp32 of
fp16 activations; A32 the same sums of the float32 activations as given (weight-only quantization); dequantization
once per group."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from compiler.quant.pack import pack, storage_layout
from compiler.quant.rtn import quantize_rtn, quantize_rtn_min
from compiler.quant.spec import parse_spec
from compiler.reference import QLinearWeights, int_sum_fits_f32, qlinear, qlinear_acc, quantize_activations_a8

SPECS = ["w8g32", "w8pc-asym", "w4g128", "w4g32-asym", "w3g64", "w2g32", "ternary", "ternaryg64"]


def prepared(qw, spec):
    layout = storage_layout(qw.bits)
    n, k = qw.shape
    attrs = dict(n=n, k=k, bits=qw.bits, group_size=qw.group_size, layout=layout, mins=qw.has_mins)
    return QLinearWeights(pack(qw.codes, qw.bits, layout), qw.scales, qw.mins if qw.has_mins else qw.zeros, attrs)


@st.composite
def case(draw):
    spec = parse_spec(draw(st.sampled_from(SPECS)))
    j = draw(st.integers(1, 3))
    g = spec.group_size or draw(st.sampled_from([16, 40, 128]))
    k = g * j if spec.group_size else g
    n = draw(st.integers(1, 24))
    m = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**31))
    r = np.random.default_rng(seed)
    w = (r.standard_normal((n, k)) * r.uniform(0.01, 3)).astype(np.float32)
    x = (r.standard_normal((m, k)) * r.uniform(0.01, 100)).astype(np.float32)
    return spec, w, x


@given(case())
def test_a8_group_sums_equal_float64_evaluation_of_the_integers(c):
    spec, w, x = c
    qw = quantize_rtn(w, spec)
    p = prepared(qw, spec)
    acc, sa, xs = qlinear_acc(x, p, "a8")
    assert xs is None
    qa, sa2 = quantize_activations_a8(x)
    assert np.array_equal(sa, sa2)
    n, k = qw.shape
    g = qw.group_size
    exact = np.einsum("mjg,njg->jmn", qa.astype(np.float64).reshape(len(x), k // g, g), qw.int_weights().astype(np.float64).reshape(n, k // g, g))
    assert np.array_equal(acc.astype(np.float64), exact)  # bit-exact, not approximately
    assert np.all(np.abs(exact) < 2**31)  # fits the int32 accumulator of the contract


@given(case())
def test_a8_output_follows_the_dequantize_once_per_group_formula(c):
    spec, w, x = c
    qw = quantize_rtn(w, spec)
    y = qlinear(x, prepared(qw, spec), "a8")
    qa, sa = quantize_activations_a8(x)
    n, k = qw.shape
    g = qw.group_size
    acc = np.einsum("mjg,njg->mnj", qa.astype(np.float64).reshape(len(x), k // g, g), qw.int_weights().astype(np.float64).reshape(n, k // g, g))
    ref = (sa[:, None, None].astype(np.float64) * qw.scales[None].astype(np.float64) * acc).sum(-1)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max() + 1e-30)


@given(case())
def test_a16_matches_float64_on_fp16_activations(c):
    spec, w, x = c
    qw = quantize_rtn(w, spec)
    y = qlinear(x, prepared(qw, spec), "a16")
    x16 = x.astype(np.float16).astype(np.float64)
    ref = x16 @ qw.dequantize().astype(np.float64).T
    # fp32 sums over groups of <= K terms: relative to the sum of |terms|
    bound = 1e-5 * (np.abs(x16) @ np.abs(qw.dequantize().astype(np.float64)).T) + 1e-30
    assert np.all(np.abs(y - ref) <= bound)


@given(case())
def test_a32_is_a16_without_the_rounding(c):
    """A16 is A32 on the fp16-rounded activations, bit for bit (the same sums in the same order)."""
    spec, w, x = c
    p = prepared(quantize_rtn(w, spec), spec)
    x16 = x.astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(qlinear(x16, p, "a32"), qlinear(x, p, "a16"))
    acc32, sa, xs = qlinear_acc(x, p, "a32")
    assert sa is None and xs is None and acc32.dtype == np.float32


@given(case())
def test_a32_matches_float64_on_the_float32_activations(c):
    spec, w, x = c
    qw = quantize_rtn(w, spec)
    y = qlinear(x, prepared(qw, spec), "a32")
    xd = x.astype(np.float64)
    ref = xd @ qw.dequantize().astype(np.float64).T
    bound = 1e-5 * (np.abs(xd) @ np.abs(qw.dequantize().astype(np.float64)).T) + 1e-30
    assert np.all(np.abs(y - ref) <= bound)


def test_a8_activation_quantization_rule():
    x = np.array([[0.0, 1.0, -2.54, 127.0], [0.0, 0.0, 0.0, 0.0]], np.float32)
    qa, sa = quantize_activations_a8(x)
    assert sa[0] == np.float32(1.0) and sa[1] == np.float32(1.0)
    assert qa[0].tolist() == [0, 1, -3, 127]
    assert qa[1].tolist() == [0, 0, 0, 0]


def test_float32_exactness_bound():
    assert int_sum_fits_f32(128, 127, 255)  # w8 asym, g128: 4.1e6 < 2^24
    assert not int_sum_fits_f32(8192, 127, 255)  # per-channel K=8192 needs float64


@st.composite
def min_case(draw):
    bits = draw(st.sampled_from([8, 4, 3, 2]))
    g = draw(st.sampled_from([16, 32, 64]))
    j, n, m = draw(st.integers(1, 3)), draw(st.integers(1, 24)), draw(st.integers(1, 5))
    r = np.random.default_rng(draw(st.integers(0, 2**31)))
    w = (r.standard_normal((n, g * j)) * r.uniform(0.01, 3) + r.uniform(-1, 1)).astype(np.float32)
    x = (r.standard_normal((m, g * j)) * r.uniform(0.01, 100)).astype(np.float32)
    return quantize_rtn_min(w, bits, g), x


@given(min_case())
def test_scale_and_minimum_a8_sums_are_exact_and_the_output_follows_the_formula(c):
    """Scale-and-minimum groups: acc = sum qa q and xs = sum qa, both exact; y = sa sum_j (s_j acc_j + m_j xs_j)."""
    qw, x = c
    p = prepared(qw, None)
    acc, sa, xs = qlinear_acc(x, p, "a8")
    qa, _ = quantize_activations_a8(x)
    n, k = qw.shape
    g = qw.group_size
    qa3 = qa.astype(np.float64).reshape(len(x), k // g, g)
    assert np.array_equal(acc.astype(np.float64), np.einsum("mjg,njg->jmn", qa3, qw.codes.astype(np.float64).reshape(n, k // g, g)))
    assert np.array_equal(xs.astype(np.float64), qa3.sum(-1).T)
    y = qlinear(x, p, "a8")
    ref = sa[:, None] * (np.einsum("jmn,nj->mn", acc.astype(np.float64), qw.scales.astype(np.float64)) + np.einsum("jm,nj->mn", xs.astype(np.float64), qw.mins.astype(np.float64)))
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max() + 1e-30)


@given(min_case())
def test_scale_and_minimum_a16_matches_float64_on_the_dequantized_weights(c):
    qw, x = c
    y = qlinear(x, prepared(qw, None), "a16")
    x16 = x.astype(np.float16).astype(np.float64)
    wd = qw.codes.astype(np.float64) * np.repeat(qw.scales.astype(np.float64), qw.group_size, 1) + np.repeat(qw.mins.astype(np.float64), qw.group_size, 1)
    ref = x16 @ wd.T
    bound = 2e-5 * (np.abs(x16) @ (np.abs(wd) + np.repeat(np.abs(qw.mins.astype(np.float64)), qw.group_size, 1)).T) + 1e-30
    assert np.all(np.abs(y - ref) <= bound)


@given(min_case())
def test_scale_and_minimum_a32_matches_float64_on_the_dequantized_weights(c):
    """xs = the group sums of the float32 activations as given (not rounded): A32 is the float model on the
    dequantized weights, up to float32 summation."""
    qw, x = c
    p = prepared(qw, None)
    _, _, xs = qlinear_acc(x, p, "a32")
    g = qw.group_size
    np.testing.assert_allclose(xs.T, x.astype(np.float64).reshape(len(x), -1, g).sum(-1), rtol=1e-5, atol=1e-5 * np.abs(x).max() * g)
    y = qlinear(x, p, "a32")
    xd = x.astype(np.float64)
    wd = qw.codes.astype(np.float64) * np.repeat(qw.scales.astype(np.float64), g, 1) + np.repeat(qw.mins.astype(np.float64), g, 1)
    bound = 2e-5 * (np.abs(xd) @ (np.abs(wd) + np.repeat(np.abs(qw.mins.astype(np.float64)), g, 1)).T) + 1e-30
    assert np.all(np.abs(y - xd @ wd.T) <= bound)
    np.testing.assert_array_equal(qlinear(x.astype(np.float16).astype(np.float32), p, "a32"), qlinear(x, p, "a16"))


def test_scale_and_minimum_rtn_uses_the_whole_range_of_a_group_that_excludes_zero():
    w = np.linspace(1.0, 2.5, 32, dtype=np.float32)[None]
    qw = quantize_rtn_min(w, 4, 32)
    # The searched (s, m) of a ramp sits the grid within half a step of its ends (m = 1.024, not 0).
    assert abs(qw.mins[0, 0] - 1.0) <= qw.scales[0, 0] / 2 and qw.codes.min() == 0 and qw.codes.max() == 15
    assert np.abs(qw.dequantize() - w).max() <= qw.scales[0, 0] / 2 + 1e-7


@given(min_case(), st.booleans())
def test_qembedding_rows_are_the_dequantized_table_rows(c, with_mins):
    from compiler.reference import KERNELS

    qw, _ = c
    if not with_mins:
        qw = quantize_rtn(qw.dequantize(), parse_spec(f"w{qw.bits}pc-asym"))
    p = prepared(qw, None)
    ids = np.array([0, qw.shape[0] - 1, 0], np.int64)
    (rows,) = KERNELS["qembedding"]([ids], {}, p)
    np.testing.assert_allclose(rows, qw.dequantize()[ids], rtol=1e-6, atol=1e-6 * np.abs(qw.dequantize()).max())
