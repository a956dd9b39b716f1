"""Keys per channel (`--kv int4-kc-wN`, KIVI): a scale and a minimum per channel over each group of 32 cache rows,
quantized when the step's rows touch the group (from the float window's ring and the step's rows), read as u s + m
once the group is whole; values stay per token. Checked: the reference's arithmetic, chunking, the bytes, and tvm-cpu
against ref on a model over several groups."""

import numpy as np
import pytest

import runtime
from compiler.compile import compile_model
from compiler.errors import LowbitError
from compiler.frontend.llama import empty_cache
from compiler.kvformat import TOKEN_GROUP, kv_bytes_per_token, parse_kv
from compiler.passes.kv_quant import kv_quant_graph
from compiler.reference import KERNELS, Interpreter, _kv_quantize, kv_dequantize, kv_dequantize_channels, kv_quantize_channels
from tests.helpers import COMPILER_TOL


def test_grammar_and_refusals():
    assert parse_kv("int4-kc-w128").keys_channel and str(parse_kv("int2-w64-kc-rot")) == "int2-rot-kc-w64"
    for bad, msg in (("int8-kc-w128", "int4 and int2"), ("fp8-kc-w128", "int4 and int2"), ("int4-kc", "window of at least 32"),
                     ("int4-kc-w16", "window of at least 32"), ("int4-kc-kc-w64", "repeated")):
        with pytest.raises(LowbitError, match=msg):
            parse_kv(bad)


@pytest.mark.parametrize("bits", [4, 2])
def test_group_parameters_and_codes(bits):
    rng = np.random.default_rng(bits)
    x = rng.standard_normal((32, 2, 64)).astype(np.float32) * np.linspace(0.1, 8, 64, dtype=np.float32)
    codes, params = kv_quantize_channels(x, bits, 32)
    qmax = 2**bits - 1
    s, m = params[:, :64].astype(np.float32), params[:, 64:].astype(np.float32)
    np.testing.assert_array_equal(params[:, :64], ((x.max(0) - x.min(0)) / np.float32(qmax)).astype(np.float16))
    np.testing.assert_array_equal(params[:, 64:], x.min(0).astype(np.float16))
    y = kv_dequantize_channels(codes, params[None], bits, 32)
    # half a step, plus the fp16 rounding of the minimum (and of the scale, times the largest code)
    assert np.all(np.abs(y - x) <= 0.5 * s * 1.001 + np.abs(m) * 2.0**-11 + qmax * s * 2.0**-11 + 1e-7)


def test_channels_beat_tokens_on_outlier_channels():
    """KIVI's premise: keys have a few large channels; per-token groups spend their range on them, per-channel ones do not."""
    rng = np.random.default_rng(0)
    k = rng.standard_normal((32, 3, 64)).astype(np.float32)
    k[..., [5, 40]] *= 20.0
    kt = kv_dequantize(*_kv_quantize(k, 4, 32), 4, 32)
    kc = kv_dequantize_channels(*(lambda c, p: (c, p[None]))(*kv_quantize_channels(k, 4, 32)), 4, 32)
    err = lambda y: float(np.linalg.norm(y - k) / np.linalg.norm(k))  # noqa: E731
    print(f"\nrelative error, int4 keys with two outlier channels: per token {err(kt):.4f}, per channel {err(kc):.4f}")
    assert err(kc) < 0.5 * err(kt)


def test_write_quantizes_each_touched_group_over_its_rows_so_far():
    rng = np.random.default_rng(1)
    w, rows = 32, 96
    codes, params = np.zeros((rows, 1, 32), np.uint8), np.zeros((3, 1, 128), np.float16)
    ring = np.zeros((w, 1, 64), np.float32)
    x = rng.standard_normal((rows, 1, 64)).astype(np.float32)
    a = {"bits": 4, "group": 32, "window": w}
    p = 0
    for s in (20, 1, 30, 13):  # rows 0..63: group 0 completes inside the third step, group 1 in the fourth
        pos = np.arange(p, p + s, dtype=np.int64)
        codes, params = KERNELS["kv_write_kc"]([codes, params, ring, x[p:p + s], pos], a, None)
        last = np.arange(max(0, s - w), s)
        ring[(p + last) % w] = x[p + last]  # as the attention leaves the ring
        p += s
        g = (p - 1) // TOKEN_GROUP  # the group of the step's last row: quantized over its rows so far
        want_c, want_p = kv_quantize_channels(x[g * 32 : p], 4, 32)
        np.testing.assert_array_equal(codes[g * 32 : p], want_c)
        np.testing.assert_array_equal(params[g], want_p)
    for g in (0, 1):  # whole groups: exactly their 32 rows' quantization
        want_c, want_p = kv_quantize_channels(x[g * 32 : g * 32 + 32], 4, 32)
        np.testing.assert_array_equal(codes[g * 32 : g * 32 + 32], want_c)
        np.testing.assert_array_equal(params[g], want_p)
    assert not params[2].any()


def test_prefill_then_decode_matches_one_prefill_and_the_bytes(llama_tiny):
    g = kv_quant_graph(llama_tiny.graph, "int4-kc-w32")
    assert sum(n.op == "kv_write_kc" for n in g.nodes) == 4 and all(n.attrs.get("keys") == "channel" for n in g.nodes if n.op == "cache_attention_q")
    ids = (np.arange(90) % 500 + 3).astype(np.int64)
    whole = Interpreter(g).run({"input_ids": ids, "positions": np.arange(90), **empty_cache(g, 96)})["logits"]
    interp, cache = Interpreter(g), empty_cache(g, 96)
    out = interp.run({"input_ids": ids[:50], "positions": np.arange(50), **cache})
    rows = [out["logits"]]
    for t in range(50, 90):
        cache = {k.replace("present_", "past_"): v for k, v in out.items() if k.startswith("present_")}
        out = interp.run({"input_ids": ids[t : t + 1], "positions": np.array([t]), **cache})
        rows.append(out["logits"])
    np.testing.assert_allclose(np.concatenate(rows), whole, rtol=0, atol=1e-5 * float(np.abs(whole).max()))
    hp = llama_tiny.graph.meta["hparams"]
    a, b = empty_cache(g, 64), empty_cache(g, 96)  # 32 more rows: one more key parameter row per layer
    per_row = (sum(x.nbytes for x in b.values()) - sum(x.nbytes for x in a.values())) / 32
    assert per_row == kv_bytes_per_token(hp["layers"], hp["kv_heads"], hp["head_dim"], "int4-kc-w32")
    assert a["past_key_scale.0"].shape == (2, hp["kv_heads"], 2 * hp["head_dim"])


def test_tvm_cpu_matches_ref_over_whole_groups(tmp_path):
    """A prefill of 45 rows (one whole group, quantized from the step's rows) and decode steps across the second group's
    end, on tvm-cpu's kernels (kv_write_kc_inplace and the attention's u s + m reads) against ref, each on its own cache."""
    out = tmp_path / "kc"
    compile_model("llama-tiny", out, "w4g32", targets="ref,tvm-cpu", progress=False, kv="int4-kc-w32")
    m = runtime.load(out)
    ids = [int(t) for t in np.arange(45) * 7 % 500 + 3]
    bt, br = m.backend("tvm-cpu"), m.backend("ref")
    feeds = {"input_ids": np.array(ids, np.int64), "positions": np.arange(45, dtype=np.int64)}
    ct, cr = bt.new_cache(m._cache_feeds(128)), br.new_cache(m._cache_feeds(128))
    steps = [(feeds, *bt.step(feeds, ct), *br.step(feeds, cr))]
    for p in range(45, 70):
        f = {"input_ids": np.array([ids[p % 45]], np.int64), "positions": np.array([p], np.int64)}
        _, _, ct, _, cr = steps[-1]
        steps.append((f, *bt.step(f, ct), *br.step(f, cr)))
    for i, (_, lt, ct, lr, cr) in enumerate(steps):
        assert np.abs(lt - lr).max() <= COMPILER_TOL["a16"] * np.abs(lr).max(), f"step {i}"
        assert np.array_equal(np.argmax(lt, -1), np.argmax(lr, -1)), f"step {i}"
    host = lambda v: np.asarray(v.numpy() if hasattr(v, "numpy") else v)  # noqa: E731
    _, _, ct, _, cr = steps[-1]
    kt, kr = host(ct["past_key.1"]), host(cr["past_key.1"])
    assert np.mean(kt[:64] == kr[:64]) >= 0.99  # the codes of both whole groups (float noise may move a value across a boundary)
    pt, pr = (host(c["past_key_scale.1"])[:2].astype(np.float32) for c in (ct, cr))
    np.testing.assert_allclose(pt, pr, rtol=0, atol=COMPILER_TOL["a16"] * np.abs(pr).max())  # minima and ranges of each side's float keys
