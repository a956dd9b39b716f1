"""`lowbit report`: cost-model report of a model's linears on the accelerator designs, next to CPUs/GPUs and the papers.

build_report(ml, designs, out, ...) writes into `out` (atomically: compiler.fsutil.atomic_dir):
  report.md, report.html (self-contained: images embedded), roofline.png, layer_time.png, area_energy.png,
  pareto.png, report.json (everything), layers.csv, designs.csv, platforms.csv, paper_vs_ours.csv, sweep.csv.

Numbers: cycles from hwsim (the RTL's timing, tested cycle for cycle against the cocotb simulation, plus the
memory model's DRAM stalls), area from our yosys reports (hwsim.cost.area), energy from public per-op
figures times hwsim's activity (hwsim.cost.energy), CPU/GPU rooflines from hwsim.cost.roofline.

    analyze.py   the numbers as plain data, the papers' claims measured, the reasons they differ
    doc.py       the Markdown/HTML document model and the CSV writer
    render.py    writing the folder's files (plots.py draws the PNGs)
    sweep.py     the design-space sweep (also `lowbit sweep`)
"""

from __future__ import annotations

import time
from pathlib import Path

from compiler.errors import LowbitError
from compiler.fsutil import atomic_dir, check_output_dir
from hwsim.cost import area as area_mod
from hwsim.cost.roofline import ModelLinears
from hwsim.designs import DESIGNS
from hwsim.memory import MemoryConfig

__all__ = ["build_report"]

MARKER, KIND = "report.md", "lowbit report folder"


def build_report(ml: ModelLinears, designs: list[str], out: str | Path, prefill: int = 128, memory: MemoryConfig | None = None,
                 node: str = "28nm", platforms: tuple[str, ...] = ("this-cpu", "h100-sxm"), sweep: bool = True, jobs: int | None = None,
                 progress=None) -> Path:
    """Write the report of the linears `ml` (hwsim.cost.roofline.ModelLinears) into the folder `out`, atomically,
    and return its path. progress(stage, done, total)."""
    from hwsim.report import analyze, render
    from hwsim.report import sweep as sweep_mod

    for d in designs:
        if d not in DESIGNS:
            raise LowbitError(f"unknown design '{d}'", f"use a comma-separated list of {', '.join(DESIGNS)}")
    if not designs:
        raise LowbitError("no designs given", f"pass e.g. --designs {','.join(DESIGNS)}")
    out = Path(out)
    check_output_dir(out, MARKER, KIND)
    mem = memory or MemoryConfig()
    t0 = time.time()
    cb = (lambda stage: (lambda d, t: progress(stage, d, t))) if progress else (lambda stage: None)
    data = analyze.analyze(ml, designs, prefill, mem, node, platforms, progress=cb("simulate layers"))
    data["paper"] = analyze.paper_comparison(ml, prefill, mem, node)
    data["area_fit"] = area_mod.fit_component_model()
    data["area_holdout"] = list(area_mod.holdout_errors())
    rows = []
    if sweep:
        rows = sweep_mod.run_sweep(sweep_mod.linears_as_dicts(ml), prefill=prefill, memory=mem, node=node, jobs=jobs, progress=cb("sweep"))
    with atomic_dir(out, MARKER, KIND) as tmp:
        render.write_report(tmp, data, rows, designs, time.time() - t0)
        if progress:
            progress("write", 1, 1)
    return out
