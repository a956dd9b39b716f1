"""Compile a lowered module for tvm-cpu / tvm-cuda and write the target folder of an artifact.

Target folder (artifact/<target>/):
- `model.so`       the exported library (Relax VM executable + kernels); weights are not in it
- `tvm.json`       how to call it: input order, parameter order and source of each parameter, outputs,
                   the target (CPU name and features it was built for), kernels chosen per layer, timings
- `params.safetensors`  only when a kernel asked for re-laid-out weights
- `kernels.cu`     tvm-cuda only: the generated CUDA source (kept for inspection and for nvcc checks)
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from compiler.ir import Graph

TVM_TARGETS = ("tvm-cpu", "tvm-cuda")
LIBRARY = "model.so"
INFO = "tvm.json"
PARAMS = "params.safetensors"
CUDA_SOURCE = "kernels.cu"
CUDA_ARCH = "sm_80"  # the generated source also compiles for sm_90 (tests check both with nvcc)


def host_cpu() -> tuple[str, list[str]]:
    """The host's LLVM CPU name and its feature list (TVM 0.27 rejects mcpu=native)."""
    import tvm

    name = tvm.target.codegen.llvm_get_system_cpu()
    with tvm.target.Target({"kind": "llvm", "mcpu": name}):
        feats = tvm.target.codegen.llvm_get_cpu_features()
    return name, sorted(str(f) for f in feats)


def cpu_target():
    import tvm

    name, _ = host_cpu()
    return tvm.target.Target({"kind": "llvm", "mcpu": name})


def cuda_target(arch: str = CUDA_ARCH):
    import tvm

    return tvm.target.Target({"kind": "cuda", "arch": arch}, host=cpu_target())


def _pipeline(kind: str, target):
    """TVM's default Relax pipeline for the target, plus dlight rules for the float ops on CPU (our qlinear
    kernels arrive scheduled and opaque; dlight skips them)."""
    import tvm
    from tvm import relax
    from tvm.s_tir import dlight as dl

    if kind == "cuda":
        return relax.backend.cuda.get_default_pipeline(target)  # includes dlight Matmul/GEMV/Reduction/Fallback

    @tvm.transform.module_pass(opt_level=0)
    def _cpu(mod, _ctx):
        from tvm.relax.backend.cpu_generic import pipeline as p

        with target:
            seq = tvm.transform.Sequential(
                p.library_dispatch_passes(target)
                + p.legalize_passes(target)
                + [dl.ApplyDefaultSchedule(dl.cpu.GEMV(), dl.cpu.Reduction())]
                + p.dataflow_lower_passes(target)
                + p.finalize_passes(target)
            )
            return seq(mod)

    return _cpu


def compile_lowered(lowered, kind: str, target):
    import tvm

    return tvm.compile(lowered.mod, target, relax_pipeline=_pipeline(kind, target))


def build_target(graph: Graph, target_name: str, out_dir: Path, log=None) -> dict:
    """Lower, compile and export `graph` for target_name into out_dir (created). Returns tvm.json's dict."""
    from safetensors.numpy import save_file

    from compiler.backends.tvm.lower import lower_graph

    kind = {"tvm-cpu": "cpu", "tvm-cuda": "cuda"}[target_name]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    lowered = lower_graph(graph, kind)
    t1 = time.perf_counter()
    target = cpu_target() if kind == "cpu" else cuda_target()
    ex = compile_lowered(lowered, kind, target)
    t2 = time.perf_counter()
    info = {
        "target": target_name,
        "inputs": lowered.inputs,
        "params": lowered.params,
        "outputs": lowered.outputs,
        "kernels": lowered.kernels,
    }
    cpu, feats = host_cpu()
    info["host"] = {"mcpu": cpu, "features": feats}
    if kind == "cuda":
        info["cuda_arch"] = CUDA_ARCH
        src = cuda_source(ex)
        (out_dir / CUDA_SOURCE).write_text(src)
    ex.export_library(str(out_dir / LIBRARY))
    t3 = time.perf_counter()
    if lowered.relayout:
        save_file({k: np.ascontiguousarray(v) for k, v in lowered.relayout.items()}, str(out_dir / PARAMS))
    info["timings_s"] = {"lower": round(t1 - t0, 3), "compile": round(t2 - t1, 3), "export": round(t3 - t2, 3)}
    (out_dir / INFO).write_text(json.dumps(info, indent=1))
    return info


def cuda_source(ex) -> str:
    """The CUDA C source inside a compiled executable (the device module imported by the host library)."""
    mods = [ex.mod]
    seen = []
    while mods:
        m = mods.pop()
        seen.append(m)
        mods.extend(m.imports)
    for m in seen:
        if m.kind == "cuda":
            return m.inspect_source("cuda")
    raise RuntimeError("the compiled module has no CUDA device module")
