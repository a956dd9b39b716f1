"""Scale-and-minimum groups in the golden model (hwsim/golden.py docstring 4b): every design's tile_y adds
the minimum term rshift_round(S * mm, dm + da) to the same integer sums, hwsim's layer_y equals it, the
dyadic minimums stay within their bound, and the float result stays within the hwsim tolerance of the
numeric contract's qlinear."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from compiler.quant.rtn import quantize_rtn_min
from compiler.reference import QLinearWeights, qlinear
from hwsim import golden as g
from hwsim.arrays.base import layer_y
from hwsim.config import ArrayConfig
from hwsim.designs import DESIGNS


def _direct(t: g.TileInputs, group: int) -> np.ndarray:
    """The docstring's rule written out with Python integers, one output at a time."""
    M, N = t.a.shape[0], t.codes.shape[0]
    y = np.zeros((M, N), np.int64)
    for m in range(M):
        for n in range(N):
            tot = 0
            for j in range(t.zeros.shape[1]):
                ks = range(j * group, (j + 1) * group)
                acc = sum(int(t.a[m, k]) * (int(t.codes[n, k]) - int(t.zeros[n, j])) for k in ks)
                S = sum(int(t.a[m, k]) for k in ks)
                sh, shm = int(t.d[n, j] + t.da[m, j]), int(t.dm[n, j] + t.da[m, j])
                tot += (acc * int(t.mant[n, j]) + (1 << sh >> 1)) >> sh
                tot += (S * int(t.mm[n, j]) + (1 << shm >> 1)) >> shm
            y[m, n] = tot
    return y


@settings(max_examples=25, deadline=None)
@given(
    design=st.sampled_from(list(DESIGNS)),
    bits=st.sampled_from([1, 2, 4]),
    act=st.sampled_from(["a8", "a16"]),
    ng=st.integers(1, 3),
    kind=st.sampled_from(["random", "max", "min", "mixed-extreme"]),
    seed=st.integers(0, 2**31),
)
def test_every_form_adds_the_minimum_term_exactly(design, bits, act, ng, kind, seed):
    cfg = ArrayConfig(design=design, M=2, N=3, K=4, bits=bits, act=act, group=8, lanes=1)
    t = g.random_tile(cfg, np.random.default_rng(seed), n_groups=ng, kind=kind, mins=True)
    assert t.has_mins and not t.zeros.any()
    want = _direct(t, cfg.group)
    # exact (no wrap) at the accumulator and mantissa limits too: |v + vm| < 2^PW, ng <= 2^(GB-1)
    assert np.abs(want).max() < 1 << (cfg.y_bits - 1)
    np.testing.assert_array_equal(t.y(cfg), want)
    np.testing.assert_array_equal(layer_y(cfg, t), want)
    # and the term is there: dropping it changes Y unless every minimum term is 0
    vm = g.min_terms(g.group_act_sums(t.a, cfg.group), t.mm, t.dm, t.da).sum(axis=2)
    np.testing.assert_array_equal(g.tile_y(cfg, t.a, t.codes, t.zeros, t.mant, t.d, t.da) + vm, want)


def test_widths_cover_the_worst_case_group():
    for design in DESIGNS:
        for bits in (1, 4):
            cfg = ArrayConfig(design=design, M=1, N=1, K=4, bits=bits, act="a16", group=128, lanes=1)
            worst = cfg.group * (1 << (cfg.act_bits - 1)) * ((1 << cfg.mant_bits) - 1)  # |S * mm|
            assert worst < 1 << (g.min_prod_bits(cfg) - 1)
            assert worst * (1 << bits) < 1 << cfg.prod_bits  # |v + vm| < 2^PW
            assert g.exact_groups(cfg, True) * 2 == g.exact_groups(cfg) == 1 << cfg.guard_bits


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), mw=st.sampled_from([8, 16]), spread=st.sampled_from([1e-3, 1.0, 1e3]))
def test_dyadic_affine_bounds(seed, mw, spread):
    rng = np.random.default_rng(seed)
    s = np.abs(rng.standard_normal((4, 6))) * spread
    m = rng.standard_normal((4, 6)) * spread * rng.uniform(0.1, 30)
    s[0, 0], m[1, 1], m[2] = 0.0, 0.0, 0.0
    mant, d, mm, dm, E = g.dyadic_affine(s, m, mw, 5)
    assert mant.max() < 1 << mw and np.abs(mm).max() < 1 << mw
    assert d.max() < 32 and dm.max() < 32 and d.min() >= 0 and dm.min() >= 0
    for v, mn, sh in ((s, mant, d), (m, mm, dm)):
        rec = g.dyadic_value(mn, sh, E, mw)
        assert np.all(np.sign(rec) == np.sign(v))
        full = sh < 31  # groups whose shift did not clamp keep the full mantissa
        assert np.all(np.abs(rec - v)[full] <= np.abs(v)[full] * 2.0 ** -mw)
    # rows without minimums encode their scales exactly as dyadic_scales does
    ms, ds, Es = g.dyadic_scales(s[2:3], mw, 5)
    np.testing.assert_array_equal(mant[2:3], ms)
    np.testing.assert_array_equal(d[2:3], ds)
    assert E[2] == Es[0]


@pytest.mark.parametrize("act, tol", [("a8", 5e-2), ("a16", 5e-3)])  # the hwsim rows of test_agreement's table
@pytest.mark.parametrize("design", list(DESIGNS))
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_real_q4_1_tile_is_within_the_hwsim_tolerance_of_the_contract(design, act, tol, bits):
    rng = np.random.default_rng(7)
    cfg = ArrayConfig(design=design, M=3, N=8, K=4, bits=bits, act=act, group=32, lanes=8)
    # weights whose groups do not contain 0 (a minimum that is no multiple of the scale), heavy-tailed so that
    # the searched scale-and-minimum rule clips some groups' extremes (its grid is not the range rule's)
    w = (rng.standard_t(3, (8, 96)) * 0.05 + rng.uniform(-0.3, 0.3, (8, 1))).astype(np.float32)
    x = rng.standard_normal((3, 96)).astype(np.float32)
    qw = quantize_rtn_min(w, bits, 32)
    lo, hi = qw.mins, qw.mins + qw.scales * ((1 << bits) - 1)
    assert np.any((w.reshape(8, 3, 32).min(-1) < lo) | (w.reshape(8, 3, 32).max(-1) > hi))  # searched, clipped
    t = g.prepare_tile(cfg, x, qw)
    y = g.y_to_float(cfg, t.y(cfg), t)
    layout = "planes" if bits == 3 else "dense"
    attrs = {"n": 8, "k": 96, "group_size": 32, "bits": bits, "layout": layout, "mins": True}
    from compiler.quant.pack import pack

    ref = qlinear(x, QLinearWeights(pack(qw.codes, bits, layout), qw.scales, qw.mins, attrs), act)
    err = np.abs(y - ref).max() / np.abs(ref).max()
    assert err <= tol
    # the minimum term carries much of the output: without it the error is far outside the tolerance
    y0 = g.y_to_float(cfg, g.tile_y(cfg, t.a, t.codes, t.zeros, t.mant, t.d, t.da), t)
    assert np.abs(y0 - ref).max() / np.abs(ref).max() > 10 * tol
