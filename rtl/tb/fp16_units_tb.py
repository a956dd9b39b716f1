"""cocotb test of the floating-point units alone (rtl/gen/fp16.py UnitsConfig) against numpy's IEEE
arithmetic, bit for bit: random operands weighted to the edges (zero and maximum exponents, subnormals,
equal exponents for cancellation, operands one ulp apart), every case of every unit.

Configuration keys: vectors (per unit), seed, corrupt (expect one wrong bit: the run must fail), out."""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.triggers import Timer

from hwsim import golden
from rtl.tb import read_config, write_output


def f32_operands(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    a = rng.integers(0, 1 << 32, size=n, dtype=np.int64)
    b = rng.integers(0, 1 << 32, size=n, dtype=np.int64)
    kind = rng.integers(0, 6, size=n)
    ea = rng.choice([0, 1, 2, 24, 25, 127, 253, 254, 255], size=n)
    exp_a = np.where(kind == 1, ea, (a >> 23) & 0xFF)
    a = (a & ~(0xFF << 23)) | (exp_a << 23)
    near = (exp_a + rng.integers(-2, 3, size=n)).clip(0, 255)  # close exponents: carries and cancellation
    b = np.where(kind >= 2, (b & ~(0xFF << 23)) | (near << 23), b)
    b = np.where(kind == 4, a ^ (1 << 31) ^ rng.integers(0, 4, size=n), b)  # x - x(+-1 ulp)
    b = np.where(kind == 5, (b & 0x807FFFFF), b)  # subnormal or zero
    return a, b


def f16_operands(rng, n: int) -> np.ndarray:
    x = rng.integers(0, 1 << 16, size=n, dtype=np.int64)
    e = rng.choice([0, 1, 15, 29, 30, 31], size=n)
    return np.where(rng.random(n) < 0.4, (x & ~(0x1F << 10)) | (e << 10), x)


def bf16_operands(rng, n: int) -> np.ndarray:
    x = rng.integers(0, 1 << 16, size=n, dtype=np.int64)
    e = rng.choice([0, 1, 2, 3, 60, 63, 64, 66, 126, 127, 128, 190, 252, 253, 254, 255], size=n)
    return np.where(rng.random(n) < 0.4, (x & ~(0xFF << 7)) | (e << 7), x)


def bf16_pairs(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    """bf16 operands, a third of the pairs with exponents summing near fp32's underflow (ex + ey ~ 128 - 16 .. 128)
    or overflow (ex + ey ~ 381) thresholds of the product."""
    x, y = bf16_operands(rng, n), bf16_operands(rng, n)
    ex = (x >> 7) & 0xFF
    target = np.where(rng.random(n) < 0.5, 128 - rng.integers(-2, 18, size=n), 381 + rng.integers(-3, 3, size=n))
    ey = (target - ex).clip(0, 254)
    y = np.where(rng.random(n) < 0.35, (y & ~(0xFF << 7)) | (ey << 7), y)
    return x, y


@cocotb.test()
async def fp16_units_match_numpy(dut):
    opts = read_config()
    n, rng = int(opts["vectors"]), np.random.default_rng(int(opts["seed"]))
    act = opts.get("cfg", {}).get("act", "fp16")
    a, b = f32_operands(rng, n)
    if act == "bf16":
        x, y = bf16_pairs(rng, n)
        s = bf16_operands(rng, n)
    else:
        x, y, s = f16_operands(rng, n), f16_operands(rng, n), f16_operands(rng, n)
    wm = rng.integers(0, 16, size=n)
    ws = np.where(wm == 0, 0, rng.integers(0, 2, size=n))  # the sign of q - z: never set for 0
    wide, narrow = (golden.bf16, golden.bf16_bits) if act == "bf16" else (lambda v: golden.f16(v).astype(np.float32), golden.f16_bits)
    with np.errstate(all="ignore"):
        fa, fb = a.astype(np.uint32).view(np.float32), b.astype(np.uint32).view(np.float32)
        want_sum = golden.f32_bits(fa + fb)
        want_prod = golden.f32_bits(wide(x) * wide(y))  # fp16: exact; bf16: numpy's one IEEE rounding of the product
        w = np.where(ws == 1, -wm, wm).astype(np.float32)
        want_dq = narrow(w * wide(s))  # the fp32 product is exact (or inf): one rounding
        want_sum16 = narrow(wide(x) + wide(y))  # via fp32: correctly rounded (24 >= 2p + 2: p = 11, 8)
        want_mul32 = golden.f32_bits(fa * fb)
        want_wide = golden.f32_bits(wide(x))
        want_shadd = golden.f32_bits(wide(x) * w)
        # lut-tc's bf16 steps on any fp32 operand; a NaN passes unchanged (the arrays only feed canonical NaNs)
        want_pow2 = np.where(np.isnan(fa), a, golden.f32_bits(fa * np.exp2(wm & 3).astype(np.float32)))
        want_half = np.where(np.isnan(fa), a, golden.f32_bits(fa * np.float32(0.5)))
    if opts.get("corrupt"):
        want_sum[0] ^= 1
    pre = "bf16" if act == "bf16" else "f16"
    checks = [("f32_add", "sum", want_sum, (a, b)), (f"{pre}_mul", "prod", want_prod, (x, y)),
              (f"{pre}_dq", "dq", want_dq, (ws, wm, s)), (f"{pre}_add", "sum16", want_sum16, (x, y)),
              ("f32_mul", "mul32", want_mul32, (a, b)), (f"{pre}_to_f32", "wide", want_wide, (x,)),
              (f"{pre}_shadd", "shadd", want_shadd, (x, ws, wm))]
    if act == "bf16":
        checks += [("f32_pow2", "pow2", want_pow2, (a, wm)), ("f32_half", "half", want_half, (a,))]
    bad = []
    for i in range(n):
        dut.a.value, dut.b.value, dut.x.value, dut.y.value = int(a[i]), int(b[i]), int(x[i]), int(y[i])
        dut.ws.value, dut.wm.value, dut.s.value = int(ws[i]), int(wm[i]), int(s[i])
        await Timer(1, unit="ns")
        for unit, port, want, args in checks:
            got = getattr(dut, port)
            g = int(got.value)
            if g != int(want[i]):
                bad.append(f"{unit}({', '.join(hex(int(v[i])) for v in args)}) = {g:#x}, numpy {int(want[i]):#x}")
    write_output(opts, dict(vectors=n, mismatches=len(bad), first=bad[:5]))
    assert not bad, f"{len(bad)} results differ from numpy; first: {bad[0]}"
