"""One compiled layer on the RTL, checked against hwsim (`lowbit sim OUT --layer NAME`): the layer's real
activations are captured on the accelerator integer reference, its array jobs streamed through the generated
Verilog, and the outputs and cycles compared with hwsim's."""

from __future__ import annotations

import numpy as np

from compiler.backends.accel.program import load_program
from compiler.backends.accel.reference import ProgramExecutor
from compiler.errors import LowbitError
from hwsim.designs import DESIGNS
from runtime.backends.rtl import assemble_y, layer_jobs, simulate_jobs
from runtime.inputs import sequence_feeds


class _Capture(ProgramExecutor):
    """Runs the program on the integer reference and keeps the named layer's activations."""

    def __init__(self, graph, program, tensors, layer):
        super().__init__(graph, program, tensors)
        self.layer = layer
        self.act = None
        self.body = None

    def run_layer(self, plan, body, act):
        if plan.node == self.layer:
            self.act, self.body = act, body
        return super().run_layer(plan, body, act)


def check_layer(model, layer: str, design: str | None = None, simulator: str = "icarus", ids=None, rows: int | None = None) -> dict:
    """Run compiled layer `layer` of `model` (a runtime CompiledModel from an artifact) on the RTL with the
    activations it sees on a real input, and on hwsim; returns agreement and cycles of both."""
    from runtime.backends.hwsim import HwsimExecutor
    from rtl.sim import check_simulator

    art = model.artifact
    accel = [t for t in art.manifest.get("targets", {}) if t in DESIGNS]
    if design is None:
        if not accel:
            raise LowbitError(f"artifact {art.path} has no accelerator target", f"recompile with --target {' or '.join(DESIGNS)}")
        design = accel[0]
    prog, tensors = load_program(art, design)
    if layer not in prog.layers:
        names = list(prog.layers)
        raise LowbitError(f"layer '{layer}' is not a compiled accelerator layer of {art.path}", f"use one of {', '.join(names[:8])}{' ...' if len(names) > 8 else ''}")
    check_simulator(simulator)
    cap = _Capture(model.graph, prog, tensors, layer)
    cap.run(sequence_feeds(model, ids, rows))
    plan = prog.layers[layer]
    jobs, where = layer_jobs(cap, plan, cap.body, cap.act)
    rtl = simulate_jobs(plan.array, jobs, simulator)
    S = cap.act.a.shape[0]
    Y = assemble_y(plan, rtl.y, where, S)
    hx = HwsimExecutor(model.graph, prog, tensors)
    hrun, hmodel = hx.simulate(plan, hx.layer_inputs(plan, cap.act), hx.memory)
    hy = np.asarray(hrun.y, np.int64)
    return {
        "design": design,
        "layer": layer,
        "simulator": simulator,
        "array": plan.cfg,
        "rows": int(S),
        "n": plan.n,
        "k": plan.k,
        "jobs": len(where),
        "bit_exact": bool(np.array_equal(Y, hy)),
        "mismatches": int(np.count_nonzero(Y != hy)),
        "rtl_cycles": rtl.cycles,
        # the testbench offers every beat at once (no DRAM): compare with hwsim's stall-free stream time
        "hwsim_cycles": int(hrun.compute_cycles),
        "hwsim_cycles_with_dram": int(hrun.cycles),
        "hwsim_model": hmodel,
        "cycles_equal": rtl.cycles == int(hrun.compute_cycles),
        "rtl_wall_s": rtl.wall_s,
        "build_s": rtl.build_s,
    }
