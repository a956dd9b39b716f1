"""Design-space sweep: array shape x weight bits x activation mode x group size, per design, evaluated on a
model's quantized linears (decode at M=1 and prefill at M=`prefill`) with hwsim's timing and activity,
the energy model and the area model.

The points run as jobs of hwsim.report.engine (local processes or Ray tasks, results cached by their inputs).
Area: configurations with a committed yosys report use it; the rest use the per-component model fitted on
the reports (hwsim.cost.area.fit_component_model, whose fit error the report prints). yosys is never run here
(`lowbit sweep --synth-pareto N` synthesizes Pareto points: runtime/sweep.py).

    validate_grid(designs, shapes, bits, acts, groups)   the grid from comma-separated option values
    point_jobs(linears, grid, ...) -> [Job]              one engine job per configuration
    run_sweep(linears, grid, ..., engine, cache) -> rows  every configuration, Pareto-marked
    pareto_points(rows, n), array_params(row)             the points to synthesize / simulate, as array parameters
    synth_rows(reports, node)                             synth.csv: yosys area beside the component model's
    write_sweep(out, rows, title, tables, files)          sweep.csv, area_fit.json, pareto.png (+ more), atomically
    build_sweep(out, ml, grid, ...) -> (rows, summary)    all three for `lowbit sweep`
"""

from __future__ import annotations

import itertools
import json
import os
import dataclasses
from dataclasses import asdict
from pathlib import Path

from compiler.errors import LowbitError
from compiler.fsutil import atomic_dir, check_output_dir
from compiler.groups import layer_group
from hwsim.config import ArrayConfig
from hwsim.designs import DESIGNS
from hwsim.memory import MemoryConfig
from hwsim.report.doc import write_csv
from hwsim.report.engine import Job, LocalEngine, lowbit_version, source_hash

MARKER, KIND = "sweep.csv", "sweep folder"  # a folder holding sweep.csv is one `lowbit sweep` may replace

# the grid's axes other than the designs (all registered designs by default)
DEFAULT_AXES = {
    "shape": ["2x64", "4x64", "2x128", "8x32"],  # M x N of the array (K = 4 per beat)
    "bits": [2, 4],
    "act": ["a8", "a16"],
    "group": [64, 128],
}

FIELDS = [
    "design", "M", "N", "K", "bits", "weight_format", "act", "group", "area_mm2", "area_source", "peak_macs_per_cycle",
    "tops_per_mm2", "prefill_s", "decode_s", "decode_tokens_per_s", "prefill_energy_uj", "decode_energy_uj",
    "decode_array_energy_uj", "pj_per_mac_prefill", "pareto",
]


def default_grid() -> dict:
    return {"design": list(DESIGNS), **DEFAULT_AXES}


MAX_POINTS = 100_000  # configurations of one sweep (each takes ~10 ms per model)


def validate_grid(designs: list[str], shapes: str, bits: str, acts: str, groups: str) -> dict:
    """The grid of `lowbit sweep` from its options' comma-separated values; a malformed value is a LowbitError."""

    def ints(name, text, also=()):
        try:
            return [t.strip().lower() if t.strip().lower() in also else int(t) for t in text.split(",") if t.strip()]
        except ValueError:
            what = "integers" + "".join(f" and {a}" for a in also)
            raise LowbitError(f"--{name} '{text}' is not a comma-separated list of {what}", f"write e.g. --{name} 2,4" + "".join(f",{a}" for a in also)) from None

    grid = {"design": list(designs), "bits": ints("bits", bits, (FP4,)), "group": ints("groups", groups),
            "act": [a.strip() for a in acts.split(",") if a.strip()], "shape": [s.strip() for s in shapes.split(",") if s.strip()]}
    for a in grid["act"]:
        if a not in ("a8", "a16"):
            raise LowbitError(f"--acts has unknown mode '{a}'", "use a8 and/or a16")
    for s in grid["shape"]:
        p = s.lower().split("x")
        if len(p) != 2 or not all(x.isdigit() and int(x) > 0 for x in p):
            raise LowbitError(f"--shapes item '{s}' is not MxN", "write e.g. --shapes 2x64,4x64")
    points = grid_configs(grid)
    if len(points) > MAX_POINTS:
        raise LowbitError(f"the sweep grid has {len(points)} configurations, more than the limit of {MAX_POINTS}",
                          "give fewer --designs, --shapes, --bits, --acts or --groups")
    first_error = None
    for p in points:  # a grid where no point is an array is a user error, not an empty sweep
        try:
            ArrayConfig(**p)
            break
        except ValueError as e:
            first_error = first_error or f"{p['design']} {p['M']}x{p['N']} w{p['bits']} {p['act']} g{p['group']}: {e}"
    else:
        raise LowbitError(f"no configuration of the sweep grid is a valid array ({first_error or 'the grid is empty'})",
                          "change --shapes, --bits or --groups (weights of 1-4 bits, groups a multiple of K=4)")
    return grid


FP4 = "fp4"  # in --bits: E2M1 weights (ArrayConfig weight_format "e2m1": mxfp4 / nvfp4 codes)


def grid_configs(grid: dict) -> list[dict]:
    out = []
    for d, shape, b, act, g in itertools.product(grid["design"], grid["shape"], grid["bits"], grid["act"], grid["group"]):
        M, N = (int(x) for x in str(shape).lower().split("x"))
        fmt = {"weight_format": "e2m1"} if str(b).lower() == FP4 else {}  # (integer points keep the keys they always had)
        out.append(dict(design=d, M=M, N=N, K=4, bits=4 if fmt else int(b), act=act, group=int(g), lanes=8 if N % 8 == 0 else 1, **fmt))
    return out


def evaluate(point: dict, linears: list[dict], prefill: int, memory: dict, node: str) -> dict:
    """One configuration on a model's linears: area, time and energy (a plain function: runs in a worker)."""
    from hwsim.arrays import simulate_shape
    from hwsim.cost.area import array_area, memory_area
    from hwsim.cost.energy import layer_energy_pj

    mem = MemoryConfig.from_dict(memory)
    cfg = ArrayConfig(**point)
    area = array_area(cfg, node)
    mem_area = memory_area(mem, node)
    res = {"prefill_s": 0.0, "decode_s": 0.0, "prefill_energy_uj": 0.0, "decode_energy_uj": 0.0, "decode_array_energy_uj": 0.0}
    macs_prefill = 0
    for lin in linears:
        # a layer whose K the point's group does not divide runs at the group the quantizer would give it
        g = layer_group(lin["K"], cfg.group)
        if g % cfg.K:
            return {**point, "error": f"K={lin['K']}: its group {g} is not a multiple of the array's K={cfg.K}"}
        lcfg = cfg if g == cfg.group else dataclasses.replace(cfg, group=g)
        for phase, M in (("prefill", prefill), ("decode", 1)):
            r = simulate_shape(lcfg, M, lin["N"], lin["K"], mem)
            e = layer_energy_pj(lcfg, r.activity, node, mem)
            res[f"{phase}_s"] += lin["count"] * r.cycles / (mem.clock_ghz * 1e9)
            res[f"{phase}_energy_uj"] += lin["count"] * e["total"] / 1e6
            if phase == "decode":
                res["decode_array_energy_uj"] += lin["count"] * (e["adds"] + e["mults"] + e["muxes"] + e["registers"]) / 1e6
            else:
                macs_prefill += lin["count"] * r.macs
    peak = cfg.macs_per_beat / cfg.cycles_per_beat
    amm2 = (area["total_um2"]) / 1e6
    return {
        **point,
        "area_mm2": amm2,
        "area_source": area["source"],
        "memory_area_mm2": mem_area["total_um2"] / 1e6,
        "peak_macs_per_cycle": peak,
        "tops_per_mm2": 2 * peak * mem.clock_ghz * 1e9 / 1e12 / amm2,
        "decode_tokens_per_s": 1.0 / res["decode_s"],
        "pj_per_mac_prefill": res["prefill_energy_uj"] * 1e6 / macs_prefill,
        **res,
    }


def pareto_front(rows: list[dict], x: str, y: str) -> list[int]:
    """Indices of rows not dominated in (min x, min y)."""
    idx = sorted(range(len(rows)), key=lambda i: (rows[i][x], rows[i][y]))
    front, best = [], float("inf")
    for i in idx:
        if rows[i][y] < best:
            front.append(i)
            best = rows[i][y]
    return front


def point_jobs(linears: list[dict], grid: dict | None = None, prefill: int = 128, memory: MemoryConfig | None = None,
               node: str = "28nm") -> list[Job]:
    """One engine job per configuration of `grid` (hwsim.report.engine): its inputs, and the hwsim source and
    committed synthesis reports its numbers come from, make its cache key."""
    grid = {**default_grid(), **(grid or {})}
    mem = (memory or MemoryConfig()).to_dict()
    versions = {"lowbit": lowbit_version(), "source": source_hash(*POINT_SOURCES)}
    return [Job("hwsim", f"{p['design']} {p['M']}x{p['N']} {'fp4' if p.get('weight_format') == 'e2m1' else 'w' + str(p['bits'])}{p['act']} g{p['group']}", _safe,
                dict(p=p, linears=linears, prefill=prefill, mem=mem, node=node), versions) for p in grid_configs(grid)]


POINT_SOURCES = ("hwsim", "compiler/groups.py", "rtl/reports/synth")  # what a point's numbers are computed from


def run_sweep(linears: list[dict], grid: dict | None = None, prefill: int = 128, memory: MemoryConfig | None = None,
              node: str = "28nm", jobs: int | None = None, progress=None, engine=None, cache=None, on_status=None) -> list[dict]:
    """Evaluate every configuration of `grid` on `linears` ([{N, K, count}]) on `engine` (default: `jobs` local
    processes), each result cached in `cache` (a JobCache; None: no cache). progress(done, total) and
    on_status(engine.Status) are called as results arrive. Returns rows (dicts), Pareto-marked on (array area,
    prefill time); a configuration that is no array has an "error"; a job that failed also has "failed": True."""
    pj = point_jobs(linears, grid, prefill, memory, node)
    if engine is None:
        engine = LocalEngine(jobs or max(1, min(len(pj), os.cpu_count() or 1)))

    def status(st):
        if progress:
            progress(st.done, st.total)
        if on_status:
            on_status(st)

    outcomes = engine.run(pj, cache, on_status=status)
    rows = [o.result if o.result is not None else {**o.job.kwargs["p"], "error": o.error, "failed": True} for o in outcomes]
    good = [r for r in rows if "error" not in r]
    bad = [r for r in rows if "error" in r]
    for r in rows:
        r.setdefault("weight_format", "int")
    good.sort(key=lambda r: (r["design"], r["M"], r["N"], r["bits"], r["weight_format"], r["act"], r["group"]))
    for i in pareto_front(good, "area_mm2", "prefill_s"):
        good[i]["pareto"] = True
    for r in good:
        r.setdefault("pareto", False)
    return good + bad


def _safe(p, linears, prefill, mem, node):
    try:
        return evaluate(p, linears, prefill, mem, node)
    except ValueError as e:  # an invalid configuration (ArrayConfig's checks)
        return {**p, "error": str(e)}


def pareto_points(rows: list[dict], n: int) -> list[dict]:
    """The first n points of the Pareto front, smallest array first (the cheapest to synthesize and simulate)."""
    front = sorted((r for r in rows if r.get("pareto")), key=lambda r: (r["area_mm2"], r["prefill_s"]))
    return front[:n]


def array_params(row: dict) -> dict:
    """A sweep point's ArrayConfig fields, as rtl.sim.make_config takes them."""
    fmt = {"weight_format": "e2m1"} if row.get("weight_format") == "e2m1" else {}  # (integer arrays: the fields they always had)
    return {**{k: row[k] for k in ("M", "N", "K", "bits", "act", "group", "lanes")}, **fmt}


def linears_as_dicts(ml) -> list[dict]:
    return [asdict(l) for l in ml.linears]


SYNTH_FIELDS = ["design", "M", "N", "K", "bits", "weight_format", "act", "group", "module", "cell_count", "ff_bits", "transistors",
                "yosys_um2", "model_um2", "model_rel_err"]


def synth_rows(reports: list[dict], node: str = "28nm") -> list[dict]:
    """synth.csv: each yosys report's cells and area at `node`, beside the component model's area for the same array."""
    from hwsim.cost.area import cells_area_um2, model_area_um2

    out = []
    for r in reports:
        cfg = ArrayConfig.from_dict(r["config"])
        syn = cells_area_um2(r["cells"], node)["total_um2"]
        mod = model_area_um2(cfg, node)
        out.append({"design": cfg.design, "M": cfg.M, "N": cfg.N, "K": cfg.K, "bits": cfg.bits, "weight_format": cfg.weight_format, "act": cfg.act, "group": cfg.group,
                    "module": r["module"], "cell_count": r["cell_count"], "ff_bits": r["ff_bits"], "transistors": r["transistors"],
                    "yosys_um2": syn, "model_um2": mod, "model_rel_err": mod / syn - 1})
    return out


def summary(rows: list[dict], fit: dict) -> dict:
    """What `lowbit sweep` prints: the valid and invalid configurations, the Pareto front, how many areas
    came from yosys reports, and the area fit (with its held-out errors)."""
    good = [r for r in rows if "error" not in r]
    return {"configurations": len(good), "invalid": sum(1 for r in rows if "error" in r and not r.get("failed")),
            "failed": sum(1 for r in rows if r.get("failed")), "front": [r for r in good if r.get("pareto")],
            "from_yosys": sum(1 for r in good if str(r.get("area_source", "")).startswith("yosys")), "fit": fit}


def write_sweep(out: str | Path, rows: list[dict], title: str, tables: dict | None = None, files: dict | None = None) -> dict:
    """Write sweep.csv, area_fit.json (the component model's fit and held-out errors) and, when any
    configuration is valid, pareto.png into the folder `out`, replacing it atomically; also each of `tables`
    ({file name: (rows, leading fields)}, CSV) and `files` ({relative path: text}). Returns summary()."""
    from hwsim.cost.area import fit_component_model, holdout_errors
    from hwsim.report import plots

    fit = {**fit_component_model(), "holdout": list(holdout_errors())}
    with atomic_dir(out, MARKER, KIND) as tmp:
        write_csv(tmp / "sweep.csv", rows, FIELDS)
        (tmp / "area_fit.json").write_text(json.dumps(fit, indent=1, default=str))
        if any("error" not in r for r in rows):
            plots.pareto(tmp / "pareto.png", rows, title=title)
        for name, (trows, tfields) in (tables or {}).items():
            write_csv(tmp / name, trows, tfields)
        for rel, text in (files or {}).items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_text(text)
    return summary(rows, fit)


def build_sweep(out: str | Path, ml, grid: dict | None = None, prefill: int = 128, memory: MemoryConfig | None = None,
                node: str = "28nm", jobs: int | None = None, progress=None, engine=None, cache=None, on_status=None) -> tuple[list[dict], dict]:
    """Refuse a foreign `out` first, run the grid on the linears `ml` (hwsim.cost.roofline.ModelLinears), write
    the folder. progress(done, total); engine, cache, on_status: run_sweep's."""
    check_output_dir(Path(out), MARKER, KIND)
    rows = run_sweep(linears_as_dicts(ml), grid, prefill=prefill, memory=memory, node=node, jobs=jobs, progress=progress,
                     engine=engine, cache=cache, on_status=on_status)
    return rows, write_sweep(out, rows, title=sweep_title(ml, prefill))


def sweep_title(ml, prefill: int) -> str:
    return f"{ml.model} linears: array area vs prefill time (M={prefill})"
