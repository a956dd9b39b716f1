"""The compile targets, one registry: `targets()` maps a target name to its `Target`.

Every target builds the same way, `target.build(graph, name, out_dir, options) -> summary`: it writes the
artifact's <name>/ folder and returns the manifest entry. `options` is one `BuildOptions` for all of them;
each target reads the fields it understands (`Target.options`) and `lowbit compile` refuses a set option
that no chosen target reads. Families: `ref` (nothing to build: the runtime executes the graph), `tvm`
(compiler/backends/tvm), `mlir` (compiler/backends/mlir) and `accel` (compiler/backends/accel, one target
per design of hwsim.designs, so a new design is a new target without touching this file). Backends are
imported only when a target of theirs is built: TVM and IREE take seconds to load.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

from compiler.errors import LowbitError


@dataclass(frozen=True)
class BuildOptions:
    """Options of `lowbit compile` that only some targets read."""

    tune: bool = False  # tvm-cpu: measured choice among the matching fast qlinear kernels (cached)
    dump_mlir: bool = False  # mlir-*: keep IREE's compilation phases in <target>/stages/
    array: str | dict | None = None  # accelerator targets: array shape and SRAM sizes (`--array`)
    vector_unit: str | None = None  # accelerator targets: the ops the vector unit takes off the host (`--vector-unit`)
    calib_feeds: list | None = field(default=None, repr=False)  # set by the driver when vector_unit is: its static scales' calibration inputs

    def set_fields(self) -> list[str]:
        return [f.name for f in fields(self) if f.name != "calib_feeds" and getattr(self, f.name) not in (None, False)]


@dataclass(frozen=True)
class Target:
    name: str
    family: str  # ref | tvm | mlir | accel
    about: str
    build: Callable | None  # (graph, name, out_dir, options) -> manifest summary; None: nothing to build
    check: Callable | None = None  # (spec, name, options): refuse what it cannot build before any work
    options: tuple[str, ...] = field(default_factory=tuple)  # BuildOptions fields it reads


def _build_tvm(graph, name: str, out_dir: Path, options: BuildOptions) -> dict:
    from compiler.backends.tvm import build_tvm_target

    return build_tvm_target(graph, name, out_dir, options)


def _build_mlir(graph, name: str, out_dir: Path, options: BuildOptions) -> dict:
    from compiler.backends.mlir import build_mlir_target

    return build_mlir_target(graph, name, out_dir, options)


def _build_accel(graph, name: str, out_dir: Path, options: BuildOptions) -> dict:
    from compiler.backends.accel import build_accel_target

    return build_accel_target(graph, name, out_dir, options)


def _check_accel(spec, name: str, options: BuildOptions) -> None:
    from compiler.backends.accel import check_spec

    from compiler.backends.accel.vector import parse_units

    parse_units(options.vector_unit)
    check_spec(spec, name, options.array)


_FIXED = (
    Target("ref", "ref", "the numeric contract in numpy (the runtime executes the graph; nothing is built)", None),
    Target("tvm-cpu", "tvm", "Apache TVM, LLVM for the host CPU (LUT / VNNI / blocked mpGEMM kernels)", _build_tvm, options=("tune",)),
    Target("tvm-cuda", "tvm", "Apache TVM, CUDA (sm_80 source, GEMV and tiled GEMM qlinear kernels)", _build_tvm),
    Target("mlir-cpu", "mlir", "MLIR (linalg) compiled by IREE for the host CPU", _build_mlir, options=("dump_mlir",)),
    Target("mlir-cuda", "mlir", "MLIR (linalg) compiled by IREE for CUDA (sm_80)", _build_mlir, options=("dump_mlir",)),
)


def targets() -> dict[str, Target]:
    """Every target, the accelerator designs registered right now included."""
    from hwsim.designs import DESIGNS

    out = {t.name: t for t in _FIXED}
    for d in DESIGNS.values():
        out[d.name] = Target(d.name, "accel", f"accelerator program for the {d.name} array ({d.title})", _build_accel, _check_accel, ("array", "vector_unit"))
    return out


def parse_targets(text: str) -> list[Target]:
    """`ref,tvm-cpu,...` -> the targets, in order; LowbitError naming every unknown one."""
    known = targets()
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in names if t not in known]
    if bad or not names:
        raise LowbitError(f"unknown or unavailable target(s) {', '.join(bad) or repr(text)}", f"available targets: {', '.join(known)}")
    return [known[n] for n in dict.fromkeys(names)]


def check_options(chosen: list[Target], options: BuildOptions) -> None:
    """Refuse an option that none of the chosen targets reads."""
    read = {o for t in chosen for o in t.options}
    flags = {"tune": "--tune", "dump_mlir": "--dump-mlir", "array": "--array", "vector_unit": "--vector-unit"}
    for name in options.set_fields():
        if name not in read:
            users = [t.name for t in targets().values() if name in t.options]
            raise LowbitError(f"{flags[name]} only applies to the targets {', '.join(users)}", f"add one of them to --target, or drop {flags[name]}")
