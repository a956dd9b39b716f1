"""KV-cache options (compiler/passes/kv_quant.py): `-rot` (every K and V head rotated by an orthonormal Hadamard
transform, the `hadamard` op) and `-wN` (the N most recent rows read in float32 from rings beside the quantized
cache); the spec grammar and its refusals."""

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from compiler.errors import LowbitError
from compiler.frontend.llama import empty_cache
from compiler.passes.kv_quant import GROUP, KVSpec, kv_bytes_per_token, kv_quant_graph, parse_kv
from compiler.reference import KERNELS, Interpreter, _kv_quantize, hadamard, kv_dequantize, softmax
from runtime.compare import cosine
from tests.helpers import cache_code_flips, chunked_logits_tol, run_cli


def sylvester(n: int) -> np.ndarray:
    i = np.arange(n)
    return np.where(np.vectorize(lambda a: bin(a).count("1") % 2)(i[:, None] & i[None, :]) == 0, 1.0, -1.0) / math.sqrt(n)


@settings(max_examples=40, deadline=None)
@given(log2=st.integers(1, 8), blocks=st.integers(1, 3), rows=st.integers(1, 6), seed=st.integers(0, 2**31 - 1))
def test_hadamard_is_the_orthonormal_sylvester_matrix_and_its_own_inverse(log2, blocks, rows, seed):
    n = 2**log2
    x = np.random.default_rng(seed).standard_normal((rows, blocks * n)).astype(np.float32)
    y = hadamard(x, n)
    want = (x.reshape(rows, blocks, n).astype(np.float64) @ sylvester(n).T).reshape(rows, blocks * n)
    tol = 1e-6 * math.sqrt(n) * np.abs(x).max()  # float32 butterfly: log2(n) rounded adds per output
    np.testing.assert_allclose(y, want, rtol=0, atol=tol)
    np.testing.assert_allclose(hadamard(y, n), x, rtol=0, atol=2 * tol)  # H H = I
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), np.linalg.norm(x, axis=1), rtol=1e-5)  # orthonormal


def test_spec_grammar():
    assert parse_kv("int4-rot-w128") == KVSpec("int4", True, 128) == parse_kv(" INT4-w128-rot ")
    assert str(parse_kv("int4-w128-rot")) == "int4-rot-w128" and str(parse_kv("f32")) == "f32"
    assert parse_kv("int4-w128-g64") == KVSpec("int4", False, 128, 64) and str(parse_kv("fp8-g128-rot")) == "fp8-rot-g128"
    assert str(parse_kv("int4-g32")) == "int4" and parse_kv("int4-g32") == parse_kv("int4")  # the default group is not spelled
    for bad, msg in (("int3", "unknown KV cache format"), ("int4-fast", "unknown KV cache option"), ("int4-rot-rot", "repeated"),
                     ("int4-w0", "outside"), ("int4-w99999", "outside"), ("f32-w8", "needs a quantized cache"), ("int4-w", "unknown KV cache option"),
                     ("int4-g48", "not one of 32, 64, 128"), ("int4-g64-g128", "repeated"), ("fp16-g64", "needs a quantized cache"), ("int4-g", "unknown")):
        with pytest.raises(LowbitError, match=msg):
            parse_kv(bad)


def test_rotation_is_exact_in_float(llama_tiny):
    """f32-rot: the float cache with every head rotated; the logits are the unrotated model's to float32 rounding."""
    g = kv_quant_graph(llama_tiny.graph, "f32-rot")
    assert g.meta["kv_format"] == "f32-rot" and sum(n.op == "hadamard" for n in g.nodes) == 4 * g.meta["hparams"]["layers"]
    ids = np.arange(3, 23, dtype=np.int64)
    feeds = {"input_ids": ids, "positions": np.arange(20)}
    a = Interpreter(g).run({**feeds, **empty_cache(g, 24)})["logits"]
    b = Interpreter(llama_tiny.graph).run({**feeds, **empty_cache(llama_tiny.graph, 24)})["logits"]
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * float(np.abs(b).max()))
    assert not np.array_equal(a, b)  # the rotation did run (float32 rounding differs somewhere)


def window_attention_by_rows(q, kc, ks, vc, vs, pos, kw, vw, kn, vn, w, bits, scale):
    """The window contract written out per query and per row (compiler.reference uses whole-matrix selects)."""
    kq, vq = kv_dequantize(kc, ks, bits, GROUP), kv_dequantize(vc, vs, bits, GROUP)
    s, hq, d = q.shape
    hk = kc.shape[1]
    p0 = int(pos[0])
    out = np.zeros_like(q)
    for i in range(s):
        rows_k, rows_v = [], []
        for j in range(int(pos[i]) + 1):
            if j <= pos[i] - w:
                rows_k.append(kq[j]), rows_v.append(vq[j])
            elif j >= p0:
                rows_k.append(kn[j - p0]), rows_v.append(vn[j - p0])
            else:
                rows_k.append(kw[j % w]), rows_v.append(vw[j % w])
        k, v = np.stack(rows_k), np.stack(rows_v)
        for h in range(hq):
            p = softmax((k[:, h // (hq // hk)] @ q[i, h]) * np.float32(scale))
            out[i, h] = p @ v[:, h // (hq // hk)]
    rk, rv = kw.copy(), vw.copy()
    for t in range(s):
        rk[(p0 + t) % w], rv[(p0 + t) % w] = kn[t], vn[t]
    return out, rk, rv


@settings(max_examples=30, deadline=None)
@given(w=st.integers(1, 12), s=st.integers(1, 14), p0=st.integers(0, 20), bits=st.sampled_from([8, 4]), hk=st.integers(1, 2), rep=st.integers(1, 2),
       seed=st.integers(0, 2**31 - 1))
def test_window_attention_reads_recent_rows_in_float_and_keeps_the_last_in_the_rings(w, s, p0, bits, hk, rep, seed):
    rng = np.random.default_rng(seed)
    d, c = GROUP, p0 + s + 3
    f = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    kc, ks = _kv_quantize(f(c, hk, d), bits, GROUP)
    vc, vs = _kv_quantize(f(c, hk, d), bits, GROUP)
    q, kw, vw, kn, vn = f(s, hk * rep, d), f(w, hk, d), f(w, hk, d), f(s, hk, d), f(s, hk, d)
    pos = np.arange(p0, p0 + s, dtype=np.int64)
    a = {"scale": d**-0.5, "bits": bits, "group": GROUP, "window": w}
    fed = [kw.copy(), vw.copy()]
    o, rk, rv = KERNELS["cache_attention_q"]([q, kc, ks, vc, vs, pos, *fed, kn, vn], a, None)
    want = window_attention_by_rows(q, kc, ks, vc, vs, pos, kw, vw, kn, vn, w, bits, d**-0.5)
    np.testing.assert_allclose(o, want[0], rtol=0, atol=2e-6 * max(1.0, float(np.abs(want[0]).max())))
    np.testing.assert_array_equal(rk, want[1])
    np.testing.assert_array_equal(rv, want[2])
    assert rk is fed[0] and rv is fed[1]  # the fed rings, written in place


@pytest.mark.parametrize("fmt", ["int4-w8", "int4-rot-w8", "int8-rot"])
def test_prefill_then_decode_matches_one_prefill(llama_tiny, fmt):
    """Each query reads the same rows in float and the same codes whichever step wrote them, so a prefill and decode
    steps give one prefill's logits; a window covering every row is the float cache."""
    g = kv_quant_graph(llama_tiny.graph, fmt)
    ids = np.arange(3, 27, dtype=np.int64)
    once = Interpreter(g).run({"input_ids": ids, "positions": np.arange(24), **empty_cache(g, 32)})
    whole = once["logits"]
    interp, out, rows = Interpreter(g), None, []
    cache = empty_cache(g, 32)
    for lo, hi in ((0, 13), (13, 14), (14, 20), (20, 21), (21, 24)):  # chunks longer and shorter than the window
        out = interp.run({"input_ids": ids[lo:hi], "positions": np.arange(lo, hi), **cache})
        cache = {k.replace("present_", "past_"): v for k, v in out.items() if k.startswith("present_")}
        rows.append(out["logits"])
    tol = chunked_logits_tol(cache_code_flips(once, out))  # the same codes but for rounding-midpoint ties
    np.testing.assert_allclose(np.concatenate(rows), whole, rtol=0, atol=tol * float(np.abs(whole).max()))
    if "w" in fmt:
        assert cache["past_key_window.0"].shape[0] == 8
        full = kv_quant_graph(llama_tiny.graph, fmt.replace("w8", "w32"))  # every row in the window
        f = Interpreter(llama_tiny.graph).run({"input_ids": ids, "positions": np.arange(24), **empty_cache(llama_tiny.graph, 32)})["logits"]
        got = Interpreter(full).run({"input_ids": ids, "positions": np.arange(24), **empty_cache(full, 32)})["logits"]
        np.testing.assert_allclose(got, f, rtol=0, atol=1e-5 * float(np.abs(f).max()))


def test_window_and_rotation_bring_int4_closer_to_the_float_cache(llama_tiny):
    ids = np.arange(3, 43, dtype=np.int64)
    feeds = {"input_ids": ids, "positions": np.arange(40)}
    f = Interpreter(llama_tiny.graph).run({**feeds, **empty_cache(llama_tiny.graph, 40)})["logits"]
    cos = {}
    for fmt in ("int4", "int4-rot", "int4-w16", "int4-rot-w16"):
        g = kv_quant_graph(llama_tiny.graph, fmt)
        cos[fmt] = cosine(Interpreter(g).run({**feeds, **empty_cache(g, 40)})["logits"], f)
    print("\nlogits cosine to the float cache:", {k: round(v, 6) for k, v in cos.items()})
    assert cos["int4-w16"] > cos["int4"] and cos["int4-rot-w16"] > cos["int4-rot"]


def test_window_rings_are_not_counted_per_token(llama_tiny):
    hp = llama_tiny.graph.meta["hparams"]
    g = kv_quant_graph(llama_tiny.graph, "int4-rot-w8")
    per_row = sum(a.nbytes for k, a in empty_cache(g, 1).items() if "window" not in k)
    assert per_row == kv_bytes_per_token(hp["layers"], hp["kv_heads"], hp["head_dim"], "int4-rot-w8")
    rings = {k: a for k, a in empty_cache(g, 5).items() if "window" in k}
    assert len(rings) == 2 * hp["layers"] and all(a.shape == (8, hp["kv_heads"], hp["head_dim"]) and a.dtype == np.float32 for a in rings.values())


def test_refusals(tmp_path, capsys):
    for fmt, target, words in (("int4-w8", "mlir-cuda", ["mlir-cuda"]), ("int4-rot", "tvm-cuda", ["tvm-cuda"]), ("int4-w0", "ref", ["-w0"]),
                               ("int4-g64", "ref", ["head_dim 32", "-gN"])):
        code, _, err = run_cli(["compile", "llama-tiny", "--quant", "w4g32", "--kv", fmt, "--target", target, "-o", tmp_path / "t"], capsys)
        assert code != 0 and all(w in err for w in words) and len(err.strip().splitlines()) == 1 and not (tmp_path / "t").exists(), err


def test_fp16_cache_stores_rounded_rows_in_place(llama_tiny):
    g = kv_quant_graph(llama_tiny.graph, "fp16")
    cache = empty_cache(g, 16)
    assert cache["past_key.0"].dtype == np.float16 and not any("scale" in k for k in cache)
    rng = np.random.default_rng(1)
    new = rng.standard_normal((3, *cache["past_key.0"].shape[1:])).astype(np.float32)
    new[0, 0, 0] = np.float32(1 + 2**-11)  # a tie between two fp16 values: rounds to the even one, 1.0
    (out,) = KERNELS["kv_write"]([cache["past_key.0"], new, np.array([2, 3, 4])], {}, None)
    assert out is cache["past_key.0"] and out[2, 0, 0] == 1.0
    np.testing.assert_array_equal(out[2:5], new.astype(np.float16))
    ids = np.arange(3, 23, dtype=np.int64)
    feeds = {"input_ids": ids, "positions": np.arange(20)}
    a = Interpreter(g).run({**feeds, **empty_cache(g, 24)})["logits"]
    b = Interpreter(llama_tiny.graph).run({**feeds, **empty_cache(llama_tiny.graph, 24)})["logits"]
    assert cosine(a, b) > 0.99999


def test_default_cache_is_fp16_where_there_is_one(tmp_path, monkeypatch):
    import runtime
    from compiler.compile import compile_model

    compile_model("llama-tiny", tmp_path / "l", "w4g32", targets="ref", progress=False)
    g = runtime.load(tmp_path / "l").graph
    assert g.meta["kv_format"] == "fp16" and g.inputs["past_value.1"].dtype == "f16"
    compile_model("bert-tiny", tmp_path / "b", "w4g32", targets="ref", progress=False)  # an encoder: no cache, no error
    assert "kv_format" not in runtime.load(tmp_path / "b").graph.meta
    monkeypatch.setenv("LOWBIT_KV_CACHE", "concat")  # the concat form stays float32
    compile_model("llama-tiny", tmp_path / "c", "w4g32", targets="ref", progress=False)
    g = runtime.load(tmp_path / "c").graph
    assert "kv_format" not in g.meta and g.inputs["past_key.0"].dtype == "f32"


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 4), blocks=st.integers(1, 2), seed=st.integers(0, 2**31 - 1), mag=st.integers(-6, 10))
def test_int2_codes_are_four_levels_within_half_a_step(rows, blocks, seed, mag):
    x = (np.random.default_rng(seed).standard_normal((rows, 2, 64 * blocks)) * 2.0**mag).astype(np.float32)
    codes, scales = _kv_quantize(x, 2, GROUP)
    assert codes.dtype == np.uint8 and codes.shape == (rows, 2, 16 * blocks) and scales.dtype == np.float16
    y = kv_dequantize(codes, scales, 2, GROUP)
    step = np.repeat(scales.astype(np.float32), GROUP, axis=-1)
    levels = np.unique(np.round(y / step, 6))
    assert set(levels) <= {-1.5, -0.5, 0.5, 1.5}
    assert np.all(np.abs(x - y) <= 0.5 * step + np.abs(x) * 2.0**-10 + 1e-30)


def test_int2_packing_order():
    x = np.full((1, 1, 64), 0.1, np.float32)  # every group: scale max / 1.5
    x[0, 0, 0], x[0, 0, 16], x[0, 0, 32], x[0, 0, 48] = 1.5, -1.5, 1.5, -1.5  # codes 3, 0, 3, 0 in byte 0 at bits 0, 2, 4, 6
    codes, _ = _kv_quantize(x, 2, GROUP)
    assert codes[0, 0, 0] == 3 | 0 << 2 | 3 << 4 | 0 << 6
    assert codes[0, 0, 1] == 2 | 2 << 2 | 2 << 4 | 2 << 6  # 0.1 / 1.0 + 1.5 rounds to 2 (level +0.5)
