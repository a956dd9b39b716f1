"""Reference semantics: kernels against naive definitions, and KV-cache decode against full prefill."""

import math

import numpy as np
import pytest

from compiler.frontend.llama import empty_cache
from compiler.reference import KERNELS, Interpreter, erf, rope_inv_freq

rng = np.random.default_rng(0)


def naive_attention(q, k, v, causal, scale):
    s, h, d = q.shape
    t, hk, _ = k.shape
    out = np.zeros_like(q, dtype=np.float64)
    for hh in range(h):
        kh = hh // (h // hk)
        for i in range(s):
            sc = np.array([q[i, hh] @ k[j, kh] * scale for j in range(t)], np.float64)
            if causal:
                sc[np.arange(t) > (t - s) + i] = -np.inf
            p = np.exp(sc - sc.max())
            p /= p.sum()
            out[i, hh] = p @ v[:, kh]
    return out


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("s,t,h,hk", [(5, 5, 4, 2), (1, 7, 4, 1), (3, 9, 6, 3)])
def test_attention_matches_naive_gqa(causal, s, t, h, hk):
    q = rng.standard_normal((s, h, 8)).astype(np.float32)
    k = rng.standard_normal((t, hk, 8)).astype(np.float32)
    v = rng.standard_normal((t, hk, 8)).astype(np.float32)
    got = KERNELS["attention"]([q, k, v], {"causal": causal, "scale": 0.3}, None)[0]
    np.testing.assert_allclose(got, naive_attention(q, k, v, causal, 0.3), rtol=1e-5, atol=1e-5)


def test_rope_scores_depend_only_on_relative_position():
    d = 16
    q = rng.standard_normal((1, 1, d)).astype(np.float32)
    k = rng.standard_normal((1, 1, d)).astype(np.float32)

    def score(pq, pk):
        a = {"theta": 10000.0}
        rq = KERNELS["rope"]([q, np.array([pq])], a, None)[0]
        rk = KERNELS["rope"]([k, np.array([pk])], a, None)[0]
        return float((rq * rk).sum())

    assert score(7, 3) == pytest.approx(score(104, 100), rel=1e-4, abs=1e-5)
    assert score(0, 0) == pytest.approx(float((q * k).sum()), rel=1e-5)


def test_llama3_rope_scaling_keeps_high_freqs_and_divides_low_freqs():
    sc = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    base = rope_inv_freq(64, 500000.0, None)
    scaled = rope_inv_freq(64, 500000.0, sc)
    assert scaled[0] == base[0]  # wavelength 2*pi: far below the threshold
    assert scaled[-1] == pytest.approx(base[-1] / 32.0)


def test_erf_matches_math_erf():
    x = np.linspace(-5, 5, 2001)
    assert np.max(np.abs(erf(x) - np.array([math.erf(v) for v in x]))) < 2e-7


def test_norms():
    x = rng.standard_normal((3, 8)).astype(np.float32)
    w = rng.standard_normal(8).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    rms = KERNELS["rmsnorm"]([x, w], {"eps": 1e-6}, None)[0]
    np.testing.assert_allclose(rms, x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-6) * w, rtol=1e-5)
    ln = KERNELS["layernorm"]([x, w, b], {"eps": 1e-5}, None)[0]
    np.testing.assert_allclose(ln, (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * w + b, rtol=1e-4, atol=1e-5)


def test_kv_cache_decode_equals_full_prefill(llama_tiny):
    """Feeding tokens one at a time through the KV cache gives the logits of one full-sequence pass."""
    g = llama_tiny.graph
    it = Interpreter(g)
    ids = rng.integers(3, 500, 12).astype(np.int64)
    full = it.run({"input_ids": ids, "positions": np.arange(12), **empty_cache(g, 12)})["logits"]
    cache = empty_cache(g, 12)
    for i in range(12):
        out = it.run({"input_ids": ids[i : i + 1], "positions": np.array([i]), **cache})
        cache = {k.replace("present_", "past_"): v for k, v in out.items() if k.startswith("present_")}
        np.testing.assert_allclose(out["logits"][0], full[i], rtol=1e-4, atol=1e-5)
    assert cache["past_key.0"].shape[0] == 12  # the grown copy (concat), or the 12-row cache (inplace)


@pytest.mark.parametrize("spec_text", ["w4g32", "w4g32a8", "w3g16-min", "w2g16k4a8-min"])
def test_qlinear_in_row_chunks_is_the_same_numbers(monkeypatch, spec_text):
    """The reference qlinear bounds its per-group accumulators [J, rows, N] by running the rows in chunks (a 4096-token
    prompt through SmolLM2's tied head would need 14 GB at once): every output row is the same, bit for bit at A8
    (integer sums); at A16 to float32 reassociation, since the BLAS may pick kernels by the number of rows (OpenBLAS's
    single-threaded Haswell sgemm gives ulp-level differences between a 7-row and a 1000-row call)."""
    from compiler import reference
    from compiler.quant.pack import pack, storage_layout
    from compiler.quant.rtn import quantize_rtn
    from compiler.quant.spec import parse_spec

    spec = parse_spec(spec_text)
    rng = np.random.default_rng(3)
    q = quantize_rtn(rng.standard_normal((96, 256)).astype(np.float32), spec)
    attrs = {"bits": q.bits, "group_size": q.group_size, "n": 96, "k": 256, "act": spec.act, "layout": storage_layout(q.bits), "ternary": False}
    if q.has_mins:
        attrs["mins"] = True
    w = reference.QLinearWeights(pack(q.codes, q.bits, attrs["layout"]), q.scales, q.mins if q.has_mins else q.zeros, attrs)
    x = rng.standard_normal((2, 500, 256)).astype(np.float32)
    whole = reference.qlinear(x, w, spec.act)
    monkeypatch.setattr(reference, "ACC_BYTES", 8 * (256 // q.group_size) * 96 * 7)  # 7 rows a chunk
    got = reference.qlinear(x, w, spec.act)
    if spec.act == "a8":
        np.testing.assert_array_equal(got, whole)
    else:  # a few ulps of each row's largest output (2^-24 relative each); a wrong chunk would be O(1) off
        assert np.all(np.abs(got - whole) <= 2.0**-20 * np.abs(whole).max(axis=-1, keepdims=True))
