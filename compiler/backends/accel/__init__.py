"""Accelerator backend: a quantized Graph -> a program for one array design (any record of hwsim.designs).

Files (README.md describes the command stream and the weight layouts):

- program.py    Command / LayerPlan / Program dataclasses, program.json (de)serialization, loading
- lower.py      tiling to the array and SRAM sizes, weight re-layout, dyadic scales, the command stream
                (integer codes, and the E2M1 codes of mxfp4 / nvfp4 on the arrays' e2m1 weight format)
- vector.py     --vector-unit: norms, gates and attention as vector-unit commands (static scales from a
                calibration run), run with hwsim.vector's golden models
- reference.py  the accelerator integer reference: executes a program with hwsim.golden.tile_y tile by
                tile (host ops in numpy through compiler.reference); the hwsim and rtl runtimes subclass it

Target folder <artifact>/<design>/: program.json, weights.safetensors (re-laid-out codes, zero points,
dyadic mantissas and shifts, channel exponents) and rtl/<module>.v (the generated array of every distinct
layer configuration, from rtl/gen). Runtime side: runtime/backends/hwsim.py, runtime/backends/rtl.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from compiler.errors import LowbitError

from compiler.backends.accel.lower import lower_graph, parse_array
from compiler.backends.accel.program import PROGRAM, WEIGHTS
from hwsim.designs import DESIGNS


def check_spec(spec, target: str, array=None):
    """Refuse, before loading or quantizing anything, a quant spec or --array the array cannot run."""
    from compiler.backends.accel.lower import layer_config
    from compiler.quant.floatfmt import E2M1_FORMATS

    arr = parse_array(array)
    if spec is None:
        raise LowbitError(
            f"target {target} needs quantized weights, and --quant none keeps the model float",
            "compile with --quant, e.g. --quant w4g128a8 (or --quant ternary)",
        )
    fp = getattr(spec, "fp", "")
    if getattr(spec, "codebook", False) and fp not in E2M1_FORMATS:
        raise LowbitError(f"target {target} multiplies integer codes, and quant spec '{spec.name}' holds codebook weights (codes that index a float table)",
                          "use a group spec such as w3g32, or mxfp4 / nvfp4, for the accelerators; codebook weights run on ref, tvm-* and mlir-*")
    # the group of per-channel specs is the layer's K (checked per layer when lowering)
    attrs = {"bits": spec.bits, "group_size": spec.group_size or arr.get("K", DESIGNS[target].default_array["K"]), "act": spec.act, "ternary": spec.ternary,
             **({"codebook": True, "fp": fp} if fp else {})}
    layer_config(target, arr, attrs, f"quant spec '{spec.name}'")


def build_accel_target(graph, target: str, out_dir: Path, options) -> dict:
    """Lower `graph` onto `target` (options.array: the --array overrides) and write out_dir/program.json,
    weights.safetensors and rtl/; returns the manifest summary."""
    from safetensors.numpy import save_file

    t0 = time.perf_counter()
    from compiler.backends.accel.vector import parse_units

    prog, tensors = lower_graph(graph, target, options.array, parse_units(getattr(options, "vector_unit", None)), getattr(options, "calib_feeds", None))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prog.save(out_dir)
    save_file(tensors, str(out_dir / WEIGHTS))
    from rtl.gen.common import with_mins, write_verilog

    # the hardware the program runs on: one generated array per distinct layer configuration (scale-and-
    # minimum layers: the array with the minimum term)
    cfgs = {json.dumps([p.cfg, p.mins], sort_keys=True): with_mins(p.array, p.mins) for p in prog.layers.values()}
    verilog = [f"{target}/rtl/{write_verilog(c, out_dir / 'rtl').name}" for c in cfgs.values()]
    return {
        "program": f"{target}/{PROGRAM}",
        "verilog": verilog,
        "array": prog.array,
        "memory": prog.memory,
        "stats": prog.stats,
        "timings_s": {"lower": round(time.perf_counter() - t0, 3)},
    }
