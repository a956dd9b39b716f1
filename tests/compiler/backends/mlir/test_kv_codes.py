"""mlir-cpu's quantized KV cache (compiler/backends/mlir/lower.py, kv_quantize and kv_dequantize): FP8 (E4M3) codes
equal the reference's bit for bit at every rounding boundary and the attention reads every code as its value; -gN
groups of 64 and 128 (int4 nibbles ordered per group) written and read as the reference does."""

import numpy as np
import pytest

from compiler.ir import Graph, TensorType
from compiler.reference import KERNELS, _kv_quantize, e4m3_table
from tests.compiler.backends.mlir.common import InMemoryMLIR

ATTRS = {"bits": 8, "group": 32, "code": "e4m3"}


def _graph(rows: int, d: int, attrs: dict = ATTRS) -> Graph:
    g = Graph("fp8-cache")
    codes = g.add_input("past_key.0", TensorType((rows, 1, d * attrs["bits"] // 8), "i8" if (attrs["bits"], attrs["code"]) == (8, "int") else "u8"))
    scales = g.add_input("past_key_scale.0", TensorType((rows, 1, d // attrs["group"]), "f16"))
    new = g.add_input("new", TensorType(("S", 1, d)))
    pos = g.add_input("positions", TensorType(("S",), "i64"))
    q = g.add_input("q", TensorType(("S", 1, d)))
    kc, ks = g.add_node("kv_write_q", [codes, scales, new, pos], ["present_key.0", "present_key_scale.0"], **attrs)
    g.add_node("cache_attention_q", [q, kc, ks, kc, ks, pos], "o", scale=1.0, **attrs)
    g.set_outputs(["present_key.0", "present_key_scale.0", "o"])
    g.verify()
    return g


def test_codes_at_every_rounding_boundary_equal_the_reference():
    t = e4m3_table()
    mags = np.unique(np.abs(t[np.isfinite(t)]))
    mids = (mags[1:] + mags[:-1]) / 2
    y = np.concatenate([mags, mids, np.nextafter(mids, 0), np.nextafter(mids, 1000), [447.9, 2.0**-10, 2.0**-11]]).astype(np.float32)
    y = np.concatenate([y, -y])
    n = (len(y) + 30) // 31 * 31
    vals = np.zeros(n, np.float32)
    vals[: len(y)] = y
    new = np.concatenate([np.full((n // 31, 1), 448.0, np.float32), vals.reshape(-1, 31)], axis=1).reshape(-1, 1, 32)  # scale 1 per row
    rows = len(new)
    m = InMemoryMLIR(_graph(rows, 32))
    pos = np.arange(rows, dtype=np.int64)
    out = m.run({"past_key.0": np.zeros((rows, 1, 32), np.uint8), "past_key_scale.0": np.zeros((rows, 1, 1), np.float16), "new": new,
                 "positions": pos, "q": np.zeros((rows, 1, 32), np.float32)})
    rc, rs = _kv_quantize(new, 8, 32, "e4m3")
    np.testing.assert_array_equal(out["present_key.0"].view(np.uint8), rc)
    np.testing.assert_array_equal(out["present_key_scale.0"], rs)


def test_attention_reads_every_code_as_the_reference():
    """q = 0: every row of the cache weighs the same, so o is the mean of the rows as dequantized: one row holds every
    finite code (its value x 256 s: the kernel's fp16 route), the second is written by this step."""
    t = e4m3_table()
    codes = np.flatnonzero(np.isfinite(t)).astype(np.uint8)
    cache = np.zeros((2, 1, 256), np.uint8)
    cache[0, 0, : len(codes)] = codes
    scales = np.zeros((2, 1, 8), np.float16)
    scales[0, 0] = [0.5, 2.0, 1.0, 0.25, 4.0, 1.0, 1.0, 3.0]
    m = InMemoryMLIR(_graph(2, 256))
    new = np.random.default_rng(0).standard_normal((1, 1, 256)).astype(np.float32)
    feeds = {"past_key.0": cache, "past_key_scale.0": scales, "new": new, "positions": np.array([1]), "q": np.zeros((1, 1, 256), np.float32)}
    out = m.run(feeds)
    kc, ks = KERNELS["kv_write_q"]([cache.copy(), scales.copy(), new, np.array([1])], ATTRS, None)
    want = KERNELS["cache_attention_q"]([np.zeros((1, 1, 256), np.float32), kc, ks, kc, ks, np.array([1])], {"scale": 1.0, **ATTRS}, None)[0]
    np.testing.assert_allclose(out["o"], want, rtol=1e-6, atol=1e-30)


@pytest.mark.parametrize("bits,code,group", [(4, "int", 64), (4, "int", 128), (8, "e4m3", 64), (2, "int", 128)])
def test_larger_groups_equal_the_reference(bits, code, group):
    """Prefill of 5 rows into a cache of 8, then q . k over them: the codes and scales bit for bit, the output within
    float32 rounding."""
    attrs = {"bits": bits, "group": group, "code": code}
    d = 128
    m = InMemoryMLIR(_graph(8, d, attrs))
    rng = np.random.default_rng(group + bits)
    new, q = rng.standard_normal((5, 1, d)).astype(np.float32), rng.standard_normal((5, 1, d)).astype(np.float32)
    pos = np.arange(5, dtype=np.int64)
    cache = np.zeros((8, 1, d * bits // 8), np.uint8)
    scales = np.zeros((8, 1, d // group), np.float16)
    out = m.run({"past_key.0": cache, "past_key_scale.0": scales, "new": new, "positions": pos, "q": q})
    kc, ks = KERNELS["kv_write_q"]([cache.copy(), scales.copy(), new, pos], attrs, None)
    np.testing.assert_array_equal(out["present_key.0"].view(np.uint8), kc)
    np.testing.assert_array_equal(out["present_key_scale.0"], ks)
    want = KERNELS["cache_attention_q"]([q, kc, ks, kc, ks, pos], {"scale": 1.0, **attrs}, None)[0]
    np.testing.assert_allclose(out["o"], want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
