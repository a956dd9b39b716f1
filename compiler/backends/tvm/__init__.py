"""TVM backend: a (quantized or float) Graph -> a Relax module -> an exported library per target.

Targets: `tvm-cpu` (LLVM for the host CPU, by name and features) and `tvm-cuda` (CUDA sm_80 source with an
LLVM host; the CUDA C is kept in the artifact). Files, each importing only the ones listed above it:

- target.py      the target names, the host CPU (LLVM name and features), tvm.target.Target per target
- epilogue.py    the end every qlinear kernel shares (A8 activation scale, bias)
- qlinear_te.py  the shared TE pieces: QLinearShape (what a rule sees), code unpacking from the storage
                 layouts, A8 activation quantization, the portable qlinear and float linear definitions and
                 their rule-based schedules
- kernels_cpu.py, kernels_lut.py, kernels_cuda.py   the fast qlinear kernels (blocked/VNNI, LUT, CUDA GEMM)
- kernels.py     the kernel objects and the rule table (`rules()`) that picks one per (shape, bits, act,
                 target): the place to add faster kernels
- tune.py        the measured choice among the fast CPU kernels that match a layer (cached by shape)
- lower.py       Graph -> Relax (op-by-op converters; symbolic S, P dims; weights as parameters)
- build.py       the compile pipeline (TVM's Relax pipeline + dlight rules), export of the target folder
                 (model.so, tvm.json, optional re-laid-out params, kernels.cu)

The runtime side is runtime/backends/tvm.py (loads model.so, feeds the weights, no recompilation).
"""

from __future__ import annotations

from pathlib import Path

from compiler.backends.tvm.target import TVM_TARGETS  # noqa: F401 (the package's target names)
from compiler.errors import LowbitError
from compiler.hostinfo import default_tvm_threads

default_tvm_threads()


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
    if "knobs" in info:
        summary["knobs"] = info["knobs"]
    return summary
