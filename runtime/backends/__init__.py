"""Backend registry: a backend name -> its class, imported only when that backend is made.

Fixed backends are one module each (ref.py, tvm.py, mlir.py). The accelerator families are one class each,
parameterized by the design: `hwsim:<design>` (hwsim.py) and `rtl:<design>` (rtl.py) exist for every record
of hwsim.designs, so a new design needs nothing here.
"""

from __future__ import annotations

import importlib

from compiler.errors import LowbitError

FIXED = {
    "ref": ("runtime.backends.ref", "RefBackend"),
    "tvm-cpu": ("runtime.backends.tvm", "TVMCPUBackend"),
    "tvm-cuda": ("runtime.backends.tvm", "TVMCUDABackend"),
    "mlir-cpu": ("runtime.backends.mlir", "MLIRCPUBackend"),
    "mlir-cuda": ("runtime.backends.mlir", "MLIRCUDABackend"),
}
FAMILIES = {  # family: (module, class); the class takes (model, design, **options)
    "hwsim": ("runtime.backends.hwsim", "HwsimBackend"),
    "rtl": ("runtime.backends.rtl", "RtlBackend"),
}


def names() -> list[str]:
    """Every backend name, the accelerator designs registered right now included."""
    from hwsim.designs import DESIGNS

    return list(FIXED) + [f"{fam}:{d}" for fam in FAMILIES for d in DESIGNS]


def _cls(module: str, cls: str):
    return getattr(importlib.import_module(module), cls)


def make_backend(name: str, model, **options):
    """The backend `name` for `model` (a runtime.CompiledModel); options go to its constructor (rtl:*:
    simulator)."""
    if name in FIXED:
        if options:
            raise LowbitError(f"backend {name} takes no options ({', '.join(options)})", "drop them")
        return _cls(*FIXED[name])(model)
    fam, _, design = name.partition(":")
    if fam in FAMILIES:
        from hwsim.designs import DESIGNS

        if design in DESIGNS:
            return _cls(*FAMILIES[fam])(model, design, **options)
    raise LowbitError(f"unknown backend '{name}'", f"use one of: {', '.join(names())}")
