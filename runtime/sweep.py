"""`lowbit sweep` on one engine: the hwsim grid, then yosys syntheses and RTL regressions of its Pareto points
(and of an artifact's compiled layers), every job cached, one output folder written at the end.

    run(out, ml, grid, engine, cache, ..., synth_pareto, sim_pareto, vectors, layers, on_status) -> SweepRun
Output folder: sweep.csv, area_fit.json, pareto.png (hwsim.report.sweep), and when asked for synth.csv with
synth/<module>.json (the yosys reports), sim.csv (vector regressions), layers.csv (compiled-layer runs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from compiler.fsutil import check_output_dir
from hwsim.report import sweep as hsweep
from rtl.jobs import synth_job
from runtime.regress import LAYER_FIELDS, VECTOR_FIELDS, layer_job, vectors_job


@dataclass
class SweepRun:
    rows: list[dict]
    summary: dict
    counts: dict = field(default_factory=dict)  # {kind: {"jobs", "cached", "failed"}}
    failures: list[tuple[str, str]] = field(default_factory=list)  # (job label, error)
    regressions_failed: int = 0  # RTL runs that ran and disagreed (a result, not a failed job)


def run(out, ml, grid, engine, cache=None, *, prefill=128, memory=None, node="28nm", synth_pareto=0, sim_pareto=0,
        vectors=200, simulator="icarus", layers=(), on_status=None) -> SweepRun:
    """on_status(stage, engine.Status) as jobs finish; stage "hwsim points", then "synthesis and RTL"."""
    check_output_dir(Path(out), hsweep.MARKER, hsweep.KIND)
    counts: dict = {}
    failures: list = []

    def count(kind, outcomes):
        c = counts.setdefault(kind, {"jobs": 0, "cached": 0, "failed": 0})
        for o in outcomes:
            c["jobs"] += 1
            c["cached"] += o.cached
            c["failed"] += o.result is None
            if o.result is None:
                failures.append((o.job.label, o.error))

    hw_status = []

    def points_status(st):
        hw_status[:] = [st]
        if on_status:
            on_status("hwsim points", st)

    rows = hsweep.run_sweep(hsweep.linears_as_dicts(ml), grid, prefill=prefill, memory=memory, node=node, engine=engine,
                            cache=cache, on_status=points_status)
    st = hw_status[-1] if hw_status else None
    counts["hwsim"] = {"jobs": len(rows), "cached": st.cached if st else 0, "failed": sum(1 for r in rows if r.get("failed"))}
    failures += [(f"hwsim {r['design']} {r['M']}x{r['N']} w{r['bits']}{r['act']} g{r['group']}", r["error"]) for r in rows if r.get("failed")]

    jobs = [synth_job(p["design"], hsweep.array_params(p)) for p in hsweep.pareto_points(rows, synth_pareto)]
    jobs += [vectors_job(p["design"], hsweep.array_params(p), simulator, vectors) for p in hsweep.pareto_points(rows, sim_pareto)]
    jobs += [layer_job(art, layer, None, simulator) for art, layer in layers]
    tables, files, bad_runs = {}, {}, 0
    if jobs:
        outcomes = engine.run(jobs, cache, on_status=(lambda s: on_status("synthesis and RTL", s)) if on_status else None, batch=1)
        by_kind: dict = {}
        for o in outcomes:
            by_kind.setdefault(o.job.kind, []).append(o)
        for kind, outs in by_kind.items():
            count(kind, outs)
        reports = [o.result for o in by_kind.get("synth", []) if o.result is not None]
        if reports:
            tables["synth.csv"] = (hsweep.synth_rows(reports, node), hsweep.SYNTH_FIELDS)
            files.update({f"synth/{r['module']}.json": json.dumps(r, indent=1, sort_keys=True) for r in reports})
        sims = [o.result for o in by_kind.get("sim", []) if o.result is not None]
        if sims:
            tables["sim.csv"] = (sims, VECTOR_FIELDS)
        lays = [o.result for o in by_kind.get("layer", []) if o.result is not None]
        if lays:
            tables["layers.csv"] = (lays, LAYER_FIELDS)
        bad_runs = sum(1 for r in sims if not r["passed"]) + sum(1 for r in lays if not (r["bit_exact"] and r["cycles_equal"]))
    summary = hsweep.write_sweep(out, rows, hsweep.sweep_title(ml, prefill), tables=tables, files=files)
    return SweepRun(rows, summary, counts, failures, bad_runs)


def parse_layers(spec: str | None) -> list[tuple[str, str]]:
    """--sim-layers ART:LAYER[,LAYER...] -> [(ART, LAYER)]; ART alone: every compiled accelerator layer of ART."""
    from compiler.errors import LowbitError

    if not spec:
        return []
    art, _, names = spec.partition(":")
    mf = Path(art) / "manifest.json"
    if not mf.is_file():
        raise LowbitError(f"--sim-layers: {art} is not a lowbit artifact (no manifest.json)", "give the -o folder of `lowbit compile --target lut-tc` (or mac, mixpe)")
    layers = [n.strip() for n in names.split(",") if n.strip()]
    if not layers:
        from compiler.backends.accel.program import load_program
        from hwsim.designs import DESIGNS
        import runtime

        m = runtime.load(art)
        accel = [t for t in m.artifact.manifest.get("targets", {}) if t in DESIGNS]
        if not accel:
            raise LowbitError(f"--sim-layers: artifact {art} has no accelerator target", f"recompile it with --target {' or '.join(DESIGNS)}")
        prog, _ = load_program(m.artifact, accel[0])
        layers = list(prog.layers)
    return [(art, n) for n in layers]
