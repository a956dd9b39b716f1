"""bfloat16 activations on the FP16-activation arrays (hwsim.golden section 6, act="bf16"): the bf16 rounding
against an exhaustive round trip and a brute-force nearest-even search, the exactness claims of the
docstrings against exact rationals, and each tile function's bf16 mode against a scalar reference whose
every bf16 rounding is done on exact rationals (independent of golden.bf16_bits)."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.errors import LowbitError
from hwsim import golden
from hwsim.designs import _fp16 as fp

F32 = np.float32
BF16_MAX = Fraction(255, 128) * Fraction(2) ** 127
INF = None  # round_ieee's result for an overflow


def round_ieee(v: Fraction, P: int, emin: int, emax: int):
    """v rounded to P significant bits, nearest even, subnormals below 2^emin (quantum 2^(emin - P + 1)),
    None (inf) from the largest finite value plus half an ulp (independent of numpy)."""
    if v == 0:
        return Fraction(0)
    sign, a = (-1 if v < 0 else 1), abs(v)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    while Fraction(2) ** e > a:
        e -= 1
    while Fraction(2) ** (e + 1) <= a:
        e += 1
    q = Fraction(2) ** (max(e, emin) - P + 1)
    n, r = divmod(a, q)
    n = int(n) + (1 if r > q / 2 or (r == q / 2 and int(n) % 2) else 0)
    out = n * q
    if out >= Fraction(2) ** (emax + 1):
        return INF
    return sign * out


def bf16_value(bits: int) -> Fraction:
    e, f = (bits >> 7) & 0xFF, bits & 0x7F
    v = Fraction(f, 1 << 133) if e == 0 else Fraction(128 + f) * Fraction(2) ** (e - 134)
    return -v if bits >> 15 else v


def bf16_of(v: Fraction, neg_zero: bool = False) -> int:
    """The bf16 pattern of a rational, rounded by round_ieee (8 bits, emin -126, emax 127)."""
    r = round_ieee(v, 8, -126, 127)
    sign = 0x8000 if v < 0 or (v == 0 and neg_zero) else 0
    if r is INF:
        return sign | 0x7F80
    return sign | int(np.float32(float(abs(r))).view(np.uint32) >> 16)  # exact: r is a bf16 value


# ---------------------------------------------------------------------------------------------------
# The rounding itself


def test_all_bf16_patterns_round_trip_from_float32_and_float64():
    b = np.arange(1 << 16)
    v = golden.bf16(b)
    nan = ((b >> 7) & 0xFF == 0xFF) & (b & 0x7F != 0)
    assert np.array_equal(np.isnan(v), nan)
    with np.errstate(invalid="ignore"):
        v64 = v.astype(np.float64)
    for x in (v, v64):
        r = golden.bf16_bits(x)
        assert np.array_equal(r[~nan], b[~nan])
        assert (r[nan] == golden.BF16_QNAN).all()  # every NaN canonical, no payload or sign kept
    # the values themselves: bf16 is fp32's upper half
    assert float(v[0x3F80]) == 1.0 and float(v[0x0001]) == 2.0**-133 and float(v[0x7F7F]) == float(BF16_MAX)
    assert np.isinf(v[0x7F80]) and v[0xFF80] < 0 and np.signbit(v[0x8000])


_FIN = golden.bf16(np.arange(0x7F80)).astype(np.float64)  # every finite non-negative bf16 value, in order
_CAND = np.append(_FIN, 2.0**128)  # inf as the candidate 2^128: its pattern 0x7F80 is even, as IEEE's overflow tie wants


def brute_nearest_even(v: np.ndarray) -> np.ndarray:
    """bf16 patterns of float64 values by searching every finite bf16 value: the nearest, ties to the even
    pattern, inf from (2 - 2^-8) 2^127 (the tie with 2^128 goes to inf); NaN canonical."""
    out = np.empty(v.shape, np.int64)
    a = np.abs(v)
    for i in range(0, v.size, 256):
        d = np.abs(a[i:i + 256, None] - _CAND[None, :])  # exact for the two bracketing candidates
        best = d.min(axis=1, keepdims=True)
        tie = d == best
        pick = np.where(tie & (np.arange(_CAND.size) % 2 == 0), np.arange(_CAND.size), -1).max(axis=1)
        only = np.argmax(tie, axis=1)
        out[i:i + 256] = np.where(tie.sum(axis=1) > 1, pick, only)
    out = np.where(np.isinf(a), 0x7F80, out) | (np.signbit(v).astype(np.int64) << 15)
    return np.where(np.isnan(v), golden.BF16_QNAN, out)


def _edge_f32(rng, n: int) -> np.ndarray:
    """fp32 patterns: uniform bits, and values at bf16's rounding points (half ulps exactly, one fp32 ulp
    either side), the subnormal range and the overflow threshold."""
    u = rng.integers(0, 1 << 32, size=n, dtype=np.int64)
    half = (u & ~0xFFFF) | 0x8000  # exactly halfway between two bf16 values
    near = half + rng.integers(-1, 2, size=n)
    sub = u & 0x807FFFFF
    top = (u & 0x80000000) | (0x7F7F0000 + rng.integers(0, 0x10000, size=n))  # the last bf16 binade up to inf
    k = rng.integers(0, 5, size=n)
    return np.choose(k, [u, half, near, sub, top]).astype(np.uint32).view(np.float32)


def test_float32_rounds_as_the_brute_force_search_says():
    x = _edge_f32(np.random.default_rng(0), 4000)
    with np.errstate(invalid="ignore"):
        want = brute_nearest_even(x.astype(np.float64))
    got = golden.bf16_bits(x)
    assert np.array_equal(got, want)
    assert (got == 0x7F80).any() and (got & 0x7F80 == 0).sum() > 100  # the overflow and subnormal cases were hit


def test_float64_rounds_once_as_the_brute_force_search_says():
    rng = np.random.default_rng(1)
    with np.errstate(invalid="ignore", over="ignore"):
        x = np.concatenate([
            np.sign(rng.random(3000) - 0.5) * np.exp2(rng.uniform(-140, 129, 3000)),
            # float64 just off a float32 value that is itself a bf16 tie: rounding via float32 would round twice
            _edge_f32(rng, 1000).astype(np.float64) * (1 + rng.choice([-1, 1], 1000) * 2.0**-40),
        ])
        via32 = golden.bf16_bits(x.astype(np.float32))
    got, want = golden.bf16_bits(x), brute_nearest_even(x)
    assert np.array_equal(got, want)
    assert not np.array_equal(via32, want)  # the double rounding this avoids


@given(st.floats(width=32, allow_nan=True, allow_infinity=True, allow_subnormal=True))
@settings(max_examples=2000, deadline=None)
def test_float32_rounding_property(v):
    x = np.array([v], np.float32)
    assert int(golden.bf16_bits(x)[0]) == int(brute_nearest_even(x.astype(np.float64))[0])


@given(st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True))
@settings(max_examples=2000, deadline=None)
def test_float64_rounding_property(v):
    x = np.array([v])
    assert int(golden.bf16_bits(x)[0]) == int(brute_nearest_even(x)[0])


def test_rational_reference_agrees_on_every_pattern():
    """round_ieee (the scalar references' rounding) reproduces every finite bf16 value: it is not vacuous."""
    for b in list(range(0, 0x200)) + list(range(0x3F00, 0x4100)) + list(range(0x7E00, 0x7F80)):
        assert bf16_of(bf16_value(b)) == b
    assert bf16_of(BF16_MAX + Fraction(2) ** 119) == 0x7F80 and bf16_of(BF16_MAX + Fraction(2) ** 119 - Fraction(1, 2**200)) == 0x7F7F


# ---------------------------------------------------------------------------------------------------
# The docstrings' exactness claims

finite_bf16 = st.integers(0, 0xFFFF).filter(lambda b: (b >> 7) & 0xFF != 0xFF)


@given(a=finite_bf16, b=finite_bf16)
@settings(max_examples=3000, deadline=None)
def test_fp32_sum_rounded_to_bf16_is_the_correctly_rounded_bf16_sum(a, b):
    with np.errstate(over="ignore"):
        got = int(golden.bf16_bits(golden.bf16(a) + golden.bf16(b)))
    v = bf16_value(a) + bf16_value(b)
    assert got == bf16_of(v, neg_zero=(a == 0x8000 and b == 0x8000)), (hex(a), hex(b))


@given(s=finite_bf16, q=st.integers(0, 15), z=st.integers(0, 15))
@settings(max_examples=3000, deadline=None)
def test_bf16_dequant_is_one_rounding_of_the_exact_product(s, q, z):
    got = int(golden.fp16_dequant(np.array([[q]]), np.array([[z]]), np.array([[s]]), 1, act="bf16")[0, 0])
    v = (q - z) * bf16_value(s)
    want = bf16_of(v)
    if v == 0:  # a zero: the xor of the signs (the integer 0 being +0)
        want = (s & 0x8000) ^ (0x8000 if q < z else 0)
    assert got == want, (hex(s), q, z, hex(got), hex(want))
    if 0 < abs(v) < Fraction(2) ** -126:
        assert bf16_value(got) == v  # subnormal results are exact


@given(x=finite_bf16, y=finite_bf16)
@settings(max_examples=3000, deadline=None)
def test_bf16_products_are_exact_in_fp32_unless_they_leave_its_normal_range(x, y):
    with np.errstate(over="ignore", under="ignore"):
        p = golden.bf16(x) * golden.bf16(y)
    v = bf16_value(x) * bf16_value(y)
    r = round_ieee(v, 24, -126, 127)  # the one fp32 rounding the docstring states
    assert (np.isinf(p) and r is INF) or Fraction(float(p)) == r
    if Fraction(2) ** -126 <= abs(v) < Fraction(2) ** 128:
        assert Fraction(float(p)) == v


@given(x=finite_bf16, w=st.integers(-15, 15))
@settings(max_examples=3000, deadline=None)
def test_mixpe_bf16_products_are_exact_while_finite(x, w):
    with np.errstate(over="ignore"):
        p = golden.bf16(x) * F32(w)
    v = bf16_value(x) * w
    assert np.isinf(p) == (abs(v) >= Fraction(2) ** 128)
    if not np.isinf(p):
        assert Fraction(float(p)) == v


def test_lut_steps_pow2_exact_or_inf_and_half_rounds_only_below_2_pow_minus_125():
    e = golden.bf16(np.arange(0x8000))
    e = e[np.isfinite(e)]
    with np.errstate(over="ignore"):
        for b in range(4):
            v = e * F32(1 << b)
            big = e.astype(np.float64) * (1 << b) >= 2.0**128
            assert np.isinf(v[big]).all() and np.array_equal(v[~big].astype(np.float64), e[~big].astype(np.float64) * (1 << b))
    A = np.arange(0, 1 << 25, 7).astype(np.uint32).view(np.float32)  # fp32 patterns up to 2^-124
    H = A * F32(0.5)
    exact = H.astype(np.float64) * 2 == A.astype(np.float64)
    assert exact[A >= 2.0**-125].all() and not exact[A < 2.0**-125].all()


# ---------------------------------------------------------------------------------------------------
# The tile functions in bf16 mode against scalar references


def _bf(bits) -> F32:
    return F32(golden.bf16(int(bits)))


def _to_bf16(v: F32, neg_zero_ok: bool = True) -> F32:
    """Round an fp32 value to bf16 through the rational reference (infinities and NaN passed)."""
    if not np.isfinite(v):
        return v
    return _bf(bf16_of(Fraction(float(v)), neg_zero=bool(np.signbit(v))))


def _bf16_add(a: F32, b: F32) -> F32:
    """a + b rounded once to bf16 on exact rationals (IEEE zero signs)."""
    if not (np.isfinite(a) and np.isfinite(b)):
        with np.errstate(invalid="ignore"):
            return F32(a + b)
    v = Fraction(float(a)) + Fraction(float(b))
    return _bf(bf16_of(v, neg_zero=bool(v == 0 and np.signbit(a) and np.signbit(b))))


def scalar_mac_bf16(x, codes, zeros, scales, group, K):
    M, KT = x.shape
    N = codes.shape[0]
    y = np.zeros((M, N), np.int64)
    with np.errstate(all="ignore"):
        for n in range(N):
            w = []
            for k in range(KT):
                s, iw = scales[n, k // group], int(codes[n, k]) - int(zeros[n, k // group])
                if (s >> 7) & 0xFF == 0xFF or iw == 0 or s & 0x7FFF == 0:
                    w.append(F32(iw) * _bf(s))  # inf, NaN or a zero (the xor sign): no rounding to do
                else:
                    w.append(_bf(bf16_of(iw * bf16_value(int(s)))))
            for m in range(M):
                acc = None
                for b in range(KT // K):
                    ps = [_bf(x[m, k]) * w[k] for k in range(b * K, b * K + K)]  # fp32 products, IEEE-rounded
                    while len(ps) > 1:
                        ps = [F32(ps[i] + ps[i + 1]) for i in range(0, len(ps), 2)]
                    acc = ps[0] if acc is None else F32(acc + ps[0])
                y[m, n] = int(golden.f32_bits(acc))
    return y


def scalar_lut_bf16(x, codes, zeros, scales, group, K, B):
    """Each slice's entry summed with its own signs, every addition rounded to bf16 on rationals."""
    M, KT = x.shape
    N = codes.shape[0]
    y = np.zeros((M, N), np.int64)
    with np.errstate(all="ignore"):
        for m in range(M):
            for n in range(N):
                Y = None
                for j in range(KT // group):
                    g = S = None
                    for c0 in range(j * group, (j + 1) * group, K):
                        a = [_bf(x[m, c0 + t]) for t in range(K)]
                        top = a[0]
                        for t in range(1, K):
                            top = _bf16_add(top, a[t])
                        S = top if S is None else F32(S + top)
                        for b in range(B):
                            u = [1 if (int(codes[n, c0 + t]) >> b) & 1 else -1 for t in range(K)]
                            e = a[0] if u[0] > 0 else -a[0]
                            for t in range(1, K):
                                e = _bf16_add(e, a[t] if u[t] > 0 else -a[t])
                            v = F32(e * F32(1 << b))
                            g = v if g is None else F32(g + v)
                    cz = F32((1 << B) - 1 - 2 * int(zeros[n, j]))
                    A = F32(g + F32(cz * S))
                    P = F32(F32(A * F32(0.5)) * _bf(scales[n, j]))
                    Y = P if Y is None else F32(Y + P)
                y[m, n] = int(golden.f32_bits(Y))
    return y


def scalar_mixpe_bf16(x, codes, zeros, scales, group, K):
    M, KT = x.shape
    N = codes.shape[0]
    y = np.zeros((M, N), np.int64)
    with np.errstate(all="ignore"):
        for m in range(M):
            for n in range(N):
                Y = None
                for j in range(KT // group):
                    g = None
                    for b in range(j * group // K, (j + 1) * group // K):
                        ps = [_bf(x[m, k]) * F32(int(codes[n, k]) - int(zeros[n, j])) for k in range(b * K, b * K + K)]
                        while len(ps) > 1:
                            ps = [F32(ps[i] + ps[i + 1]) for i in range(0, len(ps), 2)]
                        g = ps[0] if g is None else F32(g + ps[0])
                    P = F32(g * _bf(scales[n, j]))
                    Y = P if Y is None else F32(Y + P)
                y[m, n] = int(golden.f32_bits(Y))
    return y


tile_args = st.tuples(st.integers(1, 2), st.integers(1, 3), st.sampled_from([1, 2, 4]), st.integers(1, 4), st.integers(1, 2),
                      st.integers(0, 2**32 - 1), st.sampled_from(fp.BF16_TILE_KINDS))


def _tile(design, args):
    M, N, K, bits, groups, seed, kind = args
    cfg = fp.Fp16Config(design, M=M, N=N, K=K, bits=bits, group=4 * K, lanes=1, act="bf16")
    return cfg, fp.random_tile(cfg, np.random.default_rng(seed), groups, kind)


@given(tile_args)
@settings(max_examples=100, deadline=None)
def test_mac_bf16_golden_follows_the_stated_order(args):
    cfg, t = _tile("mac-fp16", args)
    assert np.array_equal(fp.tile_y(cfg, t), scalar_mac_bf16(t["x"], t["codes"], t["zeros"], t["scales"], cfg.group, cfg.K))


@given(tile_args)
@settings(max_examples=80, deadline=None)
def test_lut_bf16_golden_follows_the_stated_order(args):
    cfg, t = _tile("lut-tc-fp16", args)
    want = scalar_lut_bf16(t["x"], t["codes"], t["zeros"], t["scales"], cfg.group, cfg.K, cfg.bits)
    assert np.array_equal(fp.tile_y(cfg, t), want)


@given(tile_args)
@settings(max_examples=100, deadline=None)
def test_mixpe_bf16_golden_follows_the_stated_order(args):
    cfg, t = _tile("mixpe-fp16", args)
    assert np.array_equal(fp.tile_y(cfg, t), scalar_mixpe_bf16(t["x"], t["codes"], t["zeros"], t["scales"], cfg.group, cfg.K))


@pytest.mark.parametrize("design", list(fp.FP16_DESIGNS))
def test_bf16_corner_tiles(design):
    cfg = fp.Fp16Config(design, M=2, N=4, K=4, bits=4, group=16, lanes=4, act="bf16")
    tiles = fp.corner_tiles(cfg, np.random.default_rng(0))
    ys = [fp.tile_y(cfg, t) for t in tiles]
    zero = 0x00000000 if design == "lut-tc-fp16" else 0x80000000  # lut-tc: the epilogue's c S adds +0
    assert (ys[0] == zero).all()
    assert (ys[1] == 0x7F800000).all()  # bf16 max * 15 overflows (mac: the weight; the others: the products)
    assert (ys[2][0] == golden.F32_QNAN).all() and (ys[2][1] != golden.F32_QNAN).all()  # a NaN with a payload, canonical
    assert (ys[3] == 0x7F800000).all()  # 2^100 * 15 * 2^30: finite bf16 operands, the fp32 product overflows
    u = ys[4].astype(np.uint32).view(np.float32)
    assert ((u != 0) & (np.abs(u) < 2.0**-126)).all()  # sums of products rounded to fp32 subnormals
    # the same tiles through the scalar references (so the corner values are the stated rounding, not just a class)
    ref = {"mac-fp16": lambda t: scalar_mac_bf16(t["x"], t["codes"], t["zeros"], t["scales"], 16, 4),
           "mixpe-fp16": lambda t: scalar_mixpe_bf16(t["x"], t["codes"], t["zeros"], t["scales"], 16, 4),
           "lut-tc-fp16": lambda t: scalar_lut_bf16(t["x"], t["codes"], t["zeros"], t["scales"], 16, 4, 4)}[design]
    for t, y in zip(tiles[:5], ys[:5]):
        assert np.array_equal(y, ref(t))


def test_mac_bf16_underflow_tile_rounds_each_product():
    """The underflow corner by hand: w = bf16(15 (1 + 2^-7) 2^-25) = 242 * 2^-29, x = (1 + 2^-7) 2^-120: the
    product 129 * 242 * 2^-156 = 243.9 units of 2^-149 rounds to 244; x = -2^-133 gives -0."""
    cfg = fp.Fp16Config("mac-fp16", M=1, N=1, K=1, bits=4, group=2, lanes=1, act="bf16")
    t = {k: np.asarray(v, np.int64) for k, v in dict(x=[[0x0381, 0x0381]], codes=[[15, 15]], zeros=[[0]], scales=[[0x3301]]).items()}
    assert int(golden.fp16_dequant(t["codes"], t["zeros"], t["scales"], 2, act="bf16")[0, 0]) == bf16_of(Fraction(242, 2**29))
    assert int(fp.tile_y(cfg, t)[0, 0]) == 2 * 244  # two products of 244 * 2^-149, added exactly
    t["x"] = np.array([[0x8001, 0x8001]])
    assert int(fp.tile_y(cfg, t)[0, 0]) == 0x80000000


def test_bf16_and_fp16_on_the_same_values():
    """Moderate bf16 inputs are fp16 values too. mixpe-fp16 rounds nothing to the 16-bit format inside, so
    both modes give the same bits; mac-fp16 (weights) and lut-tc-fp16 (table entries) round to 8 bits
    instead of 11 in bf16, so they differ, within bf16's bound of a few roundings of the terms."""
    rng = np.random.default_rng(4)
    for design in fp.FP16_DESIGNS:
        cfg = fp.Fp16Config(design, M=2, N=8, K=4, bits=4, group=32, act="bf16")
        t = fp.random_tile(cfg, rng, 2, "random")
        t16 = dict(t, x=golden.f16_bits(golden.bf16(t["x"]).astype(np.float16)), scales=golden.f16_bits(golden.bf16(t["scales"]).astype(np.float16)))
        assert np.array_equal(golden.bf16(t["x"]), golden.f16(t16["x"]).astype(np.float32))  # the same values: exact
        y, y16 = fp.tile_y(cfg, t), fp.tile_y(cfg.with_(act="fp16"), t16)
        if design == "mixpe-fp16":
            assert np.array_equal(y, y16)
            continue
        assert not np.array_equal(y, y16), design
        x = golden.bf16(t["x"]).astype(np.float64)
        exact = x @ ((t["codes"] - np.repeat(t["zeros"], 32, 1)) * np.repeat(golden.bf16(t["scales"]).astype(np.float64), 32, 1)).T
        bound = np.abs(x).sum(1)[:, None] * 15 * 2.0**-2 * 2.0**-6
        assert np.all(np.abs(y.astype(np.uint32).view(np.float32) - exact) <= bound), design


def test_config_names_and_errors():
    c = fp.Fp16Config("lut-tc-fp16", bits=2, act="bf16")
    assert c.name == "luttcbf16_w2g32_m2n8k4l4" and fp.Fp16Config("lut-tc-fp16", bits=2).name == "luttcfp16_w2g32_m2n8k4l4"
    assert fp.Fp16Config("mac-fp16", act="bf16").name.startswith("macbf16_") and fp.Fp16Config("mixpe-fp16", act="bf16").name.startswith("mixpebf16_")
    with pytest.raises(ValueError, match="act='e4m3' is not an activation format"):
        fp.Fp16Config("mac-fp16", act="e4m3")
    from rtl.sim import make_config

    cfg, _ = make_config("mixpe-fp16", {"act": "BF16", "N": "4"})
    assert cfg.act == "bf16" and cfg.N == 4
    with pytest.raises(LowbitError, match="act='a8' is not an activation format; use act=fp16 or act=bf16"):
        make_config("mac-fp16", {"act": "a8"})
    with pytest.raises(ValueError, match="unknown tile kind 'edge' for act=fp16"):
        fp.random_tile(fp.Fp16Config("mac-fp16"), np.random.default_rng(0), 1, "edge")


@pytest.mark.parametrize("design", list(fp.FP16_DESIGNS))
def test_run_layer_in_bf16_tiles_to_the_whole_layer(design):
    """run_layer rounds x and the scales to bf16 as they enter; its row and column tiles (zero-padded) give
    the golden model of the whole layer bit for bit."""
    rng = np.random.default_rng(7)
    cfg = fp.Fp16Config(design, M=2, N=4, K=4, bits=2, group=16, lanes=4, act="bf16")
    x = rng.standard_normal((5, 48)).astype(np.float32)
    codes, zeros = rng.integers(0, 4, (10, 48)), rng.integers(0, 4, (10, 3))
    scales = (rng.random((10, 3)) * 0.1).astype(np.float32)
    y, cycles = fp.run_layer(cfg, x, codes, zeros, scales)
    t = dict(x=golden.bf16_bits(x), codes=codes, zeros=zeros, scales=golden.bf16_bits(scales))
    assert np.array_equal(y.view(np.uint32), fp.golden_y(design, t, 16, 4, 2, act="bf16").astype(np.uint32))
    y16, _ = fp.run_layer(cfg.with_(act="fp16"), x, codes, zeros, scales)
    assert not np.array_equal(y, y16) and np.allclose(y, y16, rtol=0.05, atol=0.05)  # bf16 went in: close to fp16, not equal
    assert cycles == fp.steady_cycles(cfg, [12] * 9)  # 3 row tiles x 3 column tiles, 12 beats each
