"""cocotb testbench of the vector unit (rtl/gen/vector_unit.py), run by rtl.vector_sim.run_vector_sim:
every output bit against hwsim.vector, and the cycles against hwsim.arrays.vector_unit.

Configuration (rtl.tb.read_config): cfg (VectorUnitConfig fields), out, and
    rows        random rows after the corner cases (`stimulus`)
    stall_rows  rows of the back-pressure phase (random out_ready, cycle by cycle)
    seed        stimulus seed
    corrupt     change one expected value: the run must then fail (the checker can fail)
The elementwise units (requant, add, mul, rope) start with every corner row against every corner field
(`_eltwise_stimulus`); the other units' stimulus is as before (the same seed gives the same rows).
Phase 1 drives every row with out_ready high and checks each row's latency and the interval between
rows (the closed form); phase 2 drives stall_rows more back to back under a random out_ready pattern and
checks every accept and output edge against hwsim.arrays.vector_unit.schedule. Writes to `out`: rows,
checked values, the measured latency / interval, phase 2's edges, the mismatches found.
"""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge, with_timeout
from cocotb.utils import get_sim_time

from compiler.errors import LowbitError
from hwsim import vector as vec
from hwsim.arrays.vector_unit import VectorUnitConfig, schedule
from rtl.tb import read_config, write_output

PERIOD_NS = 10


def _dyadic_near(rng, c: float) -> tuple[int, int]:
    """dyadic(c) for a scale c, pulled into the encodable range."""
    while True:
        try:
            return vec.dyadic(c)
        except LowbitError:
            c = c * 2.0 ** (-4 if c > 1 else 4)


def _corner_x(cfg: VectorUnitConfig) -> list[np.ndarray]:
    L, lo, hi = cfg.L, -(1 << (cfg.in_bits - 1)), (1 << (cfg.in_bits - 1)) - 1
    alt = np.array([lo if i % 2 else hi for i in range(L)])
    one = np.full(L, lo)
    one[L // 2] = hi
    ramp = np.linspace(lo, hi, L).astype(np.int64)
    small = np.zeros(L, np.int64)
    small[0] = 1
    return [np.full(L, lo), np.full(L, hi), np.zeros(L, np.int64), np.full(L, {8: 57, 16: 12345}.get(cfg.in_bits, 123456)), alt, one, ramp, small, -small]


def stimulus(cfg: VectorUnitConfig, rows: int, seed: int) -> dict:
    """Row inputs and fields, corner cases first: x [R, L] (add, mul: a and b) and one int64 array per field
    (keys = port names without `in_`). Scales are mostly realistic dyadic pairs, some rows fully random fields."""
    if cfg.eltwise:
        return _eltwise_stimulus(cfg, rows, seed)
    rng = np.random.default_rng(seed)
    L, lo, hi = cfg.L, -(1 << (cfg.in_bits - 1)), (1 << (cfg.in_bits - 1)) - 1
    corners = _corner_x(cfg)
    R = len(corners) * 2 + rows
    x = np.empty((R, L), np.int64)
    for i in range(R):
        if i < 2 * len(corners):
            x[i] = corners[i % len(corners)]
        elif cfg.in_bits > 8 and rng.random() < 0.7:  # wide inputs: every magnitude
            mag = 1 << int(rng.integers(2, cfg.in_bits))
            x[i] = np.clip(rng.integers(-mag, mag, size=L), lo, hi)
        elif rng.random() < 0.5:
            x[i] = rng.integers(lo, hi + 1, size=L)
        else:
            x[i] = np.clip(np.rint(rng.normal(rng.normal(0, 20), rng.uniform(0.5, 60), size=L)), lo, hi)
    st: dict = {"x": x}
    raw = rng.random(R) < 0.1  # fully random fields
    raw[: len(corners)] = False

    def pairs(base: float, spread: float) -> tuple[np.ndarray, np.ndarray]:
        m, s = np.empty(R, np.int64), np.empty(R, np.int64)
        for i in range(R):
            if raw[i]:
                m[i], s[i] = rng.integers(0, 1 << vec.MANT_BITS), rng.integers(0, vec.SHIFT_MAX + 1)
            else:
                m[i], s[i] = _dyadic_near(rng, base * 2.0 ** rng.uniform(-spread, spread))
        return m, s

    F = cfg.F
    if cfg.norm:
        st["g"] = rng.integers(-128, 128, size=(R, L))
        st["g"][len(corners): 2 * len(corners)] = np.where(np.arange(len(corners))[:, None] % 2, -128, 127)
        st["eps"] = np.where(rng.random(R) < 0.5, 0, rng.integers(0, cfg.eps_max + 1, size=R))
        st["eps"][len(corners) + 1] = cfg.eps_max
        ns = cfg.norm_shape
        if cfg.unit == "layernorm":
            bh = 1 << (ns.bias_bits - 1)
            st["b"] = rng.integers(-bh, bh, size=(R, L))
        st["mant"], st["shift"] = pairs(2.0**-vec.NORM_A * np.sqrt(L) * (1 / 64) / (4 / 127), 4)
        st["shift"] = np.maximum(st["shift"], ns.bias_frac)  # the bias's fraction bits need sh_o >= them
    elif cfg.unit == "shiftmax":
        st["mant"], st["shift"] = pairs((2.0**-10 if cfg.in_bits == 32 else 8 / 127) * 2.0**F, 6)
    else:
        st["mant_i"], st["shift_i"] = pairs(8 / 127 * 2.0**F, 4)
        st["mant_o"], st["shift_o"] = pairs(2.0**-vec.PROB_BITS, 3)
    return st


# ---- elementwise units (requant, add, mul, rope)

MANT_MAX = (1 << vec.MANT_BITS) - 1
TABLE_ONE = 1 << vec.ROPE_TABLE_BITS


def n_rows(st: dict) -> int:
    return next(iter(st.values())).shape[0]


def _eltwise_fields(cfg: VectorUnitConfig) -> list[tuple]:
    """Corner field tuples (mant, shift) (add: (mant_a, mant_b, shift)): saturation both ways at mant 0xFFFF and
    shift 0, shift 63 (only the rounding bit can survive), mant 0, the identity scale, a half-LSB scale (ties:
    round half up on both signs), and the scale that maps the input range onto the output range."""
    IW, OW = cfg.in_bits, cfg.out_bits
    pw = {"requant": IW - 1, "add": IW, "mul": 14, "rope": IW + vec.ROPE_TABLE_BITS}[cfg.unit]  # log2 of the largest |x mant| / 2^16
    one = {"requant": 15, "add": 15, "mul": 15, "rope": 15 + vec.ROPE_TABLE_BITS}[cfg.unit]  # (2^15, one): the identity
    fit = min(vec.SHIFT_MAX, pw + 17 - OW)  # 0xFFFF: the largest operand lands at the output's top
    pairs = [(MANT_MAX, 0), (MANT_MAX, vec.SHIFT_MAX), (0, 0), (1, 0), (1 << 15, one), (1 << 15, one + 1), (MANT_MAX, fit), (MANT_MAX, fit - 1)]
    if cfg.unit != "add":
        return pairs
    return [(m, m, s) for m, s in pairs] + [(1 << 15, 0, 15), (0, MANT_MAX, 0), (MANT_MAX, 1, fit)]


def _eltwise_stimulus(cfg: VectorUnitConfig, rows: int, seed: int) -> dict:
    """Every corner row with every corner field tuple, then random rows: operands at every magnitude or uniform
    over their range, fields mostly realistic (the scale mapping the operands' magnitude to the output range,
    times 2^+-3, so some rows saturate), 10% fully random; rope tables from hwsim.vector.rope_table at random
    positions (10%: random entries in [-2^14, 2^14])."""
    rng = np.random.default_rng(seed)
    L, IW, OW = cfg.L, cfg.in_bits, cfg.out_bits
    lo, hi = -(1 << (IW - 1)), (1 << (IW - 1)) - 1
    h = L // 2
    xs = _corner_x(cfg)
    fields = _eltwise_fields(cfg)
    two = cfg.unit in ("add", "mul")
    if two:  # operand pairs: equal, opposite, one zero, and the corner rows against their reverse
        corner_ops = [(x, x) for x in xs] + [(x, x[::-1].copy()) for x in xs] + [(np.full(L, lo), np.full(L, hi)), (np.full(L, hi), np.zeros(L, np.int64))]
    else:
        corner_ops = [(x,) for x in xs]
    if cfg.unit == "rope":  # tables: no rotation, the +-2^14 / 0 corners, every sign combination of +-2^14
        ones = np.full(h, TABLE_ONE)
        z = np.zeros(h, np.int64)
        alt = np.where(np.arange(h) % 2, -TABLE_ONE, TABLE_ONE)
        tables = [(ones, z), (-ones, z), (z, ones), (z, -ones), (ones, ones), (-ones, -ones), (ones, -ones), (alt, -alt)]
        corner_ops = [(x, c, s) for x in xs for c, s in tables]
    corners = [(*ops, f) for ops in corner_ops for f in fields]
    R = len(corners) + rows
    nf = len(fields[0])
    F = np.zeros((R, nf), np.int64)
    ops = [np.zeros((R, L if k < (2 if two else 1) else h), np.int64) for k in range(len(corner_ops[0]))]
    for i, row in enumerate(corners):
        for k, o in enumerate(row[:-1]):
            ops[k][i] = o
        F[i] = row[-1]
    if cfg.unit == "rope":
        inv = 1.0 / (10000.0 ** (np.arange(0, L, 2) / L))
    for i in range(len(corners), R):
        mags = []
        for k in range(2 if two else 1):
            if rng.random() < 0.6:  # every magnitude
                mag = 1 << int(rng.integers(0, IW))
                ops[k][i] = np.clip(rng.integers(-mag, mag + 1, size=L), lo, hi)
            else:
                mag = hi
                ops[k][i] = rng.integers(lo, hi + 1, size=L)
            mags.append(max(mag, 1))
        if cfg.unit == "rope":
            if rng.random() < 0.1:
                ops[1][i], ops[2][i] = rng.integers(-TABLE_ONE, TABLE_ONE + 1, size=(2, h))
            else:
                c, s = vec.rope_table(rng.integers(0, 1 << 16, size=1), inv)
                ops[1][i], ops[2][i] = c[0], s[0]
        if rng.random() < 0.1:
            F[i, :-1] = rng.integers(0, MANT_MAX + 1, size=nf - 1)
            F[i, -1] = rng.integers(0, vec.SHIFT_MAX + 1)
            continue
        spread = 2.0 ** rng.uniform(-3, 3)
        top = 2.0 ** (OW - 1)
        if cfg.unit == "add":
            ca, cb = top / mags[0] * spread, top / mags[1] * spread * 2.0 ** rng.uniform(-8, 2)
            if rng.random() < 0.5:
                ca, cb = cb, ca
            F[i] = _add_scales_near(ca, cb)
        else:
            c = top / (mags[0] * (mags[1] if two else 1) * (TABLE_ONE if cfg.unit == "rope" else 1)) * spread
            F[i] = _dyadic_near(rng, c)
    st: dict = {}
    names = {"requant": ["x"], "add": ["a", "b"], "mul": ["a", "b"], "rope": ["x", "c", "s"]}[cfg.unit]
    for k, name in enumerate(names):
        st[name] = ops[k]
    fnames = ["mant_a", "mant_b", "shift"] if cfg.unit == "add" else ["mant", "shift"]
    for k, name in enumerate(fnames):
        st[name] = F[:, k].copy()
    return st


def _add_scales_near(ca: float, cb: float) -> tuple[int, int, int]:
    while True:
        try:
            return vec.add_scales(ca, cb)
        except LowbitError:
            f = 2.0 ** (-4 if max(ca, cb) > 1 else 4)
            ca, cb = ca * f, cb * f


def expected(cfg: VectorUnitConfig, st: dict) -> np.ndarray:
    """hwsim.vector's output rows for the stimulus, int64 [R, L]."""
    if cfg.eltwise:
        IW, OW = cfg.in_bits, cfg.out_bits
        y = np.empty((n_rows(st), cfg.L), np.int64)
        for i in range(y.shape[0]):
            if cfg.unit == "requant":
                y[i] = vec.requant(st["x"][i], st["mant"][i], st["shift"][i], IW, OW)
            elif cfg.unit == "add":
                y[i] = vec.add(st["a"][i], st["b"][i], st["mant_a"][i], st["mant_b"][i], st["shift"][i], IW, OW)
            elif cfg.unit == "mul":
                y[i] = vec.mul(st["a"][i], st["b"][i], st["mant"][i], st["shift"][i])
            else:
                y[i] = vec.rope(st["x"][i], st["c"][i], st["s"][i], st["mant"][i], st["shift"][i], IW, OW)
        return y
    R = st["x"].shape[0]
    y = np.empty_like(st["x"])
    for i in range(R):
        x = st["x"][i]
        if cfg.norm:
            y[i] = vec.norm(x, st["g"][i], cfg.unit, st["mant"][i], st["shift"][i], int(st["eps"][i]), st["b"][i] if "b" in st else None, cfg.in_bits)
        elif cfg.unit == "shiftmax":
            y[i] = vec.shiftmax(x, st["mant"][i], st["shift"][i], cfg.in_bits, cfg.F)
        else:
            y[i] = vec.gated(x, cfg.unit, st["mant_i"][i], st["shift_i"][i], st["mant_o"][i], st["shift_o"][i], cfg.F)
    return y


def pack(vals, width: int) -> int:
    out = 0
    for i, v in enumerate(vals):
        out |= (int(v) & ((1 << width) - 1)) << (i * width)
    return out


def unpack(word: int, n: int, width: int, signed: bool) -> list[int]:
    out = []
    for i in range(n):
        v = (word >> (i * width)) & ((1 << width) - 1)
        out.append(v - (1 << width) if signed and v >> (width - 1) else v)
    return out


def mismatches(got: np.ndarray, want: np.ndarray, limit: int = 5) -> tuple[int, list[str]]:
    """(number of differing values, a description of the first `limit`)."""
    bad = np.argwhere(got != want)
    return len(bad), [f"row {r} value {j}: RTL {got[r, j]}, golden {want[r, j]}" for r, j in bad[:limit]]


def _field_bits(cfg: VectorUnitConfig, k: str) -> int:
    """Bits a value of per-channel field k takes on its port: 8, or the norm's bias width; the elementwise
    units' operands at in_bits and rope's tables at 16."""
    if cfg.eltwise:
        return 16 if k in ("c", "s") else cfg.in_bits
    return cfg.norm_shape.bias_bits if k == "b" else 8


def _fields(cfg: VectorUnitConfig, st: dict, i: int) -> dict:
    """Port values of row i: in_x and in_<field> (per-channel fields packed 8 bits a value)."""
    f = {} if cfg.eltwise else {"in_x": pack(st["x"][i], cfg.in_bits)}
    for k, arr in st.items():
        if cfg.eltwise or k != "x":
            f[f"in_{k}"] = pack(arr[i], _field_bits(cfg, k)) if arr.ndim == 2 else int(arr[i])
    return f


@cocotb.test()
async def vector_unit(dut):
    opts = read_config()
    cfg = VectorUnitConfig(**opts["cfg"])
    rows, stall_rows = int(opts.get("rows", 100)), int(opts.get("stall_rows", 20))
    st = stimulus(cfg, rows + stall_rows, int(opts.get("seed", 0)))
    want = expected(cfg, st)
    if opts.get("corrupt"):
        want[0, 0] = want[0, 0] + 1 if want[0, 0] < 100 else want[0, 0] - 1
    R1 = n_rows(st) - stall_rows
    L, signed, OW = cfg.L, cfg.unit != "shiftmax", cfg.out_bits
    got = np.zeros_like(want)

    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
    dut.rst_n.value = 0
    dut.in_valid.value = 0
    dut.out_ready.value = 1
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst_n.value = 1
    await RisingEdge(dut.clk)

    def edge() -> int:
        return round(get_sim_time("ns") / PERIOD_NS)

    def drive(i: int):
        for k, val in _fields(cfg, st, i).items():
            getattr(dut, k).value = val

    # phase 1: out_ready high, event-driven (the unit's own steps need no testbench work)
    lat, gaps, prev = set(), set(), None
    for i in range(R1):
        drive(i)
        dut.in_valid.value = 1
        await RisingEdge(dut.clk)
        assert int(dut.in_ready.value) == 1, f"row {i}: the unit was not idle when offered a row"
        c0 = edge()
        dut.in_valid.value = 0
        if prev is not None:
            gaps.add(c0 - prev)
        prev = c0
        await with_timeout(RisingEdge(dut.out_valid), 20 * cfg.latency * PERIOD_NS, "ns")
        await RisingEdge(dut.clk)
        lat.add(edge() - c0)
        got[i] = unpack(int(dut.out_y.value), L, OW, signed)

    # phase 2: back to back under a random out_ready pattern, cycle by cycle
    rng = np.random.default_rng(int(opts.get("seed", 0)) + 1)
    ready = (rng.random(stall_rows * (cfg.interval + 8) * 3) < 0.5).astype(int).tolist()
    acc, outs = [], []
    i, c = R1, 0
    limit = len(ready) + stall_rows * cfg.interval * 2 + 100
    if stall_rows:
        drive(i)
        dut.in_valid.value = 1
    while len(outs) < stall_rows and c < limit:
        dut.out_ready.value = ready[c] if c < len(ready) else 1
        await RisingEdge(dut.clk)
        if int(dut.out_valid.value) and (ready[c] if c < len(ready) else 1):
            outs.append(c)
            got[R1 + len(outs) - 1] = unpack(int(dut.out_y.value), L, OW, signed)
        if i < R1 + stall_rows and int(dut.in_ready.value):
            acc.append(c)
            i += 1
            if i < R1 + stall_rows:
                drive(i)
            else:
                dut.in_valid.value = 0
        c += 1
    dut.in_valid.value = 0
    want_acc, want_out = schedule(cfg, stall_rows, ready)

    nbad, first = mismatches(got, want)
    write_output(opts, {"rows": int(got.shape[0]), "values": int(got.size), "latency": sorted(lat), "interval": sorted(gaps),
                        "accepts": acc, "outputs": outs, "mismatches": nbad, "first": first})
    assert nbad == 0, f"{nbad} mismatches against hwsim.vector: " + "; ".join(first)
    assert lat == {cfg.latency}, f"latency {sorted(lat)} cycles, the model says {cfg.latency}"
    assert not gaps or gaps == {cfg.interval}, f"row interval {sorted(gaps)} cycles, the model says {cfg.interval}"
    assert (acc, outs) == (want_acc, want_out), f"back-pressure edges differ from the model: accepts {acc[:6]} vs {want_acc[:6]}, outputs {outs[:6]} vs {want_out[:6]}"
