"""Simulated cycles per second of each generated array on Icarus (baseline) and Verilator.

Each run is a full cocotb regression through rtl.sim.run_sim (default shapes: the paper's M=2, N=64, K=4
tile; lut-tc W2, mixpe/mac W4; A8; group 128), checked bit-exact; the figure is simulated clock cycles
divided by the wall time of the simulation (builds excluded, testbench Python included: that is what a
user waits for). Prints a table (machine, figure, baseline, ratio) and saves JSON next to the build
folder (build/benchmarks/rtl_sim.json).

    python benchmarks/rtl_sim.py [--vectors-icarus 30] [--vectors-verilator 300] [--designs lut-tc,mixpe,mac]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine  # noqa: E402
from compiler.errors import LowbitError  # noqa: E402
from hwsim.designs import DESIGNS  # noqa: E402
from rtl.sim import build_root, check_simulator, make_config, run_sim, tile_slots  # noqa: E402
from runtime.stimulus import quantizer_tiles  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--designs", default=",".join(DESIGNS))
    ap.add_argument("--vectors-icarus", type=int, default=30)
    ap.add_argument("--vectors-verilator", type=int, default=300)
    ap.add_argument("--out", default=str(build_root().parent / "benchmarks" / "rtl_sim.json"))
    args = ap.parse_args(argv)

    sims = []
    for sim in ("icarus", "verilator"):
        try:
            check_simulator(sim)
            sims.append(sim)
        except LowbitError as e:
            print(f"skipping {sim}: {e}")
    rows = []
    for design in args.designs.split(","):
        res = {}
        for sim in sims:
            n = args.vectors_icarus if sim == "icarus" else args.vectors_verilator
            cfg, run = make_config(design, {})
            tiles = quantizer_tiles(cfg, np.random.default_rng(1), tile_slots(n), run["max_groups"])  # real tiles in the job mix
            r = run_sim(design, {}, simulator=sim, vectors=n, seed=1, tiles=tiles)
            if not r.passed:
                print(f"FAILED: {r.summary()}")
                return 1
            res[sim] = r
        rows.append((design, res))

    print(f"machine: {machine()}")
    print("figure: simulated cycles per second (cocotb testbench, bit-exact checking on, build excluded)")
    print("baseline: Icarus Verilog; ratio = Verilator / Icarus\n")
    hdr = f"{'design':8} {'config':28} {'icarus cyc/s':>13} {'verilator cyc/s':>16} {'ratio':>7} {'MACs/cycle':>11} {'sim cycles (i/v)':>18}"
    print(hdr)
    print("-" * len(hdr))
    out = {"machine": machine(), "rows": []}
    for design, res in rows:
        ri, rv = res.get("icarus"), res.get("verilator")
        ci = ri.cycles_per_second if ri else float("nan")
        cv = rv.cycles_per_second if rv else float("nan")
        any_r = ri or rv
        cfg = any_r.config
        name = f"w{cfg['bits']}{cfg['act']}g{cfg['group']} {cfg['M']}x{cfg['N']}x{cfg['K']}"
        ratio = cv / ci if ri and rv else float("nan")
        print(
            f"{design:8} {name:28} {ci:13.0f} {cv:16.0f} {ratio:7.1f} {any_r.macs_per_cycle:11.1f} "
            f"{(ri.cycles if ri else 0):>8}/{(rv.cycles if rv else 0):<9}"
        )
        out["rows"].append({
            "design": design, "config": cfg,
            "icarus": ri.to_dict() if ri else None, "verilator": rv.to_dict() if rv else None,
            "icarus_cycles_per_s": ci, "verilator_cycles_per_s": cv, "ratio": ratio,
        })
    p = Path(args.out)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(out, indent=1, default=str))
    print(f"\nsaved {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
