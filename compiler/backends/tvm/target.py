"""The TVM targets: their names, the host CPU (LLVM name and features), and the tvm.target.Target of each.
TVM itself is imported only when a target is asked for (the package imports without it)."""

from __future__ import annotations

import functools

TVM_TARGETS = ("tvm-cpu", "tvm-cuda")
KINDS = {"tvm-cpu": "cpu", "tvm-cuda": "cuda"}  # target name -> the kind the lowering and the kernels see
CUDA_ARCH = "sm_80"  # what the kernels are generated for (no sm_90-only features, so they run on both)


def host_cpu() -> tuple[str, list[str]]:
    """The host's LLVM CPU name and its feature list (TVM 0.27 rejects mcpu=native)."""
    import tvm

    name = tvm.target.codegen.llvm_get_system_cpu()
    with tvm.target.Target({"kind": "llvm", "mcpu": name}):
        feats = tvm.target.codegen.llvm_get_cpu_features()
    return name, sorted(str(f) for f in feats)


@functools.cache
def host_has(feature: str) -> bool:
    """Whether the host CPU has an LLVM feature (e.g. avx512vnni), asked once per process."""
    return feature in host_cpu()[1]


def cpu_target():
    import tvm

    name, _ = host_cpu()
    return tvm.target.Target({"kind": "llvm", "mcpu": name})


def cuda_target(arch: str = CUDA_ARCH):
    """CUDA for `arch` with a generic x86-64/LLVM host (the host code only launches kernels, so it is
    built for any CPU of the architecture rather than this one)."""
    import tvm

    return tvm.target.Target({"kind": "cuda", "arch": arch}, host=tvm.target.Target({"kind": "llvm"}))
