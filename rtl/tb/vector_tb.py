"""cocotb testbench of the vector unit (rtl/gen/vector_unit.py), run by rtl.vector_sim.run_vector_sim:
every output bit against hwsim.vector, and the cycles against hwsim.arrays.vector_unit.

Configuration (rtl.tb.read_config): cfg (VectorUnitConfig fields), out, and
    rows        random rows after the corner cases (`stimulus`)
    stall_rows  rows of the back-pressure phase (random out_ready, cycle by cycle)
    seed        stimulus seed
    corrupt     change one expected value: the run must then fail (the checker can fail)
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
    """Row inputs and fields, corner cases first: x [R, L] and one int64 array per field (keys = port names
    without `in_`). Scales are mostly realistic dyadic pairs, some rows fully random fields."""
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


def expected(cfg: VectorUnitConfig, st: dict) -> np.ndarray:
    """hwsim.vector's output rows for the stimulus, int64 [R, L]."""
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
    """Bits a value of per-channel field k takes on its port: 8, or the norm's bias width."""
    return cfg.norm_shape.bias_bits if k == "b" else 8


def _fields(cfg: VectorUnitConfig, st: dict, i: int) -> dict:
    """Port values of row i: in_x and in_<field> (per-channel fields packed 8 bits a value)."""
    f = {"in_x": pack(st["x"][i], cfg.in_bits)}
    for k, arr in st.items():
        if k != "x":
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
    R1 = st["x"].shape[0] - stall_rows
    L, signed = cfg.L, cfg.unit != "shiftmax"
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
        got[i] = unpack(int(dut.out_y.value), L, 8, signed)

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
            got[R1 + len(outs) - 1] = unpack(int(dut.out_y.value), L, 8, signed)
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
