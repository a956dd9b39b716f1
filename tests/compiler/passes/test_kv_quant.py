"""The quantized KV cache (compiler/passes/kv_quant.py): int8 / int4 codes with an fp16 scale per 32 values of a
head, written in place across prefill and decode, read as s * q by the attention; its bytes as counted."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import runtime
from compiler.compile import compile_model
from compiler.errors import LowbitError
from compiler.frontend.llama import empty_cache
from compiler.passes.kv_quant import GROUP, kv_bytes_per_token, kv_quant_graph
from compiler.reference import KERNELS, Interpreter, _kv_quantize, e4m3_encode, e4m3_table, kv_dequantize
from runtime.compare import cosine
from tests.helpers import cache_code_flips, chunked_logits_tol, run_cli


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 5), heads=st.integers(1, 3), groups=st.integers(1, 3), bits=st.sampled_from([8, 4]), seed=st.integers(0, 2**31 - 1),
       mag=st.integers(-6, 12))
def test_codes_round_trip_within_half_a_step(rows, heads, groups, bits, seed, mag):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, heads, GROUP * groups)) * 2.0**mag).astype(np.float32)
    x[0, 0, :GROUP] = 0.0  # an all-zero group: scale 0, codes 0, exact
    codes, scales = _kv_quantize(x, bits, GROUP)
    assert codes.dtype == (np.int8 if bits == 8 else np.uint8) and codes.shape[-1] == x.shape[-1] // (1 if bits == 8 else 2)
    assert scales.dtype == np.float16
    y = kv_dequantize(codes, scales, bits, GROUP)
    step = np.repeat(scales.astype(np.float32), GROUP, axis=-1)
    qmax = 127 if bits == 8 else 7
    # s = fp16(max / qmax) may round down by 2^-11: the largest codes are clamped, a hair past half a step
    # (magnitudes that keep the fp16 scales normal: 2^-14 .. 65504)
    assert np.all(np.abs(x - y) <= 0.5 * step + np.abs(x) * 2.0**-10 + 1e-30)
    assert np.all(y[0, 0, :GROUP] == 0) and np.all(np.abs(y) <= qmax * step + 1e-30)


def _nearest_e4m3(y: np.ndarray) -> np.ndarray:
    """Brute force over the 127 finite E4M3 magnitudes: the nearest to |y|, at a tie the one whose code is even (the
    even mantissa); the sign bit for y < 0 (-0 where a negative rounds to 0)."""
    mags = e4m3_table()[:127].astype(np.float64)
    dist = np.abs(np.abs(y[:, None].astype(np.float64)) - mags[None, :])
    tied = dist == dist.min(axis=1, keepdims=True)
    pick = np.where(tied.sum(axis=1) > 1, np.argmax(tied & (np.arange(127)[None, :] % 2 == 0), axis=1), np.argmin(dist, axis=1))
    return (pick | np.where(y < 0, 0x80, 0)).astype(np.uint8)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-448, 448, width=32), min_size=1, max_size=64), st.integers(-12, 8))
def test_e4m3_codes_are_the_nearest_value_ties_to_even(vals, mag):
    t = e4m3_table()
    y = np.clip(np.array(vals, np.float32) * np.float32(2.0**mag), -448, 448).astype(np.float32)
    mids = (t[1:127] + t[0:126]) / 2  # every tie between two positive neighbours, and its negative
    y = np.concatenate([y, mids, -mids]).astype(np.float32)
    np.testing.assert_array_equal(e4m3_encode(y), _nearest_e4m3(y))


def test_fp8_cache_round_trip_is_within_half_an_e4m3_step():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((4, 3, 64)) * np.logspace(-4, 3, 64, dtype=np.float32)).astype(np.float32)
    x[0, 0, :GROUP] = 0.0
    codes, scales = _kv_quantize(x, 8, GROUP, "e4m3")
    assert codes.dtype == np.uint8 and codes.shape == x.shape and scales.dtype == np.float16
    assert not np.any((codes & 0x7F) == 0x7F)  # no NaN codes
    y = kv_dequantize(codes, scales, 8, GROUP, "e4m3")
    s = np.repeat(scales.astype(np.float32), GROUP, axis=-1)
    # relative step 2^-4 for normals (half of it, plus the fp16 scale's rounding), 2^-10 s absolute in the subnormals
    assert np.all(np.abs(x - y) <= np.abs(x) * (2.0**-4 + 2.0**-10) + s * 2.0**-10 + 1e-30)
    assert np.all(y[0, 0, :GROUP] == 0)


@pytest.mark.parametrize("group", [64, 128])
def test_larger_groups_share_one_scale_and_order_nibbles_per_group(group):
    """-gN: one fp16 scale per N values; int4 byte i of a group holds its elements i and i + N/2."""
    rng = np.random.default_rng(group)
    x = rng.standard_normal((3, 2, 256)).astype(np.float32)
    for bits, code in ((4, "int"), (8, "int"), (8, "e4m3"), (2, "int")):
        codes, scales = _kv_quantize(x, bits, group, code)
        assert scales.shape == (3, 2, 256 // group)
        amax = np.abs(x.reshape(3, 2, -1, group)).max(axis=-1)
        qmax = {(4, "int"): 7, (8, "int"): 127, (8, "e4m3"): 448, (2, "int"): 1.5}[(bits, code)]
        np.testing.assert_array_equal(scales, (amax / np.float32(qmax)).astype(np.float16))
        y = kv_dequantize(codes, scales, bits, group, code)
        assert np.abs(y - x).max() <= {4: 0.5 / 7, 8: 0.5 / 127 if code == "int" else 2.0**-4, 2: 0.5 / 1.5}[bits] * amax.max() * 1.01
    codes, scales = _kv_quantize(x, 4, group)
    s = scales.astype(np.float32)
    lo = np.clip(np.rint(x[0, 0, : group // 2] / s[0, 0, 0]), -7, 7) + 8
    hi = np.clip(np.rint(x[0, 0, group // 2 : group] / s[0, 0, 0]), -7, 7) + 8
    np.testing.assert_array_equal(codes[0, 0, : group // 2], (lo.astype(np.uint8) | hi.astype(np.uint8) << 4))


def test_int4_nibbles_are_in_q4_0_order():
    x = np.zeros((1, 1, 2 * GROUP), np.float32)
    x[0, 0, 0], x[0, 0, 16], x[0, 0, 1] = 7.0, -7.0, 3.0  # scale 1: codes 7, -7, 3 -> stored 15, 1, 11
    x[0, 0, 32 + 5], x[0, 0, 32 + 21] = 1.0, 2.0  # the second group: its own scale (2 / 7), bytes 16..31
    codes, scales = _kv_quantize(x, 4, GROUP)
    assert scales[0, 0, 0] == 1.0 and codes[0, 0, 0] == (15 | 1 << 4) and codes[0, 0, 1] == (11 | 8 << 4)
    assert codes[0, 0, 16 + 5] & 15 == 8 + round(1.0 / float(scales[0, 0, 1])) and codes[0, 0, 16 + 5] >> 4 == 8 + 7


def _tiny_q(llama_tiny, fmt):
    return kv_quant_graph(llama_tiny.graph, fmt)


@pytest.mark.parametrize("fmt", ["int8", "int4", "fp8"])
def test_writes_in_place_and_reads_what_it_wrote(llama_tiny, fmt):
    g = _tiny_q(llama_tiny, fmt)
    cache = empty_cache(g, 16)
    assert {k for k in cache if "scale" in k} and cache["past_key.0"].dtype == (np.int8 if fmt == "int8" else np.uint8)
    rng = np.random.default_rng(0)
    new = rng.standard_normal((3, *g.inputs["past_key.0"].shape[1:2], g.meta["hparams"]["head_dim"])).astype(np.float32)
    pos = np.array([4, 5, 6])
    a = next(n.attrs for n in g.nodes if n.op == "kv_write_q")
    assert a["bits"] == (4 if fmt == "int4" else 8) and a["code"] == ("e4m3" if fmt == "fp8" else "int")
    codes, scales = KERNELS["kv_write_q"]([cache["past_key.0"], cache["past_key_scale.0"], new, pos], a, None)
    assert codes is cache["past_key.0"] and scales is cache["past_key_scale.0"]  # the fed arrays, written in place
    ref_codes, ref_scales = _kv_quantize(new, a["bits"], GROUP, a["code"])
    np.testing.assert_array_equal(codes[pos], ref_codes)
    np.testing.assert_array_equal(scales[pos], ref_scales)
    assert not codes[:4].any() and not codes[7:].any()


@pytest.mark.parametrize("fmt,floor", [("int8", 0.9999), ("int4", 0.98), ("fp8", 0.999)])
def test_prefill_then_decode_matches_one_prefill_and_stays_near_the_float_cache(llama_tiny, fmt, floor):
    g = _tiny_q(llama_tiny, fmt)
    ids = np.arange(3, 27, dtype=np.int64)
    once = Interpreter(g).run({"input_ids": ids, "positions": np.arange(24), **empty_cache(g, 32)})
    whole = once["logits"]
    # the same tokens as a prefill of 20 and four decode steps, on one cache
    interp = Interpreter(g)
    cache = empty_cache(g, 32)
    out = interp.run({"input_ids": ids[:20], "positions": np.arange(20), **cache})
    rows = [out["logits"]]
    for t in range(20, 24):
        cache = {k.replace("present_", "past_"): v for k, v in out.items() if k.startswith("present_")}
        out = interp.run({"input_ids": ids[t : t + 1], "positions": np.array([t]), **cache})
        rows.append(out["logits"])
    steps = np.concatenate(rows)
    tol = chunked_logits_tol(cache_code_flips(once, out))  # per-row codes: the same but for rounding-midpoint ties
    np.testing.assert_allclose(steps, whole, rtol=0, atol=tol * float(np.abs(whole).max()))
    f = Interpreter(llama_tiny.graph).run({"input_ids": ids, "positions": np.arange(24), **empty_cache(llama_tiny.graph, 32)})["logits"]
    c = cosine(whole, f)
    print(f"\n{fmt} cache: logits cosine to the float cache {c:.6f}")
    assert c >= floor


def test_bytes_per_token_are_the_cache_arrays():
    from compiler.frontend import load_model

    m = load_model("llama-tiny")
    hp = m.graph.meta["hparams"]
    for fmt in ("f32", "fp16", "fp8", "int8", "int4"):
        g = kv_quant_graph(m.graph, fmt)
        arrays = empty_cache(g, 1)
        assert sum(a.nbytes for a in arrays.values()) == kv_bytes_per_token(hp["layers"], hp["kv_heads"], hp["head_dim"], fmt), fmt
    # 16-bit keys and values against 4-bit codes plus an fp16 scale per 32: 16 / 4.5
    fp16 = kv_bytes_per_token(hp["layers"], hp["kv_heads"], hp["head_dim"], "fp16")
    assert fp16 == kv_bytes_per_token(hp["layers"], hp["kv_heads"], hp["head_dim"], "f32") / 2
    assert fp16 / kv_bytes_per_token(hp["layers"], hp["kv_heads"], hp["head_dim"], "int4") >= 3.5


def test_accelerator_path_runs_the_quantized_cache_on_the_host(tmp_path):
    out = tmp_path / "a"
    compile_model("llama-tiny", out, "w4g32a8", targets="ref,mixpe", progress=False, kv="int4")
    m = runtime.load(out)
    feeds = {"input_ids": np.arange(3, 11, dtype=np.int64), "positions": np.arange(8), **m._cache_feeds(8)}
    a = m.backend("hwsim:mixpe").run(dict(feeds, **m._cache_feeds(8)))["logits"]
    b = m.backend("ref").run(dict(feeds, **m._cache_feeds(8)))["logits"]
    assert cosine(a, b) > 0.999  # hwsim's A8 tolerance (tests/runtime/backends/test_agreement.py)


def test_refusals(tmp_path, capsys, llama_tiny, bert_tiny):
    code, _, err = run_cli(["compile", "llama-tiny", "--quant", "w4g32", "--kv", "int8", "--target", "tvm-cuda", "-o", tmp_path / "t"], capsys)
    assert code != 0 and "--kv int8" in err and "tvm-cuda" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "t").exists()
    with pytest.raises(LowbitError, match="encoder"):
        kv_quant_graph(bert_tiny.graph, "int8")
    from compiler.frontend.llama import build_llama

    concat = build_llama(llama_tiny.config, {k: v for k, v in llama_tiny.graph.consts.items()}, "t", kv="concat")
    with pytest.raises(LowbitError, match="in-place"):
        kv_quant_graph(concat, "int4")
