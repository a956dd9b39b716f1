"""`hwsim:<design>` (every design of hwsim.designs): run a compiled artifact's accelerator program with every
quantized linear on the cycle-level array simulator (hwsim.arrays.simulate_linear: integer, bit-exact with
hwsim.golden), the vector unit's commands of a `--vector-unit` program with hwsim.vector's golden models (the
shared executor, compiler/backends/accel/vector.py), and everything else on the host (numpy, compiler.reference's kernels).

The program comes from <artifact>/<design>/ (`lowbit compile MODEL --target lut-tc,...`). Per layer the
backend records cycles (compute and stall), array utilization, and energy (hwsim.cost.energy) in
`self.records`; `summary()` totals them. The integer outputs equal the accelerator integer reference
(compiler/backends/accel/reference.py) bit for bit; tests/runtime/backends checks it on whole models.

Cycles include hwsim.memory's DRAM stalls for the MemoryConfig the program was compiled with; energy is
hwsim.cost.energy.layer_energy_pj at 28 nm (its sources are listed there).
"""

from __future__ import annotations

import numpy as np

from compiler.backends.accel.program import load_program
from compiler.backends.accel.reference import ActInputs, ProgramExecutor
from compiler.errors import LowbitError
from hwsim import golden
from hwsim.arrays import simulate_linear
from hwsim.cost.energy import layer_energy_pj
from runtime.backends.base import Backend


class HwsimExecutor(ProgramExecutor):
    name = "hwsim"

    def __init__(self, graph, program, tensors, memory="program", node: str = "28nm"):
        """memory: "program" (the MemoryConfig the program was compiled for), a MemoryConfig, or None
        (hwsim's defaults). node: technology node of the energy model."""
        super().__init__(graph, program, tensors)
        self.node = node
        if memory == "program":
            from hwsim.memory import MemoryConfig

            memory = MemoryConfig.from_dict(program.memory)
        self.memory = memory

    def layer_inputs(self, plan, act: ActInputs) -> golden.TileInputs:
        """The whole layer's integer inputs (unpadded) for hwsim.arrays.simulate_linear."""
        w = self.layer_weights(plan)
        n = plan.n
        return golden.TileInputs(a=act.a, codes=w.codes[:n], zeros=w.zeros[:n], mant=w.mant[:n], d=w.d[:n], da=act.da, E=w.E, row_scale=act.row_scale,
                                 mm=None if w.mm is None else w.mm[:n], dm=None if w.dm is None else w.dm[:n])

    def simulate(self, plan, t: golden.TileInputs, memory=None):
        return simulate_linear(plan.array, t, memory), "hwsim"

    def run_layer(self, plan, body, act: ActInputs) -> np.ndarray:
        cfg = plan.array
        t = self.layer_inputs(plan, act)
        run, model = self.simulate(plan, t, self.memory)
        energy = layer_energy_pj(cfg, run.activity, self.node, self.memory)
        self.records.append(
            {
                "kind": "layer",
                "node": plan.node,
                "rows": int(t.a.shape[0]),
                "macs": int(t.a.shape[0] * plan.n * plan.k),
                "tiles": int(run.tiles),
                "cycles": int(run.cycles),
                "compute_cycles": int(run.compute_cycles),
                "stall_cycles": int(run.stall_cycles),
                "utilization": float(run.utilization),
                "energy_pj": None if energy is None else float(energy["total"]),
                "energy_parts_pj": None if energy is None else {k: float(v) for k, v in energy.items() if k != "total"},
                "table_builds": int(run.activity.get("table_builds", 0)),  # LUT designs: tables the array builds (per job)
                "mins": bool(plan.mins),  # scale-and-minimum groups: the epilogue's minimum term is in the energy
                "model": model,
            }
        )
        return np.asarray(run.y, dtype=np.int64)


def summarize(records: list[dict]) -> dict:
    """Totals over layer records: cycles, stall cycles, energy (pJ, None when not modelled), MACs,
    MAC-weighted utilization, and per-layer totals (by node name, summed over calls)."""
    layers = [r for r in records if r.get("kind") == "layer"]
    per: dict[str, dict] = {}
    for r in layers:
        p = per.setdefault(r["node"], {"node": r["node"], "calls": 0, "rows": 0, "macs": 0, "tiles": 0, "cycles": 0, "stall_cycles": 0, "energy_pj": 0.0, "_u": 0.0})
        p["calls"] += 1
        for k in ("rows", "macs", "tiles", "cycles", "stall_cycles"):
            p[k] += int(r.get(k, 0))
        p["energy_pj"] = None if r.get("energy_pj") is None or p["energy_pj"] is None else p["energy_pj"] + r["energy_pj"]
        p["_u"] += r.get("utilization", 0.0) * r.get("cycles", 0)
    for p in per.values():
        p["utilization"] = p.pop("_u") / p["cycles"] if p["cycles"] else 0.0
    cyc = sum(p["cycles"] for p in per.values())
    energies = [p["energy_pj"] for p in per.values()]
    return {
        "layers": list(per.values()),
        "calls": len(layers),
        "cycles": cyc,
        "stall_cycles": sum(p["stall_cycles"] for p in per.values()),
        "macs": sum(p["macs"] for p in per.values()),
        "energy_pj": None if not energies or any(e is None for e in energies) else float(sum(energies)),
        "utilization": (sum(p["utilization"] * p["cycles"] for p in per.values()) / cyc) if cyc else 0.0,
        "tables": sum(1 for r in records if r.get("kind") == "table"),
        # LUT designs: tables built by the fused precompute (once per activation tensor) vs by the array itself,
        # whose table unit sits at its input and rebuilds each beat's tables in every job (column tile)
        "table_builds_fused": sum(r.get("builds", 0) for r in records if r.get("kind") == "table"),
        "table_builds_array": sum(r.get("table_builds", 0) for r in layers),
        "model": layers[0]["model"] if layers else "",
    }


class HwsimBackend(Backend):
    """`hwsim:<design>` for any design of hwsim.designs."""

    def __init__(self, model, design: str):
        super().__init__(model)
        self.design = design
        self.name = f"hwsim:{design}"
        if model.artifact is None:
            raise LowbitError(f"backend {self.name} runs compiled artifacts only, and this model has none", f"compile with --target {design}")
        if design in model.artifact.manifest.get("targets", {}):
            model.artifact.check_files(design, hint=f"recompile with --target {design}")  # sizes, before reading the program
        prog, tensors = load_program(model.artifact, design)
        self.program = prog
        try:
            self.executor = HwsimExecutor(model.graph, prog, tensors)
        except (ValueError, TypeError) as e:  # a program written for another hwsim.memory.MemoryConfig
            raise LowbitError(f"the {design} program of {model.artifact.path} does not fit this hwsim ({e})", f"recompile with --target {design}") from None

    def run(self, feeds):
        return self.executor.run(feeds)

    @property
    def records(self) -> list[dict]:
        return self.executor.records

    def reset_stats(self):
        self.executor.records.clear()
        self.executor.vector.counts.clear()
        self.executor.vector.shapes.clear()

    def summary(self) -> dict:
        # --vector-unit programs: the VEC_* commands run, with the attention matmuls' array cycles and the vector
        # unit's (hwsim.cost.vector), beside the linears' cycles above
        vr = self.executor.vector
        vec = {"vector_ops": dict(vr.counts), **vector_summary(vr.shapes, self.program, self.executor.memory, self.executor.node)} if vr.counts else {}
        return {"design": self.design, "array": self.program.array, **summarize(self.executor.records), **vec}


def vector_summary(shapes: list[dict], program, memory, node: str) -> dict:
    """attn_matmul_* and vector_* cycles and energy (pJ) of the VEC_* commands run, per op under vector_by_op;
    the vector unit has the array's epilogue lanes (the design record's default or --array lanes=)."""
    from hwsim.config import ArrayConfig
    from hwsim.cost.vector import VectorUnit, total_costs

    cfg = ArrayConfig.from_dict(program.array)
    t = total_costs(shapes, VectorUnit(cfg.lanes), cfg, memory, node)
    return {"vector_lanes": cfg.lanes, "attn_matmul_cycles": t["attn_matmul"]["cycles"], "attn_matmul_energy_pj": t["attn_matmul"]["energy_pj"],
            "vector_cycles": t["vector"]["cycles"], "vector_energy_pj": t["vector"]["energy_pj"], "vector_by_op": t["ops"]}
