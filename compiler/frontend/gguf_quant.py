"""llama.cpp block types that are exactly lowbit `QuantizedWeight`s, decoded straight from the GGUF blocks
(never by re-quantizing). Each decoder's dequantize() equals gguf.quants.dequantize bit for bit: the same
float32 products and sums in the same order (tests/compiler/frontend/test_gguf_quant.py checks it).

- Q8_0 (34 bytes / 32 weights: fp16 d, 32 x int8 q): w = d q -> 8-bit codes q + 128, zeros 128.
- Q4_0 (18 bytes: fp16 d, 16 bytes of nibbles): w = d (q - 8) -> 4-bit codes, zeros 8.
- Q4_1 (20 bytes: fp16 d, fp16 m, nibbles): w = d q + m -> 4-bit codes, minimum m.
- Q4_K (144 bytes / 256 weights: fp16 d, fp16 dmin, 12 bytes of 6-bit sub-scales sc and sub-minimums mq,
  128 bytes of nibbles): per 32-weight sub-block w = (d sc) q - (dmin mq) -> groups of 32 with scale d*sc
  and minimum -(dmin*mq). Both products are exact in float32: an fp16 significand (11 bits) times a 6-bit
  integer needs at most 17 bits.
Nibbles: in Q4_0 / Q4_1 the low nibbles of the 16 bytes are weights 0-15 and the high nibbles 16-31; in Q4_K
each 32-byte chunk c holds sub-block 2c in its low nibbles and 2c + 1 in its high nibbles.
"""

from __future__ import annotations

import numpy as np

from compiler.quant.qweight import QuantizedWeight

FLOAT_TYPES = ("F32", "F16", "BF16", "F64")  # stored as floats: not "quantized"


def _f16(b: np.ndarray) -> np.ndarray:
    """Two bytes per row -> float32 (exact)."""
    return np.ascontiguousarray(b).view(np.float16).astype(np.float32)[..., 0]


def _nibbles16(qs: np.ndarray) -> np.ndarray:
    """[B, 16] bytes -> [B, 32] codes: low nibbles first."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1)


def _q8_0(blocks, n, k):
    d = _f16(blocks[:, 0:2])
    codes = (blocks[:, 2:].view(np.int8).astype(np.int16) + 128).astype(np.uint8)
    return QuantizedWeight(codes.reshape(n, k), d.reshape(n, -1), np.full((n, k // 32), 128, np.uint8), 8, 32)


def _q4_0(blocks, n, k):
    d = _f16(blocks[:, 0:2])
    codes = _nibbles16(blocks[:, 2:18])
    return QuantizedWeight(codes.reshape(n, k), d.reshape(n, -1), np.full((n, k // 32), 8, np.uint8), 4, 32)


def _q4_1(blocks, n, k):
    d, m = _f16(blocks[:, 0:2]), _f16(blocks[:, 2:4])
    codes = _nibbles16(blocks[:, 4:20])
    j = k // 32
    return QuantizedWeight(codes.reshape(n, k), d.reshape(n, j), np.zeros((n, j), np.uint8), 4, 32, mins=m.reshape(n, j))


def q4_k_scale_min(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[B, 12] packed bytes -> 6-bit sub-scales and sub-minimums [B, 8] (llama.cpp's get_scale_min_k4)."""
    d, m, md = s[:, 0:4], s[:, 4:8], s[:, 8:12]
    sc = np.concatenate([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], axis=1)
    mn = np.concatenate([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], axis=1)
    return sc, mn


def _q4_k(blocks, n, k):
    d, dmin = _f16(blocks[:, 0:2]), _f16(blocks[:, 2:4])
    sc, mn = q4_k_scale_min(blocks[:, 4:16])
    scales = d[:, None] * sc.astype(np.float32)
    mins = -(dmin[:, None] * mn.astype(np.float32))
    qs = blocks[:, 16:144].reshape(-1, 4, 1, 32)
    codes = np.concatenate([qs & 0x0F, qs >> 4], axis=2).reshape(-1, 256)
    j = k // 32
    return QuantizedWeight(codes.reshape(n, k), scales.reshape(n, j), np.zeros((n, j), np.uint8), 4, 32, mins=mins.reshape(n, j))


DECODERS = {"Q8_0": (_q8_0, 32, 34), "Q4_0": (_q4_0, 32, 18), "Q4_1": (_q4_1, 32, 20), "Q4_K": (_q4_k, 256, 144)}


def decode_quantized(data: np.ndarray, type_name: str, n: int, k: int) -> QuantizedWeight | None:
    """The exact QuantizedWeight of one [n, k] tensor's raw blocks (uint8 [n, bytes per row]); None when the
    type does not map onto lowbit's formats (Q5_*, Q6_K, Q2_K, Q3_K, IQ*, TQ*, ...)."""
    if type_name not in DECODERS:
        return None
    fn, block, size = DECODERS[type_name]
    blocks = np.ascontiguousarray(data, dtype=np.uint8).reshape(n * (k // block), size)
    return fn(blocks, n, k)


def permute_rows(qw: QuantizedWeight, idx: np.ndarray) -> QuantizedWeight:
    """Rows reordered (groups run along K, so every per-row array moves with its row)."""
    return QuantizedWeight(
        qw.codes[idx], qw.scales[idx], qw.zeros[idx], qw.bits, qw.group_size, qw.ternary, None if qw.mins is None else qw.mins[idx]
    )
