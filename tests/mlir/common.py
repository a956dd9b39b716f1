"""Shared helpers for the MLIR backend tests: graphs lowered and compiled once per session (IREE compile
time dominates), run in this process through iree.runtime."""

from __future__ import annotations

import functools

import numpy as np
import pytest

pytest.importorskip("iree.compiler", reason="IREE's compiler (iree-base-compiler) is not installed")
rt = pytest.importorskip("iree.runtime", reason="IREE's runtime (iree-base-runtime) is not installed")

IDS = [1, 87, 107, 104, 35, 116, 120, 108, 102, 110, 35, 101, 117]
TOL = {"float": 1e-4, "a16": 5e-3, "a8": 2e-2}


def mode(spec: str) -> str:
    if spec == "none":
        return "float"
    return "a8" if "a8" in spec else "a16"


@functools.lru_cache(maxsize=None)
def quantized_graph(model: str, spec: str):
    from compiler.frontend import load_model
    from compiler.quant.apply import quantize_graph
    from compiler.quant.spec import parse_spec

    m = load_model(model)
    s = parse_spec(spec)
    return m.graph if s is None else quantize_graph(m.graph, s, "rtn")


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


def check(out: dict, ref: dict, tol: float, what: str, cos_min: dict | None = None) -> dict:
    """Assert max|out - ref| <= tol * max|ref| and cosine >= 0.999 (or cos_min[name]) for every output;
    returns {name: relative error}."""
    from runtime.compare import cosine

    errs = {}
    for name, r in ref.items():
        a = out[name]
        assert a.shape == r.shape, f"{what} {name}: shape {a.shape} vs {r.shape}"
        scale = max(float(np.abs(r).max()), 1e-6) if r.size else 1.0
        err = float(np.abs(a.astype(np.float64) - r).max()) if r.size else 0.0
        assert err <= tol * scale, f"{what} {name}: max abs err {err:.3g} > {tol} * {scale:.3g}"
        if r.size:
            floor = (cos_min or {}).get(name, 0.999)
            assert cosine(a, r) >= floor, f"{what} {name}: cosine {cosine(a, r):.6f} < {floor}"
        errs[name] = err / scale
    return errs
