"""The 4-bit float weight formats (compiler/quant/fp4.py): E2M1 and E4M3 rounding bit for bit against references
written from the OCP specifications, the MXFP4 / NVFP4 / NF4 scale rules, GPTQ onto them, bits and grammar."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from compiler.errors import LowbitError
from compiler.quant import fp4
from compiler.quant.bpw import spec_bpw
from compiler.quant.gptq import quantize_gptq
from compiler.quant.rtn import quantize_rtn
from compiler.quant.spec import parse_spec


def e2m1_from_spec(bits: int) -> float:
    """Decode an E2M1 bit pattern by OCP MX v1.0 (sign, 2 exponent bits with bias 1, 1 mantissa bit; exponent 0 is
    subnormal: 0.5 x mantissa)."""
    s, e, m = bits >> 3, (bits >> 1) & 3, bits & 1
    v = 0.5 * m if e == 0 else 2.0 ** (e - 1) * (1 + 0.5 * m)
    return -v if s else v


def e2m1_encode_reference(v: float) -> int:
    """Round to nearest, ties to the even mantissa, saturate to the largest normal (6)."""
    cands = list(range(8))
    a = abs(v)
    d = [abs(a - e2m1_from_spec(c)) for c in cands]
    best = min(d)
    ties = [c for c in cands if d[c] == best]
    c = next((t for t in ties if t % 2 == 0), ties[0])
    return c | (8 if np.signbit(v) else 0)


def test_the_table_is_the_e2m1_decoding():
    assert [e2m1_from_spec(c) for c in range(16)] == fp4.E2M1.tolist()


@settings(max_examples=300, deadline=None)
@given(st.floats(-20, 20, allow_nan=False, width=32) | st.sampled_from([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -0.25, -5.0, 6.0, 7.9, -0.0]))
def test_e2m1_rounding_matches_the_spec(v):
    assert int(fp4.e2m1_codes(np.array([v], np.float32))[0]) == e2m1_encode_reference(float(np.float32(v)))


def e4m3_values() -> np.ndarray:
    """Every finite non-negative E4M3 value (OCP: bias 7, exponent 15 with mantissa 7 is NaN, max 448)."""
    vals = [m * 2.0**-9 for m in range(8)]
    vals += [2.0 ** (e - 7) * (1 + m / 8) for e in range(1, 16) for m in range(8) if not (e == 15 and m == 7)]
    return np.array(sorted(vals))


@settings(max_examples=300, deadline=None)
@given(st.floats(0, 600, allow_nan=False) | st.sampled_from([1.0625, 2.0**-10, 3 * 2.0**-10, 448.0, 464.0, 0.0]))
def test_e4m3_rounding_matches_the_spec(x):
    vals = e4m3_values()
    d = np.abs(vals - min(x, 448.0))
    best = np.flatnonzero(d == d.min())
    # ties to even: the candidate whose mantissa (its index in the grid's binade) is even
    pick = vals[best[0]] if len(best) == 1 else next(vals[i] for i in best if (i % 8) % 2 == 0)
    assert float(fp4.e4m3(np.array([x]))[0]) == pick


def test_mxfp4_scale_is_the_power_of_two_below_the_max_over_four():
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((8, 64)) * 3).astype(np.float32)
    q = quantize_rtn(w, parse_spec("mxfp4"))
    amax = np.abs(w.reshape(8, 2, 32)).max(-1)
    assert np.all(np.log2(q.scales) == np.floor(np.log2(amax)) - 2) and np.all((amax / q.scales >= 4) & (amax / q.scales < 8))
    np.testing.assert_array_equal(q.table, fp4.E2M1.reshape(1, 16))
    v = w.reshape(8, 2, 32) / q.scales[..., None]
    np.testing.assert_array_equal(q.codes.reshape(8, 2, 32), fp4.e2m1_codes(v))


def test_nvfp4_scales_are_an_e4m3_times_the_tensor_scale():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 64)).astype(np.float32)
    q = quantize_rtn(w, parse_spec("nvfp4"))
    t = np.float32(np.abs(w).max() / (448 * 6))
    sb = q.scales / t
    np.testing.assert_allclose(fp4.e4m3(sb), sb, rtol=1e-6)  # each block scale an E4M3 value (up to the fp32 product)
    assert q.group_size == 16 and np.abs(q.dequantize()).max() <= 6 * q.scales.max() * (1 + 1e-6)


def test_nf4_uses_the_normalfloat_values():
    assert fp4.NF4[0] == -1.0 and fp4.NF4[7] == 0.0 and fp4.NF4[15] == 1.0 and np.all(np.diff(fp4.NF4) > 0)
    w = np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 64)
    q = quantize_rtn(w, parse_spec("nf4"))
    assert q.scales[0, 0] == 1.0
    d = np.abs(w[0][:, None] - fp4.NF4[None, :])
    np.testing.assert_array_equal(d[np.arange(64), q.codes[0]], d.min(axis=1))  # the nearest value


@pytest.mark.parametrize("fmt", ["mxfp4", "nvfp4", "nf4", "nf4-sp1"])
def test_diagonal_hessian_gptq_is_rtn(fmt):
    rng = np.random.default_rng(2)
    w = rng.standard_normal((16, 128)).astype(np.float32)
    q, r = quantize_gptq(w, np.eye(128), parse_spec(fmt), block_size=32), quantize_rtn(w, parse_spec(fmt))
    for f in ("codes", "scales", "table", "sparse_cols", "sparse_vals"):
        np.testing.assert_array_equal(getattr(q, f), getattr(r, f), err_msg=f)


def test_bits_and_grammar():
    assert [spec_bpw(parse_spec(t), 1536) for t in ("mxfp4", "nvfp4", "nf4")] == [4.25, 4.5, 4.25]
    assert parse_spec("nf4g128").name == "nf4g128" and parse_spec("nvfp4a8").act == "a8"
    for bad in ("mxfp4g64", "nf4-min", "mxfp4k", "nvfp4cb"):
        with pytest.raises(LowbitError):
            parse_spec(bad)
