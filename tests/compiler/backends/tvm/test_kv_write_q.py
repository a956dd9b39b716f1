"""tvm-cpu's in-place write of a quantized KV cache (compiler/backends/tvm/kv_cache.py, kv_write_q_inplace) equals the
reference's quantization bit for bit: the same codes and fp16 scales at the written rows, the other rows untouched."""

import functools

import numpy as np
import pytest
import tvm
from hypothesis import given, settings, strategies as st

from compiler.backends.tvm.kv_cache import kv_write_q_inplace
from compiler.kvformat import CODES, FORMATS
from compiler.reference import _kv_quantize


@functools.cache
def kernel(heads: int, d: int, bits: int, code: str = "int", group: int = 32):
    from compiler.backends.tvm.target import cpu_target

    f = kv_write_q_inplace(heads, d, bits, group, code).with_attr("global_symbol", "main")
    return tvm.compile(tvm.IRModule({"main": f}), target=cpu_target())["main"]


@settings(max_examples=30, deadline=None)
@given(fmt=st.sampled_from(["int8", "int4", "int2", "fp8"]), heads=st.sampled_from([1, 3]), d=st.sampled_from([32, 64, 128]), s=st.integers(1, 5),
       seed=st.integers(0, 2**31 - 1), mag=st.integers(-6, 10), group=st.sampled_from([32, 32, 64, 128]))
def test_codes_and_scales_equal_the_reference(fmt, heads, d, s, seed, mag, group):
    bits, code = FORMATS[fmt], CODES.get(fmt, "int")
    d = max(d, group, 64 if bits == 2 else 0)  # 2-bit codes pack per 64 values; -gN groups of N
    rng = np.random.default_rng(seed)
    new = (rng.standard_normal((s, heads, d)) * 2.0**mag).astype(np.float32)
    new[0, 0, :32] = 0.0  # an all-zero group
    new[-1, -1, 0] = 2.5 * 2.0**mag  # ties at .5 after the division are possible: round half to even on both sides
    c = s + 4
    pos = rng.permutation(c)[:s].astype(np.int64)
    codes = np.full((c, heads, d * bits // 8), 3, np.int8 if fmt == "int8" else np.uint8)
    scales = np.full((c, heads, d // group), 7.0, np.float16)
    tc, ts = tvm.runtime.tensor(codes), tvm.runtime.tensor(scales)
    kernel(heads, d, bits, code, group)(tc, ts, tvm.runtime.tensor(new), tvm.runtime.tensor(pos))
    rc, rs = _kv_quantize(new, bits, group, code)
    got_c, got_s = tc.numpy(), ts.numpy()
    np.testing.assert_array_equal(got_c[pos], rc)
    np.testing.assert_array_equal(got_s[pos], rs)
    rest = np.setdiff1d(np.arange(c), pos)
    assert np.all(got_c[rest] == 3) and np.all(got_s[rest] == 7.0)  # in place: only the written rows change


@pytest.mark.parametrize("bits", [8, 4])
def test_half_way_values_round_to_even(bits):
    qmax = 127 if bits == 8 else 7
    new = np.zeros((1, 1, 32), np.float32)
    new[0, 0, 0] = qmax  # scale 1
    new[0, 0, 1:5] = [0.5, 1.5, 2.5, -0.5]
    tc = tvm.runtime.tensor(np.zeros((1, 1, 32 if bits == 8 else 16), np.int8 if bits == 8 else np.uint8))
    ts = tvm.runtime.tensor(np.zeros((1, 1, 1), np.float16))
    kernel(1, 32, bits)(tc, ts, tvm.runtime.tensor(new), tvm.runtime.tensor(np.zeros(1, np.int64)))
    rc, _ = _kv_quantize(new, bits, 32)
    np.testing.assert_array_equal(tc.numpy(), rc)


def test_fp8_codes_at_every_rounding_boundary_equal_the_reference():
    """Every E4M3 value, the midpoints between neighbours (ties to the even mantissa), values a hair to either side,
    the subnormal range and the clamp at 448, through the kernel's magic-number rounding: the reference's codes."""
    from compiler.reference import e4m3_table

    t = e4m3_table()
    mags = np.unique(np.abs(t[np.isfinite(t)]))  # 0 .. 448
    mids = (mags[1:] + mags[:-1]) / 2
    y = np.concatenate([mags, mids, np.nextafter(mids, 0), np.nextafter(mids, 1000), [448.0, 447.9, 2.0**-10, 2.0**-9 * 0.5]]).astype(np.float32)
    y = np.concatenate([y, -y])
    n = (len(y) + 30) // 31 * 31
    rows = np.zeros(n, np.float32)
    rows[: len(y)] = y
    # one group of 32 per row: 448 first (scale fp16(448 / 448) = 1), then 31 test values
    new = np.concatenate([np.full((n // 31, 1), 448.0, np.float32), rows.reshape(-1, 31)], axis=1).reshape(-1, 1, 32)
    tc = tvm.runtime.tensor(np.zeros((len(new), 1, 32), np.uint8))
    ts = tvm.runtime.tensor(np.zeros((len(new), 1, 1), np.float16))
    kernel(1, 32, 8, "e4m3")(tc, ts, tvm.runtime.tensor(new), tvm.runtime.tensor(np.arange(len(new), dtype=np.int64)))
    rc, rs = _kv_quantize(new, 8, 32, "e4m3")
    assert np.all(rs == 1.0)
    np.testing.assert_array_equal(tc.numpy(), rc)
