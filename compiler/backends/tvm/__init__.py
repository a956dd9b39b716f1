"""TVM backend: a (quantized or float) Graph -> a Relax module -> an exported library per target.

Targets: `tvm-cpu` (LLVM for the host CPU, by name and features) and `tvm-cuda` (CUDA sm_80 source with an
LLVM host; the CUDA C is kept in the artifact). Files:

- lower.py    Graph -> Relax (op-by-op converters; symbolic S, P dims; weights as parameters)
- kernels.py  qlinear (mpGEMM) kernels in TE with their schedules, and the rule table that picks one per
              (shape, bits, act, target): the place to add faster kernels
- build.py    target descriptions, the compile pipeline (TVM's Relax pipeline + dlight rules), export of the
              target folder (model.so, tvm.json, optional re-laid-out params, kernels.cu)

The runtime side is runtime/backends/tvm.py (loads model.so, feeds the weights, no recompilation).
"""

from __future__ import annotations

from pathlib import Path

from compiler.errors import LowbitError

TVM_TARGETS = ("tvm-cpu", "tvm-cuda")


def require_tvm():
    try:
        import tvm  # noqa: F401
    except ImportError:
        raise LowbitError("targets tvm-cpu/tvm-cuda need Apache TVM, which is not installed", "install it with `pip install apache-tvm==0.27.0.post1`") from None


def build_tvm_target(graph, target: str, out_dir: Path, options) -> dict:
    """Build one TVM target into out_dir (the artifact's <target>/ folder); returns a summary for the
    manifest (the full description is out_dir/tvm.json). options: compiler.backends.BuildOptions (tune)."""
    import time

    t0 = time.perf_counter()
    require_tvm()
    from compiler.backends.tvm.build import LIBRARY, build_target

    t_import = time.perf_counter() - t0  # loading TVM's compiler library (~300 MB) takes seconds
    info = build_target(graph, target, Path(out_dir), tune=options.tune or None)
    timings = {"import_tvm": round(t_import, 3), **info["timings_s"]}
    summary = {"library": f"{target}/{LIBRARY}", "timings_s": timings, "host_cpu": info["host"]["mcpu"]}
    if "cuda_arch" in info:
        summary["cuda_arch"] = info["cuda_arch"]
    if "kernel_search" in info:
        summary["kernel_search"] = {"shapes": len(info["kernel_search"]), "measured": sum("measured_ms" in v for v in info["kernel_search"].values())}
    return summary
