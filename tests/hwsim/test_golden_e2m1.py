"""E2M1 weights (MXFP4, NVFP4) in the golden model (hwsim/golden.py docstring 1b): w' = 2 x the E2M1 value, the
LUT form on five offset-binary planes, the two-term shift-and-add form and the MAC form all equal the plain
integer sum; hwsim's layer_y equals tile_y; MXFP4 (power-of-two scales) comes out exact and NVFP4 within the
dyadic scale bound; a real MXFP4 tile is within the hwsim tolerance of the contract's codebook qlinear."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from compiler.quant.floatfmt import E2M1, quantize_float
from compiler.reference import QLinearWeights, qlinear
from hwsim import golden as g
from hwsim.arrays import datapath_events
from hwsim.arrays.base import layer_y
from hwsim.config import ArrayConfig
from hwsim.designs import DESIGNS


def test_e2m1_weights_are_twice_the_format_values():
    np.testing.assert_array_equal(g.E2M1_W2, (2 * E2M1).astype(np.int64))
    assert g.e2m1_weights(np.array([8]))[0] == 0  # -0
    assert sorted(set(np.abs(g.E2M1_W2).tolist())) == [0, 1, 2, 3, 4, 6, 8, 12]


@pytest.mark.parametrize("aw", [8, 12])
def test_two_shift_product_is_the_product_for_every_code_and_activation(aw):
    a = np.arange(-(1 << (aw - 1)), 1 << (aw - 1))
    q = np.arange(16)
    got = g.e2m1_shift_add_mul(a[None, :], q[:, None])
    np.testing.assert_array_equal(got, g.E2M1_W2[:, None] * a[None, :])
    # the largest product fits the mixpe PE's product width (PRW = AW + 4, signed)
    assert np.abs(got).max() < 1 << (aw + 3)


def _direct_acc(a, codes, group):
    """acc with Python integers from the float table: sum a * int(2 * E2M1[q])."""
    m, kt = a.shape
    n = codes.shape[0]
    out = np.zeros((m, n, kt // group), np.int64)
    for i in range(m):
        for j in range(n):
            for k in range(kt):
                out[i, j, k // group] += int(a[i, k]) * int(2 * E2M1[codes[j, k]])
    return out


@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(1, 3),
    n=st.integers(1, 6),
    K=st.sampled_from([2, 4]),
    group=st.sampled_from([4, 16, 32]),
    ng=st.integers(1, 3),
    act=st.sampled_from(["a8", "a16"]),
    kind=st.sampled_from(["random", "max", "min", "mixed-extreme", "codes"]),
    seed=st.integers(0, 2**31),
)
def test_every_form_equals_the_plain_sum(m, n, K, group, ng, act, kind, seed):
    cfg = ArrayConfig(design="lut-tc", M=m, N=n, K=K, act=act, group=group, lanes=1, weight_format="e2m1")
    t = g.random_tile(cfg, np.random.default_rng(seed), n_groups=ng, kind=kind)
    assert not t.zeros.any() and t.codes.max() <= 15
    ref = _direct_acc(t.a, t.codes, group)
    np.testing.assert_array_equal(g.dot_group_acc(t.a, g.e2m1_weights(t.codes), group), ref)
    np.testing.assert_array_equal(g.lut_e2m1_group_acc(t.a, t.codes, group, K), ref)
    np.testing.assert_array_equal(g.mixpe_e2m1_group_acc(t.a, t.codes, group), ref)
    np.testing.assert_array_equal(g.mac_dequant_group_p(t.a, t.codes, t.zeros, t.mant, group, e2m1=True), ref * t.mant[None])
    for design in DESIGNS:
        c = cfg.with_(design=design)
        np.testing.assert_array_equal(g.group_acc(c, t.a, t.codes, t.zeros), ref)
        y = t.y(c)
        np.testing.assert_array_equal(layer_y(c, t), y)
        np.testing.assert_array_equal(y, g.epilogue(ref * t.mant[None], t.d, t.da, c.y_bits))
    # widths: acc within ACCW, the five-plane sum acc2 within ACC2W
    assert np.abs(ref).max() <= cfg.acc_bound < 1 << (cfg.acc_bits - 1)
    acc2, _ = g.lut_group_acc2(t.a, g.e2m1_weights(t.codes) + g.E2M1_OFFSET, g.E2M1_PLANES, group, K)
    assert np.abs(acc2).max() < 1 << (cfg.acc2_bits - 1)
    if kind == "min":  # the accumulator limit is reached
        assert np.abs(ref).max() == cfg.acc_bound


def test_zero_points_do_not_enter_e2m1_sums():
    cfg = ArrayConfig(design="mixpe", M=2, N=4, group=16, lanes=4, weight_format="e2m1")
    t = g.random_tile(cfg, np.random.default_rng(3), n_groups=2)
    y = t.y(cfg)
    t.zeros = np.full_like(t.zeros, 5)
    for design in DESIGNS:
        np.testing.assert_array_equal(t.y(cfg.with_(design=design)), y)


def test_config_of_e2m1_arrays():
    lut = ArrayConfig(design="lut-tc", bits=2, weight_format="e2m1", group=32)
    assert lut.bits == 4 and lut.planes == 5 and lut.cycles_per_beat == 5 and lut.zero_bits == 0
    assert ArrayConfig(design="lut-tc", bits=4, group=32).cycles_per_beat == 4
    assert ArrayConfig(design="mixpe", weight_format="e2m1", group=32).cycles_per_beat == 1
    assert lut.acc_bound == 32 * 128 * 12 and lut.name.startswith("luttc_e2m1a8g32")
    with pytest.raises(ValueError, match="weight_format"):
        ArrayConfig(design="mac", weight_format="fp4")
    with pytest.raises(ValueError, match="ternary"):
        ArrayConfig(design="mac", weight_format="e2m1", ternary=True)


def _exact_sum(t: g.TileInputs, scales: np.ndarray, group: int) -> list[list[Fraction]]:
    """sum_j s_j * sum_k a * value(q) exactly (Fractions), per output."""
    acc = _direct_acc(t.a, t.codes, group)  # 2 x the value sums
    return [[sum(Fraction(int(acc[i, j, jj])) * Fraction(float(scales[j, jj])) / 2 for jj in range(acc.shape[2]))
             for j in range(acc.shape[1])] for i in range(acc.shape[0])]


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31), design=st.sampled_from(list(DESIGNS)), spread=st.sampled_from([1e-3, 1.0, 30.0]))
def test_mxfp4_is_exact_and_nvfp4_within_the_scale_bound(seed, design, spread):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((4, 64)) * spread).astype(np.float32)
    x = rng.standard_normal((2, 64)).astype(np.float32)
    for fmt, group in (("mxfp4", 32), ("nvfp4", 16)):
        cfg = ArrayConfig(design=design, M=2, N=4, group=group, lanes=4, weight_format="e2m1")
        qw = quantize_float(w, fmt)
        t = g.prepare_tile(cfg, x, qw)
        Y = t.y(cfg)
        got = np.ldexp(Y.astype(np.float64), t.E[None, :] - (cfg.mant_bits - 1))  # before the row scale
        want = _exact_sum(t, qw.scales, group)
        if fmt == "mxfp4":
            # E8M0 / 2 is a power of two: the mantissa is 2^(MW-1), and the shifts stay below MW here
            assert np.all(t.mant[qw.scales > 0] == 1 << (cfg.mant_bits - 1))
            assert t.d.max() < cfg.mant_bits
            assert [[Fraction(float(v)) for v in r] for r in got] == want
        else:
            acc = np.abs(_direct_acc(t.a, t.codes, group)).astype(np.float64)
            unit = np.ldexp(1.0, t.E - (cfg.mant_bits - 1))[None, :]
            bound = (acc * qw.scales[None] / 2).sum(axis=2) * 2.0 ** -cfg.mant_bits + unit * acc.shape[2] / 2
            assert np.all(np.abs(got - np.array(want, dtype=np.float64)) <= bound * (1 + 1e-12))


@pytest.mark.parametrize("act, tol", [("a8", 5e-2), ("a16", 5e-3)])  # the hwsim rows of test_agreement's table
@pytest.mark.parametrize("fmt", ["mxfp4", "nvfp4"])
def test_real_fp4_tile_is_within_the_hwsim_tolerance_of_the_contract(fmt, act, tol):
    rng = np.random.default_rng(5)
    group = 32 if fmt == "mxfp4" else 16
    w = (rng.standard_t(4, (8, 96)) * 0.05).astype(np.float32)
    x = rng.standard_normal((3, 96)).astype(np.float32)
    qw = quantize_float(w, fmt)
    attrs = {"n": 8, "k": 96, "group_size": group, "bits": 4, "layout": "dense", "codebook": True, "fp": fmt}
    from compiler.quant.pack import pack

    ref = qlinear(x, QLinearWeights(pack(qw.codes, 4, "dense"), qw.scales, qw.table, attrs), act)
    for design in DESIGNS:
        cfg = ArrayConfig(design=design, M=3, N=8, group=group, lanes=8, act=act, weight_format="e2m1")
        t = g.prepare_tile(cfg, x, qw)
        y = g.y_to_float(cfg, t.y(cfg), t)
        assert np.abs(y - ref).max() / np.abs(ref).max() <= tol


def test_event_counts_follow_the_e2m1_datapaths():
    """lut-tc runs five planes a beat (vs four for W4) and drops the correction multiply; mixpe's product is
    two shifted copies (one add, no four-term shift-and-add); both count the same MACs per beat."""
    kw = dict(M=2, N=64, group=32, lanes=8)
    for design in ("lut-tc", "mixpe"):
        i4, f4 = ArrayConfig(design=design, bits=4, **kw), ArrayConfig(design=design, weight_format="e2m1", **kw)
        ei, ef = f4.design_record.events(i4, 8, 1), f4.design_record.events(f4, 8, 1)
        if design == "lut-tc":
            assert sum(ef["lookups"].values()) > sum(ei["lookups"].values())  # 5 planes + the decode
            assert (i4.planes + 2, i4.sum_bits) in ei["mults"] and (f4.planes + 2, f4.sum_bits) not in ef["mults"]
        else:
            assert datapath_events(f4, 8, 1)["adds"] < datapath_events(i4, 8, 1)["adds"]
