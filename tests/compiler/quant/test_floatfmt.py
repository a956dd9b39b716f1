"""The float weight formats (compiler/quant/floatfmt.py): E2M1 and E4M3 rounding bit for bit against references
written from the OCP specifications, the MXFP4 / NVFP4 / NF4 / MXFP8 / FP8 scale rules, GPTQ onto them, bits and grammar."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from compiler.errors import LowbitError
from compiler.quant import floatfmt as fp4
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


@pytest.mark.parametrize("fmt", ["mxfp4", "nvfp4", "nf4", "nf4-sp1", "mxfp8", "fp8", "fp8g32", "fp8b"])
def test_diagonal_hessian_gptq_is_rtn(fmt):
    rng = np.random.default_rng(2)
    w = rng.standard_normal((16, 128)).astype(np.float32)
    q, r = quantize_gptq(w, np.eye(128), parse_spec(fmt), block_size=32), quantize_rtn(w, parse_spec(fmt))
    for f in ("codes", "scales", "table", "sparse_cols", "sparse_vals"):
        np.testing.assert_array_equal(getattr(q, f), getattr(r, f), err_msg=f)


def test_bits_and_grammar():
    assert [spec_bpw(parse_spec(t), 1536) for t in ("mxfp4", "nvfp4", "nf4", "mxfp8", "fp8", "fp8g128")] == [4.25, 4.5, 4.25, 8.25, 8 + 32 / 1536, 8.25]
    assert parse_spec("nf4g128").name == "nf4g128" and parse_spec("nvfp4a8").act == "a8"
    assert parse_spec("fp8").group_size == 0 and parse_spec("fp8g64").name == "fp8g64" and parse_spec("mxfp8a8").name == "mxfp8a8"
    for bad in ("mxfp4g64", "nf4-min", "mxfp4k", "nvfp4cb", "mxfp8g64", "fp8-asym", "fp8pc", "fp8g48"):
        with pytest.raises(LowbitError):
            parse_spec(bad)


def e4m3_from_spec(c: int) -> float:
    """Decode an E4M3 bit pattern by OCP v1.0 (sign, 4 exponent bits of bias 7, 3 mantissa bits; exponent 0 is
    subnormal: m / 8 * 2^-6; S.1111.111 is NaN)."""
    s, e, m = c >> 7, (c >> 3) & 15, c & 7
    if e == 15 and m == 7:
        return float("nan")
    v = (m / 8) * 2.0**-6 if e == 0 else (1 + m / 8) * 2.0 ** (e - 7)
    return -v if s else v


def test_e4m3_table_decodes_every_code_as_the_spec_and_stays_finite():
    want = np.array([e4m3_from_spec(c) for c in range(256)], np.float32)
    np.testing.assert_array_equal(fp4.e4m3_table(), want)  # (NaN at 0x7f and 0xff: assert_array_equal matches NaN)
    t = fp4.table("fp8")[0]
    assert t.shape == (256,) and np.isfinite(t).all() and t[0x7F] == 448 and t[0xFF] == -448
    ok = ~np.isnan(want)
    np.testing.assert_array_equal(t[ok], want[ok])
    codes = np.where(np.arange(256) == 0x80, 0, np.arange(256))[ok]  # (-0.0 is not < 0: it encodes as +0)
    assert np.array_equal(fp4.e4m3_encode(want[ok]), codes.astype(np.uint8))  # every other value encodes to its own code


@settings(max_examples=300, deadline=None)
@given(st.floats(-460, 460, width=32, allow_nan=False))
def test_e4m3_codes_are_the_nearest_value_ties_to_even_saturating(v):
    got = int(fp4.nearest_codes(np.array([v], np.float32), "fp8")[0])
    vals = np.array([e4m3_from_spec(c) for c in range(256)])
    a = min(abs(v), 448.0)
    d = np.abs(np.abs(np.nan_to_num(vals, nan=1e9)) - a)
    d[128:] = np.inf  # magnitudes: the positive half
    best = np.flatnonzero(d == d.min())
    want = int(best[0] if len(best) == 1 else next(c for c in best if c % 2 == 0))
    assert got & 0x7F == want and (got >> 7) == (1 if v < 0 else 0) or (want == 0 and got & 0x7F == 0)


def test_mxfp8_scale_puts_the_group_max_in_e4m3s_top_binade_and_fp8_is_per_channel():
    rng = np.random.default_rng(5)
    w = (rng.standard_normal((4, 64)) * 0.05).astype(np.float32)
    q = quantize_rtn(w, parse_spec("mxfp8"))
    amax = np.abs(w.reshape(4, 2, 32)).max(axis=-1)
    np.testing.assert_array_equal(q.scales, (2.0 ** (np.floor(np.log2(amax)) - 8)).astype(np.float32))
    v = w.reshape(4, 2, 32) / q.scales[..., None]
    np.testing.assert_array_equal(q.codes.reshape(4, 2, 32), fp4.e4m3_encode(np.clip(v, -448, 448)))
    assert q.bits == 8 and q.table.shape == (1, 256)
    p = quantize_rtn(w, parse_spec("fp8"))
    assert p.group_size == 64 and p.scales.shape == (4, 1)
    np.testing.assert_array_equal(p.scales[:, 0], (np.abs(w).max(axis=1) / np.float32(448)).astype(np.float32))
    assert np.all(np.abs(p.dequantize() - w) <= np.abs(w) / 16 + 2.0**-9 * p.scales)  # 3 mantissa bits: half a step


def test_fp8b_has_one_scale_per_128_by_128_block():
    """fp8b (DeepSeek-V3 blocks): amax / 448 over 128 rows x 128 features, repeated on the block's rows; the last
    row block may be short; elements as fp8's."""
    rng = np.random.default_rng(6)
    w = (rng.standard_normal((200, 256)) * 0.05).astype(np.float32)
    w[150, 3] = 3.0  # an outlier raises its block's scale only
    q = quantize_rtn(w, parse_spec("fp8b"))
    assert q.group_size == 128 and q.scales.shape == (200, 2) and q.fp == "fp8b"
    for r0, r1 in ((0, 128), (128, 200)):
        for j in range(2):
            block = np.abs(w[r0:r1, 128 * j : 128 * (j + 1)]).max()
            assert np.all(q.scales[r0:r1, j] == np.float32(block / np.float32(448)))
    assert q.scales[150, 0] > 10 * q.scales[0, 0] and q.scales[150, 1] < q.scales[150, 0]
    v = w.reshape(200, 2, 128) / q.scales[..., None]
    np.testing.assert_array_equal(q.codes.reshape(200, 2, 128), fp4.e4m3_encode(np.clip(v, -448, 448)))
    assert parse_spec("fp8b").name == "fp8b" and parse_spec("fp8bafp8").act == "afp8"
    assert spec_bpw(parse_spec("fp8b"), 1536) == 8 + 32 / 128**2  # one fp32 scale per 128 x 128 weights
    narrow = quantize_rtn(w[:, :64], parse_spec("fp8b"))  # K below the block: the group falls back as every format's does
    assert narrow.group_size == 64 and np.all(narrow.scales[:128] == np.float32(np.abs(w[:128, :64]).max() / np.float32(448)))
    for bad in ("fp8bg64", "fp8b-asym"):
        with pytest.raises(LowbitError):
            parse_spec(bad)
