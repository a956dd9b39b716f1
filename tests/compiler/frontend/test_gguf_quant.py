"""llama.cpp blocks decoded into QuantizedWeights: dequantize() equals gguf's dequantize bit for bit on
arbitrary block bytes (any finite fp16 scale, subnormal to 65504, any code and sub-scale byte), every product
the K-quants form is exact in float32, the two-level form rebuilds the group scales and minimums exactly, and a
GGUF with every mapped type compiles under `--quant keep` to qlinears holding exactly those weights."""

import json

import gguf
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.frontend.gguf_quant import DECODERS, K_QUANTS, decode_quantized, decode_two_level, permute_rows

QT = gguf.GGMLQuantizationType

# byte offsets of every fp16 field in one block (gguf-py's block layouts)
F16_FIELDS = {"Q8_0": (0,), "Q4_0": (0,), "Q5_0": (0,), "Q4_1": (0, 2), "Q5_1": (0, 2), "Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2),
              "Q5_K": (0, 2), "Q6_K": (208,)}
# type -> (bits, group, zero point or "min", lowest code, highest code): the format table of gguf_quant's doc
FORMATS = {
    "Q8_0": (8, 32, 128, 0, 255),
    "Q4_0": (4, 32, 8, 0, 15),
    "Q4_1": (4, 32, "min", 0, 15),
    "Q5_0": (8, 32, 128, 112, 143),
    "Q5_1": (8, 32, "min", 0, 31),
    "Q2_K": (2, 16, "min", 0, 3),
    "Q3_K": (3, 16, 4, 0, 7),
    "Q4_K": (4, 32, "min", 0, 15),
    "Q5_K": (8, 32, "min", 0, 31),
    "Q6_K": (8, 16, 128, 96, 159),
}
FINITE_F16 = np.arange(65536, dtype=np.uint16)[np.isfinite(np.arange(65536, dtype=np.uint16).view(np.float16))]
EXTREMES = np.array([65504.0, -65504.0, 2.0**-24, -(2.0**-24), 2.0**-14, 6.1e-5, 0.0, -0.0, 1.0], np.float16).view(np.uint16)


def random_blocks(type_name, rows, blocks_per_row, rng, f16=None):
    """Random block bytes with every fp16 field finite: drawn from all finite fp16 patterns (subnormals, the
    largest, signed zeros) and the extremes, or `f16` (uint16 [blocks]) for each field (rolled for the second)."""
    size = gguf.GGML_QUANT_SIZES[QT[type_name]][1]
    raw = rng.integers(0, 256, (rows * blocks_per_row, size), dtype=np.uint8)
    pool = np.concatenate([FINITE_F16, EXTREMES])
    for i, off in enumerate(F16_FIELDS[type_name]):
        v = rng.choice(pool, len(raw)) if f16 is None else np.roll(f16, 7919 * i)
        raw[:, off : off + 2] = v.astype(np.uint16).view(np.uint8).reshape(-1, 2)
    return raw.reshape(rows, blocks_per_row * size)


def assert_bit_exact(raw, type_name, rows):
    k = raw.shape[1] // gguf.GGML_QUANT_SIZES[QT[type_name]][1] * gguf.GGML_QUANT_SIZES[QT[type_name]][0]
    qw = decode_quantized(raw, type_name, rows, k)
    want = gguf.quants.dequantize(raw, QT[type_name]).reshape(rows, k)
    assert not np.isnan(want).any()
    got = qw.dequantize()
    assert got.dtype == np.float32 and np.array_equal(got.view(np.uint32), want.view(np.uint32))  # signed zeros too
    return qw


def test_the_decoders_are_the_table():
    assert set(DECODERS) == set(FORMATS) and set(K_QUANTS) == {"Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"}
    for t, (fn, block, size) in DECODERS.items():
        assert (block, size) == gguf.GGML_QUANT_SIZES[QT[t]], t


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(sorted(DECODERS)), st.integers(1, 4), st.integers(1, 3), st.integers(0, 2**32 - 1))
def test_blocks_decode_bit_exactly(type_name, rows, blocks_per_row, seed):
    raw = random_blocks(type_name, rows, blocks_per_row, np.random.default_rng(seed))
    qw = assert_bit_exact(raw, type_name, rows)
    bits, group, zero, lo, hi = FORMATS[type_name]
    assert (qw.bits, qw.group_size, qw.has_mins, qw.ternary) == (bits, group, zero == "min", False)
    assert qw.codes.dtype == np.uint8 and lo <= int(qw.codes.min()) and int(qw.codes.max()) <= hi < 2**bits
    assert (qw.zeros == (0 if zero == "min" else zero)).all() and qw.scales.dtype == np.float32


@pytest.mark.parametrize("type_name", sorted(DECODERS))
def test_every_finite_fp16_scale_decodes_bit_exactly(type_name):
    """One block per finite fp16 value of each scale (d, and dmin / m in another order), 248 rows of 256 blocks:
    63488 blocks per type."""
    rng = np.random.default_rng(1)
    raw = random_blocks(type_name, 248, 256, rng, f16=rng.permutation(FINITE_F16))
    assert_bit_exact(raw, type_name, 248)


@pytest.mark.parametrize(
    "type_name,sc,q",
    [("Q8_0", 1, 128), ("Q4_0", 1, 8), ("Q5_0", 1, 16), ("Q5_1", 1, 31), ("Q2_K", 15, 3), ("Q3_K", 32, 4), ("Q4_K", 63, 15),
     ("Q5_K", 63, 31), ("Q6_K", 128, 32)],
)
def test_products_are_exact_in_float32(type_name, sc, q):
    """d (fp16) * sc * (q - z) for |sc| <= sc and |q - z| <= q: every integer P up to sc * q times every fp16
    significand in [1, 2) is exact in float32 (products of powers of two with it as well: no fp16 scale leaves
    float32's normal range), so (d sc) q, d (sc q) and gguf's order are one exact number. The Q4_K/Q5_K
    minimums dmin mq are the sc = 63, q = 1 case."""
    d = np.arange(0x3C00, 0x4000, dtype=np.uint16).view(np.float16).astype(np.float32)  # all of [1, 2)
    p = np.arange(sc * q + 1, dtype=np.float32)
    assert np.array_equal((d[:, None] * p[None, :]).astype(np.float64), d.astype(np.float64)[:, None] * p.astype(np.float64)[None, :])
    assert np.isfinite(np.float32(65504.0) * np.float32(sc * q)) and np.float32(2.0**-24) * np.float32(1) >= np.finfo(np.float32).tiny


@settings(max_examples=20, deadline=None)
@given(st.sampled_from(sorted(K_QUANTS)), st.integers(1, 3), st.integers(1, 3), st.integers(0, 2**32 - 1))
def test_two_level_form_rebuilds_scales_and_minimums(type_name, rows, blocks_per_row, seed):
    raw = random_blocks(type_name, rows, blocks_per_row, np.random.default_rng(seed))
    k = 256 * blocks_per_row
    qw = decode_quantized(raw, type_name, rows, k)
    t = decode_two_level(raw, type_name, rows, k)
    per = 256 // t["group"]
    assert t["group"] == qw.group_size and t["d"].dtype == np.float16 and t["d"].shape == (rows, blocks_per_row)
    assert t["sc"].shape == qw.scales.shape and (t["sub_bits"], t["signed"]) == {
        "Q2_K": (4, False), "Q3_K": (6, True), "Q4_K": (6, False), "Q5_K": (6, False), "Q6_K": (8, True)}[type_name]
    lo, hi = (-(1 << (t["sub_bits"] - 1)), (1 << (t["sub_bits"] - 1)) - 1) if t["signed"] else (0, (1 << t["sub_bits"]) - 1)
    assert t["sc"].dtype == (np.int8 if t["signed"] else np.uint8) and lo <= t["sc"].min() and t["sc"].max() <= hi

    def rebuild(d, s):
        return (d.astype(np.float32)[..., None] * s.reshape(rows, blocks_per_row, per).astype(np.float32)).reshape(rows, -1)

    assert np.array_equal(rebuild(t["d"], t["sc"]).view(np.uint32), qw.scales.view(np.uint32))
    if qw.has_mins:
        assert t["mq"].dtype == np.uint8 and t["mq"].max() < 1 << t["sub_bits"] and t["dmin"].dtype == np.float16
        assert np.array_equal((-rebuild(t["dmin"], t["mq"])).view(np.uint32), qw.mins.view(np.uint32))
    else:
        assert t["dmin"] is None and t["mq"] is None
    assert decode_two_level(raw[:, :34], "Q8_0", rows, 32) is None


def test_nibble_order_and_codes():
    """A Q4_0 block with d = 1: weight i is (q_i - 8); low nibbles are weights 0-15."""
    d = np.array([1.0], np.float16).view(np.uint8).reshape(1, 2)
    qs = (np.arange(16, dtype=np.uint8) | (np.uint8(15) - np.arange(16, dtype=np.uint8)) << 4).reshape(1, 16)
    qw = decode_quantized(np.concatenate([d, qs], 1), "Q4_0", 1, 32)
    np.testing.assert_array_equal(qw.codes[0], [*range(16), *range(15, -1, -1)])
    assert qw.zeros[0, 0] == 8 and qw.scales[0, 0] == 1.0
    q8 = decode_quantized(np.concatenate([d, np.arange(-16, 16, dtype=np.int8).view(np.uint8).reshape(1, 32)], 1), "Q8_0", 1, 32)
    np.testing.assert_array_equal(q8.codes[0].astype(int) - 128, np.arange(-16, 16))


def test_q5_0_fifth_bits_and_q3_k_high_mask():
    """Q5_0: qh's little-endian bit i is weight i's fifth bit. Q3_K: a set hmask bit means q3 = low bits (no -4)."""
    d = np.array([1.0], np.float16).view(np.uint8).reshape(1, 2)
    qh = np.array([1 << 31 | 1], np.uint32).view(np.uint8).reshape(1, 4)
    qw = decode_quantized(np.concatenate([d, qh, np.zeros((1, 16), np.uint8)], 1), "Q5_0", 1, 32)
    np.testing.assert_array_equal(qw.int_weights()[0], [0, *[-16] * 30, 0])
    b = np.zeros((1, 110), np.uint8)
    b[0, 0] = 1  # weight 0's hmask bit
    b[0, 32] = 0b11  # weight 0's (and nothing else's) low bits: 3
    b[0, 96:104] = 0x11  # every sub-scale's low nibble 1 ...
    b[0, 104:108] = 0xAA  # ... and its 2 high bits 0b10: 33, minus 32 = 1
    b[0, 108:110] = d
    qw = decode_quantized(b, "Q3_K", 1, 256)
    np.testing.assert_array_equal(qw.int_weights()[0], [3, *[-4] * 255])
    assert (qw.scales == 1.0).all()


def test_row_permutation_moves_every_per_row_array():
    raw = random_blocks("Q4_1", 4, 1, np.random.default_rng(0))
    qw = decode_quantized(raw, "Q4_1", 4, 32)
    idx = np.array([2, 0, 3, 1])
    np.testing.assert_array_equal(permute_rows(qw, idx).dequantize(), qw.dequantize()[idx])


KEPT = {"attn_q": "Q6_K", "attn_k": "Q3_K", "attn_v": "Q5_0", "attn_output": "Q5_1", "ffn_gate": "Q2_K", "ffn_up": "Q5_K", "ffn_down": "Q6_K"}
KEPT_AS = {"Q6_K": "w8g16k8a32", "Q3_K": "w3g16ka32", "Q5_0": "w8g32a32", "Q5_1": "w8g32a32-min", "Q2_K": "w2g16k4a32-min",
           "Q5_K": "w8g32ka32-min", "Q8_0": "w8g32a32"}


def test_keep_keeps_every_mapped_type_of_a_gguf_exactly(tmp_path):
    """A GGUF whose block linears are Q6_K, Q3_K, Q5_0, Q5_1, Q2_K and Q5_K (q/k rows permuted in the file):
    `--quant keep` turns each into a qlinear of exactly the decoded codes, scales and zero points / minimums,
    named as the table says, and nothing is re-quantized."""
    from compiler.compile import compile_model
    from compiler.frontend import load_model
    from compiler.frontend.llama import empty_cache
    from compiler.quant.pack import unpack
    from compiler.reference import Interpreter
    from tests.compiler.frontend.gguf_fixtures import gguf_forward_f64, gguf_layout, write_llama_gguf

    p = tmp_path / "k.gguf"
    write_llama_gguf(p, layers=1, hidden=256, inter=256, heads=4, kv_heads=4, types=KEPT, scale=0.02)
    m = load_model(str(p))
    assert set(m.prequant) == set(m.prequant_types)  # every quantized tensor decoded exactly
    for w, qw in m.prequant.items():
        assert np.array_equal(qw.dequantize().view(np.uint32), m.graph.consts[w].view(np.uint32)), w
    r = compile_model(m, tmp_path / "a", quant="keep", progress=False)
    g = r["graph"]
    nodes = {n.inputs[1][: -len(".qweight")] + ".weight": n for n in g.nodes if n.op == "qlinear"}
    for w, qw in m.prequant.items():
        if w == "model.embed_tokens.weight":
            continue  # the tied table: the head's qlinear (lm_head) holds it
        n = nodes[w]
        np.testing.assert_array_equal(unpack(g.consts[n.inputs[1]], n.attrs["bits"], n.attrs["layout"], n.attrs["k"]), qw.codes, err_msg=w)
        np.testing.assert_array_equal(g.consts[n.inputs[2]], qw.scales, err_msg=w)
        np.testing.assert_array_equal(g.consts[n.inputs[3]], qw.mins if qw.has_mins else qw.zeros, err_msg=w)
        assert (n.attrs["bits"], n.attrs["group_size"], bool(n.attrs.get("mins"))) == (qw.bits, qw.group_size, qw.has_mins), w
    q = json.loads((tmp_path / "a" / "manifest.json").read_text())["quant"]
    for w, t in m.prequant_types.items():
        assert q["layers"][w] == {"kept": t, "as": KEPT_AS[t]}, w
    assert not any("requantized" in s for s in q["summary"])
    # the K-quants' scales are stored in their two-level form and load back bit for bit
    from compiler.artifact import load_artifact

    packed = json.loads((tmp_path / "a" / "manifest.json").read_text())["two_level_scales"]
    k_types = {w for w, t in m.prequant_types.items() if t.endswith("_K")}
    assert {nodes[w].inputs[2] for w in k_types} <= set(packed)
    loaded = load_artifact(tmp_path / "a").graph
    for name, v in g.consts.items():
        assert np.array_equal(loaded.consts[name].view(np.uint8), v.view(np.uint8)), name
    # kept at A32 the compiled model is the file's float model up to float32 summation order: against the float64
    # forward of the file, as test_gguf's import check (measured 2.8e-6 of the largest logit, the float graph 6e-7:
    # the contract's per-group sums of 16 with signed scales and minimums reorder more)
    ids = [5, 77, 120, 3]
    feeds = {"input_ids": np.array(ids), "positions": np.arange(4), **empty_cache(m.graph, 4)}
    want = gguf_forward_f64(*gguf_layout(p), ids)
    got = Interpreter(g).run(feeds)["logits"]
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
