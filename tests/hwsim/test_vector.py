"""The vector unit's golden models (hwsim/vector.py): exact integer pieces (isqrt, reciprocal), the stated
properties of each unit, their float-to-integer error within stated tolerances, and the cycle model
(hwsim/arrays/vector_unit.py)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.errors import LowbitError
from hwsim import vector as v
from hwsim.arrays.vector_unit import VectorUnitConfig, schedule, stream_cycles

F = v.F_BITS
int8_rows = st.lists(st.integers(-128, 127), min_size=1, max_size=64)


# ---- exact integer pieces


@settings(max_examples=300, deadline=None)
@given(t=st.integers(0, 2**31 - 1))
def test_isqrt_is_floor_sqrt_int32(t):
    assert int(v.isqrt_bitwise(np.int64(t), 32)) == math.isqrt(t)


@settings(max_examples=200, deadline=None)
@given(t=st.integers(0, 2**62 - 1))
def test_isqrt_is_floor_sqrt_wide(t):
    assert int(v.isqrt_bitwise(np.int64(t), 62)) == math.isqrt(t)


def test_isqrt_squares_and_neighbours():
    r = np.arange(0, 1 << 16, 7, dtype=np.int64)
    for t, want in ((r * r, r), (r * r - 1, np.maximum(r - 1, 0)), ((r + 1) * (r + 1) - 1, r)):
        t = np.maximum(t, 0)
        np.testing.assert_array_equal(v.isqrt_bitwise(t, 34), np.array([math.isqrt(int(x)) for x in t]))
    assert v.isqrt_bitwise(np.int64(2**32 - 1), 32) == 65535


def test_recip_is_floor_division():
    d = np.arange(1, 5000, dtype=np.int64)
    np.testing.assert_array_equal(v.recip(24, d), np.array([(1 << 24) // int(x) for x in d]))


def test_shift_exp_monotone_bounded_and_close():
    z = np.arange(-16 << F, 1)
    e = v.shift_exp(z)
    assert e[-1] == 1 << F and e.min() >= 0 and e.max() == 1 << F
    assert np.all(np.diff(e) >= 0)
    exact = np.exp(z / 2.0**F) * 2.0**F
    # I-ViT's linear 2^r on (-1, 0] is within 6.1% (plus one unit of truncation); measured 5.97%
    assert np.all(np.abs(e - exact) <= 0.065 * exact + 1)
    assert v.shift_exp(np.int64(-(1 << 40))) == 0  # the clamp


def test_dyadic_relative_error_and_range():
    for c in [1e-12, 3e-5, 0.0123, 1.0, 3.7, 1000.0]:
        m, s = v.dyadic(c)
        assert (1 << 15) <= m < (1 << 16) and 0 <= s <= 63
        assert abs(m * 2.0**-s - c) <= c * 2.0**-16
    for bad in (0.0, -1.0, float("nan"), 1e30, 1e-30):
        with pytest.raises(LowbitError):
            v.dyadic(bad)


# ---- Shiftmax


@settings(max_examples=200, deadline=None)
@given(x=int8_rows, scale=st.floats(0.005, 0.5))
def test_shiftmax_sums_to_one_within_L_lsbs(x, scale):
    x = np.array(x)
    y = v.shiftmax(x, *v.dyadic(scale * 2**F))
    assert y.min() >= 0 and y.max() <= 255
    assert 256 - len(x) <= int(y.sum()) <= 256


@settings(max_examples=200, deadline=None)
@given(x=int8_rows, scale=st.floats(0.005, 0.5))
def test_shiftmax_keeps_the_order_of_its_inputs(x, scale):
    x = np.array(x)
    y = v.shiftmax(x, *v.dyadic(scale * 2**F))
    order = np.argsort(x, kind="stable")
    assert np.all(np.diff(y[order]) >= 0)


@settings(max_examples=100, deadline=None)
@given(x=st.lists(st.integers(-2**30, 2**30), min_size=1, max_size=32), c=st.integers(-2**30, 2**30))
def test_shiftmax_int32_is_shift_invariant(x, c):
    x = np.array(x)
    sc = v.dyadic(2.0**-12 * 2**F)
    np.testing.assert_array_equal(v.shiftmax(x, *sc, in_bits=32), v.shiftmax(x + c, *sc, in_bits=32))


def test_shiftmax_corner_rows():
    sc = v.dyadic(8 / 127 * 2**F)
    for L in (1, 2, 8, 64):
        np.testing.assert_array_equal(v.shiftmax(np.full(L, 17), *sc), np.full(L, 256 // L if L > 1 else 255))
    one_hot = np.full(8, -128)
    one_hot[3] = 127
    np.testing.assert_array_equal(v.shiftmax(one_hot, *sc), [0, 0, 0, 255, 0, 0, 0, 0])


def test_shiftmax_rejects_bad_inputs():
    sc = v.dyadic(1.0)
    with pytest.raises(LowbitError, match="out of range"):
        v.shiftmax(np.array([0, 200]), *sc)
    with pytest.raises(LowbitError, match="integers"):
        v.shiftmax(np.array([0.5, 1.0]), *sc)
    with pytest.raises(LowbitError, match="dyadic"):
        v.shiftmax(np.array([0, 1]), 1 << 16, 3)


# ---- SiLU and ShiftGELU


@pytest.mark.parametrize("kind", v.GATES)
@pytest.mark.parametrize("s_in", [1 / 127, 8 / 127, 0.5])
def test_gate_sign_and_monotone_for_positive_inputs(kind, s_in):
    x = np.arange(-128, 128)
    y = v.gated(x, kind, *v.gate_scales(s_in, s_in))
    assert np.all((y == 0) | (np.sign(y) == np.sign(x)))
    assert np.all(np.diff(y[128:]) >= 0)
    assert y[128] == 0


def test_gate_large_inputs_pass_through():
    # sigmoid(8) = 0.99966: the gate is 256 (or 255), so y = x within one LSB at equal in/out scales
    x = np.arange(100, 128)
    for kind in v.GATES:
        assert np.all(np.abs(v.gated(x, kind, *v.gate_scales(8 / 127, 8 / 127)) - x) <= 1)


def test_shift_sigmoid_range():
    g = v.shift_sigmoid(np.arange(-20 << F, 20 << F, 37))
    assert g.min() == 0 and g.max() == 256 and np.all(np.diff(g) >= 0)
    assert v.shift_sigmoid(np.int64(0)) == 128


# ---- RMSNorm and I-LayerNorm


def _norm_case(rng, L):
    return rng.integers(-128, 128, size=L), *v.norm_scales(L, 1 / 64, 4 / 127)


@settings(max_examples=200, deadline=None)
@given(x=int8_rows, seed=st.integers(0, 2**31))
def test_rmsnorm_sign_matches_input(x, seed):
    x = np.array(x)
    g, mo, so = _norm_case(np.random.default_rng(seed), len(x))
    y = v.rmsnorm(x, g, mo, so)
    assert np.all((y == 0) | (np.sign(y) == np.sign(x * g)))


@settings(max_examples=200, deadline=None)
@given(x=int8_rows, c=st.integers(-100, 100), seed=st.integers(0, 2**31))
def test_layernorm_is_shift_invariant(x, c, seed):
    x = np.array(x)
    xc = x + c
    if xc.min() < -128 or xc.max() > 127:
        xc = x
    g, mo, so = _norm_case(np.random.default_rng(seed), len(x))
    b = np.random.default_rng(seed + 1).integers(-128, 128, size=len(x))
    np.testing.assert_array_equal(v.layernorm(x, g, b, mo, so), v.layernorm(xc, g, b, mo, so))


def test_norm_zero_variance_and_zero_rows():
    L = 8
    g, mo, so = _norm_case(np.random.default_rng(0), L)
    b = np.arange(-4, 4)
    np.testing.assert_array_equal(v.rmsnorm(np.zeros(L, np.int64), g, mo, so), np.zeros(L))
    for eps in (0, 1000):
        np.testing.assert_array_equal(v.layernorm(np.full(L, 77), g, b, mo, so, eps), b)


def test_rmsnorm_scale_invariant_within_one_lsb():
    rng = np.random.default_rng(1)
    for _ in range(50):
        x = rng.integers(-60, 61, size=16)
        if not x.any():
            continue
        g, mo, so = _norm_case(rng, 16)
        assert np.abs(v.rmsnorm(x, g, mo, so) - v.rmsnorm(2 * x, g, mo, so)).max() <= 1


def test_norm_eps_shrinks_outputs():
    x = np.array([1, -2, 3, 0, 1, 1, -1, 2])
    g = np.full(8, 64)
    mo, so = v.norm_scales(8, 1 / 64, 4 / 127)
    y0 = v.rmsnorm(x, g, mo, so)
    y1 = v.rmsnorm(x, g, mo, so, v.norm_eps_int("rmsnorm", 8, 1.0, 1.0))
    assert np.all(np.abs(y1) <= np.abs(y0)) and np.abs(y1).sum() < np.abs(y0).sum()


def test_norm_shape_widths():
    s = v.NormShape("rmsnorm", 64)
    assert (s.ss_bits, s.tw, s.root_bits, s.rb, s.recip_bits) == (21, 38, 19, 39, 32)
    assert v.NormShape("layernorm", 8).d_max == 255 * 7
    with pytest.raises(LowbitError, match="shape"):
        v.rmsnorm(np.zeros(8, np.int64), np.zeros(4, np.int64), 1 << 15, 30)
    with pytest.raises(LowbitError, match="unknown norm"):
        v.norm(np.zeros(8, np.int64), np.zeros(8, np.int64), "batchnorm", 1 << 15, 30)


# ---- attention matmuls


def test_attn_matmul_is_rounded_float_product():
    rng = np.random.default_rng(2)
    q, k = rng.integers(-128, 128, size=(5, 64)), rng.integers(-128, 128, size=(7, 64))
    c = 1 / 4000.0
    m, s = v.dyadic(c)
    y = v.attn_matmul(q, k.T, m, s)
    ref = np.clip((q @ k.T) * (m * 2.0**-s), -128, 127)
    assert np.all(np.abs(y - ref) <= 0.5)
    np.testing.assert_array_equal(v.attn_scores(q, k.T), q @ k.T)
    p = rng.integers(0, 256, size=(5, 7))
    assert v.attn_matmul(p, k, m, s, a_unsigned=True).shape == (5, 64)
    with pytest.raises(LowbitError, match="out of range"):
        v.attn_matmul(p, k, m, s)
    with pytest.raises(LowbitError, match="int32"):
        v.attn_scores(np.full((1, 1 << 18), 127), np.full((1 << 18, 1), 127))


# ---- float-to-integer error (the figures of the module docstring, with a margin)

TOLERANCE = {  # unit: (max, mean) |error| in output LSBs
    "shiftmax": (3.5, 0.25),
    "silu": (1.0, 0.30),
    "gelu": (1.0, 0.15),
    "rmsnorm": (0.6, 0.26),
    "layernorm": (0.6, 0.25),
    "qk": (0.51, 0.26),
    "pv": (0.51, 0.26),
    "requant": (0.51, 0.26),
    "add": (0.8, 0.28),
    "mul": (0.51, 0.26),
    "rope": (0.51, 0.26),
}


@pytest.mark.parametrize("unit", v.UNITS)
def test_measured_error_within_tolerance(unit):
    r = v.measure_error(unit)
    mx, mean = TOLERANCE[unit]
    assert r["n"] >= 19000
    assert r["max_abs_lsb"] <= mx and r["mean_abs_lsb"] <= mean, r
    assert r["mean_abs_lsb"] > 0.05  # a real comparison, not a float path compared with itself


def test_measure_error_unknown_unit():
    with pytest.raises(LowbitError, match="unknown vector unit"):
        v.measure_error("tanh")


# ---- elementwise units


@settings(max_examples=300, deadline=None)
@given(x=st.integers(-2**31, 2**31 - 1), c=st.floats(2.0**-40, 2.0**10), ob=st.sampled_from([8, 16]))
def test_requant_is_the_rounded_saturated_product(x, c, ob):
    m, sh = v.dyadic(c)
    want = max(-(1 << (ob - 1)), min((1 << (ob - 1)) - 1, (x * m + ((1 << sh) >> 1)) >> sh))  # half up, then clamp
    assert int(v.requant(np.int64(x), m, sh, 32, ob)) == want


@settings(max_examples=300, deadline=None)
@given(a=st.integers(-32768, 32767), b=st.integers(-32768, 32767), ca=st.floats(2.0**-20, 4.0), cb=st.floats(2.0**-20, 4.0))
def test_add_shares_one_shift_and_rounds_once(a, b, ca, cb):
    ma, mb, sh = v.add_scales(ca, cb)
    assert max(ma, mb) >= 1 << 15 and max(ma, mb) < 1 << 16
    assert abs(ma * 2.0**-sh - ca) <= max(ca * 2.0**-16, 2.0 ** (-sh - 1)) and abs(mb * 2.0**-sh - cb) <= max(cb * 2.0**-16, 2.0 ** (-sh - 1))
    p = a * ma + b * mb
    want = max(-32768, min(32767, (p + ((1 << sh) >> 1)) >> sh))
    assert int(v.add(np.int64(a), np.int64(b), ma, mb, sh)) == want


def test_add_keeps_the_larger_operand_exact_and_orders_the_pair():
    ma, mb, sh = v.add_scales(0.25, 1.0)
    assert (mb, sh) == v.dyadic(1.0) and ma == mb // 4
    assert v.add_scales(1.0, 2.0**-30)[1] == 0  # 2^16 times smaller: no bits left
    with pytest.raises(LowbitError, match="add operand b"):
        v.add(np.int64(0), np.int64(40000), 1 << 15, 1 << 15, 15)


@settings(max_examples=300, deadline=None)
@given(a=st.integers(-128, 127), b=st.integers(-128, 127), c=st.floats(2.0**-14, 1.0))
def test_mul_is_the_rounded_product(a, b, c):
    m, sh = v.dyadic(c)
    assert int(v.mul(np.int64(a), np.int64(b), m, sh)) == max(-128, min(127, (a * b * m + ((1 << sh) >> 1)) >> sh))


def test_rope_table_and_rotation():
    inv = 1.0 / (10000.0 ** (np.arange(0, 8, 2) / 8))
    cq, sq = v.rope_table(np.array([0, 1, 4095]), inv)
    assert cq.dtype == np.int64 and np.all(cq[0] == 1 << 14) and np.all(sq[0] == 0)
    assert np.all(np.abs(cq) <= 1 << 14) and np.all(np.abs(sq) <= 1 << 14)
    x = np.array([[1000, -2000, 3000, 32767, -32768, 5, 6, 7]] * 3)
    one = v.dyadic(2.0**-14)  # the identity scale
    y = v.rope(x, cq, sq, *one, in_bits=16, out_bits=16)
    np.testing.assert_array_equal(y[0], x[0])  # position 0: no rotation
    h = 4
    t = np.concatenate([x[1, :h] * cq[1] - x[1, h:] * sq[1], x[1, h:] * cq[1] + x[1, :h] * sq[1]])
    np.testing.assert_array_equal(y[1], np.clip((t * one[0] + (1 << (one[1] - 1))) >> one[1], -32768, 32767))
    with pytest.raises(LowbitError, match="tables of half"):
        v.rope(x[:, :6], cq, sq, *one)


# ---- cycle model


@pytest.mark.parametrize("unit,steps", [("rmsnorm", 8 + 17 + 30 + 8), ("layernorm", 16 + 21 + 34 + 8), ("shiftmax", 24 + 17), ("silu", 8 * 19)])
def test_cycle_counts(unit, steps):
    cfg = VectorUnitConfig(unit, L=8)
    assert cfg.steps == steps and cfg.latency == steps + 1 and cfg.interval == steps + 2
    acc, out = schedule(cfg, 3)
    assert acc == [0, cfg.interval, 2 * cfg.interval] and out == [a + cfg.latency for a in acc]
    assert stream_cycles(cfg, 3) == out[-1] + 1


def test_schedule_back_pressure_delays_by_the_low_cycles():
    cfg = VectorUnitConfig("shiftmax", L=4)
    ready = [1] * cfg.latency + [0] * 5
    acc, out = schedule(cfg, 2, ready)
    assert out[0] == cfg.latency + 5 and acc[1] == out[0] + 1


def test_config_rejects_bad_values():
    for kw in ({"unit": "tanh"}, {"unit": "silu", "in_bits": 32}, {"unit": "rmsnorm", "L": 0}, {"unit": "shiftmax", "F": 1}):
        with pytest.raises(LowbitError):
            VectorUnitConfig(**kw)


# ---- norms with int16 inputs (--vector-unit norm16)


def test_norm16_widths_by_hand():
    s = v.NormShape("rmsnorm", 8, (1 << 32) - 1, 16)
    # ss <= 8 * 2^30 + 2^32 - 1 < 2^34; P = 0: TW 34, 17 root steps, RB 37, r < 2^29 (s >= 2^8): 30 quotient bits
    assert (s.P, s.d_max, s.ss_bits, s.tw, s.root_bits, s.rb, s.recip_bits, s.bias_bits) == (0, 1 << 15, 34, 34, 17, 37, 30, 8)
    ln = v.NormShape("layernorm", 384, (1 << 32) - 1, 16)  # MiniLM's rows: 58-bit ss, still in int64
    assert (ln.d_max, ln.tw, ln.bias_bits, ln.bias_frac) == (65535 * 383, 58, 16, 8)
    assert VectorUnitConfig("layernorm", 8, in_bits=16).steps == 2 * 8 + v.NormShape("layernorm", 8, (1 << 16) - 1, 16).root_bits + \
        v.NormShape("layernorm", 8, (1 << 16) - 1, 16).recip_bits + 8
    with pytest.raises(LowbitError, match="int8 or int16"):
        v.NormShape("rmsnorm", 8, 0, 32)
    with pytest.raises(LowbitError, match="int16"):
        v.norm(np.full(8, 40000), np.ones(8, np.int64), "rmsnorm", 1 << 15, 30, in_bits=16)
    with pytest.raises(LowbitError, match="fraction bits"):
        v.norm(np.ones(8, np.int64), np.ones(8, np.int64), "layernorm", 1 << 15, 7, 0, np.zeros(8, np.int64), 16)


@settings(max_examples=200, deadline=None)
@given(st.integers(-(1 << 45), 1 << 45), st.integers(8, 63), st.integers(-32768, 32767))
def test_norm_out_rounds_the_biased_value_once(p, sh, b):
    got = int(v.norm_out(np.int64(p), np.int64(sh), np.int64(b), 8))
    exact = (p + b * 2 ** (sh - 8) + 2 ** (sh - 1)) // 2**sh  # rshift_round(p + b 2^(sh - 8), sh) in Python integers
    assert got == max(-128, min(127, exact))


def test_int16_layernorm_keeps_the_bias_off_the_output_grid():
    """Against float LayerNorm with a real-valued beta: int16 inputs and a bias at 2^-8 LSB stay at the output
    rounding; int8 inputs and a bias rounded to an output LSB first do not."""
    rng = np.random.default_rng(5)
    L, rows = 64, 300
    xf = rng.normal(0, 1, (rows, L)) * rng.uniform(0.1, 3, (rows, 1))
    xf[:, 0] *= 30  # an outlier channel
    gamma = rng.uniform(-2, 2, L)
    beta_lsb = rng.uniform(-40, 40, L)  # beta in output LSBs (s_out = 4 / 127)
    s_g, s_out = np.abs(gamma).max() / 127, 4 / 127
    g = np.rint(gamma / s_g).astype(np.int64)
    mo, so = v.norm_scales(L, s_g, s_out)
    c = xf - xf.mean(axis=1, keepdims=True)
    ref = np.clip(c / np.sqrt((c**2).mean(axis=1, keepdims=True)) * g * s_g / s_out + beta_lsb, -128, 127)
    err = {}
    for bits in (8, 16):
        q = (1 << (bits - 1)) - 1
        x = np.rint(xf / (np.abs(xf).max(axis=1, keepdims=True) / q)).astype(np.int64)
        b = np.rint(beta_lsb * (256 if bits == 16 else 1)).astype(np.int64)
        y = np.stack([v.norm(x[r], g, "layernorm", mo, so, 0, b, bits) for r in range(rows)])
        err[bits] = float(np.abs(y - ref).max())
    assert err[16] <= 0.55 and err[8] >= 2, err  # measured 0.51 and 2.95 LSB (the outlier channel leaves int8 rows few codes)


# ---- cycle model of the elementwise units (requant, add, mul, rope)


@pytest.mark.parametrize("unit,L,steps", [("requant", 8, 8), ("add", 8, 8), ("mul", 8, 8), ("rope", 8, 4), ("rope", 64, 32), ("add", 13, 13)])
def test_elementwise_cycle_counts(unit, L, steps):
    cfg = VectorUnitConfig(unit, L=L, in_bits=16 if unit in ("add", "rope") else 8)
    assert cfg.steps == steps and cfg.latency == steps + 1 and cfg.interval == steps + 2
    acc, out = schedule(cfg, 3)
    assert acc == [0, steps + 2, 2 * (steps + 2)] and out == [a + steps + 1 for a in acc]
    assert stream_cycles(cfg, 3) == 3 * (steps + 2)


def test_elementwise_config_names_and_output_widths():
    assert VectorUnitConfig("requant", 8, in_bits=32).name == "vu_requant_l8_i32_o8"
    assert VectorUnitConfig("requant", 8, in_bits=32, out_bits=16).name == "vu_requant_l8_i32_o16"
    assert VectorUnitConfig("add", 8, in_bits=16).out_bits == 16 and VectorUnitConfig("add", 8, in_bits=16).name == "vu_add_l8_i16_o16"
    assert VectorUnitConfig("mul", 8).name == "vu_mul_l8_i8" and VectorUnitConfig("rope", 8, in_bits=16).name == "vu_rope_l8_i16"
    assert VectorUnitConfig("rmsnorm", 8).name == "vu_rmsnorm_l8_i8_f8" and VectorUnitConfig("rmsnorm", 8).out_bits == 8
    c = VectorUnitConfig("requant", 8, in_bits=16)
    assert VectorUnitConfig(**c.to_dict()) == c  # the testbench rebuilds the config from its dict
    for kw, msg in (({"unit": "rope", "L": 7, "in_bits": 16}, "even L"), ({"unit": "requant", "out_bits": 32}, "not int32"),
                    ({"unit": "add", "in_bits": 24}, "not int24"), ({"unit": "mul", "in_bits": 16}, "not int16"),
                    ({"unit": "silu", "out_bits": 16}, "not int16"), ({"unit": "mul", "out_bits": 16}, "not int16")):
        with pytest.raises(LowbitError, match=msg):
            VectorUnitConfig(**kw)
