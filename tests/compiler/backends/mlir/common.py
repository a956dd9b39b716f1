"""Shared helpers for the MLIR backend tests: graphs lowered and compiled once per session (IREE compile
time dominates), run in this process through iree.runtime."""

from __future__ import annotations

import functools

import numpy as np
import pytest

pytest.importorskip("iree.compiler", reason="IREE's compiler (iree-base-compiler) is not installed")
rt = pytest.importorskip("iree.runtime", reason="IREE's runtime (iree-base-runtime) is not installed")

from tests.helpers import quantized_graph  # noqa: E402,F401 (the graphs of the tests here)

class InMemoryMLIR:
    """A graph lowered to MLIR, compiled for mlir-cpu and run in this process (the artifact tests write,
    reload and run it in a new process separately)."""

    def __init__(self, graph):
        from compiler.backends.mlir.build import compile_asm
        from compiler.backends.mlir.lower import lower_graph

        self.graph = graph
        self.lowered = lower_graph(graph, "cpu")
        self.asm = self.lowered.asm
        vmfb = compile_asm(self.asm, "mlir-cpu")
        config = rt.Config("local-sync")
        self.ctx = rt.SystemContext(config=config)
        self.ctx.add_vm_module(rt.VmModule.copy_buffer(self.ctx.instance, vmfb))
        self.main = self.ctx.modules.lowbit["main"]
        arrays = {"weights": graph.consts, "relayout": self.lowered.relayout}
        self.params = [rt.asdevicearray(config.device, np.ascontiguousarray(arrays[p["source"]][p["key"]])) for p in self.lowered.params]

    def run(self, feeds):
        args = [np.ascontiguousarray(feeds[k]) for k in self.lowered.inputs]
        out = self.main(*args, *self.params)
        out = out if isinstance(out, (tuple, list)) else [out]
        return {o: np.asarray(v.to_host()) for o, v in zip(self.lowered.outputs, out)}


@functools.lru_cache(maxsize=None)
def compiled(model: str, spec: str) -> InMemoryMLIR:
    return InMemoryMLIR(quantized_graph(model, spec))




def run_function(body, in_types, out_types, *args) -> list[np.ndarray]:
    """Compile one function @main for mlir-cpu and run it on args: body(B, *arguments) returns its results;
    in_types / out_types are (shape, dtype) pairs."""
    from iree.compiler import ir
    from iree.compiler.dialects import func

    from compiler.backends.mlir.build import compile_asm
    from compiler.backends.mlir.builder import Builder

    with ir.Context(), ir.Location.unknown():
        module = ir.Module.create()
        module.operation.attributes["sym_name"] = ir.StringAttr.get("lowbit")
        B = Builder()
        with ir.InsertionPoint(module.body):
            fn = func.FuncOp("main", ([B.tensor_type(*t) for t in in_types], [B.tensor_type(*t) for t in out_types]))
            with ir.InsertionPoint(fn.add_entry_block()):
                func.ReturnOp(list(body(B, *fn.arguments)))
        asm = str(module)
    ctx = rt.SystemContext(config=rt.Config("local-sync"))
    ctx.add_vm_module(rt.VmModule.copy_buffer(ctx.instance, compile_asm(asm, "mlir-cpu")))
    out = ctx.modules.lowbit["main"](*args)
    return [np.asarray(v.to_host()) for v in (out if isinstance(out, (tuple, list)) else [out])]
