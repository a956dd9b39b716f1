"""FP4 (E2M1 codes: MXFP4 / NVFP4 weights) against INT4 on the same arrays: yosys area and cost-model energy per MAC.

Area: the committed synthesis reports of rtl/reports/synth/fp4/ (`python -m rtl.synth --fp4` makes them), one
array shape (rtl.synth.FP4_SHAPE: M=2, N=16, K=4, 8 lanes, group 32, A8) in W4 (integer codes, zero points) and
E2M1. Energy: hwsim's activity of one layer (16 x 576 x 576, the same array) times hwsim.cost.energy's
per-operation figures at 28 nm: the datapath part (adds, multiplies, muxes, registers) per MAC, and the total with
SRAM and DRAM (E2M1 moves no zero points). The INT4 array of each design is the same-run baseline.

    python benchmarks/fp4_arrays.py [--designs lut-tc,mixpe,mac]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, print_table  # noqa: E402
from hwsim.arrays import simulate_shape  # noqa: E402
from hwsim.config import ArrayConfig  # noqa: E402
from hwsim.cost.energy import layer_energy_pj  # noqa: E402
from rtl.synth import FP4_FORMATS, FP4_SHAPE, fp4_report_path  # noqa: E402

LAYER = (16, 576, 576)  # M rows, N outputs, K features
DATAPATH = ("adds", "mults", "muxes", "registers")


def figures(design: str, fmt: str) -> dict:
    rep = json.loads(fp4_report_path(design, fmt).read_text())
    cfg = ArrayConfig(design=design, **{**FP4_SHAPE, **FP4_FORMATS[fmt]})
    assert ArrayConfig.from_dict(rep["config"]) == cfg, f"{fp4_report_path(design, fmt)} is of another array"
    run = simulate_shape(cfg, *LAYER)
    e = layer_energy_pj(cfg, run.activity)
    return {
        "transistors": rep["transistors"],
        "peak": cfg.macs_per_beat / cfg.cycles_per_beat,
        "t_per_mac": rep["transistors_per_mac_per_cycle"],
        "dp_pj": sum(e[k] for k in DATAPATH) / run.macs,
        "total_pj": e["total"] / run.macs,
        "cycles": run.cycles,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--designs", default="lut-tc,mixpe,mac")
    args = ap.parse_args(argv)
    rows = []
    for d in args.designs.split(","):
        i4, f4 = figures(d, "w4"), figures(d, "e2m1")
        for fmt, f in (("INT4", i4), ("FP4", f4)):
            rows.append([d, fmt, f"{f['transistors']:,}", f"{f['peak']:.1f}", f"{f['t_per_mac']:,.0f}", f"{f['dp_pj']:.4f}",
                         f"{f['total_pj']:.3f}", f"{f['cycles']:,}"])
        rows.append([d, "FP4 / INT4", f"{f4['transistors'] / i4['transistors']:.3f}", f"{f4['peak'] / i4['peak']:.2f}",
                     f"{f4['t_per_mac'] / i4['t_per_mac']:.3f}", f"{f4['dp_pj'] / i4['dp_pj']:.3f}", f"{f4['total_pj'] / i4['total_pj']:.3f}",
                     f"{f4['cycles'] / i4['cycles']:.3f}"])
    print(f"machine: {machine()} (the figures are yosys counts and the cost model's; they do not depend on it)")
    s = FP4_SHAPE
    print_table(
        f"FP4 (E2M1) vs INT4 arrays, M{s['M']} N{s['N']} K{s['K']} g{s['group']} {s['act'].upper()}; energy on a {'x'.join(map(str, LAYER))} layer, 28 nm",
        ["design", "weights", "transistors", "peak MACs/cycle", "transistors per MAC/cycle", "datapath pJ/MAC", "total pJ/MAC", "cycles"],
        rows,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
