"""hwsim speed on whole llama-1b layers: simulate_linear (values + cycles + activity) vs the per-tile golden
loop (hwsim.golden.tile_y on every M x N job, the bit-level definition), measured in the same run.

Random integer inputs in the array formats (A8, group 128), layer shapes of Llama-3.2-1B
(q/o 2048x2048, gate/up 8192x2048, down 2048x8192), decode M=1 and prefill M=128. The golden loop is timed
on a sample of jobs and scaled to the layer's job count (running all of them takes hours). Prints a table
(machine, figure, baseline, ratio) and saves JSON to build/benchmarks/hwsim_layer.json.

    python benchmarks/hwsim_layer.py [--designs D1,D2 (all registered designs)] [--sample-jobs 16]

Each design runs at its `lowbit sim` weight width (the record's sim_defaults: W2 for lut-tc, W4 for mixpe and mac).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.common import machine, print_table, timeit  # noqa: E402
from hwsim import golden as gm  # noqa: E402
from hwsim.arrays import simulate_linear  # noqa: E402
from hwsim.config import ArrayConfig  # noqa: E402
from hwsim.designs import DESIGNS, get  # noqa: E402

SHAPES = [("q_proj", 2048, 2048), ("up_proj", 8192, 2048), ("down_proj", 2048, 8192)]


def layer_inputs(cfg: ArrayConfig, rng, M: int, N: int, K: int) -> gm.TileInputs:
    ng = K // cfg.group
    return gm.TileInputs(
        a=rng.integers(-127, 128, size=(M, K)),
        codes=rng.integers(0, 1 << cfg.bits, size=(N, K)),
        zeros=rng.integers(0, 1 << cfg.bits, size=(N, ng)),
        mant=rng.integers(1 << 15, 1 << 16, size=(N, ng)),
        d=rng.integers(0, 8, size=(N, ng)),
        da=np.zeros((M, ng), dtype=np.int64),
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--designs", default=",".join(DESIGNS))
    ap.add_argument("--sample-jobs", type=int, default=16)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "build" / "benchmarks" / "hwsim_layer.json"))
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []
    for d in args.designs.split(","):
        cfg = ArrayConfig(design=d, bits=get(d).sim_defaults["bits"], group=128)
        for name, N, K in SHAPES:
            for M in (1, 128):
                t = layer_inputs(cfg, rng, M, N, K)
                res = {}

                def run():
                    res["r"] = simulate_linear(cfg, t)

                wall = timeit(run, repeat=2)
                r = res["r"]
                # golden loop on a sample of jobs
                jobs = [(r0, c0) for r0 in range(0, M, cfg.M) for c0 in range(0, N, cfg.N)]
                pick = [jobs[i] for i in rng.choice(len(jobs), size=min(args.sample_jobs, len(jobs)), replace=False)]
                t0 = time.perf_counter()
                for r0, c0 in pick:
                    sl_r, sl_c = slice(r0, r0 + cfg.M), slice(c0, c0 + cfg.N)
                    y = gm.tile_y(cfg, t.a[sl_r], t.codes[sl_c], t.zeros[sl_c], t.mant[sl_c], t.d[sl_c], t.da[sl_r])
                    assert np.array_equal(y, r.y[sl_r, sl_c][: y.shape[0]])
                golden_s = (time.perf_counter() - t0) / len(pick) * len(jobs)
                rows.append([f"{d} W{cfg.bits}A8", name, f"{M}x{N}x{K}", wall, r.cycles, r.cycles / wall, golden_s, golden_s / wall])
    print(f"machine: {machine()}")
    print_table(
        "hwsim simulate_linear on llama-1b layers (values, cycles, activity) vs the per-tile golden loop",
        ["design", "layer", "MxNxK", "hwsim s", "simulated cycles", "cycles/s", "golden loop s (est.)", "ratio"],
        rows,
        save=args.out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
