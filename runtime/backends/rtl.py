"""`rtl:<design>` (every design of hwsim.designs): run a compiled artifact's accelerator program with every
quantized linear streamed through the generated Verilog array in a cocotb simulation (Icarus by default;
`lowbit run --simulator verilator` or LOWBIT_RTL_SIMULATOR=verilator), and everything else on the host.

Each layer's array jobs (row tile x column tile x K split, in program order) are driven back to back by
the cocotb testbench rtl/tb/layer_tb.py (through rtl.sim.run_testbench; its ArrayTB also checks every
output against hwsim.golden). Whole models are slow this way: one simulator launch per layer call
and Icarus runs ~10^4-10^5 cycles/s, so a whole tiny model takes minutes to hours; `lowbit sim OUT --layer
NAME` (runtime/layer_check.py) runs one layer and compares it with hwsim bit for bit and cycle for cycle.
Scale-and-minimum layers run on the array generated with the minimum term (rtl.gen.common.MinsConfig).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compiler.backends.accel.program import load_program
from compiler.backends.accel.reference import ActInputs, ProgramExecutor
from compiler.errors import LowbitError
from compiler.knobs import RTL_SIMULATOR
from hwsim.golden import TileInputs
from runtime.backends.base import Backend


def layer_jobs(executor: ProgramExecutor, plan, body, act: ActInputs) -> tuple[list[TileInputs], list[tuple]]:
    """The layer's array jobs in program order: (their inputs, [(m0, n0, n1, accumulate)]); jobs of a
    scale-and-minimum layer carry mm and dm (simulated on the array with the minimum term)."""
    cfg = plan.array
    M, g = cfg.M, cfg.group
    S = act.a.shape[0]
    rt = -(-S // M)
    a = np.zeros((rt * M, plan.k), np.int64)
    a[:S] = act.a
    da = np.zeros((rt * M, plan.k // g), np.int64)
    da[:S] = act.da
    w = executor.layer_weights(plan)
    cols = {k: [] for k in ("a", "codes", "zeros", "mant", "d", "da") + (("mm", "dm") if w.mm is not None else ())}
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
                if w.mm is not None:
                    cols["mm"].append(w.mm[n0:n1, j0:j1])
                    cols["dm"].append(w.dm[n0:n1, j0:j1])
                where.append((m0, n0, n1, cur["acc"]))
    if len({x.shape for x in cols["a"]}) > 1:
        raise LowbitError(f"layer {plan.node} has K splits of different sizes", "the RTL runner streams equal jobs; raise --array wsram_kib so one split holds the layer")
    jobs = [TileInputs(**{k: np.asarray(v[i], np.int64) for k, v in cols.items()}) for i in range(len(where))]
    return jobs, where


@dataclass
class RtlLayerRun:
    y: np.ndarray  # [J, M, N] per job
    cycles: int
    input_beats: int
    wall_s: float
    build_s: float
    simulator: str


def simulate_jobs(cfg, jobs: list[TileInputs], simulator: str = "icarus") -> RtlLayerRun:
    """Build `cfg`'s array (cached under build/rtl) and stream `jobs` through it (rtl/tb/layer_tb.py);
    jobs with minimums run on the array with the minimum term (rtl.gen.common.MinsConfig)."""
    from rtl.gen.common import with_mins
    from rtl.sim import run_testbench

    cfg = with_mins(cfg, bool(jobs) and jobs[0].has_mins)
    tb = run_testbench(cfg, "rtl.tb.layer_tb", {}, simulator, tiles=jobs)
    if not tb.passed or not tb.output:
        raise RuntimeError(f"RTL simulation of {tb.toplevel} failed ({tb.message}); see {tb.work_dir / 'sim.log'}:\n{tb.log_tail}")
    out = tb.output
    y = np.asarray(out["y"], np.int64).reshape(len(jobs), cfg.M, cfg.N)
    return RtlLayerRun(y, int(out["cycles"]), int(out["input_beats"]), tb.wall_s, tb.build_s, simulator)


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
        if design in model.artifact.manifest.get("targets", {}):
            model.artifact.check_files(design, hint=f"recompile with --target {design}")  # sizes, before reading the program
        prog, tensors = load_program(model.artifact, design)
        self.executor = RtlExecutor(model.graph, prog, tensors, sim)

    def run(self, feeds):
        return self.executor.run(feeds)

    def summary(self) -> dict:
        from runtime.backends.hwsim import summarize

        return {"design": self.design, "array": self.executor.prog.array, **summarize(self.executor.records)}
