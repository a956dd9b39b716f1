"""Design-space sweep: array shape x weight bits x activation mode x group size, per design, evaluated on a
model's quantized linears (decode at M=1 and prefill at M=`prefill`) with hwsim's timing and activity,
the energy model and the area model. Runs in parallel local processes (ProcessPoolExecutor).

Area: configurations with a committed yosys report use it; the rest use the per-component model fitted on
the reports (hwsim.cost.area.fit_component_model, whose fit error the report prints). yosys is never run.
"""

from __future__ import annotations

import csv
import itertools
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict

from hwsim import golden as gm
from hwsim.config import ArrayConfig
from hwsim.memory import MemoryConfig

DEFAULT_GRID = {
    "design": ["lut-tc", "mixpe", "mac"],
    "shape": ["2x64", "4x64", "2x128", "8x32"],  # M x N of the array (K = 4 per beat)
    "bits": [2, 4],
    "act": ["a8", "a16"],
    "group": [64, 128],
}

FIELDS = [
    "design", "M", "N", "K", "bits", "act", "group", "area_mm2", "area_source", "peak_macs_per_cycle",
    "tops_per_mm2", "prefill_s", "decode_s", "decode_tokens_per_s", "prefill_energy_uj", "decode_energy_uj",
    "decode_array_energy_uj", "pj_per_mac_prefill", "pareto",
]


def grid_configs(grid: dict) -> list[dict]:
    out = []
    for d, shape, b, act, g in itertools.product(grid["design"], grid["shape"], grid["bits"], grid["act"], grid["group"]):
        M, N = (int(x) for x in str(shape).lower().split("x"))
        out.append(dict(design=d, M=M, N=N, K=4, bits=int(b), act=act, group=int(g), lanes=8 if N % 8 == 0 else 1))
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
        if lin["K"] % cfg.group:
            return {**point, "error": f"K={lin['K']} not a multiple of group {cfg.group}"}
        for phase, M in (("prefill", prefill), ("decode", 1)):
            r = simulate_shape(cfg, M, lin["N"], lin["K"], mem)
            e = layer_energy_pj(cfg, r.activity, node, mem)
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


def run_sweep(linears: list[dict], grid: dict | None = None, prefill: int = 128, memory: MemoryConfig | None = None,
              node: str = "28nm", jobs: int | None = None, progress=None) -> list[dict]:
    """Evaluate every configuration of `grid` on `linears` ([{N, K, count}]) in parallel processes.
    progress(done, total) is called as results arrive. Returns rows (dicts), Pareto-marked on
    (array area, prefill time)."""
    grid = {**DEFAULT_GRID, **(grid or {})}
    points = grid_configs(grid)
    mem = (memory or MemoryConfig()).to_dict()
    jobs = jobs or max(1, min(len(points), (os.cpu_count() or 1)))
    rows: list[dict] = []
    bad: list[dict] = []
    if jobs == 1:
        for i, p in enumerate(points):
            rows.append(_safe(p, linears, prefill, mem, node))
            if progress:
                progress(i + 1, len(points))
    else:
        with ProcessPoolExecutor(max_workers=jobs) as ex:
            futs = [ex.submit(_safe, p, linears, prefill, mem, node) for p in points]
            for i, f in enumerate(as_completed(futs)):
                rows.append(f.result())
                if progress:
                    progress(i + 1, len(points))
    good = [r for r in rows if "error" not in r]
    bad = [r for r in rows if "error" in r]
    good.sort(key=lambda r: (r["design"], r["M"], r["N"], r["bits"], r["act"], r["group"]))
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


def write_csv(rows: list[dict], path) -> None:
    keys = list(FIELDS)
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in keys})


def linears_as_dicts(ml) -> list[dict]:
    return [asdict(l) for l in ml.linears]
