"""Every LOWBIT_* environment variable lowbit reads, declared once: its default, what it does, and its scope.

    from compiler.knobs import TVM_TUNE
    if TVM_TUNE.get(): ...

Values are read when asked for (`Knob.get()`), never at import, so a variable set in a running process
takes effect. A malformed value is a user error naming the variable. Scopes: `compile` knobs change what
`lowbit compile` writes, so the targets record the ones that are set (`compile_knobs_set`) in the
artifact; `run` knobs change how an artifact runs; `tool` knobs move caches and build folders.
docs/knobs.md is generated from this table (`python -m compiler.knobs`; a test keeps it current).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from compiler.errors import LowbitError

SCOPES = ("compile", "run", "tool")


@dataclass(frozen=True)
class Knob:
    name: str  # the environment variable
    default: object  # the value when unset or empty (a function of no arguments: computed when asked for)
    parse: Callable[[str], object]  # text -> value; ValueError on a malformed value
    doc: str
    scope: str
    syntax: str  # what a valid value looks like (shown in errors and docs)

    def is_set(self) -> bool:
        return bool(os.environ.get(self.name, "").strip())

    def raw(self) -> str | None:
        v = os.environ.get(self.name, "").strip()
        return v or None

    def get(self):
        v = self.raw()
        if v is None:
            return self.default() if callable(self.default) else self.default
        try:
            return self.parse(v)
        except ValueError as e:
            raise LowbitError(f"environment variable {self.name}={v!r} is not valid ({e})", f"unset it or give {self.syntax}") from None


def _flag(v: str) -> bool:
    t = v.lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise ValueError("not 0 or 1")


def _names(v: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in v.split(",") if x.strip())


def _positive_int(v: str) -> int:
    n = int(v)
    if n < 1:
        raise ValueError("must be at least 1")
    return n


def _count(v: str) -> int:
    n = int(v)
    if n < 0:
        raise ValueError("must be 0 or more")
    return n


def _tile(v: str) -> tuple[int, int]:
    parts = v.lower().split("x")
    if len(parts) != 2:
        raise ValueError("not MxN")
    return int(parts[0]), int(parts[1])


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(v: str) -> str:
        if v not in allowed:
            raise ValueError(f"not one of {', '.join(allowed)}")
        return v

    return parse


KNOBS: dict[str, Knob] = {}


def _knob(name: str, default, parse, doc: str, scope: str, syntax: str) -> Knob:
    assert scope in SCOPES and name.startswith("LOWBIT_") and name not in KNOBS
    k = Knob(name, default, parse, doc, scope, syntax)
    KNOBS[name] = k
    return k


TVM_TUNE = _knob(
    "LOWBIT_TVM_TUNE", False, _flag, "tvm-cpu: time the matching fast qlinear kernels per layer shape and keep the fastest "
    "(as `lowbit compile --tune`); results are cached under LOWBIT_CACHE_DIR", "compile", "0 or 1")
TVM_FAST_CPU = _knob(
    "LOWBIT_TVM_FAST_CPU", True, _flag, "tvm-cpu: 0 keeps every qlinear on the portable fallback kernel (to compare kernels)",
    "compile", "0 or 1")
TVM_DISABLE_KERNELS = _knob(
    "LOWBIT_TVM_DISABLE_KERNELS", (), _names, "tvm-*: qlinear kernels the rule table skips, by name (e.g. lut-cpu,vnni-cpu)",
    "compile", "a comma-separated list of kernel names")
TVM_FUSE_SIBLINGS = _knob(
    "LOWBIT_TVM_FUSE_SIBLINGS", True, _flag, "tvm-cpu: qlinears that read the same activation with the same quantization "
    "(q/k/v, gate/up) run as one kernel over their stacked rows (0: one kernel each, to compare)", "compile", "0 or 1")
TVM_CUDA_GEMM_TILE = _knob(
    "LOWBIT_TVM_CUDA_GEMM_TILE", (64, 64), _tile, "tvm-cuda: rows x columns of y per thread block of the gemm-cuda kernel "
    "(each of 16, 32, 64, 128; 32..512 threads)", "compile", "MxN, e.g. 64x64")
TVM_CUDA_GEMV_MAX_M = _knob(
    "LOWBIT_TVM_CUDA_GEMV_MAX_M", 2, _count, "tvm-cuda: gemm-cuda runs its GEMV schedule for M up to this many rows "
    "(0: always the tiled GEMM)", "compile", "a whole number >= 0")
MLIR_LANES = _knob(
    "LOWBIT_MLIR_LANES", 32, _positive_int, "the standalone MLIR GEMV of benchmarks/gemv_mlir.py: output rows per vector "
    "of its re-laid-out weights (compiled models use 32)", "tool", "a whole number >= 1")
MLIR_A8_INT32 = _knob(
    "LOWBIT_MLIR_A8_INT32", False, _flag, "mlir-*: A8 group sums in int32 everywhere (default: fp32 where every partial "
    "sum is an exact integer below 2^24)", "compile", "0 or 1")
MLIR_CUDA_ARCH = _knob(
    "LOWBIT_MLIR_CUDA_ARCH", "sm_80", str, "mlir-cuda: the GPU architecture IREE builds for (IREE 3.13 builds sm_80; "
    "the PTX it carries runs on newer GPUs through the driver's JIT)", "compile", "an sm_XY name")
MLIR_THREADS = _knob(
    "LOWBIT_MLIR_THREADS", None, _positive_int, "mlir-cpu: IREE task threads (default: every core); 1 selects the "
    "single-threaded local-sync driver. Read once per process, when the first module loads", "run", "a whole number >= 1")
KV_CACHE = _knob(
    "LOWBIT_KV_CACHE", "inplace", _choice("concat", "inplace"), "causal LMs: the graph's KV cache, preallocated once and "
    "written in place, or grown by concat every step (compiler/frontend/llama.py); the artifact's graph records it", "compile", "concat or inplace")
RTL_SIMULATOR = _knob(
    "LOWBIT_RTL_SIMULATOR", "icarus", _choice("icarus", "verilator"), "rtl:* backends: the HDL simulator "
    "(`lowbit run --simulator` overrides it)", "run", "icarus or verilator")
RTL_BUILD = _knob(
    "LOWBIT_RTL_BUILD", None, Path, "where generated arrays are built for simulation (default: build/rtl in a writable "
    "source checkout, else <tmp>/lowbit-rtl)", "tool", "a folder path")
CACHE_DIR = _knob(
    "LOWBIT_CACHE_DIR", lambda: Path.home() / ".cache" / "lowbit", Path, "lowbit's cache (the tvm-cpu kernel timings of --tune; "
    "`lowbit sweep`'s job results in jobs/)",
    "tool", "a folder path")
LLAMACPP_PY_VERSION = _knob(
    "LOWBIT_LLAMACPP_PY_VERSION", "0.3.36", str, "benchmarks: the llama-cpp-python sdist whose vendored llama.cpp the baseline "
    "tools are built from (cached under LOWBIT_CACHE_DIR/llama.cpp)", "tool", "a PyPI version")
TEST_WORKERS = _knob(
    "LOWBIT_TEST_WORKERS", None, int, "scripts/test.sh: pytest worker processes (default: one per core, at most 8; "
    "0 or 1 runs the tests in one process)", "tool", "a whole number")


def compile_knobs_set(prefix: str = "LOWBIT_") -> dict[str, str]:
    """The compile-scope knobs starting with `prefix` that are set, as name -> text (recorded by targets)."""
    return {k.name: k.raw() for k in KNOBS.values() if k.scope == "compile" and k.name.startswith(prefix) and k.is_set()}


def markdown_table() -> str:
    """docs/knobs.md."""

    def fmt(v) -> str:
        if callable(v):
            v = v()
        if v is None:
            return "(see meaning)"
        if isinstance(v, bool):
            return "1" if v else "0"
        if isinstance(v, tuple) and not v:
            return "(none)"
        if isinstance(v, tuple):
            return "x".join(map(str, v)) if all(isinstance(x, int) for x in v) else ",".join(v) or "(none)"
        if isinstance(v, Path):
            return str(v).replace(str(Path.home()), "~")
        return str(v)

    lines = [
        "# Environment knobs",
        "",
        "Generated from `compiler/knobs.py` (`python -m compiler.knobs > docs/knobs.md`). `compile` knobs change what",
        "`lowbit compile` writes and are recorded in the target's entry of the artifact's manifest; `run` knobs change",
        "how an artifact runs; `tool` knobs move caches and build folders.",
        "",
        "| variable | scope | default | values | meaning |",
        "|---|---|---|---|---|",
    ]
    for k in KNOBS.values():
        lines.append(f"| `{k.name}` | {k.scope} | {fmt(k.default)} | {k.syntax} | {k.doc} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
