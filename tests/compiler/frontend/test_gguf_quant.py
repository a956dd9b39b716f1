"""llama.cpp blocks decoded into QuantizedWeights: dequantize() equals gguf's dequantize bit for bit on
arbitrary block bytes (any fp16 scale, any nibble), and the Q4_K scale and minimum products are exact."""

import gguf
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.frontend.gguf_quant import DECODERS, decode_quantized, permute_rows

QT = gguf.GGMLQuantizationType


@settings(max_examples=12, deadline=None)
@given(st.sampled_from(sorted(DECODERS)), st.integers(1, 3), st.integers(1, 2), st.integers(0, 2**32 - 1))
def test_blocks_decode_bit_exactly(type_name, rows, blocks_per_row, seed):
    block, size = gguf.GGML_QUANT_SIZES[QT[type_name]]
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, (rows, blocks_per_row * size), dtype=np.uint8)
    # keep the fp16 fields finite (inf * 0 would be NaN on both sides; equal, but it hides nothing)
    for off in {"Q4_K": (0, 2), "Q4_1": (0, 2)}.get(type_name, (0,)):
        view = raw.reshape(-1, size)
        view[:, off + 1] &= 0xFB  # clear one exponent bit: finite, sign kept
    k = blocks_per_row * block
    qw = decode_quantized(raw, type_name, rows, k)
    want = gguf.quants.dequantize(raw, QT[type_name]).reshape(rows, k)
    np.testing.assert_array_equal(qw.dequantize(), want)
    assert qw.codes.dtype == np.uint8 and int(qw.codes.max()) < 2**qw.bits


def test_nibble_order_and_codes():
    """A Q4_0 block with d = 1: weight i is (q_i - 8); low nibbles are weights 0-15."""
    d = np.array([1.0], np.float16).view(np.uint8).reshape(1, 2)
    qs = (np.arange(16, dtype=np.uint8) | (np.uint8(15) - np.arange(16, dtype=np.uint8)) << 4).reshape(1, 16)
    qw = decode_quantized(np.concatenate([d, qs], 1), "Q4_0", 1, 32)
    np.testing.assert_array_equal(qw.codes[0], [*range(16), *range(15, -1, -1)])
    assert qw.zeros[0, 0] == 8 and qw.scales[0, 0] == 1.0
    q8 = decode_quantized(np.concatenate([d, np.arange(-16, 16, dtype=np.int8).view(np.uint8).reshape(1, 32)], 1), "Q8_0", 1, 32)
    np.testing.assert_array_equal(q8.codes[0].astype(int) - 128, np.arange(-16, 16))


def test_q4_k_products_are_exact_in_float32():
    """Every finite fp16 d times every 6-bit sub-scale: the float32 product equals the exact (float64) one."""
    d = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)
    d = d[np.isfinite(d)]
    sc = np.arange(64, dtype=np.float32)
    p32 = d[:, None] * sc[None, :]
    p64 = d.astype(np.float64)[:, None] * sc.astype(np.float64)[None, :]
    assert np.array_equal(p32.astype(np.float64), p64)


def test_row_permutation_moves_every_per_row_array():
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (4, 20), dtype=np.uint8)
    raw[:, 1] &= 0x3B
    raw[:, 3] &= 0x3B
    qw = decode_quantized(raw, "Q4_1", 4, 32)
    idx = np.array([2, 0, 3, 1])
    np.testing.assert_array_equal(permute_rows(qw, idx).dequantize(), qw.dequantize()[idx])
