"""Float and NormalFloat weights as codebook weights (compiler.quant.codebook's contract, one shared table): specs
`mxfp4`, `nvfp4`, `nf4` (4-bit codes) and `mxfp8`, `fp8` (8-bit E4M3 codes).

Every format is w[n, k] = s[n, j] * T[code[n, k]] with a table T shared by all rows (qlinear attr codebook, table
f32[1, 2^bits]) and a float32 scale per group:

- mxfp4 (OCP Microscaling v1.0, MXFP4): groups of 32, E2M1 elements, E8M0 scale X = 2^(floor(log2 amax) - 2)
  (emax of E2M1 is 2; X = 2^-127 for an all-zero group; clamped to E8M0's 2^-127 .. 2^127). Elements: v / X rounded
  to the nearest E2M1 value, ties to even (the even mantissa), saturating to +-6, as the spec's conversion.
- nvfp4 (NVIDIA NVFP4): groups of 16, E2M1 elements, an E4M3 scale per group times one FP32 scale per tensor:
  t = amax(tensor) / (448 * 6), s_b = e4m3(amax(group) / (6 t)) (round to nearest even, saturating at 448), the
  stored float32 scale is fl32(t * s_b); elements v / that scale, rounded and saturated as MXFP4's.
- nf4 (QLoRA's NormalFloat-4): groups of 64, the 16 NF4 values of bitsandbytes, an fp16 absmax scale per group
  (QLoRA keeps it in fp32, or 8 bits with double quantization: here fp16, counted so); v / s to the nearest value
  (ties to the lower code).
- mxfp8 (OCP MX v1.0, MXFP8 with E4M3 elements): groups of 32, E8M0 scale X = 2^(floor(log2 amax) - 8) (emax of
  E4M3 is 8); elements v / X to the nearest E4M3 value, ties to even, saturating at +-448.
- fp8 (E4M3 weights as vLLM / compressed-tensors store them): an FP32 scale per output channel (or per group of
  `fp8gN`: 1 x N blocks along K), s = amax / 448; elements as mxfp8's.
- fp8b (DeepSeek-V3 / Qwen3-FP8 checkpoints, compressed-tensors' block strategy): an FP32 scale per 128 x 128 block
  (128 output rows, 128 input features; the last row block may be shorter), s = amax(block) / 448; elements as
  mxfp8's. The contract's scales are per (row, group): each block's scale is repeated over its 128 rows.

Codes of the E2M1 formats are the E2M1 bit patterns themselves (sign, 2 exponent bits, 1 mantissa bit), so the
table is the format's decoding: [0, 0.5, 1, 1.5, 2, 3, 4, 6, -0, -0.5, ..., -6]. E4M3 codes are the E4M3 bit
patterns (sign, 4 exponent bits of bias 7, 3 mantissa bits); the two NaN patterns (0x7f, 0xff), which a saturating
conversion never produces, hold +-448 in the table so that every entry is finite.
"""

from __future__ import annotations

import numpy as np

from compiler.errors import LowbitError
from compiler.quant.qweight import QuantizedWeight

E2M1 = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0], np.float32)
NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334,
                -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
                0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], np.float32)
FORMATS = {"mxfp4": 32, "nvfp4": 16, "nf4": 64, "mxfp8": 32, "fp8": 0, "fp8b": 128}  # the format's group size (0: one per output channel)
BITS = {"mxfp4": 4, "nvfp4": 4, "nf4": 4, "mxfp8": 8, "fp8": 8, "fp8b": 8}  # code width
E4M3_FORMATS = ("mxfp8", "fp8", "fp8b")
E2M1_FORMATS = ("mxfp4", "nvfp4")  # codes that are E2M1 bit patterns (nf4's index a non-float table)
BLOCK_ROWS = 128  # fp8b: output rows per scale block
E4M3_MAX = 448.0


def e4m3_encode(y: np.ndarray) -> np.ndarray:
    """OCP FP8 E4M3 codes (uint8) of float32 y with |y| <= 448: the nearest E4M3 value, ties to the even mantissa
    (e4m3 below, written from the spec), as sign, 4 exponent bits (bias 7) and 3 mantissa bits; the sign bit is set
    for y < 0 (a negative that rounds to 0 gives -0, 0x80, as a float cast does)."""
    v = e4m3(np.abs(y)).astype(np.float64)
    e = np.floor(np.log2(np.where(v >= 2.0 ** -6, v, 1.0)))  # normal values: 2^e (1 + m / 8)
    normal = ((e + 7).astype(np.int64) << 3) | (np.rint(v / 2.0 ** e * 8) - 8).astype(np.int64)
    code = np.where(v >= 2.0 ** -6, normal, np.rint(v * 512).astype(np.int64))  # subnormals: m 2^-9 (code 8 is 2^-6 itself)
    return (code | np.where(y < 0, 0x80, 0)).astype(np.uint8)


def e4m3_table() -> np.ndarray:
    """The float32 value of each of the 256 E4M3 codes (0x7f and 0xff are NaN)."""
    c = np.arange(256)
    e, m = (c >> 3) & 15, (c & 7).astype(np.float64)
    mag = np.where(e == 0, m * 2.0 ** -9, (8 + m) * 2.0 ** (e - 10))
    val = np.where(c & 0x80, -mag, mag)
    return np.where((c & 0x7f) == 0x7f, np.nan, val).astype(np.float32)


def table(fmt: str) -> np.ndarray:
    if fmt in E4M3_FORMATS:
        t = e4m3_table()
        sat = np.where(np.arange(256) & 0x80, -E4M3_MAX, E4M3_MAX)  # the NaN codes' entries (module doc)
        return np.where(np.isnan(t), sat, t).astype(np.float32).reshape(1, 256)
    return (NF4 if fmt == "nf4" else E2M1).reshape(1, 16).copy()


def e2m1_codes(v: np.ndarray) -> np.ndarray:
    """E2M1 bit patterns (uint8) of v (float32, already divided by the scale): the nearest magnitude, at a midpoint
    the one with mantissa bit 0 (ties to even), saturating at 6; the sign bit from v's (-0 where a negative rounds to 0)."""
    a = np.abs(v.astype(np.float32))
    mags = E2M1[:8]
    mids = (mags[1:] + mags[:-1]) / 2  # 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5
    idx = np.searchsorted(mids, a, side="left")  # the number of midpoints below a: at a midpoint, the lower magnitude
    at_mid = (idx < 7) & (a == mids[np.minimum(idx, 6)])
    idx = np.where(at_mid & (idx % 2 == 1), idx + 1, idx)  # odd (mantissa 1) below the midpoint: the even one above
    return (np.minimum(idx, 7) | (np.signbit(v).astype(np.int64) << 3)).astype(np.uint8)


MX_EMAX = {"amxfp4": 2, "amx8": 0}  # emax of the element format: E2M1's largest binade 2^2, MXINT8's 2^0 (1.6 fixed point)


def mx_activations(x: np.ndarray, act: str, block: int = 32) -> np.ndarray:
    """OCP MX v1.0 activations, quantized and dequantized (float32, same shape): per row and block of `block`
    values along K an E8M0 scale X = 2^(floor(log2 amax) - emax) (1 for an all-zero block; the exponent clamped
    to -127..127), elements v = x / X as MXFP4 (E2M1, ties to even, saturating at 6) or MXINT8 (rint(64 v), ties
    to even, clamped to -128..127, value P / 64); returns element * X, exact in float32."""
    x = np.asarray(x, np.float32)
    m, k = x.shape
    b = x.reshape(m, k // block, block)
    amax = np.abs(b).max(axis=-1)
    _, p = np.frexp(amax)  # amax = f 2^p with f in [0.5, 1): floor(log2 amax) = p - 1
    e = np.clip(np.where(amax > 0, p - 1, 0) - MX_EMAX[act], -127, 127)
    scale = np.ldexp(np.float32(1.0), e).astype(np.float32)[..., None]
    v = (b / scale).astype(np.float32)
    if act == "amxfp4":
        q = E2M1[e2m1_codes(v)]
    else:
        q = (np.clip(np.rint(v * np.float32(64)), -128, 127) / np.float32(64)).astype(np.float32)
    return (q * scale).astype(np.float32).reshape(m, k)


def e4m3(x: np.ndarray) -> np.ndarray:
    """x (>= 0) rounded to FP8 E4M3 (OCP: bias 7, no infinities, max 448, subnormals 2^-9 steps), ties to even,
    saturating at 448; float32."""
    x = np.minimum(np.asarray(x, np.float64), E4M3_MAX)
    e = np.floor(np.log2(np.where(x > 0, x, 1.0)))
    e = np.maximum(e, -6)  # the subnormal range shares the exponent of the smallest normal
    step = 2.0 ** (e - 3)  # 3 mantissa bits
    return (np.rint(x / step) * step).astype(np.float32)  # np.rint: ties to even


def scales_for(w: np.ndarray, fmt: str, group: int) -> np.ndarray:
    """Float32 scales [N, J] of the format for weights w [N, K]."""
    n, k = w.shape
    amax = np.abs(w.reshape(n, k // group, group)).max(axis=-1).astype(np.float64)
    if fmt in ("mxfp4", "mxfp8"):  # E8M0: the power of two that puts amax in the element format's top binade
        emax = 2 if fmt == "mxfp4" else 8
        e = np.floor(np.log2(np.where(amax > 0, amax, 2.0**-125))) - emax
        return (2.0 ** np.clip(e, -127, 127)).astype(np.float32)
    if fmt == "fp8b":  # the block's amax over its rows, one scale per block repeated on every row
        nb = -(-n // BLOCK_ROWS)
        pad = np.zeros((nb * BLOCK_ROWS, amax.shape[1]))
        pad[:n] = amax
        amax = np.repeat(pad.reshape(nb, BLOCK_ROWS, -1).max(axis=1), BLOCK_ROWS, axis=0)[:n]
    if fmt in ("fp8", "fp8b"):
        s = (amax / E4M3_MAX).astype(np.float32)
        return np.where(s > 0, s, np.float32(1.0)).astype(np.float32)
    if fmt == "nvfp4":
        t = np.float32(amax.max() / (E4M3_MAX * 6.0)) if amax.max() > 0 else np.float32(1.0)
        sb = e4m3(amax / (6.0 * float(t)))
        s = (t * sb).astype(np.float32)
        return np.where(s > 0, s, t).astype(np.float32)  # an all-zero group: any scale (codes are 0)
    s = amax.astype(np.float16).astype(np.float32)  # nf4: fp16 absmax
    return np.where(s > 0, s, np.float32(1.0)).astype(np.float32)


def nearest_codes(v: np.ndarray, fmt: str) -> np.ndarray:
    """Codes of scaled values v (float32) in the format's table."""
    if fmt in ("mxfp4", "nvfp4"):
        return e2m1_codes(v)
    if fmt in E4M3_FORMATS:
        return e4m3_encode(np.clip(v.astype(np.float32), -E4M3_MAX, E4M3_MAX))
    mids = (NF4[1:] + NF4[:-1]) / 2
    return np.searchsorted(mids, v.astype(np.float32), side="left").astype(np.uint8)


def quantize_float(w: np.ndarray, fmt: str, group: int | None = None, name: str = "weight") -> QuantizedWeight:
    """RTN of w [N, K] into fmt (module doc)."""
    w = np.asarray(w, np.float32)
    n, k = w.shape
    g = group or FORMATS[fmt] or k
    if k % g:
        raise LowbitError(f"layer '{name}': K={k} is not a multiple of {fmt}'s group of {g}", f"keep that layer in an integer spec (e.g. --quant-layer {name}=w4g32)")
    s = scales_for(w, fmt, g)
    v = w.reshape(n, k // g, g) / s[..., None]
    codes = nearest_codes(v, fmt).reshape(n, k)
    return QuantizedWeight(codes, s, np.zeros((n, k // g), np.uint8), BITS[fmt], g, table=table(fmt), fp=fmt)
