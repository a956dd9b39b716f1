import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from compiler.quant.pack import pack, packed_shape, storage_layout, unpack

ALLOWED = [(4, "nibble")] + [(b, "dense") for b in (2, 4, 8)] + [(b, "planes") for b in range(1, 9)]


@st.composite
def codes_case(draw):
    bits, layout = draw(st.sampled_from(ALLOWED))
    n = draw(st.integers(1, 5))
    k = draw(st.integers(1, 41))  # includes K not a multiple of 2, 4 or 8
    codes = draw(arrays(np.uint8, (n, k), elements=st.integers(0, (1 << bits) - 1)))
    return codes, bits, layout


@settings(deadline=None, max_examples=150)
@given(codes_case())
def test_pack_unpack_round_trip(case):
    codes, bits, layout = case
    n, k = codes.shape
    packed = pack(codes, bits, layout)
    assert packed.dtype == np.uint8
    assert packed.shape == packed_shape(n, k, bits, layout)
    # Storage is exactly ceil(K * bits / 8) bytes per row, padded only to whole codes-per-byte.
    per_row = packed.size // n
    assert per_row == (bits * -(-k // 8) if layout == "planes" else -(-k // (8 // bits)))
    np.testing.assert_array_equal(unpack(packed, bits, layout, k), codes)


def test_nibble_bytes():
    codes = np.array([[1, 2, 15, 0, 7]], np.uint8)
    packed = pack(codes, 4, "nibble")
    # even k in the low nibble; the odd last code is padded with a zero high nibble
    assert packed.tolist() == [[0x21, 0x0F, 0x07]]


def test_dense_bytes():
    assert pack(np.array([[1, 2, 3, 0, 3]], np.uint8), 2, "dense").tolist() == [[0b00_11_10_01, 0b11]]
    assert pack(np.array([[0x3, 0xA]], np.uint8), 4, "dense").tolist() == [[0xA3]]
    assert pack(np.array([[200, 7]], np.uint8), 8, "dense").tolist() == [[200, 7]]


def test_planes_bytes():
    codes = np.array([[1, 2, 3, 0, 5, 7, 6, 4, 1]], np.uint8)  # 3-bit, K=9 -> 2 bytes per plane
    packed = pack(codes, 3, "planes")
    assert packed.shape == (3, 1, 2)
    # plane b, bit k = bit b of code k (k = 0 in the LSB)
    assert packed[0].tolist() == [[0b0011_0101, 0b1]]
    assert packed[1].tolist() == [[0b0110_0110, 0b0]]
    assert packed[2].tolist() == [[0b1111_0000, 0b0]]


def test_nibble_equals_dense4():
    codes = np.random.default_rng(1).integers(0, 16, (3, 13), dtype=np.uint8)
    np.testing.assert_array_equal(pack(codes, 4, "nibble"), pack(codes, 4, "dense"))


def test_storage_layout():
    assert storage_layout(8) == "dense"
    assert storage_layout(4) == "nibble"
    assert storage_layout(2) == "dense"
    assert storage_layout(3) == "planes"
    with pytest.raises(ValueError, match="5-bit"):
        storage_layout(5)


@pytest.mark.parametrize(
    "bits, layout, match",
    [(2, "nibble", "nibble"), (3, "dense", "dense"), (9, "planes", "planes"), (0, "planes", "planes"), (4, "zigzag", "unknown")],
)
def test_bad_bits_layout(bits, layout, match):
    codes = np.zeros((2, 8), np.uint8)
    with pytest.raises(ValueError, match=match):
        pack(codes, bits, layout)
    with pytest.raises(ValueError, match=match):
        unpack(np.zeros((2, 4), np.uint8), bits, layout, 8)


def test_code_too_wide_and_bad_shapes():
    with pytest.raises(ValueError, match="does not fit in 2 bits"):
        pack(np.array([[4]], np.uint8), 2, "dense")
    with pytest.raises(ValueError, match="uint8"):
        pack(np.array([[1]], np.int32), 2, "dense")
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        unpack(np.zeros((2, 3), np.uint8), 4, "nibble", 4)
    with pytest.raises(ValueError, match=r"\[3, N, 1\]"):
        unpack(np.zeros((2, 2, 1), np.uint8), 3, "planes", 8)
