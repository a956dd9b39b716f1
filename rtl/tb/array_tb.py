"""cocotb testbench for every generated array (lut-tc, mixpe, mac): they share one interface
(rtl/gen/common.py) and one golden model (hwsim/golden.py).

Structure (after cocotb's matrix_multiplier example): a passive `StreamMonitor` on each valid/ready
handshake records the beats that moved; a transaction-level `model()` turns the input beats of a job back
into integer arrays and calls `hwsim.golden.tile_y`; the checker compares the output beats the monitor saw
with the model's. The stimulus (a driver with random idle cycles, and random back-pressure on out_ready)
never talks to the checker: what is checked is what crossed the handshakes.

The run is configured by the environment variable LOWBIT_TB (JSON, written by rtl/sim.py):
  cfg         ArrayConfig fields (checked against the DUT's parameters)
  vectors     number of jobs (tiles) to run
  seed, max_groups (groups per random job: 1..max_groups), stalls (bool)
  corrupt     flip one bit of one expected value (shows the checker can fail)
  stats       path of a JSON file to write cycles / MACs / beats into
A protocol check asserts that a stalled output beat stays valid and unchanged until taken.
Job order: a no-stall throughput phase (all jobs with max_groups groups; cycles and MACs per cycle are
measured there), then corner cases (all zeros, accumulator limits at both signs, mixed extremes), real
tiles from the quantizer (compiler.quant.rtn on random float weights and activations), then random
jobs with random stalls and back-pressure.
"""

from __future__ import annotations

import json
import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import RisingEdge

from hwsim import golden as gm
from hwsim.config import ArrayConfig

PERIOD_NS = 10


def _pack(values, width: int) -> int:
    """Little-endian pack of integers (two's complement, `width` bits each) into one int."""
    v = np.asarray(values, dtype=np.int64).reshape(-1)
    bits = ((v[:, None] >> np.arange(width)) & 1).astype(np.uint8).reshape(-1)
    return int.from_bytes(np.packbits(bits, bitorder="little").tobytes(), "little")


def _unpack(x: int, width: int, count: int, signed: bool) -> np.ndarray:
    nbits = width * count
    raw = np.frombuffer(int(x).to_bytes((nbits + 7) // 8, "little"), dtype=np.uint8)
    bits = np.unpackbits(raw, bitorder="little")[:nbits].reshape(count, width).astype(np.int64)
    vals = bits @ (np.int64(1) << np.arange(width, dtype=np.int64))
    if signed:
        vals = np.where(bits[:, -1] == 1, vals - (np.int64(1) << width), vals)
    return vals


class StreamMonitor:
    """Records the payload of every beat that moves on a valid/ready handshake (passive)."""

    def __init__(self, clk, valid, ready, fields: dict, callback=None):
        self.clk, self.valid, self.ready, self.fields = clk, valid, ready, fields
        self.beats: list[dict] = []
        self.callback = callback
        self.first_cycle = None
        self.last_cycle = None
        self._task = None

    def start(self):
        self._task = cocotb.start_soon(self._run())

    def stop(self):
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self):
        while True:
            await RisingEdge(self.clk)
            if self.valid.value == 1 and self.ready.value == 1:
                beat = {k: int(h.value) for k, h in self.fields.items()}
                cyc = int(get_sim_time(unit="ns")) // PERIOD_NS
                if self.first_cycle is None:
                    self.first_cycle = cyc
                self.last_cycle = cyc
                self.beats.append(beat)
                if self.callback is not None:
                    self.callback(beat)


class ArrayTB:
    def __init__(self, dut, cfg: ArrayConfig, corrupt: bool = False):
        self.dut, self.cfg, self.corrupt = dut, cfg, corrupt
        self.expected: list[list[int]] = []  # output beats, in order
        self.job_macs: list[int] = []
        self._pending: list[dict] = []
        self.in_mon = StreamMonitor(
            dut.clk,
            dut.in_valid,
            dut.in_ready,
            {k: getattr(dut, k) for k in ("in_act", "in_w", "in_zero", "in_mant", "in_shift", "in_ashift", "in_last")},
            callback=self._on_input,
        )
        self.out_mon = StreamMonitor(dut.clk, dut.out_valid, dut.out_ready, {"out_data": dut.out_data, "out_last": dut.out_last})
        self.stall_in = 0.0
        self.stall_out = 0.0

    # ---- transaction-level model
    def _on_input(self, beat: dict):
        self._pending.append(beat)
        if beat["in_last"]:
            beats, self._pending = self._pending, []
            self.expected.extend(self.model(beats))

    def model(self, beats: list[dict]) -> list[list[int]]:
        """Input beats of one job -> the output beats the array must produce (via hwsim.golden)."""
        c = self.cfg
        M, N, K, B, AW, MW, SW = c.M, c.N, c.K, c.bits, c.act_bits, c.mant_bits, c.shift_bits
        cpg = c.chunks_per_group
        if len(beats) % cpg:
            raise AssertionError(f"job of {len(beats)} beats is not a whole number of groups ({cpg} beats each)")
        ng = len(beats) // cpg
        a = np.stack([_unpack(b["in_act"], AW, M * K, True).reshape(M, K) for b in beats], axis=1).reshape(M, -1)
        q = np.stack([_unpack(b["in_w"], B, N * K, False).reshape(N, K) for b in beats], axis=1).reshape(N, -1)
        heads = beats[::cpg]
        z = np.stack([_unpack(b["in_zero"], B, N, False) for b in heads], axis=1)
        mant = np.stack([_unpack(b["in_mant"], MW, N, False) for b in heads], axis=1)
        d = np.stack([_unpack(b["in_shift"], SW, N, False) for b in heads], axis=1)
        da = np.stack([_unpack(b["in_ashift"], SW, M, False) for b in heads], axis=1)
        assert a.shape == (M, ng * c.group) and z.shape == (N, ng)
        y = gm.tile_y(c, a, q, z, mant, d, da)
        if self.corrupt and not self.expected:
            y = y.copy()
            y[0, 0] ^= 1  # a deliberately wrong golden value: the checker must catch it
        self.job_macs.append(M * N * ng * c.group)
        return gm.output_beats(c, y)

    # ---- stimulus
    def beats_of(self, t: gm.TileInputs) -> list[dict]:
        c = self.cfg
        M, N, K, B, AW, MW, SW = c.M, c.N, c.K, c.bits, c.act_bits, c.mant_bits, c.shift_bits
        kt = t.a.shape[1]
        nch = kt // K
        out = []
        for ch in range(nch):
            j = ch // c.chunks_per_group
            head = ch % c.chunks_per_group == 0
            beat = {
                "in_act": _pack(t.a[:, ch * K : (ch + 1) * K].reshape(-1), AW),
                "in_w": _pack(t.codes[:, ch * K : (ch + 1) * K].reshape(-1), B),
                "in_zero": _pack(t.zeros[:, j], B) if head else 0,
                "in_mant": _pack(t.mant[:, j], MW) if head else 0,
                "in_shift": _pack(t.d[:, j], SW) if head else 0,
                "in_ashift": _pack(t.da[:, j], SW) if head else 0,
                "in_last": int(ch == nch - 1),
            }
            out.append(beat)
        return out

    async def drive(self, beats: list[dict]):
        dut = self.dut
        for beat in beats:
            while self.stall_in and random.random() < self.stall_in:
                dut.in_valid.value = 0
                await RisingEdge(dut.clk)
            for k, val in beat.items():
                getattr(dut, k).value = val
            dut.in_valid.value = 1
            while True:
                await RisingEdge(dut.clk)
                if dut.in_ready.value == 1:
                    break
        dut.in_valid.value = 0

    async def backpressure(self):
        dut = self.dut
        while True:
            dut.out_ready.value = 0 if (self.stall_out and random.random() < self.stall_out) else 1
            await RisingEdge(dut.clk)

    async def out_protocol(self):
        """Handshake rule on the output: once out_valid is high it stays high, with the same payload,
        until out_ready takes the beat."""
        dut = self.dut
        held = None
        while True:
            await RisingEdge(dut.clk)
            v = dut.out_valid.value == 1
            if held is not None:
                assert v, "out_valid dropped while the beat was waiting for out_ready"
                now = (int(dut.out_data.value), int(dut.out_last.value))
                assert now == held, "out_data/out_last changed while out_valid was high and out_ready low"
            held = (int(dut.out_data.value), int(dut.out_last.value)) if v and dut.out_ready.value != 1 else None

    async def wait_outputs(self, limit_cycles: int):
        dut = self.dut
        for _ in range(limit_cycles):
            if len(self.out_mon.beats) >= len(self.expected) and not self._pending:
                return
            await RisingEdge(dut.clk)
        raise AssertionError(
            f"timeout: {len(self.out_mon.beats)} output beats after {limit_cycles} cycles, expected {len(self.expected)}"
        )

    def check(self):
        got = [_unpack(b["out_data"], self.cfg.y_bits, self.cfg.lanes, True).tolist() for b in self.out_mon.beats]
        lasts = [b["out_last"] for b in self.out_mon.beats]
        assert len(got) == len(self.expected), f"{len(got)} output beats, model expects {len(self.expected)}"
        beats_per_job = self.cfg.M * self.cfg.N // self.cfg.lanes
        for i, (g_, e_) in enumerate(zip(got, self.expected)):
            if g_ != e_:
                lane = next(l for l in range(len(g_)) if g_[l] != e_[l])
                raise AssertionError(
                    f"mismatch in job {i // beats_per_job}, output beat {i % beats_per_job}, lane {lane}: "
                    f"DUT {g_[lane]} != golden {e_[lane]}"
                )
            want_last = int(i % beats_per_job == beats_per_job - 1)
            assert lasts[i] == want_last, f"out_last={lasts[i]} on output beat {i}, expected {want_last}"


def _dut_params(dut) -> dict:
    out = {}
    for k in ("M", "N", "K", "B", "AW", "G", "MW", "SW", "YW", "LANES"):
        try:
            out[k] = int(getattr(dut, k).value)
        except Exception:  # a simulator without parameter access (reported, not fatal)
            pass
    return out


def _real_tile(cfg: ArrayConfig, rng: np.random.Generator, ng: int) -> gm.TileInputs:
    from compiler.quant.rtn import quantize_rtn
    from compiler.quant.spec import QuantSpec

    kt = cfg.group * ng
    w = rng.standard_normal((cfg.N, kt)).astype(np.float32) * rng.uniform(0.01, 0.2)
    x = (rng.standard_normal((cfg.M, kt)) * rng.uniform(0.1, 4)).astype(np.float32)
    if cfg.ternary:
        spec = QuantSpec(bits=2, group_size=cfg.group, act=cfg.act, ternary=True)
    else:
        spec = QuantSpec(bits=max(cfg.bits, 2), group_size=cfg.group, act=cfg.act, symmetric=bool(rng.integers(2)))
    qw = quantize_rtn(w, spec)
    if cfg.bits == 1:  # no 1-bit quantizer: keep the quantizer's scales, take the codes' top bit
        qw.codes = (qw.codes >> 1).astype(np.uint8)
        qw.zeros = np.ones_like(qw.zeros)
        qw.bits = 1
    return gm.prepare_tile(cfg, x, qw)


@cocotb.test()
async def array_matches_golden(dut):
    opts = json.loads(os.environ["LOWBIT_TB"])
    cfg = ArrayConfig.from_dict(opts["cfg"])
    vectors = int(opts.get("vectors", 100))
    seed = int(opts.get("seed", 0))
    max_groups = int(opts.get("max_groups", 2))
    stalls = bool(opts.get("stalls", True))
    random.seed(seed)
    rng = np.random.default_rng(seed)

    params = _dut_params(dut)
    want = {"M": cfg.M, "N": cfg.N, "K": cfg.K, "B": cfg.bits, "AW": cfg.act_bits, "G": cfg.group,
            "MW": cfg.mant_bits, "SW": cfg.shift_bits, "YW": cfg.y_bits, "LANES": cfg.lanes}
    for k, val in params.items():
        assert val == want[k], f"DUT parameter {k}={val}, testbench config says {want[k]}"

    Clock(dut.clk, PERIOD_NS, unit="ns").start()
    tb = ArrayTB(dut, cfg, corrupt=bool(opts.get("corrupt", False)))
    dut.in_valid.value = 0
    dut.out_ready.value = 1
    dut.rst_n.value = 0
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst_n.value = 1
    await RisingEdge(dut.clk)
    tb.in_mon.start()
    tb.out_mon.start()
    bp = cocotb.start_soon(tb.backpressure())
    proto = cocotb.start_soon(tb.out_protocol())

    beats_per_job_in = lambda ng: ng * cfg.chunks_per_group  # noqa: E731
    per_group_cycles = cfg.chunks_per_group * cfg.cycles_per_beat + cfg.M * cfg.N // cfg.lanes
    limit = lambda ng: 50 + 4 * ng * per_group_cycles  # noqa: E731

    # phase 1: throughput, no stalls
    n_perf = max(1, min(vectors // 4, 32))
    jobs = [gm.random_tile(cfg, rng, n_groups=max_groups) for _ in range(n_perf)]
    start = int(get_sim_time(unit="ns")) // PERIOD_NS
    for t in jobs:
        await tb.drive(tb.beats_of(t))
    await tb.wait_outputs(limit(max_groups) * n_perf)
    perf_cycles = tb.out_mon.last_cycle - tb.in_mon.first_cycle + 1
    perf_macs = sum(tb.job_macs)

    # phase 2: corners, real tiles, random jobs with stalls
    remaining = vectors - n_perf
    plan: list[gm.TileInputs] = []
    for kind in ("zeros", "min", "max", "mixed-extreme"):
        if len(plan) < remaining:
            plan.append(gm.random_tile(cfg, rng, n_groups=int(rng.integers(1, max_groups + 1)), kind=kind))
    n_real = min(max(0, remaining - len(plan)), max(2, remaining // 10))
    for _ in range(n_real):
        try:
            plan.append(_real_tile(cfg, rng, int(rng.integers(1, max_groups + 1))))
        except ImportError:
            break
    while len(plan) < remaining:
        plan.append(gm.random_tile(cfg, rng, n_groups=int(rng.integers(1, max_groups + 1))))
    if stalls:
        tb.stall_in, tb.stall_out = 0.3, 0.3
    total_groups = 0
    for i, t in enumerate(plan):
        if stalls and i % 7 == 3:  # bursts of heavy back-pressure
            tb.stall_out = 0.8
        elif stalls:
            tb.stall_out = 0.3
        total_groups += t.n_groups
        await tb.drive(tb.beats_of(t))
    await tb.wait_outputs(limit(max_groups) * (len(plan) + 1) * (3 if stalls else 1))
    bp.cancel()
    proto.cancel()
    tb.in_mon.stop()
    tb.out_mon.stop()
    end = int(get_sim_time(unit="ns")) // PERIOD_NS

    stats = {
        "design": cfg.design,
        "config": cfg.to_dict(),
        "dut_params": params,
        "jobs": len(tb.job_macs),
        "input_beats": len(tb.in_mon.beats),
        "output_beats": len(tb.out_mon.beats),
        "cycles": end - start,
        "macs": int(sum(tb.job_macs)),
        "perf_jobs": n_perf,
        "perf_cycles": int(perf_cycles),
        "perf_macs": int(perf_macs),
        "macs_per_cycle": perf_macs / perf_cycles,
        "peak_macs_per_cycle": cfg.macs_per_beat / cfg.cycles_per_beat,
    }
    if opts.get("stats"):
        with open(opts["stats"], "w") as f:
            json.dump(stats, f, indent=1)
    tb.check()
    dut._log.info(
        "%s: %d jobs bit-exact; %d cycles; throughput phase %.1f MACs/cycle", cfg.name, stats["jobs"],
        stats["cycles"], stats["macs_per_cycle"],
    )
