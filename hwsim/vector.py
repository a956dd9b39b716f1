"""Integer golden models of the vector unit beside the arrays (I-ViT-style integer-only nonlinearities).

This module is the bit-level contract of the vector unit (rtl/gen/vector_unit.py; its testbench
rtl/tb/vector_tb.py checks every output bit against these functions). Everything on the integer path is
numpy int64; floats appear only when a scale is turned into a dyadic (mantissa, shift) pair offline
(`dyadic`) and in the error measurements. `>>` is the arithmetic right shift, i.e. floor division by a
power of two; `rshift_round` (hwsim.golden) is round half up. clamp(v, lo, hi) saturates.

Dyadic numbers.  A positive real c is a pair (mant, sh): c ~= mant * 2^-sh, mant an unsigned MW-bit
integer in [2^(MW-1), 2^MW) (MW = 16), sh in 0..63 (hwsim.golden.dyadic_scales's encoding of one scale).
"x * c" on the integer path is (x * mant) >> sh (floor) or rshift_round(x * mant, sh) (as stated).

Shift exponential `shift_exp(z)`, F fractional bits (F = 8 unless given): z <= 0 is a natural-log value
in units of 2^-F (z * 2^-F ~= the float argument).  Steps:
    zc  = max(z, -2^(F+4))                          (below, the result is 0 anyway: the clamp fixes widths)
    p   = zc + (zc >> 1) - (zc >> 4)                ~= zc * log2(e)  (1.4375, I-ViT); p <= 0
    n   = -p;  q = n >> F;  rem = n & (2^F - 1)     so p * 2^-F = -q + r * 2^-F with r = -rem in (-1, 0] * 2^F
    e   = (2^F + ((-rem) >> 1)) >> q                2^(-q) * (1 + r/2): I-ViT's linear 2^r on (-1, 0]
e is in [0, 2^F], 2^F for z = 0, units 2^-F; nondecreasing in z.

Reciprocal `recip(k, d)` = floor(2^k / d), d >= 1: the one division of a row, done by the RTL's
restoring divider bit by bit (exact).

Shiftmax `shiftmax(x, mant, sh)`, softmax over the last axis of L integers x (int8 or int32), input
scale S_in with (mant, sh) = dyadic(S_in * 2^F):
    z   = ((x - max(x)) * mant) >> sh               (x - max) * S_in in units 2^-F, <= 0
    e   = shift_exp(z);  s = sum(e)                 (s >= 2^F: the maximum's e is 2^F)
    r   = recip(F + 16, s)                          (<= 2^16)
    y   = min((r * e) >> (F + 8), 255)              uint8, probability ~= y * 2^-8
Bounds (tested): 256 - L <= sum(y) <= 256; x_i >= x_j gives y_i >= y_j within a row.

Sigmoid-gated units, int8 in / int8 out: ShiftGELU (x * sigmoid(1.702 x), I-ViT) and SiLU (x * sigmoid(x)).
(mant_i, sh_i) = dyadic(S_in * 2^F), (mant_o, sh_o) = dyadic(S_in * 2^-8 / S_out):
    u   = (x * mant_i) >> sh_i                      x * S_in in units 2^-F
    v   = u + (u >> 1) + (u >> 3) + (u >> 4)        GELU (1.6875 ~= 1.702, I-ViT's shifts);  v = u for SiLU
    m   = max(v, 0);  ea = shift_exp(v - m);  eb = shift_exp(-m)
    g   = (recip(F + 16, ea + eb) * ea) >> (F + 8)  sigmoid ~= g * 2^-8, g in [0, 256]
    y   = clamp(rshift_round(x * g * mant_o, sh_o), -128, 127)

Norms, int8 (or int16: `in_bits`) in / int8 out (`NormShape` holds the widths and P, A, RB below), gains g int8
of scale S_g:
    RMSNorm:    d_i = x_i,                 ss = sum(d^2) + eps_int      (eps_int = rms_eps_int(...))
    LayerNorm:  d_i = L * x_i - sum(x),    ss = sum(d^2) + eps_int      (d = L (x - mean), exact; no division by L)
then for both (isqrt by the bitwise digit-by-digit method, TW/2 steps, exact floor sqrt):
    s   = max(isqrt(ss << 2P), 2^8)                 ~= sqrt(ss) * 2^P   (the max acts only on an all-zero row at
                                                    int8; at int16 on rows with sqrt(ss) < 2^8, never a row at its own range)
    r   = recip(RB, s)
    a_i = rshift_round(d_i * r, RB - P - A)         ~= d_i / sqrt(ss) * 2^A,  |a| <= 2^A
    y_i = clamp(rshift_round(a_i * g_i * mant_o, sh_o) + b_i, -128, 127)
with (mant_o, sh_o) = dyadic(sqrt(L) * S_g / S_out * 2^-A) (d / sqrt(sum d^2) * sqrt(L) is the normalized
value for both norms) and b_i the int8 bias at S_out (LayerNorm's beta; 0 for RMSNorm). P = 8 for int8 rows
and 0 for int16 ones (a row quantized to its own range has sqrt(ss) >= 2^15 there: the root needs no fraction
bits, and LayerNorm's ss over 384 int16 values already takes 58 bits), A = 16, RB = TW/2 + 20 (so r >= 2^20).
LayerNorm with int16 inputs takes an int16 bias b at 2^-8 of the output LSB, added before the one rounding:
    y_i = clamp((((a_i g_i mant_o) >> (sh_o - 8)) + b_i + 2^7) >> 8)   (sh_o >= 8; `norm_out`)
so beta is not rounded to an output LSB first (which about doubled the output rounding).
An int16 input takes the residual stream at 2^-15 of its row's range instead of 2^-7 (its outlier channels
leave the other channels few int8 codes: docs/hwsim/vector_unit.md).

Attention matmuls `attn_matmul(a, b, mant, sh)`: a [.., S, D] int8 (or uint8: Shiftmax's probabilities),
b [.., D, T] int8, acc = a @ b exact (int32 range checked), y = clamp(rshift_round(acc * mant, sh), -128, 127)
with (mant, sh) = dyadic(S_a * S_b / S_out).  QK^T is attn_matmul(q, k^T), PV is attn_matmul(p, v).
`attn_scores` returns QK^T's int32 accumulators (Shiftmax takes int32 inputs directly).

Elementwise units (one value, or one rotation pair, at a time; every dyadic pair made by the host per row):
    requant(x, mant, sh)            y = clamp(rshift_round(x mant, sh))       x int32 (or int16 / int8), y int8 or
                                    int16: PV's per-row rescale of its int32 accumulators (REQUANT), and the KV
                                    cache write (a row's codes at its own scale -> int8 at the cache's static scale)
    add(a, b, mant_a, mant_b, sh)   y = clamp(rshift_round(a mant_a + b mant_b, sh))   a, b int16 (or int8), y int16
                                    (or int8): the residual adds, one shift for both operands (`add_scales`: the
                                    larger of c_a = S_a / S_out, c_b = S_b / S_out sets it, the other's mantissa is
                                    rint(c 2^sh), 0 when c is 2^16 times smaller)
    mul(a, b, mant, sh)             y = clamp(rshift_round(a b mant, sh), -128, 127)   a, b int8: SwiGLU's product,
                                    (mant, sh) = dyadic(S_a S_b / S_out)
    rope(x, cq, sq, mant, sh)       rows of D int16 (or int8) x, h = D / 2, cq / sq the row's int16 tables
                                    rint(cos / sin(pos theta_j) 2^14), j < h (`rope_table`):
                                    y_j     = clamp(rshift_round((x_j cq_j - x_{j+h} sq_j) mant, sh))
                                    y_{j+h} = clamp(rshift_round((x_{j+h} cq_j + x_j sq_j) mant, sh))
                                    int8 out, (mant, sh) = dyadic(S_in 2^-14 / S_out): the rotate-half RoPE

Measured float-to-integer error (`measure_error`, 20,000 random output values each, seed 0; in output
LSBs; inputs as its docstring says; the float op takes the dequantized int8 inputs; tests/hwsim/test_vector.py
bounds these with a margin):
    shiftmax  L=64, S_in=8/127      max 2.76  mean 0.21   (LSB = 2^-8 of probability; L=8: max 4.73, mean 0.56)
    silu      S_in=S_out=8/127      max 0.76  mean 0.26
    gelu      S_in=S_out=8/127      max 0.80  mean 0.12   (against the erf GELU)
    rmsnorm   L=64                  max 0.50  mean 0.24
    layernorm L=64                  max 0.50  mean 0.22
    qk / pv   D=64 / T=64           max 0.50  mean 0.25
    requant   int32 -> int8         max 0.50  mean 0.25
    add       int16 + int16 -> int16  max 0.79  mean 0.27  (the smaller operand's mantissa: up to 1/4 LSB more)
    mul       int8 x int8 -> int8   max 0.50  mean 0.25
    rope      D=64, int16 -> int8   max 0.50  mean 0.25   (against float cos / sin: the 2^-14 table adds < 0.01)
Shiftmax's error is I-ViT's linear 2^r (within 6.1% on (-1, 0]) and its 1.4375 for log2(e); the gates'
is the same exponential seen through the sigmoid's division plus the 2^-8 gate; the norms and the matmuls
are at their output rounding (1/2 LSB).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from compiler.errors import LowbitError
from hwsim.golden import as_int64, dyadic_scales, rshift_round

F_BITS = 8  # fraction bits of the exponential's fixed point
MANT_BITS = 16
SHIFT_MAX = 63
PROB_BITS = 8  # Shiftmax output and sigmoid gate: units of 2^-8
RECIP_EXTRA = 16  # recip(F + 16, .) keeps 16 bits above the 2^-F fixed point
NORM_P = 8  # isqrt precision of int8 rows: s ~= sqrt(ss) * 2^P
NORM_S_MIN = 1 << 8  # s >= 2^8: r = recip(RB, s) stays below 2^(RB - 8)
NORM_A = 16  # a ~= d / sqrt(ss) * 2^A
NORM_RECIP_MIN = 20  # recip(RB, s) >= 2^20
NORM_IN_BITS = (8, 16)  # the norms' input widths
NORM_BIAS_FRAC = 8  # fraction bits of the int16-input LayerNorm's int16 bias (units of 2^-8 output LSB)


def dyadic(c: float, mant_bits: int = MANT_BITS) -> tuple[int, int]:
    """A positive real c as (mant, sh), c ~= mant * 2^-sh (hwsim.golden.dyadic_scales for one scale)."""
    if not (np.isfinite(c) and c > 0):
        raise LowbitError(f"vector unit scale {c!r} is not a positive finite number", "give a scale > 0")
    mant, _, E = dyadic_scales(np.array([[c]], dtype=np.float64), mant_bits, 5)
    sh = (mant_bits - 1) - int(E[0])
    if not 0 <= sh <= SHIFT_MAX:
        raise LowbitError(f"vector unit scale {c:g} needs a shift of {sh}, outside 0..{SHIFT_MAX}", "rescale the tensor's quantization")
    return int(mant[0, 0]), sh


def _check_int(x, lo: int, hi: int, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise LowbitError(f"{what} must be integers, got {x.dtype}", "quantize it first")
    x = as_int64(x)
    if x.size and (x.min() < lo or x.max() > hi):
        raise LowbitError(f"{what} out of range {lo}..{hi} (got {x.min()}..{x.max()})", "clamp or requantize it")
    return x


def _check_dyadic(mant: int, sh: int) -> None:
    if not (0 <= int(mant) < (1 << MANT_BITS) and 0 <= int(sh) <= SHIFT_MAX):
        raise LowbitError(f"dyadic pair ({mant}, {sh}) outside mant 0..{(1 << MANT_BITS) - 1}, shift 0..{SHIFT_MAX}", "make it with hwsim.vector.dyadic")


# ----------------------------------------------------------------------------------------------------
# Shared integer pieces


def shift_exp(z, F: int = F_BITS) -> np.ndarray:
    """2^(z * log2 e * 2^-F) in units 2^-F for z <= 0 (module docstring), int64 in [0, 2^F]."""
    z = as_int64(z)
    zc = np.maximum(z, -(1 << (F + 4)))
    p = zc + (zc >> 1) - (zc >> 4)
    n = -p
    q = n >> F
    rem = n & ((1 << F) - 1)
    return ((1 << F) + ((-rem) >> 1)) >> np.minimum(q, 62)


def recip(k: int, d) -> np.ndarray:
    """floor(2^k / d) for d >= 1, int64 (k <= 62)."""
    d = as_int64(d)
    if np.any(d < 1):
        raise AssertionError("recip: divisor < 1")
    return (np.int64(1) << k) // d


def isqrt_bitwise(t, width: int) -> np.ndarray:
    """floor(sqrt(t)) for 0 <= t < 2^width (width even) by the digit-by-digit method the RTL runs:
    width/2 steps, each bringing down two bits of t and trying root*4 + 1 against the remainder."""
    t = as_int64(t)
    if width % 2 or width > 62:
        raise ValueError("isqrt width must be even and <= 62")
    if np.any(t < 0) or np.any(t >> width):
        raise AssertionError("isqrt input out of range")
    rem = np.zeros_like(t)
    root = np.zeros_like(t)
    for i in range(width // 2):
        rem = (rem << 2) | ((t >> (width - 2 - 2 * i)) & 3)
        trial = (root << 2) | 1
        ge = rem >= trial
        rem = np.where(ge, rem - trial, rem)
        root = (root << 1) | ge.astype(np.int64)
    return root


def bits_signed(lo: int, hi: int) -> int:
    """Two's complement width holding lo..hi."""
    return max(int(lo).bit_length() if lo >= 0 else (-int(lo) - 1).bit_length(), int(hi).bit_length() if hi >= 0 else (-int(hi) - 1).bit_length()) + 1


# ----------------------------------------------------------------------------------------------------
# Shiftmax


def shiftmax(x, mant: int, sh: int, in_bits: int = 8, F: int = F_BITS) -> np.ndarray:
    """Integer softmax over the last axis (module docstring): uint8 codes of probability y * 2^-8."""
    x = _check_int(x, -(1 << (in_bits - 1)), (1 << (in_bits - 1)) - 1, f"Shiftmax inputs (int{in_bits})")
    _check_dyadic(mant, sh)
    delta = x - x.max(axis=-1, keepdims=True)
    z = (delta * np.int64(mant)) >> np.int64(sh)
    e = shift_exp(z, F)
    r = recip(F + RECIP_EXTRA, e.sum(axis=-1, keepdims=True))
    return np.minimum((r * e) >> (F + PROB_BITS), 255)


# ----------------------------------------------------------------------------------------------------
# ShiftGELU and SiLU

GATES = ("silu", "gelu")


def gate_arg(u, kind: str) -> np.ndarray:
    """The sigmoid's argument in units 2^-F: u (SiLU) or u * 1.6875 by shifts (ShiftGELU's 1.702)."""
    u = as_int64(u)
    if kind == "silu":
        return u
    if kind == "gelu":
        return u + (u >> 1) + (u >> 3) + (u >> 4)
    raise LowbitError(f"unknown gate '{kind}'", f"use one of {', '.join(GATES)}")


def shift_sigmoid(v, F: int = F_BITS) -> np.ndarray:
    """sigmoid(v * 2^-F) in units 2^-8, int64 in [0, 256] (module docstring)."""
    v = as_int64(v)
    m = np.maximum(v, 0)
    ea = shift_exp(v - m, F)
    eb = shift_exp(-m, F)
    return (recip(F + RECIP_EXTRA, ea + eb) * ea) >> (F + PROB_BITS)


def gated(x, kind: str, mant_i: int, sh_i: int, mant_o: int, sh_o: int, F: int = F_BITS) -> np.ndarray:
    """ShiftGELU (kind 'gelu') or integer SiLU ('silu') of int8 x, int8 out (module docstring)."""
    x = _check_int(x, -128, 127, f"{kind} inputs (int8)")
    _check_dyadic(mant_i, sh_i)
    _check_dyadic(mant_o, sh_o)
    u = (x * np.int64(mant_i)) >> np.int64(sh_i)
    g = shift_sigmoid(gate_arg(u, kind), F)
    return np.clip(rshift_round(x * g * np.int64(mant_o), np.int64(sh_o)), -128, 127)


def silu(x, mant_i, sh_i, mant_o, sh_o, F: int = F_BITS) -> np.ndarray:
    return gated(x, "silu", mant_i, sh_i, mant_o, sh_o, F)


def shift_gelu(x, mant_i, sh_i, mant_o, sh_o, F: int = F_BITS) -> np.ndarray:
    return gated(x, "gelu", mant_i, sh_i, mant_o, sh_o, F)


def gate_scales(s_in: float, s_out: float, F: int = F_BITS) -> tuple[int, int, int, int]:
    """(mant_i, sh_i, mant_o, sh_o) of a gated unit with int8 input scale s_in and output scale s_out."""
    return (*dyadic(s_in * 2.0**F), *dyadic(s_in * 2.0**-PROB_BITS / s_out))


# ----------------------------------------------------------------------------------------------------
# RMSNorm and I-LayerNorm

NORMS = ("rmsnorm", "layernorm")


@dataclass(frozen=True)
class NormShape:
    """Widths of a norm over rows of L int8 (or int16) values (module docstring); `kind` rmsnorm or layernorm."""

    kind: str
    L: int
    eps_max: int = 0  # the largest eps_int the unit takes (it sets the widths)
    in_bits: int = 8

    def __post_init__(self):
        if self.kind not in NORMS:
            raise LowbitError(f"unknown norm '{self.kind}'", f"use one of {', '.join(NORMS)}")
        if self.L < 1 or self.eps_max < 0:
            raise LowbitError(f"norm over L={self.L} with eps_max={self.eps_max}", "give L >= 1 and eps_max >= 0")
        if self.in_bits not in NORM_IN_BITS:
            raise LowbitError(f"{self.kind} takes int8 or int16 inputs, not int{self.in_bits}", "give in_bits=8 or 16")
        # int64 golden values: d r is below 2^(RB - P) in magnitude (s >= |d| 2^P), whatever the multiplier's width
        need = max(self.tw, self.rb, self.prod_bits if self.in_bits == 8 else self.rb - self.P + 2)
        if need > 62:
            raise LowbitError(f"{self.kind} over L={self.L} int{self.in_bits} values needs {need}-bit integers", "use shorter rows")

    @property
    def d_max(self) -> int:
        """max |d_i|: 2^(IW-1) (RMSNorm) or (2^IW - 1) (L - 1) (LayerNorm: L x_i - sum x); IW = in_bits."""
        return (1 << (self.in_bits - 1)) if self.kind == "rmsnorm" else ((1 << self.in_bits) - 1) * max(self.L - 1, 1)

    @property
    def d_bits(self) -> int:
        return bits_signed(-self.d_max, self.d_max)

    @property
    def ss_max(self) -> int:
        return self.L * self.d_max**2 + self.eps_max

    @property
    def ss_bits(self) -> int:
        return int(self.ss_max).bit_length()

    @property
    def P(self) -> int:
        return NORM_P if self.in_bits == 8 else 0

    @property
    def bias_bits(self) -> int:
        """LayerNorm's bias: int8 at the output LSB (int8 inputs) or int16 with bias_frac fraction bits (int16)."""
        return 8 if self.in_bits == 8 or self.kind == "rmsnorm" else 16

    @property
    def bias_frac(self) -> int:
        return 0 if self.bias_bits == 8 else NORM_BIAS_FRAC

    @property
    def A(self) -> int:
        return NORM_A

    @property
    def tw(self) -> int:
        """isqrt input width (even): ss << 2P."""
        w = self.ss_bits + 2 * self.P
        return w + (w & 1)

    @property
    def root_bits(self) -> int:
        return self.tw // 2

    @property
    def rb(self) -> int:
        return self.root_bits + NORM_RECIP_MIN

    @property
    def recip_bits(self) -> int:
        """r = recip(RB, s) <= 2^(RB - 8) since s >= 2^8."""
        return self.rb - NORM_S_MIN.bit_length() + 2

    @property
    def prod_bits(self) -> int:
        """|d * r| < 2^(d_bits - 1 + recip_bits): its signed width."""
        return self.d_bits + self.recip_bits

    @property
    def a_bits(self) -> int:
        return self.A + 2  # |a| <= 2^A, signed

    def check(self, x) -> np.ndarray:
        h = 1 << (self.in_bits - 1)
        x = _check_int(x, -h, h - 1, f"{self.kind} inputs (int{self.in_bits})")
        if x.shape[-1] != self.L:
            raise LowbitError(f"{self.kind} rows have {x.shape[-1]} values, the unit {self.L}", f"give rows of {self.L}")
        return x


def norm_d(x, kind: str) -> np.ndarray:
    """d: x (RMSNorm) or L x - sum(x) over the last axis (LayerNorm), int64."""
    x = as_int64(x)
    return x if kind == "rmsnorm" else x.shape[-1] * x - x.sum(axis=-1, keepdims=True)


def norm(x, g, kind: str, mant_o: int, sh_o: int, eps_int: int = 0, b=None, in_bits: int = 8) -> np.ndarray:
    """RMSNorm / I-LayerNorm of int8 (in_bits 16: int16) rows x [.., L] with int8 gains g [L] (and int8 bias b [L]), int8 out."""
    x = np.asarray(x)
    shape = NormShape(kind, x.shape[-1], int(eps_int), in_bits)
    x = shape.check(x)
    g = _check_int(g, -128, 127, "norm gains (int8)")
    bh = 1 << (shape.bias_bits - 1)
    b = np.zeros(shape.L, np.int64) if b is None else _check_int(b, -bh, bh - 1, f"norm bias (int{shape.bias_bits})")
    if g.shape != (shape.L,) or b.shape != (shape.L,):
        raise LowbitError(f"norm gains / bias must have shape ({shape.L},), got {g.shape} / {b.shape}", "give one per channel")
    if eps_int < 0:
        raise LowbitError(f"eps_int={eps_int} is negative", "give eps_int >= 0")
    _check_dyadic(mant_o, sh_o)
    if sh_o < shape.bias_frac:
        raise LowbitError(f"{kind} output pair shift {sh_o} is below the bias's {shape.bias_frac} fraction bits", "give sh_o >= 8 (a coarser output scale)")
    d = norm_d(x, kind)
    ss = (d * d).sum(axis=-1, keepdims=True) + np.int64(eps_int)
    s = np.maximum(isqrt_bitwise(ss << (2 * shape.P), shape.tw), NORM_S_MIN)
    r = recip(shape.rb, s)
    a = rshift_round(d * r, np.int64(shape.rb - shape.P - shape.A))
    return norm_out(a * g * np.int64(mant_o), np.int64(sh_o), b, shape.bias_frac)


def norm_out(p, sh, b, bias_frac: int) -> np.ndarray:
    """y = clamp(rshift_round(p, sh) + b) (an int8 bias at the output LSB), or, for a bias with F_b = bias_frac
    fraction bits, clamp(rshift_round(p + b 2^(sh - F_b), sh)) = clamp(((p >> (sh - F_b)) + b + 2^(F_b-1)) >> F_b):
    one rounding of the biased value (floor(p / 2^k) + m = floor((p + m 2^k) / 2^k) for an integer m)."""
    if not bias_frac:
        return np.clip(rshift_round(p, sh) + b, -128, 127)
    return np.clip(((p >> (sh - bias_frac)) + b + (1 << (bias_frac - 1))) >> bias_frac, -128, 127)


def rmsnorm(x, g, mant_o, sh_o, eps_int: int = 0) -> np.ndarray:
    return norm(x, g, "rmsnorm", mant_o, sh_o, eps_int)


def layernorm(x, g, b, mant_o, sh_o, eps_int: int = 0) -> np.ndarray:
    return norm(x, g, "layernorm", mant_o, sh_o, eps_int, b)


def norm_scales(L: int, s_g: float, s_out: float) -> tuple[int, int]:
    """(mant_o, sh_o) = dyadic(sqrt(L) * s_g / s_out * 2^-A) of both norms."""
    return dyadic(math.sqrt(L) * s_g / s_out * 2.0**-NORM_A)


def norm_eps_int(kind: str, L: int, eps: float, s_in: float) -> int:
    """eps in the units of ss: L eps / s_in^2 (RMSNorm: sum x^2 = L mean x^2) or L^3 eps / s_in^2 (LayerNorm)."""
    return round((L if kind == "rmsnorm" else L**3) * eps / s_in**2)


# ----------------------------------------------------------------------------------------------------
# Attention matmuls


def attn_scores(a, b, a_unsigned: bool = False) -> np.ndarray:
    """acc = a @ b exactly (a [.., S, D] int8 or uint8, b [.., D, T] int8), checked to fit int32."""
    a = _check_int(a, 0 if a_unsigned else -128, 255 if a_unsigned else 127, "attention operand a")
    b = _check_int(b, -128, 127, "attention operand b (int8)")
    acc = np.matmul(a, b)
    if acc.size and (acc.min() < -(1 << 31) or acc.max() >= (1 << 31)):
        raise LowbitError("attention accumulator exceeds int32", "use a shorter reduction")
    return acc


def attn_matmul(a, b, mant: int, sh: int, a_unsigned: bool = False) -> np.ndarray:
    """int8 (or uint8) x int8 matmul, int32 accumulation, y = clamp(rshift_round(acc * mant, sh)) int8."""
    _check_dyadic(mant, sh)
    acc = attn_scores(a, b, a_unsigned)
    return np.clip(rshift_round(acc * np.int64(mant), np.int64(sh)), -128, 127)


# ----------------------------------------------------------------------------------------------------
# Elementwise units: requant, add, mul, rope

ELTWISE = ("requant", "add", "mul", "rope")
ROPE_TABLE_BITS = 14  # cos / sin at 2^-14: |rint(c 2^14)| <= 2^14 fits int16


def _srange(bits: int) -> tuple[int, int]:
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def _out(p, sh, out_bits: int) -> np.ndarray:
    lo, hi = _srange(out_bits)
    return np.clip(rshift_round(p, np.int64(sh)), lo, hi)


def requant(x, mant: int, sh: int, in_bits: int = 32, out_bits: int = 8) -> np.ndarray:
    """clamp(rshift_round(x mant, sh)) of int`in_bits` x to int`out_bits` (module docstring)."""
    x = _check_int(x, *_srange(in_bits), f"requant inputs (int{in_bits})")
    _check_dyadic(mant, sh)
    return _out(x * np.int64(mant), sh, out_bits)


def add(a, b, mant_a: int, mant_b: int, sh: int, in_bits: int = 16, out_bits: int = 16) -> np.ndarray:
    """clamp(rshift_round(a mant_a + b mant_b, sh)): two int`in_bits` tensors at their own scales, one output scale."""
    a = _check_int(a, *_srange(in_bits), f"add operand a (int{in_bits})")
    b = _check_int(b, *_srange(in_bits), f"add operand b (int{in_bits})")
    _check_dyadic(mant_a, sh)
    _check_dyadic(mant_b, sh)
    return _out(a * np.int64(mant_a) + b * np.int64(mant_b), sh, out_bits)


def add_scales(c_a: float, c_b: float) -> tuple[int, int, int]:
    """(mant_a, mant_b, sh) of an add whose operands' scales are c_a, c_b output LSBs: the larger sets sh
    (hwsim.vector.dyadic), the smaller's mantissa is rint(c 2^sh)."""
    big = max(c_a, c_b)
    m, sh = dyadic(big)
    small = min(c_a, c_b)
    if not (np.isfinite(small) and small >= 0):
        raise LowbitError(f"add scale {small!r} is not a finite number >= 0", "give scales >= 0")
    ms = min(int(round(small * 2.0**sh)), (1 << MANT_BITS) - 1)
    return (m, ms, sh) if c_a >= c_b else (ms, m, sh)


def mul(a, b, mant: int, sh: int) -> np.ndarray:
    """clamp(rshift_round(a b mant, sh), -128, 127) of int8 a, b."""
    a = _check_int(a, -128, 127, "mul operand a (int8)")
    b = _check_int(b, -128, 127, "mul operand b (int8)")
    _check_dyadic(mant, sh)
    return _out(a * b * np.int64(mant), sh, 8)


def rope_table(positions, inv_freq) -> tuple[np.ndarray, np.ndarray]:
    """int16 cos / sin tables [S, D/2] at 2^-14 of the angles positions x inv_freq (float64, as the reference's)."""
    ang = np.asarray(positions, np.float64)[:, None] * np.asarray(inv_freq, np.float64)[None, :]
    one = 1 << ROPE_TABLE_BITS
    return np.rint(np.cos(ang) * one).astype(np.int64), np.rint(np.sin(ang) * one).astype(np.int64)


def rope(x, cq, sq, mant: int, sh: int, in_bits: int = 16, out_bits: int = 8) -> np.ndarray:
    """Rotate-half RoPE of rows x [.., D] with the row's tables cq, sq [.., D/2] (broadcast over x's middle axes)."""
    x = _check_int(x, *_srange(in_bits), f"rope inputs (int{in_bits})")
    one = 1 << ROPE_TABLE_BITS
    cq = _check_int(cq, -one, one, "rope cos table (int16, 2^-14)")
    sq = _check_int(sq, -one, one, "rope sin table (int16, 2^-14)")
    _check_dyadic(mant, sh)
    h = x.shape[-1] // 2
    if x.shape[-1] % 2 or cq.shape[-1] != h or sq.shape[-1] != h:
        raise LowbitError(f"rope rows of {x.shape[-1]} values with tables of {cq.shape[-1]}", "give even rows and tables of half their length")
    lo, hi = x[..., :h], x[..., h:]
    t = np.concatenate([lo * cq - hi * sq, hi * cq + lo * sq], axis=-1)
    return _out(t * np.int64(mant), sh, out_bits)


# ----------------------------------------------------------------------------------------------------
# Float-to-integer error of each unit

UNITS = ("shiftmax", "silu", "gelu", "rmsnorm", "layernorm", "qk", "pv", "requant", "add", "mul", "rope")
S8 = 8.0 / 127  # int8 scale of a tensor in [-8, 8]


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def measure_error(unit: str, n: int = 20000, seed: int = 0, L: int = 64) -> dict:
    """Float op on the dequantized inputs vs the integer unit, over `n` random output values: max and mean
    |error| in output LSBs. Inputs: uniform int8 for the gates (scale 8/127 in and out) and the matmuls;
    Shiftmax rows of uniform int8 scores at 8/127; norm rows of normal int8 values with a random spread
    (sigma 2..60 codes), random int8 gains at scale 1/64 and output scale 4/127 (LayerNorm: random bias)."""
    rng = np.random.default_rng(seed)
    if unit == "shiftmax":
        x = rng.integers(-128, 128, size=(max(1, n // L), L))
        y = shiftmax(x, *dyadic(S8 * 2.0**F_BITS))
        xf = x * S8
        p = np.exp(xf - xf.max(axis=-1, keepdims=True))
        ref = p / p.sum(axis=-1, keepdims=True) * 2.0**PROB_BITS
    elif unit in GATES:
        x = rng.integers(-128, 128, size=n)
        y = gated(x, unit, *gate_scales(S8, S8))
        xf = x * S8
        ref = (xf / (1 + np.exp(-xf)) if unit == "silu" else 0.5 * xf * (1 + _erf(xf / math.sqrt(2)))) / S8
    elif unit in NORMS:
        rows = max(1, n // L)
        sig = rng.uniform(2, 60, size=(rows, 1))
        x = np.clip(np.rint(rng.normal(0, 1, size=(rows, L)) * sig + rng.normal(0, 10, size=(rows, 1)) * (unit == "layernorm")), -128, 127).astype(np.int64)
        g = rng.integers(-128, 128, size=L)
        b = rng.integers(-128, 128, size=L) if unit == "layernorm" else np.zeros(L, np.int64)
        s_g, s_out = 1 / 64, 4 / 127
        mo, so = norm_scales(L, s_g, s_out)
        y = norm(x, g, unit, mo, so, 0, b)
        xf = x.astype(np.float64)
        if unit == "layernorm":
            xf = xf - xf.mean(axis=-1, keepdims=True)
        rms = np.sqrt((xf**2).mean(axis=-1, keepdims=True))
        ref = np.clip(xf / np.where(rms > 0, rms, 1) * g * s_g / s_out + b, -128, 127)
    elif unit in ("qk", "pv"):
        D = L
        rows = max(1, n // D)
        a = rng.integers(0, 256, size=(rows, D)) if unit == "pv" else rng.integers(-128, 128, size=(rows, D))
        b = rng.integers(-128, 128, size=(D, D))
        s_a, s_b = (2.0**-8, S8) if unit == "pv" else (S8, S8 / math.sqrt(D))
        s_out = float(np.abs(a @ b).max()) * s_a * s_b / 127
        y = attn_matmul(a, b, *dyadic(s_a * s_b / s_out), a_unsigned=unit == "pv")
        ref = np.clip((a @ b) * s_a * s_b / s_out, -128, 127)
    elif unit == "requant":
        x = rng.integers(-(1 << 31), 1 << 31, size=n)
        c = 127.0 / 2**31 * rng.uniform(0.5, 1.0)
        y = requant(x, *dyadic(c))
        ref = np.clip(x * c, -128, 127)
    elif unit == "add":
        a, b = rng.integers(-32768, 32768, size=(2, n))
        s_a, s_b = 1.0, rng.uniform(0.01, 1.0)
        s_out = s_a + s_b  # |a s_a + b s_b| <= 32767 s_out
        y = add(a, b, *add_scales(s_a / s_out, s_b / s_out))
        ref = np.clip((a * s_a + b * s_b) / s_out, -32768, 32767)
    elif unit == "mul":
        a, b = rng.integers(-128, 128, size=(2, n))
        s_out = 127.0 * S8 * S8
        y = mul(a, b, *dyadic(S8 * S8 / s_out))
        ref = np.clip(a * b * S8 * S8 / s_out, -128, 127)
    elif unit == "rope":
        D = L
        rows = max(1, n // D)
        x = rng.integers(-32768, 32768, size=(rows, D))
        pos = rng.integers(0, 4096, size=rows)
        inv = 1.0 / (10000.0 ** (np.arange(0, D, 2) / D))
        cq, sq = rope_table(pos, inv)
        s_in = 1.0 / 32767
        s_out = 1.5 / 127  # |y| <= sqrt(2) max |x|
        y = rope(x, cq, sq, *dyadic(s_in * 2.0**-ROPE_TABLE_BITS / s_out))
        ang = pos[:, None] * inv[None, :]
        h = D // 2
        xf = x * s_in
        ref = np.clip(np.concatenate([xf[:, :h] * np.cos(ang) - xf[:, h:] * np.sin(ang), xf[:, h:] * np.cos(ang) + xf[:, :h] * np.sin(ang)], -1) / s_out, -128, 127)
    else:
        raise LowbitError(f"unknown vector unit '{unit}'", f"use one of {', '.join(UNITS)}")
    err = np.abs(y.astype(np.float64) - ref)
    return {"unit": unit, "n": int(err.size), "max_abs_lsb": float(err.max()), "mean_abs_lsb": float(err.mean())}
