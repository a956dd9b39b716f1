"""`rtl:<design>` (every design of hwsim.designs): run a compiled artifact's accelerator program with every
quantized linear streamed through the generated Verilog array in a cocotb simulation (Icarus by default;
`lowbit run --simulator verilator` or LOWBIT_RTL_SIMULATOR=verilator), and everything else on the host.

Each layer's array jobs (row tile x column tile x K split, in program order) are written to an .npz and
driven back to back by runtime/backends/rtl_tb.py (ArrayTB from rtl/tb/array_tb.py, which also checks
every output against hwsim.golden). Whole models are slow this way: one simulator launch per layer call
and Icarus runs ~10^4-10^5 cycles/s, so a whole tiny model takes minutes to hours; `lowbit sim OUT --layer
NAME` (runtime/layer_check.py) runs one layer and compares it with hwsim bit for bit and cycle for cycle.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compiler.backends.accel.program import load_program
from compiler.backends.accel.reference import ActInputs, ProgramExecutor
from compiler.errors import LowbitError
from compiler.knobs import RTL_SIMULATOR
from runtime.backends.base import Backend


def layer_jobs(executor: ProgramExecutor, plan, body, act: ActInputs) -> tuple[dict, list[tuple]]:
    """The layer's array jobs in program order: (arrays for rtl_tb, [(m0, n0, n1, accumulate)])."""
    cfg = plan.array
    M, g = cfg.M, cfg.group
    S = act.a.shape[0]
    rt = -(-S // M)
    a = np.zeros((rt * M, plan.k), np.int64)
    a[:S] = act.a
    da = np.zeros((rt * M, plan.k // g), np.int64)
    da[:S] = act.da
    w = executor.layer_weights(plan)
    cols = {k: [] for k in ("a", "codes", "zeros", "mant", "d", "da")}
    where = []
    cur = {}
    for c in body:
        if c.op == "LOAD_W":
            nt, ks = c.args["tile"]
            cur.update(codes=executor.tile_codes(plan, nt, ks), n=c.args["n"], k=c.args["k"], acc=ks > 0)
        elif c.op == "LOAD_SCALES":
            cur["j"] = c.args["groups"]
        elif c.op == "ROW_LOOP":
            (n0, n1), (k0, k1), (j0, j1) = cur["n"], cur["k"], cur["j"]
            for r in range(rt):
                m0 = r * M
                cols["a"].append(a[m0 : m0 + M, k0:k1])
                cols["codes"].append(cur["codes"])
                cols["zeros"].append(w.zeros[n0:n1, j0:j1])
                cols["mant"].append(w.mant[n0:n1, j0:j1])
                cols["d"].append(w.d[n0:n1, j0:j1])
                cols["da"].append(da[m0 : m0 + M, j0:j1])
                where.append((m0, n0, n1, cur["acc"]))
    if len({x.shape for x in cols["a"]}) > 1:
        raise LowbitError(f"layer {plan.node} has K splits of different sizes", "the RTL runner streams equal jobs; raise --array wsram_kib so one split holds the layer")
    return {k: np.stack(v).astype(np.int64) for k, v in cols.items()}, where


@dataclass
class RtlLayerRun:
    y: np.ndarray  # [J, M, N] per job
    cycles: int
    input_beats: int
    wall_s: float
    build_s: float
    simulator: str


def simulate_jobs(cfg, jobs: dict, simulator: str = "icarus") -> RtlLayerRun:
    """Build `cfg`'s array (cached under build/rtl) and stream `jobs` through it."""
    from rtl.sim import _pythonpath, _quiet_pytest, build

    runner, bd, top, build_s = build(cfg, simulator)
    with tempfile.TemporaryDirectory(prefix="lowbit-rtl-layer-") as td:
        jf, of = Path(td) / "jobs.npz", Path(td) / "out.npz"
        np.savez(jf, **jobs)
        results = Path(td) / "results.xml"
        opts = {"cfg": cfg.to_dict(), "jobs": str(jf), "out": str(of)}
        t0 = time.time()
        with _quiet_pytest():
            with contextlib.suppress(SystemExit):
                runner.test(
                    test_module="runtime.backends.rtl_tb",
                    hdl_toplevel=top,
                    build_dir=bd,
                    test_dir=td,
                    extra_env={"LOWBIT_LAYER_TB": json.dumps(opts), "PYTHONPATH": _pythonpath()},
                    results_xml=str(results),
                    log_file=Path(td) / "sim.log",
                )
        wall = time.time() - t0
        from cocotb_tools.check_results import get_results

        try:
            ntests, nfail = get_results(results)
        except RuntimeError:
            ntests, nfail = 0, 1
        if not of.exists() or ntests == 0 or nfail:
            log = (Path(td) / "sim.log").read_text(errors="replace")[-1500:] if (Path(td) / "sim.log").exists() else ""
            raise RuntimeError(f"RTL simulation of {top} failed:\n{log}")
        out = np.load(of)
        return RtlLayerRun(out["y"].astype(np.int64), int(out["cycles"]), int(out["input_beats"]), wall, build_s, simulator)


class RtlExecutor(ProgramExecutor):
    name = "rtl"

    def __init__(self, graph, program, tensors, simulator: str = "icarus"):
        super().__init__(graph, program, tensors)
        self.simulator = simulator
        self.runs: list[dict] = []

    def run_layer(self, plan, body, act: ActInputs) -> np.ndarray:
        cfg = plan.array
        jobs, where = layer_jobs(self, plan, body, act)
        run = simulate_jobs(cfg, jobs, self.simulator)
        S = act.a.shape[0]
        Y = assemble_y(plan, run.y, where, S)
        macs = S * plan.n * plan.k
        util = macs / (run.cycles * cfg.macs_per_beat / cfg.cycles_per_beat) if run.cycles else 0.0
        self.records.append(
            {"kind": "layer", "node": plan.node, "rows": S, "macs": macs, "tiles": len(where), "cycles": run.cycles, "compute_cycles": run.cycles,
             "stall_cycles": 0, "utilization": util, "energy_pj": None, "wall_s": run.wall_s, "model": f"rtl-{self.simulator}"}
        )
        return Y


def assemble_y(plan, job_y: np.ndarray, where: list[tuple], rows: int) -> np.ndarray:
    """The layer's Y [rows, n] from its jobs' outputs (layer_jobs's order; K splits accumulate)."""
    M = plan.array.M
    Y = np.zeros((-(-rows // M) * M, plan.n_pad), np.int64)
    for yj, (m0, n0, n1, acc) in zip(job_y, where):
        blk = Y[m0 : m0 + M, n0:n1]
        blk[...] = blk + yj if acc else yj
    return Y[:rows, : plan.n]


class RtlBackend(Backend):
    """`rtl:<design>` for any design of hwsim.designs; simulator: icarus or verilator (default: the
    LOWBIT_RTL_SIMULATOR knob, icarus)."""

    def __init__(self, model, design: str, simulator: str | None = None):
        super().__init__(model)
        self.design = design
        self.name = f"rtl:{design}"
        if model.artifact is None:
            raise LowbitError(f"backend {self.name} runs compiled artifacts only, and this model has none", f"compile with --target {design}")
        from rtl.sim import check_simulator

        sim = simulator or RTL_SIMULATOR.get()
        check_simulator(sim)
        prog, tensors = load_program(model.artifact, design)
        self.executor = RtlExecutor(model.graph, prog, tensors, sim)

    def run(self, feeds):
        return self.executor.run(feeds)

    def summary(self) -> dict:
        from runtime.backends.hwsim import summarize

        return {"design": self.design, "array": self.executor.prog.array, **summarize(self.executor.records)}
