"""llama.cpp block types that are exactly lowbit `QuantizedWeight`s, decoded straight from the GGUF blocks
(never by re-quantizing). Each decoder's dequantize() equals gguf.quants.dequantize bit for bit
(tests/compiler/frontend/test_gguf_quant.py checks it on random blocks and every finite fp16 scale).

    type  bytes/weights  llama.cpp's rule                lowbit form (codes, zero or minimum, group)
    Q8_0   34 / 32       w = d q, q int8                 w8: q + 128, zeros 128, g32
    Q4_0   18 / 32       w = d (q - 8)                   w4: q, zeros 8, g32
    Q4_1   20 / 32       w = d q + m                     w4: q, minimum m, g32
    Q5_0   22 / 32       w = d (q - 16), q 5-bit         w8: q + 112, zeros 128, g32
    Q5_1   24 / 32       w = d q + m, q 5-bit            w8: q, minimum m, g32
    Q2_K   84 / 256      w = d sc q - dmin mq, 4-bit sc  w2: q, scale d sc, minimum -(dmin mq), g16
    Q3_K  110 / 256      w = d sc q3, sc 6-bit - 32      w3: q3 + 4, zeros 4, scale d sc, g16
    Q4_K  144 / 256      w = d sc q - dmin mq, 6-bit sc  w4: q, scale d sc, minimum -(dmin mq), g32
    Q5_K  176 / 256      as Q4_K, q 5-bit                w8: q, scale d sc, minimum -(dmin mq), g32
    Q6_K  210 / 256      w = d sc (q - 32), int8 sc      w8: q + 96, zeros 128, scale d sc, g16

Why bit for bit, in any evaluation order (gguf's numpy, llama.cpp's C with or without fused multiply-add, ours):
every product is exact in float32. d is fp16 (11 significant bits); the integers multiplying it have at most
7 bits (|sc| <= 127 for Q6_K's int8, 5 for Q3_K's |sc - 32| <= 32 where 32 is a power of two) and the code
factors at most 5 (Q6_K's |q - 32| <= 32, Q5's 31), so d sc q has at most 11 + 7 + 5 = 23 bits, and no fp16
value times them leaves float32's normal range. So `s (q - z)` and `(d sc) q` are the same exact number, and
`s q + m` rounds once, the same sum as gguf's `d sc q - dmin mq` (x - y is x + (-y) in IEEE arithmetic).

Bit order in the blocks (gguf-py / ggml-common.h): in Q4_0 / Q4_1 / Q5_0 / Q5_1 the low nibbles of the 16 bytes
are weights 0-15 and the high nibbles 16-31, Q5's fifth bits are qh's little-endian bit i for weight i; in
Q4_K / Q5_K each 32-byte chunk c holds sub-block 2c in its low nibbles and 2c + 1 in its high ones, and Q5_K's
sub-block j takes bit j of qh's 32 bytes; the 2-bit fields (Q2_K, Q3_K codes, Q6_K's high bits) run over
32-byte chunks, shift 0, 2, 4, 6 being consecutive 32-weight runs.

`decode_two_level` returns the K-quants' own two-level scales (fp16 d per 256 weights times the integer
sub-scales, and dmin times the sub-minimums), from which the group scales and minimums rebuild exactly.
"""

from __future__ import annotations

import numpy as np

from compiler.quant.qweight import QuantizedWeight

FLOAT_TYPES = ("F32", "F16", "BF16", "F64")  # stored as floats: not "quantized"
QK_K = 256  # weights per K-quant super-block


def _f16(b: np.ndarray) -> np.ndarray:
    """Two bytes per row -> float16 [B] (the stored value; its float32 is exact)."""
    return np.ascontiguousarray(b).view(np.float16)[..., 0]


def _planes(x: np.ndarray, width: int) -> np.ndarray:
    """[..., L] bytes -> [..., 8 / width, L] fields: the `width`-bit field at shift width*i is row i."""
    shifts = np.arange(0, 8, width, dtype=np.uint8)[:, None]
    return (x[..., None, :] >> shifts) & np.uint8((1 << width) - 1)


def _nibbles16(qs: np.ndarray) -> np.ndarray:
    """[B, 16] bytes -> [B, 32] codes: low nibbles first."""
    return _planes(qs, 4).reshape(-1, 32)


def _fifth_bits(qh: np.ndarray) -> np.ndarray:
    """Q5_0 / Q5_1's qh [B, 4] (one little-endian uint32) -> [B, 32] bits: bit i is weight i's."""
    return _planes(qh, 1).transpose(0, 2, 1).reshape(-1, 32)


def _zero_point(codes, scales, zero, bits, group, n, k):
    j = k // group
    return QuantizedWeight(codes.reshape(n, k), scales.reshape(n, j), np.full((n, j), zero, np.uint8), bits, group)


def _with_mins(codes, scales, mins, bits, group, n, k):
    j = k // group
    return QuantizedWeight(codes.reshape(n, k), scales.reshape(n, j), np.zeros((n, j), np.uint8), bits, group, mins=mins.reshape(n, j))


# ---- one scale per 32 weights


def _q8_0(blocks, n, k):
    codes = (blocks[:, 2:].view(np.int8).astype(np.int16) + 128).astype(np.uint8)
    return _zero_point(codes, _f16(blocks[:, 0:2]).astype(np.float32), 128, 8, 32, n, k)


def _q4_0(blocks, n, k):
    return _zero_point(_nibbles16(blocks[:, 2:18]), _f16(blocks[:, 0:2]).astype(np.float32), 8, 4, 32, n, k)


def _q4_1(blocks, n, k):
    d, m = _f16(blocks[:, 0:2]).astype(np.float32), _f16(blocks[:, 2:4]).astype(np.float32)
    return _with_mins(_nibbles16(blocks[:, 4:20]), d, m, 4, 32, n, k)


def _q5_codes(qh, qs):
    return _nibbles16(qs) | (_fifth_bits(qh) << 4)


def _q5_0(blocks, n, k):
    # q - 16 = (q + 112) - 128: a symmetric w8 code (the narrower values sit in the middle of the byte)
    codes = _q5_codes(blocks[:, 2:6], blocks[:, 6:22]) + np.uint8(112)
    return _zero_point(codes, _f16(blocks[:, 0:2]).astype(np.float32), 128, 8, 32, n, k)


def _q5_1(blocks, n, k):
    d, m = _f16(blocks[:, 0:2]).astype(np.float32), _f16(blocks[:, 2:4]).astype(np.float32)
    return _with_mins(_q5_codes(blocks[:, 4:8], blocks[:, 8:24]), d, m, 8, 32, n, k)


# ---- K-quants: fields of each super-block of 256 weights
# Each returns (d f16 [B], sc [B, S], dmin f16 [B] or None, mq [B, S] or None, codes uint8 [B, 256]).


def q4_k_scale_min(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[B, 12] packed bytes -> 6-bit sub-scales and sub-minimums [B, 8] (llama.cpp's get_scale_min_k4)."""
    d, m, md = s[:, 0:4], s[:, 4:8], s[:, 8:12]
    sc = np.concatenate([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], axis=1)
    mn = np.concatenate([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], axis=1)
    return sc, mn


def _q2_k_fields(b):
    sc = b[:, 0:16]
    codes = _planes(b[:, 16:80].reshape(-1, 2, 32), 2).reshape(-1, QK_K)
    return _f16(b[:, 80:82]), sc & 0x0F, _f16(b[:, 82:84]), sc >> 4, codes


def _q3_k_scales(s):
    """[B, 12] -> signed sub-scales [B, 16]: low nibbles from bytes 0-7 (low then high), 2 high bits from 8-11."""
    lo = _planes(s[:, 0:8], 4).reshape(-1, 16)
    hi = _planes(s[:, 8:12], 2).reshape(-1, 16)
    return ((lo | (hi << 4)).astype(np.int8) - np.int8(32)).astype(np.int8)


def _q3_k_fields(b):
    low = _planes(b[:, 32:96].reshape(-1, 2, 32), 2).reshape(-1, QK_K)
    high = _planes(b[:, 0:32], 1).reshape(-1, QK_K)  # hmask: a set bit means no -4, so q3 + 4 = low + 4 high
    return _f16(b[:, 108:110]), _q3_k_scales(b[:, 96:108]), None, None, low | (high << 2)


def _q4_k_fields(b):
    sc, mq = q4_k_scale_min(b[:, 4:16])
    codes = _planes(b[:, 16:144].reshape(-1, 4, 32), 4).reshape(-1, QK_K)
    return _f16(b[:, 0:2]), sc, _f16(b[:, 2:4]), mq, codes


def _q5_k_fields(b):
    sc, mq = q4_k_scale_min(b[:, 4:16])
    low = _planes(b[:, 48:176].reshape(-1, 4, 32), 4).reshape(-1, QK_K)
    high = _planes(b[:, 16:48], 1).reshape(-1, QK_K)
    return _f16(b[:, 0:2]), sc, _f16(b[:, 2:4]), mq, low | (high << 4)


def _q6_k_fields(b):
    low = _planes(b[:, 0:128].reshape(-1, 2, 64), 4).reshape(-1, QK_K)
    high = _planes(b[:, 128:192].reshape(-1, 2, 32), 2).reshape(-1, QK_K)
    # q - 32 = (q + 96) - 128: a symmetric w8 code
    return _f16(b[:, 208:210]), b[:, 192:208].view(np.int8), None, None, (low | (high << 4)) + np.uint8(96)


# type -> (fields, code bits, group, zero point (None: minimums), sub-scale bits, signed sub-scales)
K_QUANTS = {
    "Q2_K": (_q2_k_fields, 2, 16, None, 4, False),
    "Q3_K": (_q3_k_fields, 3, 16, 4, 6, True),
    "Q4_K": (_q4_k_fields, 4, 32, None, 6, False),
    "Q5_K": (_q5_k_fields, 8, 32, None, 6, False),
    "Q6_K": (_q6_k_fields, 8, 16, 128, 8, True),
}


def _k_decoder(type_name):
    fields, bits, group, zero, sub_bits, signed = K_QUANTS[type_name]

    def decode(blocks, n, k):
        d, sc, dmin, mq, codes = fields(blocks)
        scales = d.astype(np.float32)[:, None] * sc.astype(np.float32)  # exact: see the module doc
        if zero is not None:
            qw = _zero_point(codes, scales, zero, bits, group, n, k)
        else:
            mins = -(dmin.astype(np.float32)[:, None] * mq.astype(np.float32))
            qw = _with_mins(codes, scales, mins, bits, group, n, k)
        qw.sub_bits, qw.sub_signed = sub_bits, signed  # artifacts store the scales two-level, as the file does
        return qw

    return decode


# type -> (decoder, weights per block, bytes per block)
DECODERS = {
    "Q8_0": (_q8_0, 32, 34),
    "Q4_0": (_q4_0, 32, 18),
    "Q4_1": (_q4_1, 32, 20),
    "Q5_0": (_q5_0, 32, 22),
    "Q5_1": (_q5_1, 32, 24),
    **{t: (_k_decoder(t), QK_K, size) for t, size in (("Q2_K", 84), ("Q3_K", 110), ("Q4_K", 144), ("Q5_K", 176), ("Q6_K", 210))},
}


def _blocks(data: np.ndarray, type_name: str, n: int, k: int) -> np.ndarray:
    _, block, size = DECODERS[type_name]
    return np.ascontiguousarray(data, dtype=np.uint8).reshape(n * (k // block), size)


def decode_quantized(data: np.ndarray, type_name: str, n: int, k: int) -> QuantizedWeight | None:
    """The exact QuantizedWeight of one [n, k] tensor's raw blocks (uint8 [n, bytes per row]); None when the
    type does not map onto lowbit's formats (IQ*, TQ*, MXFP4, ...)."""
    if type_name not in DECODERS:
        return None
    return DECODERS[type_name][0](_blocks(data, type_name, n, k), n, k)


def decode_two_level(data: np.ndarray, type_name: str, n: int, k: int) -> dict | None:
    """A K-quant tensor's two-level scales; None for other types. {"d": f16 [n, k/256], "sc": [n, J] (int8 when
    signed, else uint8), "dmin": f16 [n, k/256] or None, "mq": uint8 [n, J] or None, "sub_bits", "signed",
    "group"}: per super-block b, scales[:, j] = d[:, b] * sc[:, j] and mins[:, j] = -(dmin[:, b] * mq[:, j])
    in float32, bit for bit what decode_quantized returns."""
    if type_name not in K_QUANTS:
        return None
    fields, _, group, _, sub_bits, signed = K_QUANTS[type_name]
    d, sc, dmin, mq, _ = fields(_blocks(data, type_name, n, k))
    j = k // group
    return {
        "d": d.reshape(n, -1),
        "sc": sc.reshape(n, j),
        "dmin": None if dmin is None else dmin.reshape(n, -1),
        "mq": None if mq is None else mq.reshape(n, j),
        "sub_bits": sub_bits,
        "signed": signed,
        "group": group,
    }


def permute_rows(qw: QuantizedWeight, idx: np.ndarray) -> QuantizedWeight:
    """Rows reordered (groups run along K, so every per-row array moves with its row)."""
    return QuantizedWeight(
        qw.codes[idx], qw.scales[idx], qw.zeros[idx], qw.bits, qw.group_size, qw.ternary, None if qw.mins is None else qw.mins[idx],
        qw.sub_bits, qw.sub_signed,
    )
