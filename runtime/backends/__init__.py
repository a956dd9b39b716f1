"""Backend registry: name -> class. A backend is one module that reads like its siblings."""

from __future__ import annotations

from compiler.errors import LowbitError

from runtime.backends.ref import RefBackend
from runtime.backends.tvm import TVMCPUBackend, TVMCUDABackend
from runtime.backends.mlir import MLIRCPUBackend, MLIRCUDABackend
from runtime.backends.hwsim import HwsimLutTCBackend, HwsimMACBackend, HwsimMixPEBackend
from runtime.backends.rtl import RtlLutTCBackend, RtlMACBackend, RtlMixPEBackend

BACKENDS = {"ref": RefBackend, "tvm-cpu": TVMCPUBackend, "tvm-cuda": TVMCUDABackend}
BACKENDS.update({"mlir-cpu": MLIRCPUBackend, "mlir-cuda": MLIRCUDABackend})
BACKENDS.update({"hwsim:lut-tc": HwsimLutTCBackend, "hwsim:mixpe": HwsimMixPEBackend, "hwsim:mac": HwsimMACBackend})
BACKENDS.update({"rtl:lut-tc": RtlLutTCBackend, "rtl:mixpe": RtlMixPEBackend, "rtl:mac": RtlMACBackend})
PLANNED = ()


def make_backend(name: str, model):
    cls = BACKENDS.get(name)
    if cls is None:
        if name in PLANNED:
            raise LowbitError(f"backend '{name}' is not available in this version of lowbit", f"use one of: {', '.join(BACKENDS)}")
        raise LowbitError(f"unknown backend '{name}'", f"use one of: {', '.join(BACKENDS)}")
    return cls(model)
