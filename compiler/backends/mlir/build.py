"""Compile a lowered module with IREE and write the target folder of an artifact.

Target folder (artifact/<target>/):
- `model.vmfb`   the IREE VM flatbuffer (host code + kernels); weights are not in it
- `mlir.json`    how to call it: function, input order, parameter order (graph constants), outputs, the
                 IREE target and flags it was built with, kernel forms per qlinear, timings, and the
                 compile knobs of this backend that were set (compiler/knobs.py)
- `params.safetensors`  the weights re-laid out for the blocked qlinear kernels (mlir.json's params with
                 source "relayout"; the others come from the artifact's weights.safetensors)
- `model.mlir`   the module as lowered from the graph (always written; it is small)
- `stages/`      with --dump-mlir: IREE's own phases (input, abi, preprocessing, global-optimization,
                 dispatch-creation, flow, stream, executable-sources, executable-configurations,
                 executable-targets, hal, vm), one .mlir each, from --dump-compilation-phases-to
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from compiler.errors import LowbitError
from compiler.ir import Graph
from compiler.knobs import MLIR_CUDA_ARCH, compile_knobs_set

VMFB = "model.vmfb"
INFO = "mlir.json"
SOURCE = "model.mlir"
PARAMS = "params.safetensors"
STAGES = "stages"
CUDA_ARCH = MLIR_CUDA_ARCH.default  # what mlir-cuda builds for (sm_80), unless LOWBIT_MLIR_CUDA_ARCH names another
# IREE 3.13's cuda backend knows sm_75..sm_89 and sm_120; sm_90/sm_90a/sm_100 fail with "missing GPU target".
CUDA_ARCHS_OK = ("sm_75", "sm_80", "sm_86", "sm_87", "sm_89", "sm_120")

# Without reassociation IREE turns every fp reduction into a chain of scalar adds (3-5x slower); the
# reference order of a sum is not part of the contract (its tolerance covers it).
CPU_FLAGS = ["--iree-llvmcpu-target-cpu=host", "--iree-llvmcpu-reassociate-fp-reductions=true"]


def require_iree_compiler():
    try:
        import iree.compiler  # noqa: F401
    except ImportError:
        raise LowbitError(
            "targets mlir-cpu/mlir-cuda need IREE's compiler (iree-base-compiler), which is not installed",
            "install it with `pip install 'iree-base-compiler==3.13.*' 'iree-base-runtime==3.13.*'` (or `pip install -e .[mlir]`)",
        ) from None


def iree_flags(target: str, cuda_arch: str | None = None) -> tuple[list[str], list[str]]:
    """(target backends, extra flags) for mlir-cpu / mlir-cuda."""
    if target == "mlir-cpu":
        return ["llvm-cpu"], list(CPU_FLAGS)
    if target == "mlir-cuda":
        cuda_arch = cuda_arch or MLIR_CUDA_ARCH.get()
        check_cuda_arch(cuda_arch)
        return ["cuda"], [f"--iree-cuda-target={cuda_arch}"]
    raise ValueError(target)


def check_cuda_arch(arch: str):
    if arch not in CUDA_ARCHS_OK:
        raise LowbitError(
            f"CUDA architecture {arch} is not supported by IREE 3.13's cuda backend (it builds {', '.join(CUDA_ARCHS_OK)}; sm_90/sm_90a/sm_100 fail with 'missing GPU target')",
            "build mlir-cuda for sm_80 (the default; the vmfb carries PTX, which the CUDA driver can JIT-compile for newer GPUs) or use tvm-cuda for sm_90",
        )


def compile_asm(asm: str, target: str, dump_dir: Path | None = None, cuda_arch: str | None = None) -> bytes:
    """MLIR text -> vmfb bytes. dump_dir: write IREE's compilation phases there."""
    require_iree_compiler()
    import iree.compiler as ic

    backends, flags = iree_flags(target, cuda_arch)
    if dump_dir is not None:
        Path(dump_dir).mkdir(parents=True, exist_ok=True)
        flags.append(f"--dump-compilation-phases-to={dump_dir}")
    try:
        return ic.compile_str(asm, target_backends=backends, extra_args=flags)
    except ic.CompilerToolError as e:
        raise RuntimeError(f"IREE failed to compile the lowered module for {target}:\n{str(e)[-4000:]}") from None


def build_target(graph: Graph, target: str, out_dir: Path, dump_mlir: bool = False, cuda_arch: str | None = None) -> dict:
    """Lower, verify, compile `graph` for target into out_dir (created). Returns mlir.json's dict."""
    from compiler.backends.mlir.lower import lower_graph

    if target == "mlir-cuda":
        cuda_arch = cuda_arch or MLIR_CUDA_ARCH.get()
        check_cuda_arch(cuda_arch)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    lowered = lower_graph(graph, "cuda" if target == "mlir-cuda" else "cpu")
    asm = lowered.asm
    t1 = time.perf_counter()
    (out_dir / SOURCE).write_text(asm)
    vmfb = compile_asm(asm, target, out_dir / STAGES if dump_mlir else None, cuda_arch)
    t2 = time.perf_counter()
    (out_dir / VMFB).write_bytes(vmfb)
    if lowered.relayout:
        from safetensors.numpy import save_file

        import numpy as np

        save_file({k: np.ascontiguousarray(v) for k, v in lowered.relayout.items()}, str(out_dir / PARAMS))
    backends, flags = iree_flags(target, cuda_arch)
    info = {
        "target": target,
        "module": "lowbit",
        "function": "main",
        "functions": lowered.functions,
        "inputs": lowered.inputs,
        "params": lowered.params,
        "outputs": lowered.outputs,
        "iree": {"backends": backends, "flags": flags, "version": iree_version()},
        "kernels": lowered.kernels,
        "timings_s": {"lower": round(t1 - t0, 3), "compile": round(t2 - t1, 3)},
    }
    if target == "mlir-cuda":
        info["cuda_arch"] = cuda_arch
    knobs = compile_knobs_set("LOWBIT_MLIR_")
    if knobs:
        info["knobs"] = knobs  # set compile knobs change the module: recorded with it
    if dump_mlir:
        info["stages"] = sorted(p.name for p in (out_dir / STAGES).glob("*.mlir"))
    (out_dir / INFO).write_text(json.dumps(info, indent=1))
    return info


def iree_version() -> str:
    try:
        from importlib.metadata import version

        return version("iree-base-compiler")
    except Exception:  # noqa: BLE001
        return "?"
