"""Shared helpers for the TVM backend tests: graphs compiled once per session (compile time dominates)."""

from __future__ import annotations

import functools

import numpy as np
import pytest

tvm = pytest.importorskip("tvm", reason="Apache TVM (apache-tvm) is not installed")

from tests.helpers import quantized_graph  # noqa: E402,F401 (the graphs of the tests here)


class InMemoryTVM:
    """A graph compiled for tvm-cpu and run in this process (no export: the tests of the artifact path
    export and reload separately)."""

    def __init__(self, graph):
        from tvm import relax

        from compiler.backends.tvm.build import compile_lowered
        from compiler.backends.tvm.target import cpu_target
        from compiler.backends.tvm.lower import lower_graph

        self.graph = graph
        self.lowered = lower_graph(graph, "cpu")
        ex = compile_lowered(self.lowered, "cpu", cpu_target())
        self.vm = relax.VirtualMachine(ex, tvm.cpu())
        arrays = {"weights": graph.consts, "relayout": self.lowered.relayout}  # kernels may re-lay out weights
        self.params = [tvm.runtime.tensor(np.ascontiguousarray(arrays[p["source"]][p["key"]])) for p in self.lowered.params]

    def run(self, feeds):
        args = [tvm.runtime.tensor(np.ascontiguousarray(feeds[k])) for k in self.lowered.inputs]
        out = self.vm["main"](*args, *self.params)
        return {o: out[i].numpy() for i, o in enumerate(self.lowered.outputs)}


@functools.lru_cache(maxsize=None)
def compiled(model: str, spec: str) -> InMemoryTVM:
    return InMemoryTVM(quantized_graph(model, spec))
