"""The FP16 MAC golden model (hwsim.golden.fp16_mac_tile) against independent references: exact rational
arithmetic for the dequantizer's one rounding and the products' exactness, a scalar loop for the stated
summation order; the cycle model (hwsim/designs/_fp16.py) against its closed form."""

from fractions import Fraction

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hwsim import golden
from hwsim.designs import DESIGNS
from hwsim.designs import _fp16 as fp


def f16_value(bits: int) -> Fraction:
    e, f = (bits >> 10) & 0x1F, bits & 0x3FF
    v = Fraction(f, 1 << 24) if e == 0 else Fraction(1024 + f) * Fraction(2) ** (e - 25)
    return -v if bits >> 15 else v


def round_f16(v: Fraction) -> int:
    """Round a rational to fp16 bits, nearest even, with subnormals and overflow to inf (independent of numpy)."""
    sign = 0x8000 if v < 0 else 0
    v = abs(v)
    if v == 0:
        return sign
    e = max(v.numerator.bit_length() - v.denominator.bit_length() + 1, -13)
    while Fraction(2) ** (e - 1) > v and e > -13:
        e -= 1
    while Fraction(2) ** e <= v:
        e += 1
    q = v / Fraction(2) ** (e - 11)  # 11 significant bits (subnormals: fewer, the exponent stops at -14)
    n = q.numerator // q.denominator
    r = q - n
    if r > Fraction(1, 2) or (r == Fraction(1, 2) and n % 2):
        n += 1
    value = n * Fraction(2) ** (e - 11)
    if value >= 65520:  # 65504 + half an ulp and above round to inf
        return sign | 0x7C00
    return sign | int(np.float16(float(value)).view(np.uint16))  # exact: value is an fp16 number


finite16 = st.integers(0, 0xFFFF).filter(lambda b: (b >> 10) & 0x1F != 0x1F)


@given(s=finite16, q=st.integers(0, 15), z=st.integers(0, 15))
@settings(max_examples=2000, deadline=None)
def test_dequant_is_one_rounding_of_the_exact_product(s, q, z):
    got = int(golden.fp16_dequant(np.array([[q]]), np.array([[z]]), np.array([[s]]), 1)[0, 0])
    want = round_f16((q - z) * f16_value(s))
    if want & 0x7FFF == 0:  # a zero: the xor of the signs (the integer 0 being +0)
        want = (s & 0x8000) ^ (0x8000 if q < z else 0)
    assert got == want, (hex(s), q, z, hex(got), hex(want))


@given(x=finite16, y=finite16)
@settings(max_examples=2000, deadline=None)
def test_fp16_products_are_exact_in_fp32(x, y):
    p = golden.f16(np.array([x])).astype(np.float32) * golden.f16(np.array([y])).astype(np.float32)
    assert Fraction(float(p[0])) == f16_value(x) * f16_value(y)


def scalar_mac(x, codes, zeros, scales, group, K):
    """The stated order, one scalar at a time: dequantize, exact products, the pairwise beat tree, acc."""
    M, KT = x.shape
    N = codes.shape[0]
    f32 = np.float32
    y = np.zeros((M, N), np.int64)
    with np.errstate(all="ignore"):
        for m in range(M):
            for n in range(N):
                acc = None
                for b in range(KT // K):
                    ps = []
                    for k in range(b * K, b * K + K):
                        w = np.float16(f32(int(codes[n, k]) - int(zeros[n, k // group])) * f32(golden.f16(scales[n, k // group])))
                        ps.append(f32(golden.f16(x[m, k])) * f32(w))
                    while len(ps) > 1:
                        ps = [f32(ps[i] + ps[i + 1]) for i in range(0, len(ps), 2)]
                    acc = ps[0] if acc is None else f32(acc + ps[0])
                y[m, n] = int(golden.f32_bits(acc))
    return y


tile_args = st.tuples(st.integers(1, 2), st.integers(1, 3), st.sampled_from([1, 2, 4]), st.integers(1, 4), st.integers(1, 2),
                      st.integers(0, 2**32 - 1), st.sampled_from(fp.TILE_KINDS))


@given(tile_args)
@settings(max_examples=150, deadline=None)
def test_golden_follows_the_stated_order(args):
    M, N, K, bits, groups, seed, kind = args
    cfg = fp.Fp16Config("mac-fp16", M=M, N=N, K=K, bits=bits, group=4 * K, lanes=1)
    t = fp.random_tile(cfg, np.random.default_rng(seed), groups, kind)
    got = fp.tile_y(cfg, t)
    assert np.array_equal(got, scalar_mac(t["x"], t["codes"], t["zeros"], t["scales"], cfg.group, K))


def test_nan_policy_and_signed_zero():
    cfg = fp.Fp16Config("mac-fp16")
    tiles = fp.corner_tiles(cfg, np.random.default_rng(0))
    assert (fp.tile_y(cfg, tiles[0]) == 0x80000000).all()  # -0 * +0 summed: -0
    assert (fp.tile_y(cfg, tiles[1]) == 0x7F800000).all()  # dequantizer overflow: +inf
    y = fp.tile_y(cfg, tiles[2])
    assert (y[0] == golden.F32_QNAN).all() and (y[1] != golden.F32_QNAN).all()  # one NaN row, canonical
    bits = fp.tile_y(cfg, fp.random_tile(cfg, np.random.default_rng(1), 2, "bits"))
    f = bits.astype(np.uint32).view(np.float32)
    assert (bits[np.isnan(f)] == golden.F32_QNAN).all()


def test_cancellation_tile_cancels():
    cfg = fp.Fp16Config("mac-fp16", M=2, N=4, K=4, group=16, lanes=4)
    t = fp.random_tile(cfg, np.random.default_rng(3), 1, "cancel")
    y = fp.tile_y(cfg, t).astype(np.uint32).view(np.float32)
    scale = np.abs(golden.f16(t["x"]).astype(np.float64)).sum() * 15 * 2.0**-2
    assert np.all(np.abs(y) <= scale * 2.0**-20)  # the halves cancel up to rounding


def test_cycle_model_closed_form():
    cfg = fp.Fp16Config("mac-fp16", M=2, N=8, lanes=4)  # D = 4 output beats
    assert fp.steady_cycles(cfg, [8] * 5) == 5 * 8 + 4  # beats >= D: the drain hides behind the next job
    # beats < D: each later job's last beat waits for the bank's final beat, so jobs are D cycles apart
    assert fp.steady_cycles(cfg, [2] * 5) == 2 + 4 * 4 + 4
    ins, outs = fp.simulate(cfg, [8, 8], np.ones(1, bool), np.array([True, False, False]))  # out_ready 1 in 3
    assert outs == [9, 12, 15, 18, 21, 24, 27, 30] and ins[-1] == 18  # job 2's last beat waits for the bank


def test_fp16_designs_stay_out_of_the_integer_registry():
    assert not set(fp.FP16_DESIGNS) & set(DESIGNS)


def scalar_lut(x, codes, zeros, scales, group, K, B):
    """lut-tc-fp16's stated steps one scalar at a time, each slice's entry summed directly with its own signs
    (no symmetrized table): shows the sign trick and the shared prefix sums change nothing."""
    M, KT = x.shape
    N = codes.shape[0]
    f16, f32 = np.float16, np.float32
    y = np.zeros((M, N), np.int64)
    with np.errstate(all="ignore"):
        for m in range(M):
            for n in range(N):
                Y = None
                for j in range(KT // group):
                    g = S = None
                    for c0 in range(j * group, (j + 1) * group, K):
                        a = [golden.f16(x[m, c0 + t]) for t in range(K)]
                        top = a[0]
                        for t in range(1, K):
                            top = f16(top + a[t])
                        S = f32(top) if S is None else f32(S + f32(top))
                        for b in range(B):
                            u = [1 if (int(codes[n, c0 + t]) >> b) & 1 else -1 for t in range(K)]
                            e = f16(a[0] if u[0] > 0 else -a[0])
                            for t in range(1, K):
                                e = f16(e + (a[t] if u[t] > 0 else -a[t]))
                            v = f32(f32(e) * f32(1 << b))
                            g = v if g is None else f32(g + v)
                    cz = f32((1 << B) - 1 - 2 * int(zeros[n, j]))
                    A = f32(g + f32(cz * S))
                    P = f32(f32(A * f32(0.5)) * f32(golden.f16(scales[n, j])))
                    Y = P if Y is None else f32(Y + P)
                y[m, n] = int(golden.f32_bits(Y))
    return y


@given(tile_args)
@settings(max_examples=100, deadline=None)
def test_lut_golden_follows_the_stated_order(args):
    M, N, K, bits, groups, seed, kind = args
    cfg = fp.Fp16Config("lut-tc-fp16", M=M, N=N, K=K, bits=bits, group=4 * K, lanes=1)
    t = fp.random_tile(cfg, np.random.default_rng(seed), groups, kind)
    got = fp.tile_y(cfg, t)
    assert np.array_equal(got, scalar_lut(t["x"], t["codes"], t["zeros"], t["scales"], cfg.group, K, bits))


def test_lut_and_mac_agree_to_rounding():
    """Both compute sum_k x (q - z) s; on moderate values they agree to a few fp16 roundings of the terms."""
    rng = np.random.default_rng(4)
    for design in fp.FP16_DESIGNS:
        cfg = fp.Fp16Config(design, M=2, N=8, K=4, bits=4, group=32)
        t = fp.random_tile(cfg, rng, 2, "random")
        exact = (golden.f16(t["x"]).astype(np.float64) @ ((t["codes"] - np.repeat(t["zeros"], 32, 1))
                 * np.repeat(golden.f16(t["scales"]).astype(np.float64), 32, 1)).T)
        y = fp.tile_y(cfg, t).astype(np.uint32).view(np.float32)
        bound = np.abs(golden.f16(t["x"]).astype(np.float64)).sum(1)[:, None] * 15 * 2.0**-2 * 2.0**-9
        assert np.all(np.abs(y - exact) <= bound), design


def test_serial_cycle_model():
    cfg = fp.Fp16Config("lut-tc-fp16", M=2, N=8, K=4, bits=2, group=16, lanes=4)  # 4 beats a job, 2 cycles each, D = 4
    ins, outs = fp.simulate_serial(cfg, [4, 4], np.ones(1, bool), np.ones(1, bool))
    assert ins == [0, 2, 4, 6, 8, 10, 12, 14]  # a beat every B cycles
    assert outs == [9, 10, 11, 12, 17, 18, 19, 20]  # the last plane (cycle 8) writes the bank
    assert fp.steady_cycles(cfg, [4] * 3) == 3 * 4 * 2 + 1 + 4


def scalar_mixpe(x, codes, zeros, scales, group, K):
    """mixpe-fp16's stated steps one scalar at a time: exact products, the beat tree, per-group scale."""
    M, KT = x.shape
    N = codes.shape[0]
    f32 = np.float32
    y = np.zeros((M, N), np.int64)
    with np.errstate(all="ignore"):
        for m in range(M):
            for n in range(N):
                Y = None
                for j in range(KT // group):
                    g = None
                    for b in range(j * group // K, (j + 1) * group // K):
                        ps = [f32(golden.f16(x[m, k])) * f32(int(codes[n, k]) - int(zeros[n, j])) for k in range(b * K, b * K + K)]
                        while len(ps) > 1:
                            ps = [f32(ps[i] + ps[i + 1]) for i in range(0, len(ps), 2)]
                        g = ps[0] if g is None else f32(g + ps[0])
                    P = f32(g * f32(golden.f16(scales[n, j])))
                    Y = P if Y is None else f32(Y + P)
                y[m, n] = int(golden.f32_bits(Y))
    return y


@given(tile_args)
@settings(max_examples=100, deadline=None)
def test_mixpe_golden_follows_the_stated_order(args):
    M, N, K, bits, groups, seed, kind = args
    cfg = fp.Fp16Config("mixpe-fp16", M=M, N=N, K=K, bits=bits, group=4 * K, lanes=1)
    t = fp.random_tile(cfg, np.random.default_rng(seed), groups, kind)
    assert np.array_equal(fp.tile_y(cfg, t), scalar_mixpe(t["x"], t["codes"], t["zeros"], t["scales"], cfg.group, K))
