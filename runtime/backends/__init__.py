"""Backend registry: name -> class. A backend is one module that reads like its siblings."""

from __future__ import annotations

from compiler.errors import LowbitError

from runtime.backends.ref import RefBackend
from runtime.backends.tvm import TVMCPUBackend, TVMCUDABackend
from runtime.backends.mlir import MLIRCPUBackend, MLIRCUDABackend

BACKENDS = {"ref": RefBackend, "tvm-cpu": TVMCPUBackend, "tvm-cuda": TVMCUDABackend}
BACKENDS.update({"mlir-cpu": MLIRCPUBackend, "mlir-cuda": MLIRCUDABackend})
PLANNED = ("hwsim:lut-tc", "hwsim:mixpe", "hwsim:mac", "rtl:lut-tc", "rtl:mixpe", "rtl:mac")


def make_backend(name: str, model):
    cls = BACKENDS.get(name)
    if cls is None:
        if name in PLANNED:
            raise LowbitError(f"backend '{name}' is not available in this version of lowbit", f"use one of: {', '.join(BACKENDS)}")
        raise LowbitError(f"unknown backend '{name}'", f"use one of: {', '.join(BACKENDS)}")
    return cls(model)
