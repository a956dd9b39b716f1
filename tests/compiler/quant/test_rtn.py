
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from compiler.errors import LowbitError
from compiler.quant.rtn import quantize_codes_with_scales, quantize_rtn
from compiler.quant.spec import QuantSpec, parse_spec

SETTINGS = settings(deadline=None, max_examples=60)

INT_SPECS = [f"w{b}{g}{s}" for b in (8, 4, 3, 2) for g in ("g32", "pc") for s in ("", "-asym")]
ALL_SPECS = INT_SPECS + ["ternary", "ternaryg32"]


@st.composite
def weight_and_spec(draw, specs=ALL_SPECS, max_abs=float(np.float32(1e30))):
    spec = parse_spec(draw(st.sampled_from(specs)))
    n = draw(st.integers(1, 6))
    if spec.group_size:
        k = spec.group_size * draw(st.integers(1, 3))
    else:
        k = draw(st.integers(1, 70))  # per-channel: any K, odd ones included
    elems = st.floats(-max_abs, max_abs, width=32, allow_nan=False, allow_infinity=False)
    w = draw(arrays(np.float32, (n, k), elements=elems))
    # Also scale whole rows so groups of very different magnitudes show up.
    row_scale = draw(arrays(np.float32, (n, 1), elements=st.sampled_from([1e-20, 1e-3, 1.0, 1e6])))
    return (w * row_scale).astype(np.float32), spec


def _scale_per_element(q):
    return np.repeat(q.scales, q.group_size, axis=1).astype(np.float64)


def _check_format(q, spec, w):
    n, k = w.shape
    g = spec.group_for(k)
    assert q.codes.dtype == np.uint8 and q.codes.shape == (n, k)
    assert q.scales.dtype == np.float32 and q.scales.shape == (n, k // g)
    assert q.zeros.dtype == np.uint8 and q.zeros.shape == (n, k // g)
    assert q.bits == spec.bits and q.group_size == g and q.ternary == spec.ternary
    assert int(q.codes.max()) <= spec.qmax
    assert int(q.zeros.max()) <= spec.qmax
    assert np.all(np.isfinite(q.scales)) and np.all(q.scales > 0)


def _interior(q, spec):
    """Codes strictly inside 0..qmax: their values were rounded, never clamped."""
    return (q.codes > 0) & (q.codes < spec.qmax)


def _group_sse(w, q):
    d = q.dequantize().astype(np.float64) - w.astype(np.float64)
    n, k = w.shape
    return (d * d).reshape(n, k // q.group_size, q.group_size).sum(-1)


@SETTINGS
@given(weight_and_spec(specs=INT_SPECS))
def test_rtn_error_at_most_half_a_step(ws):
    # Below 8 bits the scale is searched for the least squared error, which may clip a group's extremes:
    # every value that was rounded (not clamped) is within scale/2, and the tests below bound the clipped
    # ones through the group's squared error. W8 symmetric keeps the range: every value within scale/2.
    w, spec = ws
    q = quantize_rtn(w, spec)
    _check_format(q, spec, w)
    s = _scale_per_element(q)
    err = np.abs(q.dequantize().astype(np.float64) - w.astype(np.float64))
    eps = s * (spec.qmax + 1) * 2.0**-22  # float32 rounding of w / s and of s * (q - z)
    inside = _interior(q, spec) | (spec.symmetric and spec.bits == 8)
    assert np.all(err[inside] <= s[inside] / 2 + eps[inside]), float(np.max(err / s))
    if spec.symmetric:
        assert np.all(q.zeros == 1 << (spec.bits - 1))


@SETTINGS
@given(weight_and_spec(specs=[s for s in INT_SPECS if "asym" not in s and not s.startswith("w8")], max_abs=1e6))
def test_symmetric_scale_is_no_worse_than_the_no_clipping_scale(ws):
    # (W8 keeps the fixed rule, checked by the scale/2 bound above.)
    # s0 = max(-xmin / h, xmax / (h - 1)) puts the group's extreme on the grid and every value within s0/2;
    # the rule's scale is the least-squares choice among candidates that include s0, so its squared error
    # per group is at most s0's (up to float32 rounding of the candidates' sums).
    w, spec = ws
    q = quantize_rtn(w, spec)
    h = 1 << (spec.bits - 1)
    n, k = w.shape
    g = q.group_size
    wg = w.reshape(n, k // g, g).astype(np.float64)
    s0 = np.maximum(-np.minimum(wg.min(-1), 0) / h, np.maximum(wg.max(-1), 0) / (h - 1)).astype(np.float32)
    s0 = np.where(s0 > 0, np.maximum(s0, np.finfo(np.float32).tiny), 1).astype(np.float32)
    zeros = np.full(s0.shape, h, np.uint8)
    from compiler.quant.qweight import QuantizedWeight

    q0 = QuantizedWeight(quantize_codes_with_scales(w, s0, zeros, spec), s0, zeros, spec.bits, g)
    e0 = np.abs(q0.dequantize().astype(np.float64) - w.astype(np.float64))
    assert np.all(e0 <= np.repeat(s0, g, axis=1) * (0.5 + (spec.qmax + 1) * 2.0**-22))
    amax = np.abs(wg).max(-1)
    tol = 1e-5 * (amax * amax * g) + 1e-300
    assert np.all(_group_sse(w, q) <= _group_sse(w, q0) + tol)


@SETTINGS
@given(weight_and_spec())
def test_requantizing_dequantized_weights_is_identity(ws):
    w, spec = ws
    q = quantize_rtn(w, spec)
    _check_format(q, spec, w)
    again = quantize_codes_with_scales(q.dequantize(), q.scales, q.zeros, spec)
    np.testing.assert_array_equal(again, q.codes)


@SETTINGS
@given(
    st.sampled_from(["ternary", "ternaryg32", "ternaryg64"]),
    st.integers(1, 5),
    st.integers(1, 3),
    st.data(),
)
def test_exactly_ternary_weights_round_trip_exactly(spec_text, n, groups, data):
    spec = parse_spec(spec_text)
    k = (spec.group_size or 32) * groups
    t = data.draw(arrays(np.int8, (n, k), elements=st.sampled_from([-1, 0, 1])))
    s = data.draw(arrays(np.float32, (n, 1), elements=st.floats(float(np.float32(1e-30)), float(np.float32(1e30)), width=32)))
    w = (s * t.astype(np.float32)).astype(np.float32)
    q = quantize_rtn(w, spec)
    _check_format(q, spec, w)
    np.testing.assert_array_equal(q.codes, (t + 1).astype(np.uint8))
    np.testing.assert_array_equal(q.dequantize(), w)
    # Groups with a nonzero weight get exactly the row's s back as their scale.
    has_nz = (t != 0).reshape(n, k // q.group_size, q.group_size).any(axis=-1)
    np.testing.assert_array_equal(q.scales[has_nz], np.broadcast_to(s, q.scales.shape)[has_nz])


def test_symmetric_hand_example():
    # Integers in -8..7: s0 = max(8/8, 7/7) = 1 puts every value on the grid (no candidate does better than 0).
    q = quantize_rtn(np.array([[-8.0, -4.0, 0.0, 4.0, 7.0, 2.0]], np.float32), parse_spec("w4pc"))
    assert q.scales[0, 0] == 1.0 and q.zeros[0, 0] == 8
    assert q.codes.tolist() == [[0, 4, 8, 12, 15, 10]]
    # A positive extreme lands on the top code (7), a negative one would on -8: s0 = max(3/8, 7/7) = 1.
    q = quantize_rtn(np.array([[-3.0, 0.0, 2.0, 7.0]], np.float32), parse_spec("w4pc"))
    assert q.scales[0, 0] == 1.0 and q.codes.tolist() == [[5, 8, 10, 15]]


def test_symmetric_rule_clips_an_outlier_when_that_lowers_the_error():
    # One outlier (7) and 31 values of 0.55: s0 = 1 keeps the outlier exact but rounds every 0.55 to 1, a
    # squared error of 31 * 0.45^2 = 6.28; s = 0.825 (= 7 * 0.825 / 7) clips the outlier to 7 * 0.825 (1.5
    # off) and puts the rest 0.275 off: 1.225^2 + 31 * 0.275^2 = 3.84.
    w = np.full((1, 32), 0.55, np.float32)
    w[0, 0] = 7.0
    q = quantize_rtn(w, parse_spec("w4g32"))
    sse = float(((q.dequantize().astype(np.float64) - w) ** 2).sum())
    assert q.scales[0, 0] < 1.0 and q.codes[0, 0] == 15 and sse < 0.7 * 31 * 0.45**2


def test_asymmetric_hand_example():
    w = np.array([[-1.0, 0.0, 0.5, 3.0]], np.float32)
    q = quantize_rtn(w, parse_spec("w2pc-asym"))
    # Range rule: scale = 4/3, zero = rint(0.75) = 1; w/scale = -0.75, 0, 0.375, 2.25 -> -1, 0, 0, 2 -> +1 ->
    # codes 0, 1, 1, 3, squared error 1/9 + 0.25 + 1/9 = 0.472. The least-squares scale of those codes is
    # (1 + 6) / (1 + 4) = 1.4 (error 0.16 + 0.25 + 0.04 = 0.45), and no other candidate does better.
    assert abs(float(q.scales[0, 0]) - 1.4) < 1e-6
    assert q.zeros[0, 0] == 1
    assert q.codes.tolist() == [[0, 1, 1, 3]]


def test_asymmetric_all_positive_group_includes_zero():
    q = quantize_rtn(np.array([[1.0, 2.0, 3.0]], np.float32), parse_spec("w2pc-asym"))
    # xmin = min(1, 0) = 0 -> zero point 0, scale 1 -> codes 1, 2, 3 exactly
    assert q.zeros[0, 0] == 0 and q.scales[0, 0] == 1.0
    assert q.codes.tolist() == [[1, 2, 3]]


def test_ternary_hand_example():
    w = np.array([[2.0, -2.0, 0.1, 0.0, 4.0, -0.5, 1.0, 0.0]], np.float32)
    q = quantize_rtn(w, parse_spec("ternary"))
    # a = 9.6/8 = 1.2; w/a -> t = 1, -1, 0, 0, 1, 0, 1, 0; refit s = mean(2, 2, 4, 1) = 2.25
    assert q.codes.tolist() == [[2, 0, 1, 1, 2, 1, 2, 1]]
    assert q.scales[0, 0] == np.float32(2.25) and q.zeros[0, 0] == 1
    assert q.bits == 2 and q.ternary


@pytest.mark.parametrize("spec_text", ["w4g32", "w4g32-asym", "ternaryg32"])
def test_all_zero_group(spec_text):
    spec = parse_spec(spec_text)
    w = np.zeros((2, 64), np.float32)
    w[1, 32:] = np.linspace(-1, 1, 32)
    q = quantize_rtn(w, spec)
    assert q.scales[0, 0] == 1.0 and q.scales[0, 1] == 1.0 and q.scales[1, 0] == 1.0
    np.testing.assert_array_equal(q.codes[0], np.repeat(q.zeros[0], 32))
    np.testing.assert_array_equal(q.dequantize()[0], 0.0)
    assert q.scales[1, 1] != 1.0


@pytest.mark.parametrize("spec_text,k,group", [("w4g128", 576, 64), ("w2g64-asym", 96, 32), ("ternaryg32", 40, 40), ("w4g128-min", 576, 64), ("w8g64", 128, 64)])
def test_a_group_that_does_not_divide_k_falls_back(spec_text, k, group):
    """The largest supported group below the spec's that divides K, else per-channel (compiler.groups)."""
    w = np.random.default_rng(k).standard_normal((4, k)).astype(np.float32)
    q = quantize_rtn(w, parse_spec(spec_text), name="layers.0.mlp.up")
    assert q.group_size == group and q.scales.shape == (4, k // group)
    if "ternary" not in spec_text:  # the half-step bound of the module doc (values rounded, not clamped)
        spec = parse_spec(spec_text)
        inside = _interior(q, spec) | (spec.symmetric and spec.bits == 8)
        err = np.abs(q.dequantize() - w)
        assert np.all(err[inside] <= (0.5 * np.repeat(q.scales, group, axis=1) * (1 + 1e-5))[inside])


def test_k_zero_raises():
    with pytest.raises(LowbitError) as exc:
        quantize_rtn(np.ones((4, 0), np.float32), parse_spec("w4g32"), name="layers.0.mlp.up")
    assert "[4, 0]" in str(exc.value) and "layers.0.mlp.up" in str(exc.value)


def test_non_finite_weight_raises():
    w = np.ones((2, 32), np.float32)
    w[1, 3] = np.nan
    with pytest.raises(LowbitError, match="NaN"):
        quantize_rtn(w, parse_spec("w4g32"), name="proj")


def test_large_matrix_error_level():
    # Speed is measured by benchmarks/quantize.py, never asserted here.
    w = np.random.default_rng(0).standard_normal((8192, 2048), dtype=np.float32)
    spec = QuantSpec(bits=4, group_size=128)
    q = quantize_rtn(w, spec)
    # Gaussian weights, 4-bit groups of 128: relative RMS error is around 0.1
    rel = np.linalg.norm(q.dequantize() - w) / np.linalg.norm(w)
    assert 0.05 < rel < 0.15
