"""float32 math as plain TIR arithmetic, so LLVM vectorizes it: libm's expf is a scalar call per value.

`exp` is Cephes' expf: x = n ln2 + r with |r| <= ln2 / 2 (ln2 split in two parts so n ln2 is exact), a degree-7
polynomial for e^r, and 2^n built in the exponent bits. 2 ulp on [-87, 88]; arguments are clamped there, so
exp(-inf) is 1.6e-38 rather than 0 and exp(+inf) 1.7e38 rather than inf.
"""

from __future__ import annotations

from tvm import tirx

LOG2E = 1.4426950408889634
EXP_LO = -87.0  # exp(-87) ~ 1.6e-38, still a normal float
EXP_HI = 88.0  # exp(88) ~ 1.65e38, below the largest float


def const(val: float, n: int = 1):
    """A float32 constant, broadcast to n lanes (n = 1: a scalar)."""
    return tirx.const(val, "float32") if n == 1 else tirx.Broadcast(tirx.const(val, "float32"), n)


def exp(x, n: int = 1, bind=None, hi: bool = True):
    """e^x for an n-lane float32 expression x. bind(expr) -> expr makes the reduced argument reusable (T.Bind in a
    TVMScript body; None repeats the expression, which LLVM's CSE merges); hi=False skips the upper clamp where
    x <= 0 is known."""
    x = tirx.max(x, const(EXP_LO, n))
    if hi:
        x = tirx.min(x, const(EXP_HI, n))
    fx = tirx.floor(x * const(LOG2E, n) + const(0.5, n))
    r = x - fx * const(0.693359375, n) - fx * const(-2.12194440e-4, n)
    if bind is not None:
        r = bind(r)
    y = (((((const(1.9875691500e-4, n) * r + const(1.3981999507e-3, n)) * r + const(8.3334519073e-3, n)) * r
          + const(4.1665795894e-2, n)) * r + const(1.6666665459e-1, n)) * r + const(5.0000001201e-1, n)) * (r * r) + r + const(1.0, n)
    it = "int32" if n == 1 else f"int32x{n}"
    i127, i23 = (tirx.const(127, "int32"), tirx.const(23, "int32")) if n == 1 else (tirx.Broadcast(tirx.const(127, "int32"), n), tirx.Broadcast(tirx.const(23, "int32"), n))
    return y * tirx.reinterpret("float32" if n == 1 else f"float32x{n}", tirx.shift_left(tirx.Cast(it, fx) + i127, i23))


def lane_sum(v, n: int):
    """The sum of the n lanes of vector v (n = 1: v): the upper half added to the lower, log2 n times, as shuffles
    that stay in registers. n a power of two."""
    return _lane_tree(v, n, lambda a, b: a + b)


def lane_max(v, n: int):
    """The largest of the n lanes of vector v, as lane_sum."""
    return _lane_tree(v, n, tirx.max)


def _lane_tree(v, n: int, op):
    while n > 1:
        h = n // 2
        lo = tirx.Shuffle([v], [tirx.IntImm("int32", i) for i in range(h)])
        hi = tirx.Shuffle([v], [tirx.IntImm("int32", i) for i in range(h, n)])
        v, n = op(lo, hi), h
    return v
