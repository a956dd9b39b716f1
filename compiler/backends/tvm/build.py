"""Compile a lowered module for tvm-cpu / tvm-cuda and write the target folder of an artifact.

Target folder (artifact/<target>/):
- `model.so`       the exported library (Relax VM executable + kernels); weights are not in it
- `tvm.json`       how to call it: input order, parameter order and source of each parameter, outputs,
                   the Relax functions (`main`, and `main_last` for a causal LM: logits of the last row only),
                   the target (CPU name and features it was built for), kernels chosen per layer, timings,
                   and the compile knobs of this backend that were set (compiler/knobs.py)
- `params.safetensors`  only when a kernel asked for re-laid-out weights
- `kernels.cu`     tvm-cuda only: the generated CUDA source (kept for inspection and for nvcc checks)
- `kernels.fatbin` tvm-cuda only, when nvcc was found: that source compiled for sm_80 and sm_90 (+ PTX)
"""

from __future__ import annotations

import json
import time
import hashlib
from pathlib import Path

import numpy as np

from compiler.backends.tvm.target import CUDA_ARCH, KINDS, cpu_target, cuda_target, host_cpu
from compiler.ir import Graph
from compiler.knobs import compile_knobs_set

LIBRARY = "model.so"
INFO = "tvm.json"
PARAMS = "params.safetensors"
CUDA_SOURCE = "kernels.cu"
CUDA_BINARY = "kernels.fatbin"
# kernels.fatbin: SASS for A100 and H100 plus compute_80 PTX that newer GPUs JIT-compile (needs nvcc).
CUDA_BINARY_ARCHS = ("sm_80", "sm_90")


def cuda_fatbin(src: str, out: Path, archs=CUDA_BINARY_ARCHS) -> list[str]:
    """Compile the CUDA source with nvcc into one fatbin (SASS for each arch + PTX of the first) at `out`.
    Returns what it holds, or [] when nvcc is missing."""
    import shutil
    import subprocess
    import tempfile

    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return []
    cmd = [nvcc, "--fatbin", "-O3", "-o", str(out)]
    for a in archs:
        cmd += ["-gencode", f"arch=compute_{a[3:]},code={a}"]
    cmd += ["-gencode", f"arch=compute_{archs[0][3:]},code=compute_{archs[0][3:]}"]
    with tempfile.TemporaryDirectory() as d:
        cu = Path(d) / "kernels.cu"
        cu.write_text(src)
        r = subprocess.run(cmd + [str(cu)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"nvcc failed on the generated CUDA source:\n{r.stderr[-3000:]}")
    return [*archs, f"compute_{archs[0][3:]}"]


def _pipeline(kind: str, target, inputs: list | None = None):
    """TVM's default Relax pipeline for the target (for CUDA it applies dlight's Matmul/GEMV/Reduction/
    Fallback rules), with dlight's CPU rules on CPU; our qlinear kernels arrive scheduled, marked opaque, and
    dlight leaves them alone. With the graph `inputs` known, the parameters after them (the weights) lose their
    per-call checks (vm_checks.py). On CUDA every kernel is checked for thread bindings after scheduling: a block
    without them would run on the host against device memory (a crash, not a compile error)."""
    import tvm
    from tvm.s_tir import dlight as dl

    from compiler.backends.tvm.vm_checks import drop_checks_pass

    if kind == "cuda":
        from tvm.relax.backend.cuda import pipeline as p

        schedule = p.legalize_passes(target) + [_make_check()]
    else:
        from tvm.relax.backend.cpu_generic import pipeline as p

        schedule = p.legalize_passes(target) + [dl.ApplyDefaultSchedule(dl.cpu.GEMV(), dl.cpu.Reduction())]

    @tvm.transform.module_pass(opt_level=0)
    def _run(mod, _ctx):
        with target:
            tail = [drop_checks_pass(len(inputs))] if inputs is not None else []
            seq = tvm.transform.Sequential(p.library_dispatch_passes(target) + schedule + p.dataflow_lower_passes(target) + p.finalize_passes(target) + tail)
            return seq(mod)

    return _run


def unbound_blocks(mod) -> list[str]:
    """'function/block' for every TIR block that no thread-bound loop encloses (it would run on the host)."""
    from tvm import s_tir, tirx

    bad: list[str] = []

    def walk(stmt, fname, bound):
        if isinstance(stmt, tirx.For):
            walk(stmt.body, fname, bound or stmt.kind == tirx.ForKind.THREAD_BINDING)
        elif isinstance(stmt, tirx.SeqStmt):
            for st in stmt.seq:
                walk(st, fname, bound)
        elif isinstance(stmt, s_tir.SBlockRealize):
            blk = stmt.block
            if blk.name_hint != "root" and not bound:
                bad.append(f"{fname}/{blk.name_hint}")
                return
            walk(blk.body, fname, bound)
        elif isinstance(stmt, tirx.IfThenElse):
            walk(stmt.then_case, fname, bound)
            if stmt.else_case is not None:
                walk(stmt.else_case, fname, bound)
        elif hasattr(stmt, "body"):
            walk(stmt.body, fname, bound)

    for gv, f in mod.functions_items():
        if isinstance(f, tirx.PrimFunc):
            walk(f.body, gv.name_hint, False)
    return bad


def _check_gpu_bindings_fn(mod, _ctx):
    bad = unbound_blocks(mod)
    if bad:
        raise RuntimeError(f"CUDA kernels without thread bindings (a schedule rule is missing): {bad[:8]}")
    return mod


def _make_check():
    import tvm

    return tvm.transform.module_pass(_check_gpu_bindings_fn, opt_level=0, name="CheckGPUBindings")


def compile_lowered(lowered, kind: str, target):
    import tvm

    return tvm.compile(lowered.mod, target, relax_pipeline=_pipeline(kind, target, getattr(lowered, "inputs", None)))


def build_target(graph: Graph, target_name: str, out_dir: Path, cuda_binary: bool = True, tune: bool | None = None) -> dict:
    """Lower, compile and export `graph` for target_name into out_dir (created). Returns tvm.json's dict."""
    from safetensors.numpy import save_file

    from compiler.backends.tvm.lower import lower_graph

    kind = KINDS[target_name]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    lowered = lower_graph(graph, kind, tune)
    t1 = time.perf_counter()
    target = cpu_target() if kind == "cpu" else cuda_target()
    ex = compile_lowered(lowered, kind, target)
    t2 = time.perf_counter()
    info = {
        "target": target_name,
        "inputs": lowered.inputs,
        "params": lowered.params,
        "outputs": lowered.outputs,
        "functions": lowered.functions,
        "kernels": lowered.kernels,
    }
    if lowered.stacked:
        info["stacked"] = lowered.stacked  # layers that run as one kernel over their stacked rows
    knobs = compile_knobs_set("LOWBIT_TVM_")
    if knobs:
        info["knobs"] = knobs  # set compile knobs change the library: recorded with it
    if lowered.search:
        info["kernel_search"] = lowered.search  # ms per candidate kernel, measured now or taken from the cache
    timings = {"lower": round(t1 - t0, 3), "compile": round(t2 - t1, 3)}
    if kind == "cpu":
        cpu, feats = host_cpu()
        info["host"] = {"mcpu": cpu, "features": feats}  # the runtime refuses a CPU that lacks any of these
    else:
        info["host"] = {"mcpu": "generic"}
        # model.so holds the CUDA *source*; TVM's CUDA runtime compiles it when the library is loaded, through
        # the tvm_callback_cuda_compile hook. We compile it now (when nvcc is here) and the runtime backend
        # answers that hook with this binary, so loading needs no compiler.
        src = cuda_source(ex)
        (out_dir / CUDA_SOURCE).write_text(src)
        info["cuda_arch"] = CUDA_ARCH
        info["cuda_source_sha256"] = hashlib.sha256(src.encode()).hexdigest()
        t = time.perf_counter()
        info["cuda_binary"] = cuda_fatbin(src, out_dir / CUDA_BINARY) if cuda_binary else []
        timings["nvcc"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    ex.export_library(str(out_dir / LIBRARY))
    timings["export"] = round(time.perf_counter() - t, 3)
    if lowered.relayout:
        save_file({k: np.ascontiguousarray(v) for k, v in lowered.relayout.items()}, str(out_dir / PARAMS))
    info["timings_s"] = timings
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
