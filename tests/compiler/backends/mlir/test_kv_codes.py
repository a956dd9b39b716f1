"""mlir-cpu's quantized KV cache (compiler/backends/mlir/lower.py, kv_quantize and kv_dequantize): FP8 (E4M3) codes
equal the reference's bit for bit at every rounding boundary and the attention reads every code as its value; -gN
groups of 64 and 128 (int4 nibbles ordered per group) written and read as the reference does."""

import numpy as np
import pytest

from compiler.ir import Graph, TensorType
from compiler.reference import KERNELS, Interpreter, _kv_quantize, e4m3_table
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


@pytest.mark.parametrize("bits", [4, 2])
def test_keys_per_channel_equal_the_reference(bits):
    """-kc: kv_write_kc re-quantizes each token group the step touches (ring rows before the step, the step's rows
    after), bit for bit the reference's, across a prefill and decode steps; the attention reads the codes as u s + m."""
    d, w, rows = 64, 32, 96
    g = Graph("kc")
    kc = g.add_input("past_key.0", TensorType((rows, 1, d * bits // 8), "u8"))
    kp = g.add_input("past_key_scale.0", TensorType(("G", 1, 2 * d), "f16"))
    ring = g.add_input("past_key_window.0", TensorType((w, 1, d)))
    new = g.add_input("new", TensorType(("S", 1, d)))
    pos = g.add_input("positions", TensorType(("S",), "i64"))
    q = g.add_input("q", TensorType(("S", 1, d)))
    vc = g.add_input("past_value.0", TensorType((rows, 1, d * bits // 8), "u8"))
    vs = g.add_input("past_value_scale.0", TensorType((rows, 1, d // 32), "f16"))
    vring = g.add_input("past_value_window.0", TensorType((w, 1, d)))
    a = {"bits": bits, "group": 32}
    ok, okp = g.add_node("kv_write_kc", [kc, kp, ring, new, pos], ["present_key.0", "present_key_scale.0"], window=w, **a)
    ov, ovs = g.add_node("kv_write_q", [vc, vs, new, pos], ["present_value.0", "present_value_scale.0"], **a)
    g.add_node("cache_attention_q", [q, ok, okp, ov, ovs, pos, ring, vring, new, new], ["o", "present_key_window.0", "present_value_window.0"],
               scale=0.125, window=w, keys="channel", **a)
    g.set_outputs(["present_key.0", "present_key_scale.0", "o", "present_key_window.0"])
    g.verify()
    m = InMemoryMLIR(g)
    rng = np.random.default_rng(bits)
    state = {"past_key.0": np.zeros((rows, 1, d * bits // 8), np.uint8), "past_key_scale.0": np.zeros((3, 1, 2 * d), np.float16),
             "past_key_window.0": np.zeros((w, 1, d), np.float32), "past_value.0": np.zeros((rows, 1, d * bits // 8), np.uint8),
             "past_value_scale.0": np.zeros((rows, 1, 2), np.float16), "past_value_window.0": np.zeros((w, 1, d), np.float32)}
    ref = {k: v.copy() for k, v in state.items()}
    p = 0
    for s in (40, 1, 1, 23, 1, 3):  # groups completed in a prefill, by single steps and across a chunk
        x = rng.standard_normal((s, 1, d)).astype(np.float32)
        feeds = {"new": x, "positions": np.arange(p, p + s, dtype=np.int64), "q": rng.standard_normal((s, 1, d)).astype(np.float32)}
        out = m.run({**state, **feeds})
        want = Interpreter(g).run({**ref, **feeds})
        np.testing.assert_array_equal(out["present_key.0"].view(np.uint8), want["present_key.0"])
        np.testing.assert_array_equal(out["present_key_scale.0"], want["present_key_scale.0"])
        np.testing.assert_allclose(out["o"], want["o"], rtol=1e-5, atol=1e-5 * np.abs(want["o"]).max())
        # the next step's cache: each side's own (the values' codes are checked by the other tests)
        state.update({"past_key.0": out["present_key.0"].view(np.uint8), "past_key_scale.0": out["present_key_scale.0"],
                      "past_key_window.0": out["present_key_window.0"]})
        ref.update({"past_key.0": want["present_key.0"], "past_key_scale.0": want["present_key_scale.0"], "past_key_window.0": want["present_key_window.0"]})
        for k in ("past_value.0", "past_value_scale.0", "past_value_window.0"):
            state[k] = ref[k] = want[k.replace("past_", "present_")] if k.replace("past_", "present_") in want else ref[k]
        p += s
    assert np.any(state["past_key_scale.0"][2] != 0)  # the third group (rows 64..95) was written
