"""The golden model's forms agree (LUT == shift-and-add == MAC == numpy einsum), and its number formats
(BFP activations, dyadic scales) stay within their documented error bounds."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from hwsim import golden as g
from hwsim.config import ArrayConfig
from hwsim.designs import DESIGNS

WFORMATS = [(1, False), (2, False), (3, False), (4, False), (2, True)]


def _tile(rng, bits, ternary, m, n, group, ng, K, abits=8):
    qmax = 2 if ternary else (1 << bits) - 1
    lo, hi = -(1 << (abits - 1)), (1 << (abits - 1)) - 1
    a = rng.integers(lo, hi + 1, size=(m, group * ng))
    codes = rng.integers(0, qmax + 1, size=(n, group * ng))
    zeros = np.ones((n, ng), np.int64) if ternary else rng.integers(0, qmax + 1, size=(n, ng))
    return a, codes, zeros


@settings(max_examples=60, deadline=None)
@given(
    fmt=st.sampled_from(WFORMATS),
    m=st.integers(1, 3),
    n=st.integers(1, 9),
    K=st.sampled_from([2, 4]),
    group=st.sampled_from([4, 8, 32]),
    ng=st.integers(1, 3),
    seed=st.integers(0, 2**31),
    extreme=st.booleans(),
)
def test_lut_form_equals_mac_form_equals_einsum(fmt, m, n, K, group, ng, seed, extreme):
    bits, tern = fmt
    rng = np.random.default_rng(seed)
    a, codes, zeros = _tile(rng, bits, tern, m, n, group, ng, K)
    if extreme:
        qmax = 2 if tern else (1 << bits) - 1
        a = rng.choice([-128, 127], size=a.shape)
        codes = rng.choice([0, qmax], size=codes.shape)
    ref = np.einsum(
        "mjg,njg->mnj",
        a.astype(np.int64).reshape(m, ng, group),
        (codes.astype(np.int64) - np.repeat(zeros, group, axis=1)).reshape(n, ng, group),
    )
    mac = g.mac_group_acc(a, codes, zeros, group)
    lut = g.lut_group_acc(a, codes, zeros, bits, group, K)
    sa = g.mixpe_group_acc(a, codes, zeros, bits, group)
    np.testing.assert_array_equal(mac, ref)
    np.testing.assert_array_equal(lut, ref)
    np.testing.assert_array_equal(sa, ref)
    cfg = ArrayConfig(design="lut-tc", M=m, N=n, K=K, bits=bits, ternary=tern, group=group, lanes=1)
    assert np.abs(ref).max(initial=0) <= cfg.acc_bound
    assert cfg.acc_bound <= (1 << (cfg.acc_bits - 1)) - 1


def test_lut_table_symmetry_and_sum():
    a = np.array([[3, -5, 7, 11]])
    t = g.lut_tables(a, 4)[0, 0]
    # entry e: a0 + (+-a1) + (+-a2) + (+-a3) with bit t-1 of e choosing +
    assert t[0] == 3 + 5 - 7 - 11 and t[7] == 3 - 5 + 7 + 11
    # every 4-bit slice: lookup == sum (2 w_t - 1) a_t
    for w in range(16):
        bits = np.array([[[(w >> i) & 1 for i in range(4)]]])
        want = sum((2 * ((w >> i) & 1) - 1) * a[0, i] for i in range(4))
        assert g.lut_lookup(g.lut_tables(a, 4), bits, 4)[0, 0, 0] == want


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), bits=st.sampled_from([2, 4]), group=st.sampled_from([32, 128]))
def test_mac_dequant_equals_acc_times_mant(seed, bits, group):
    rng = np.random.default_rng(seed)
    a, codes, zeros = _tile(rng, bits, False, 2, 5, group, 2, 4, abits=12)
    mant = rng.integers(0, 1 << 16, size=zeros.shape)
    p = g.mac_dequant_group_p(a, codes, zeros, mant, group)
    np.testing.assert_array_equal(p, g.mac_group_acc(a, codes, zeros, group) * mant)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**31), group=st.sampled_from([32, 128]), spread=st.floats(0, 10))
def test_bfp_matches_its_definition_and_float(seed, group, spread):
    rng = np.random.default_rng(seed)
    m, ng, AB = 3, 3, 12
    x = rng.standard_normal((m, group * ng)) * np.exp2(rng.uniform(-spread, spread, size=(m, 1 * ng)).repeat(group, 1))
    x = x.astype(np.float16).astype(np.float64)
    a, da, EA = g.bfp_quantize(x, group, AB, 5)
    lim = (1 << (AB - 1)) - 1
    assert np.abs(a).max() <= lim
    assert da.min() >= 0 and da.max() <= 31
    # integer definition, element by element
    ea = EA[:, None] - da
    for i in range(m):
        for j in range(ng):
            blk = x[i, j * group : (j + 1) * group]
            want = np.clip(np.rint(blk * 2.0 ** (AB - 1 - ea[i, j])), -lim, lim)
            np.testing.assert_array_equal(a[i, j * group : (j + 1) * group], want)
            if np.abs(blk).max() > 0 and da[i, j] < 31:
                assert 2.0 ** (ea[i, j] - 1) <= np.abs(blk).max() < 2.0 ** ea[i, j]
    # within one ulp of the block (2^(ea - AB + 1)) of the float value
    ulp = np.repeat(np.ldexp(1.0, ea - (AB - 1)), group, axis=1)
    assert np.all(np.abs(g.bfp_value(a, da, EA, group, AB) - x) <= ulp)
    # and the accumulator stays within sum |w'| * ulp of the float accumulator
    codes = rng.integers(0, 16, size=(4, group * ng))
    zeros = rng.integers(0, 16, size=(4, ng))
    acc = g.mac_group_acc(a, codes, zeros, group).astype(np.float64) * np.ldexp(1.0, ea - (AB - 1))[:, None, :]
    wp = g.int_weights(codes, zeros, group).astype(np.float64)
    accf = np.einsum("mjg,njg->mnj", x.reshape(m, ng, group), wp.reshape(4, ng, group))
    bound = np.einsum("mjg,njg->mnj", ulp.reshape(m, ng, group), np.abs(wp).reshape(4, ng, group))
    assert np.all(np.abs(acc - accf) <= bound)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), spread=st.floats(0, 45), zero_frac=st.floats(0, 0.3))
def test_dyadic_scales_relative_error(seed, spread, zero_frac):
    rng = np.random.default_rng(seed)
    s = (np.exp2(rng.uniform(-spread, 0, size=(6, 5))) * rng.uniform(0.01, 10)).astype(np.float32)
    s[rng.random(s.shape) < zero_frac] = 0
    mant, d, E = g.dyadic_scales(s, 16, 5)
    assert mant.max() < (1 << 16) and d.min() >= 0 and d.max() <= 31
    v = g.dyadic_value(mant, d, E, 16)
    ok = (d < 31) & (s > 0)
    # normalized groups: relative error <= 2^-16
    assert np.all(np.abs(v[ok] - s[ok]) <= 2.0**-16 * s[ok])
    # every group: absolute error <= 2^(E - d - 16)
    assert np.all(np.abs(v - s) <= np.ldexp(1.0, E[:, None] - d - 16))
    assert np.all(v[s == 0] == 0)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), design=st.sampled_from(list(DESIGNS)), act=st.sampled_from(["a8", "a16"]))
def test_epilogue_within_bound_of_float_scale_product(seed, design, act):
    rng = np.random.default_rng(seed)
    cfg = ArrayConfig(design=design, M=2, N=8, K=4, bits=4, act=act, group=32, lanes=8)
    t = g.random_tile(cfg, rng, n_groups=3)
    s = rng.uniform(1e-4, 1e-2, size=(cfg.N, 3)).astype(np.float32)
    t.mant, t.d, E = g.dyadic_scales(s)
    y = g.tile_y(cfg, t.a, t.codes, t.zeros, t.mant, t.d, t.da)
    acc = g.mac_group_acc(t.a, t.codes, t.zeros, cfg.group).astype(np.float64)
    unit = np.ldexp(1.0, E - 15)  # value of one unit of Y per column (row scale 1)
    arow = np.ldexp(1.0, -t.da)  # activation exponent relative to the row's largest
    exact = np.einsum("mnj,nj,mj->mn", acc, s.astype(np.float64), arow)
    got = y * unit[None, :]
    e_enc = E[:, None] - t.d
    bound = np.einsum("mnj,nj,mj->mn", np.abs(acc), np.ldexp(1.0, e_enc - 16), arow) + 3 * 0.5 * unit[None, :]
    assert np.all(np.abs(got - exact) <= bound + 1e-300)
    rel = np.abs(got - exact).sum() / max(np.abs(exact).sum(), 1e-300)
    assert rel <= 1e-3


def test_accumulator_limits_fit_widths():
    for design in DESIGNS:
        for bits, act, group in [(4, "a16", 128), (1, "a8", 32), (2, "a8", 128)]:
            cfg = ArrayConfig(design=design, bits=bits, act=act, group=group)
            rng = np.random.default_rng(0)
            for kind in ("min", "max"):
                t = g.random_tile(cfg, rng, n_groups=2, kind=kind)
                acc = g.mac_group_acc(t.a, t.codes, t.zeros, cfg.group)
                assert np.abs(acc).max() == (cfg.acc_bound if kind == "min" else cfg.acc_bound - cfg.group * ((1 << bits) - 1))
                y = g.tile_y(cfg, t.a, t.codes, t.zeros, t.mant, t.d, t.da)
                np.testing.assert_array_equal(y, (acc * t.mant[None]).sum(axis=2))


def test_real_tile_from_quantizer_close_to_float():
    rtn = pytest.importorskip("compiler.quant.rtn")
    from compiler.quant.spec import parse_spec

    rng = np.random.default_rng(1)
    w = rng.standard_normal((16, 256)).astype(np.float32)
    x = rng.standard_normal((2, 256)).astype(np.float32)
    for spec_s, design, act in [("w4g128", "mixpe", "a8"), ("w2g32", "lut-tc", "a16"), ("ternaryg128", "lut-tc", "a8")]:
        qw = rtn.quantize_rtn(w, parse_spec(spec_s))
        cfg = ArrayConfig(design=design, M=2, N=16, bits=qw.bits, ternary=qw.ternary, act=act, group=qw.group_size)
        t = g.prepare_tile(cfg, x, qw)
        y = g.y_to_float(cfg, g.tile_y(cfg, t.a, t.codes, t.zeros, t.mant, t.d, t.da), t)
        if act == "a8":
            ref = (t.a * t.row_scale[:, None]) @ qw.dequantize().astype(np.float64).T
        else:
            ref = x.astype(np.float16).astype(np.float64) @ qw.dequantize().astype(np.float64).T
        err = np.abs(y - ref).max() / np.abs(ref).max()
        assert err < 2e-3, (spec_s, err)
