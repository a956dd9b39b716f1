
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


@SETTINGS
@given(weight_and_spec(specs=INT_SPECS))
def test_rtn_error_at_most_half_a_step(ws):
    # For symmetric specs every value of a group lies within the representable range (|w| <= absmax and
    # the grid spans [-zero*s, (qmax-zero)*s] with s = 2*absmax/qmax), so the bound holds everywhere.
    w, spec = ws
    q = quantize_rtn(w, spec)
    _check_format(q, spec, w)
    s = _scale_per_element(q)
    err = np.abs(q.dequantize().astype(np.float64) - w.astype(np.float64))
    eps = s * (spec.qmax + 1) * 2.0**-22  # float32 rounding of w / s and of s * (q - z)
    assert np.all(err <= s / 2 + eps), float(np.max(err / s))
    if spec.symmetric:
        assert np.all(q.zeros == 1 << (spec.bits - 1))


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
    w = np.array([[-7.5, 0.0, 3.75, 7.5, 2.5, -0.5]], np.float32)
    q = quantize_rtn(w, parse_spec("w4pc"))
    # scale = 2*7.5/15 = 1; rint(w) = -8, 0, 4, 8, 2 (half to even), -0 -> +8 -> 0, 8, 12, 16 -> 15, 10, 8
    assert q.scales[0, 0] == 1.0
    assert q.zeros[0, 0] == 8
    assert q.codes.tolist() == [[0, 8, 12, 15, 10, 8]]


def test_asymmetric_hand_example():
    w = np.array([[-1.0, 0.0, 0.5, 3.0]], np.float32)
    q = quantize_rtn(w, parse_spec("w2pc-asym"))
    # scale = 4/3, zero = rint(0.75) = 1; w/scale = -0.75, 0, 0.375, 2.25 -> -1, 0, 0, 2 -> +1 -> 0, 1, 1, 3
    assert q.scales[0, 0] == np.float32(4.0 / 3.0)
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
    if "ternary" not in spec_text:  # the half-step bound of the module doc, at the group actually used
        assert np.all(np.abs(q.dequantize() - w) <= 0.5 * np.repeat(q.scales, group, axis=1) * (1 + 1e-5))


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
