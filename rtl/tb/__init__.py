"""cocotb testbenches of the generated arrays, all on one interface (rtl/gen/ports.py) and one `ArrayTB`:

    array_tb    the regression of `lowbit sim --design` (rtl.sim.run_sim): random jobs, corner cases and
                tiles the caller supplies, with random stalls and back-pressure, checked against hwsim.golden
    layer_tb    a compiled layer's array jobs back to back (runtime/backends/rtl.py, runtime/layer_check.py)
    timing_tb   jobs on a planned input schedule and out_ready pattern, every handshake's cycle recorded
                (tests/hwsim/test_rtl_agreement.py compares them with hwsim)

rtl.sim.run_testbench runs one: it writes the configuration as JSON and names it with the plusarg
+lowbit_tb=PATH; the testbench reads it with `read_config()`, which also registers the derived designs
(hwsim.designs.derive) the configuration describes, so a variant made at run time simulates too. Keys every
configuration has: cfg (ArrayConfig fields), designs (Design.derivation() of each derived design), tiles
(an .npz of job inputs written by `save_tiles`, or None) and out (the JSON file the testbench writes its
results into, returned by run_testbench); the rest is the testbench's own (see its docstring).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CONFIG_PLUSARG = "lowbit_tb"
TILE_FIELDS = ("a", "codes", "zeros", "mant", "d", "da")
MIN_FIELDS = ("mm", "dm")  # jobs of scale-and-minimum layers (hwsim/golden.py 4b) also carry these


def read_config() -> dict:
    """The configuration rtl.sim.run_testbench wrote (inside a cocotb simulation); its cfg is read with
    rtl.gen.common.config_from_dict (arrays with the minimum term included)."""
    import cocotb

    from hwsim.designs import load_derived

    path = cocotb.plusargs.get(CONFIG_PLUSARG)
    if not isinstance(path, str):
        raise RuntimeError(f"no +{CONFIG_PLUSARG}=PATH plusarg: run this testbench through rtl.sim.run_testbench")
    opts = json.loads(Path(path).read_text())
    load_derived(opts.get("designs") or [])
    return opts


def write_output(opts: dict, result: dict) -> None:
    """Write the testbench's results (JSON-able) where run_testbench reads them."""
    if opts.get("out"):
        Path(opts["out"]).write_text(json.dumps(result, indent=1))


def save_tiles(path: str | Path, tiles) -> None:
    """Job inputs (hwsim.golden.TileInputs, any number of groups each) -> an .npz (a_i, codes_i, ... per job i)."""
    arrays = {f"{k}_{i}": np.asarray(getattr(t, k), dtype=np.int64) for i, t in enumerate(tiles)
              for k in TILE_FIELDS + (MIN_FIELDS if t.has_mins else ())}
    np.savez(path, **arrays)


def load_tiles(path: str | Path | None) -> list:
    """The jobs `save_tiles` wrote ([] for None)."""
    from hwsim.golden import TileInputs

    if not path:
        return []
    with np.load(path) as z:
        n = len([k for k in z.files if k.startswith("a_")])
        return [TileInputs(**{k: z[f"{k}_{i}"] for k in TILE_FIELDS + MIN_FIELDS if f"{k}_{i}" in z.files}) for i in range(n)]
