"""cocotb testbench for every generated array (every design of hwsim.designs): they share one interface
(rtl/gen/ports.py) and one golden model (hwsim/golden.py).

Structure (after cocotb's matrix_multiplier example): a passive `StreamMonitor` on each valid/ready
handshake records the beats that moved; `ArrayTB` owns both monitors, a transaction-level `model()` that
turns the input beats of a job back into integer arrays and calls `hwsim.golden.tile_y`, and a checker
coroutine that compares each job's output beats with the model's as the job's outputs complete (the test
fails at the first wrong beat). The stimulus (a driver with random idle cycles, and random back-pressure
on out_ready) never talks to the checker: what is checked is what crossed the handshakes. A protocol
check asserts that a stalled output beat stays valid and unchanged until taken. `reset()`, `start()`,
`wait_outputs()` and `stop()` are what every testbench of rtl/tb runs.

The regression below (`array_matches_golden`, run by rtl.sim.run_sim) reads its configuration with
rtl.tb.read_config; besides cfg, designs, tiles and out:
  vectors     number of jobs (tiles) to run; perf_jobs of them in the throughput phase
  seed, max_groups (groups per random job: 1..max_groups), stalls (bool)
  corrupt     flip one bit of one expected value (shows the checker can fail)
It writes cycles / MACs / beats into `out`. Job order: a no-stall throughput phase (all jobs with
max_groups groups; cycles and MACs per cycle are measured there), then corner cases (all zeros,
accumulator limits at both signs, mixed extremes, every code in every column), the caller's tiles (`tiles`, e.g. real tiles from the
quantizer: runtime/stimulus.py), then random jobs with random stalls and back-pressure.
"""

from __future__ import annotations

import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.queue import Queue
from cocotb.simtime import get_sim_time
from cocotb.triggers import RisingEdge

from hwsim import golden as gm
from hwsim.config import ArrayConfig
from rtl.gen.ports import payload, stream_ports
from rtl.gen.common import config_from_dict, has_mins
from rtl.tb import load_tiles, read_config, write_output

PERIOD_NS = 10
RESET_CYCLES = 3


def now_cycle() -> int:
    return int(get_sim_time(unit="ns")) // PERIOD_NS


class StreamMonitor:
    """Records the payload of every beat that moves on a valid/ready handshake (passive): in `beats`, and
    in the queue `values` for a checker. `ends` counts the beats with the `last` field set."""

    def __init__(self, clk, valid, ready, fields: dict, last: str | None = None):
        self.clk, self.valid, self.ready, self.fields, self.last = clk, valid, ready, fields, last
        self.beats: list[dict] = []
        self.values: Queue[dict] = Queue()
        self.ends = 0
        self.first_cycle = None
        self.last_cycle = None
        self._task = None

    def start(self):
        if self._task is not None:
            raise RuntimeError("monitor already started")
        self._task = cocotb.start_soon(self._run())

    def stop(self):
        if self._task is None:
            raise RuntimeError("monitor never started")
        self._task.cancel()
        self._task = None

    async def _run(self):
        while True:
            await RisingEdge(self.clk)
            if self.valid.value == 1 and self.ready.value == 1:
                self._sample()

    def _sample(self):
        beat = {k: int(h.value) for k, h in self.fields.items()}
        cyc = now_cycle()
        if self.first_cycle is None:
            self.first_cycle = cyc
        self.last_cycle = cyc
        self.beats.append(beat)
        if self.last is not None and beat[self.last]:
            self.ends += 1
        self.values.put_nowait(beat)


class ArrayTB:
    """Monitors, model and checker of one array; drivers for its input stream and out_ready."""

    def __init__(self, dut, cfg: ArrayConfig, corrupt: bool = False):
        self.dut, self.cfg, self.corrupt = dut, cfg, corrupt
        self.ports = {p.name: p for p in stream_ports(cfg)}
        self.in_payload = payload(cfg, "in")
        self.out_payload = payload(cfg, "out")
        self.in_last = next(p.name for p in self.in_payload if p.role == "last")
        self.out_last = next(p.name for p in self.out_payload if p.role == "last")
        self.out_data = next(p for p in self.out_payload if p.role == "data")
        self.beats_per_job = cfg.M * cfg.N // cfg.lanes  # output beats of every job
        self.job_macs: list[int] = []
        self.jobs_checked = 0
        self.outputs_checked = 0
        self.in_beats_checked = 0
        self.in_mon = StreamMonitor(
            dut.clk, dut.in_valid, dut.in_ready, {p.name: getattr(dut, p.name) for p in self.in_payload}, last=self.in_last
        )
        self.out_mon = StreamMonitor(
            dut.clk, dut.out_valid, dut.out_ready, {p.name: getattr(dut, p.name) for p in self.out_payload}, last=self.out_last
        )
        self.stall_in = 0.0
        self.stall_out = 0.0
        self._clock = None
        self._tasks: list = []

    # ---- run control
    async def reset(self, cycles: int = RESET_CYCLES):
        """Start the clock (once), hold rst_n low for `cycles` edges with both streams idle, release it."""
        dut = self.dut
        if self._clock is None:
            self._clock = Clock(dut.clk, PERIOD_NS, unit="ns")
            self._clock.start()
        dut.in_valid.value = 0
        dut.out_ready.value = 1
        dut.rst_n.value = 0
        for _ in range(cycles):
            await RisingEdge(dut.clk)
        dut.rst_n.value = 1
        await RisingEdge(dut.clk)

    def start(self, backpressure: bool = False):
        """Start the monitors, the checker and the protocol check (and the random out_ready driver)."""
        if self._tasks:
            raise RuntimeError("ArrayTB already started")
        self.in_mon.start()
        self.out_mon.start()
        self._tasks = [cocotb.start_soon(self._check())]
        if backpressure:
            self._tasks.append(cocotb.start_soon(self.backpressure()))
        self._tasks.append(cocotb.start_soon(self.out_protocol()))

    def stop(self):
        """Stop everything `start` started, then assert that every output beat was one the model expected
        and was checked."""
        if not self._tasks:
            raise RuntimeError("ArrayTB was not started")
        for t in self._tasks:
            t.cancel()
        self._tasks = []
        self.in_mon.stop()
        self.out_mon.stop()
        expected = self.in_mon.ends * self.beats_per_job
        got = len(self.out_mon.beats)
        assert got == expected, f"{got} output beats, model expects {expected}"
        assert self.outputs_checked == expected, f"{expected - self.outputs_checked} output beats were not checked"

    def done(self) -> bool:
        """Every job whose last beat went in has been checked, and no job is half sent."""
        return self.jobs_checked == self.in_mon.ends and self.in_beats_checked == len(self.in_mon.beats)

    async def wait_outputs(self, limit_cycles: int):
        dut = self.dut
        for _ in range(limit_cycles):
            if self.done():
                return
            await RisingEdge(dut.clk)
        raise AssertionError(
            f"timeout: {len(self.out_mon.beats)} output beats after {limit_cycles} cycles, "
            f"expected {self.in_mon.ends * self.beats_per_job}"
        )

    # ---- transaction-level model and checker
    def job_inputs(self, beats: list[dict]) -> gm.TileInputs:
        """Input beats of one job -> its integer arrays (the inverse of `beats_of`)."""
        c = self.cfg
        cpg = c.chunks_per_group
        if len(beats) % cpg:
            raise AssertionError(f"job of {len(beats)} beats is not a whole number of groups ({cpg} beats each)")
        heads = beats[::cpg]
        f = {}
        for p in self.in_payload:
            if p.role != "data":
                continue
            if p.per == "beat" and p.form == "lut_tables":  # streamed tables: the activations they stand for
                tables = np.stack([p.unpack(b[p.name]) for b in beats], axis=1)  # [M, beats, E]
                try:
                    f[p.field] = gm.lut_activations(tables, c.K, c.sym)
                except ValueError as e:
                    raise AssertionError(f"{p.name}: {e}") from None
            elif p.per == "beat":
                f[p.field] = np.stack([p.unpack(b[p.name]) for b in beats], axis=1).reshape(p.shape[0], -1)
            else:
                f[p.field] = np.stack([p.unpack(b[p.name]) for b in heads], axis=1)
        ng = len(heads)
        f.setdefault("zeros", np.zeros((c.N, ng), np.int64))  # arrays without zero points (E2M1 codes)
        assert f["a"].shape == (c.M, ng * c.group) and f["zeros"].shape == (c.N, ng)
        return gm.TileInputs(**f)

    def model(self, beats: list[dict]) -> list[list[int]]:
        """Input beats of one job -> the output beats the array must produce (via hwsim.golden)."""
        c = self.cfg
        t = self.job_inputs(beats)
        y = t.y(c)
        if self.corrupt and not self.job_macs:
            y = y.copy()
            y[0, 0] ^= 1  # a deliberately wrong golden value: the checker must catch it
        self.job_macs.append(c.M * c.N * t.n_groups * c.group)
        return gm.output_beats(c, y)

    async def _check(self):
        """Per job: await its input beats (to `last`), model them, await as many output beats, compare."""
        while True:
            job = [await self.in_mon.values.get()]
            while not job[-1][self.in_last]:
                job.append(await self.in_mon.values.get())
            want = self.model(job)
            for k, e_ in enumerate(want):
                beat = await self.out_mon.values.get()
                g_ = self.out_data.unpack(beat[self.out_data.name]).tolist()
                if g_ != e_:
                    lane = next(l for l in range(len(g_)) if g_[l] != e_[l])
                    raise AssertionError(
                        f"mismatch in job {self.jobs_checked}, output beat {k}, lane {lane}: DUT {g_[lane]} != golden {e_[lane]}"
                    )
                want_last = int(k == len(want) - 1)
                got_last = beat[self.out_last]
                assert got_last == want_last, f"out_last={got_last} on output beat {self.outputs_checked}, expected {want_last}"
                self.outputs_checked += 1
            self.jobs_checked += 1
            self.in_beats_checked += len(job)

    # ---- stimulus
    def beats_of(self, t: gm.TileInputs) -> list[dict]:
        """One job's input beats: per-beat ports carry the beat's K-chunk, per-group ports their group's
        column on its first beat (0 on the others)."""
        c = self.cfg
        K, cpg = c.K, c.chunks_per_group
        nch = t.a.shape[1] // K
        out = []
        for ch in range(nch):
            j, head = ch // cpg, ch % cpg == 0
            beat = {}
            for p in self.in_payload:
                if p.role == "last":
                    beat[p.name] = int(ch == nch - 1)
                elif p.per == "beat":
                    chunk = getattr(t, p.field)[:, ch * K : (ch + 1) * K]
                    # streamed tables are the program's precompute of the chunk: golden.lut_tables, as the array would build them
                    beat[p.name] = p.pack(gm.lut_tables(chunk, K, c.sym) if p.form == "lut_tables" else chunk)
                else:
                    beat[p.name] = p.pack(getattr(t, p.field)[:, j]) if head else 0
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

    def check_parameters(self) -> dict:
        """The DUT's informational parameters, asserted equal to the configuration's (a simulator without
        parameter access reports none)."""
        c = self.cfg
        want = {"M": c.M, "N": c.N, "K": c.K, "B": c.bits, "AW": c.act_bits, "G": c.group,
                "MW": c.mant_bits, "SW": c.shift_bits, "YW": c.y_bits, "LANES": c.lanes}
        got = {}
        for k in want:
            try:
                got[k] = int(getattr(self.dut, k).value)
            except Exception:  # noqa: BLE001 - not fatal: the check is skipped for this parameter
                pass
        for k, val in got.items():
            assert val == want[k], f"DUT parameter {k}={val}, testbench config says {want[k]}"
        return got


@cocotb.test()
async def array_matches_golden(dut):
    opts = read_config()
    cfg = config_from_dict(opts["cfg"])
    vectors = int(opts.get("vectors", 100))
    seed = int(opts.get("seed", 0))
    max_groups = int(opts.get("max_groups", 2))
    stalls = bool(opts.get("stalls", True))
    supplied = load_tiles(opts.get("tiles"))
    mins = has_mins(cfg)
    random.seed(seed)
    rng = np.random.default_rng(seed)

    tb = ArrayTB(dut, cfg, corrupt=bool(opts.get("corrupt", False)))
    params = tb.check_parameters()
    await tb.reset()
    tb.start(backpressure=True)

    per_group_cycles = cfg.chunks_per_group * cfg.cycles_per_beat + cfg.M * cfg.N // cfg.lanes
    limit = lambda ng: 50 + 4 * ng * per_group_cycles  # noqa: E731
    n_perf = int(opts["perf_jobs"])
    run = {"start": now_cycle(), "perf_cycles": 0, "perf_macs": 0}

    def summary() -> dict:
        perf_cycles = run["perf_cycles"]
        return {
            "design": cfg.design,
            "config": cfg.to_dict(),
            "dut_params": params,
            "jobs": len(tb.job_macs),
            "input_beats": len(tb.in_mon.beats),
            "output_beats": len(tb.out_mon.beats),
            "cycles": run.get("end", now_cycle()) - run["start"],
            "macs": int(sum(tb.job_macs)),
            "perf_jobs": n_perf,
            "perf_cycles": int(perf_cycles),
            "perf_macs": int(run["perf_macs"]),
            "macs_per_cycle": run["perf_macs"] / perf_cycles if perf_cycles else 0.0,
            "peak_macs_per_cycle": cfg.macs_per_beat / cfg.cycles_per_beat,
        }

    try:
        # phase 1: throughput, no stalls
        jobs = [gm.random_tile(cfg, rng, n_groups=max_groups, mins=mins) for _ in range(n_perf)]
        run["start"] = now_cycle()
        for t in jobs:
            await tb.drive(tb.beats_of(t))
        await tb.wait_outputs(limit(max_groups) * n_perf)
        run["perf_cycles"] = tb.out_mon.last_cycle - tb.in_mon.first_cycle + 1
        run["perf_macs"] = sum(tb.job_macs)

        # phase 2: corners, the caller's tiles, random jobs with stalls
        remaining = vectors - n_perf
        plan: list[gm.TileInputs] = []
        for kind in ("zeros", "min", "max", "mixed-extreme", "codes"):
            if len(plan) < remaining:
                plan.append(gm.random_tile(cfg, rng, n_groups=int(rng.integers(1, max_groups + 1)), kind=kind, mins=mins))
        plan.extend(supplied[: max(0, remaining - len(plan))])
        while len(plan) < remaining:
            plan.append(gm.random_tile(cfg, rng, n_groups=int(rng.integers(1, max_groups + 1)), mins=mins))
        if stalls:
            tb.stall_in, tb.stall_out = 0.3, 0.3
        for i, t in enumerate(plan):
            if stalls and i % 7 == 3:  # bursts of heavy back-pressure
                tb.stall_out = 0.8
            elif stalls:
                tb.stall_out = 0.3
            await tb.drive(tb.beats_of(t))
        await tb.wait_outputs(limit(max_groups) * (len(plan) + 1) * (3 if stalls else 1))
        tb.stop()
        run["end"] = now_cycle()
    finally:  # also when the checker ended the test: what ran until then
        stats = summary()
        write_output(opts, stats)
    dut._log.info(
        "%s: %d jobs bit-exact; %d cycles; throughput phase %.1f MACs/cycle", cfg.name, stats["jobs"],
        stats["cycles"], stats["macs_per_cycle"],
    )
