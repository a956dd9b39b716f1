"""Graph -> MLIR (func, arith, math, linalg, tensor), built with the upstream MLIR Python bindings that ship
in iree-base-compiler. One converter per IR op, as in the TVM backend's lower.py.

The module holds one function, `@main(*graph inputs, *params) -> (*graph outputs)`. Symbolic dims stay
dynamic (`?`): "S" and "P" are read from the inputs that carry them (tensor.dim) and "P+S" is their sum,
so one compiled module serves prefill (S = prompt length), decode (S = 1) and every KV-cache length P.
Weights are parameters, never constants baked into the module: `LoweredModule.params` lists them in call
order with where each comes from: a graph constant (the artifact's weights.safetensors) or a re-laid-out
copy made at compile time (`relayout`, stored in the target folder's params.safetensors).

qlinear follows compiler/reference.py's contract (see kernels.py): codes are unpacked from the bytes
inside one linalg.generic that also computes the per-group sums (exact int32 for A8, fp32 of fp16 values
for A16); a second generic applies the group scales to the finished group sums. Where N is a multiple of
the lane count (LANES), weights are re-laid out "blocked" (L rows interleaved byte by byte) and the kernel
vectorizes over rows; otherwise it reads the stored layout (the "groupsum" form, slower).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from compiler.backends.mlir import kernels as K
from compiler.backends.mlir.kernels import Builder
from compiler.ir import Graph, Node
from compiler.reference import rope_inv_freq


@dataclass
class LoweredModule:
    module: object  # iree.compiler.ir.Module (keeps its Context alive)
    context: object
    inputs: list[str]  # graph input names, in call order
    params: list[dict]  # [{"key": array name, "source": "weights" | "relayout"}], in call order after the inputs
    outputs: list[str]
    kernels: dict[str, str] = field(default_factory=dict)  # qlinear weight name -> kernel form
    relayout: dict[str, np.ndarray] = field(default_factory=dict)  # arrays the target folder must store

    @property
    def asm(self) -> str:
        return str(self.module)


class _Lowerer:
    def __init__(self, graph: Graph, kind: str):
        self.g = graph
        self.kind = kind
        self.env: dict[str, object] = {}
        self.params: list[str] = []
        self.kernels: dict[str, str] = {}
        self.a8_cache: dict[str, tuple] = {}
        self.a16_cache: dict[str, object] = {}
        self.relayout: dict[str, np.ndarray] = {}
        self.blocked: dict[str, tuple[int, list[str]]] = {}  # qlinear output -> (lanes, relaid keys)

    def value(self, name: str):
        return self.env[name]

    def lower(self) -> LoweredModule:
        from iree.compiler import ir
        from iree.compiler.dialects import func

        g = self.g
        ctx = ir.Context()
        with ctx, ir.Location.unknown():
            module = ir.Module.create()
            module.operation.attributes["sym_name"] = ir.StringAttr.get("lowbit")
            arrays: dict[str, np.ndarray] = {}
            params: list[dict] = []
            for n in g.nodes:
                lanes = _blocked_lanes(n) if n.op == "qlinear" else 0
                if lanes:
                    new = K.relayout_blocked(*(g.consts[c] for c in n.inputs[1:4]), n.attrs, lanes)
                    keys = [f"{c}@blocked{lanes}" for c in n.inputs[1:4]]
                    for key, arr in zip(keys, new):
                        self.relayout[key] = arrays[key] = arr
                        params.append({"key": key, "source": "relayout"})
                    self.blocked[n.outputs[0]] = (lanes, keys)
                rest = n.inputs[4:] if lanes else n.inputs
                for i in rest:
                    if i in g.consts and i not in arrays:
                        arrays[i] = g.consts[i]
                        params.append({"key": i, "source": "weights"})
            self.params = params
            used = [p["key"] for p in params]
            B = Builder()
            B.kind = self.kind
            in_types = [B.tensor_type(t.shape, t.dtype) for t in g.inputs.values()]
            in_types += [B.tensor_type(arrays[c].shape, _dtype(arrays[c])) for c in used]
            out_types = [B.tensor_type(g.types[o].shape, g.types[o].dtype) for o in g.outputs]
            with ir.InsertionPoint(module.body):
                fn = func.FuncOp("main", (in_types, out_types))
                fn.attributes["llvm.emit_c_interface"] = ir.UnitAttr.get()
                entry = fn.add_entry_block()
                with ir.InsertionPoint(entry):
                    names = list(g.inputs) + used
                    for name, arg in zip(names, entry.arguments):
                        self.env[name] = arg
                    B.bind_dims({n: (self.env[n], g.types[n].shape) for n in g.inputs})
                    self.B = B
                    for node in g.nodes:
                        outs = CONVERTERS[node.op](self, node)
                        for o, v in zip(node.outputs, outs):
                            self.env[o] = v
                    func.ReturnOp([self.env[o] for o in g.outputs])
            if not module.operation.verify():
                raise RuntimeError("the lowered MLIR module does not verify")
        return LoweredModule(module, ctx, list(g.inputs), self.params, list(g.outputs), self.kernels, self.relayout)


# ----------------------------------------------------------------------------------------------------------
# Converters: (lowerer, node) -> list of MLIR values, one per node output

CONVERTERS = {}


def conv(name):
    def deco(fn):
        CONVERTERS[name] = fn
        return fn

    return deco


def _ins(L: _Lowerer, n: Node):
    return [L.value(i) for i in n.inputs]


def _shape(L: _Lowerer, name: str):
    return L.g.types[name].shape


@conv("embedding")
def _embedding(L, n):
    ids, table = _ins(L, n)
    return [L.B.gather_rows(ids, table, _shape(L, n.inputs[0]), _shape(L, n.inputs[1]))]


@conv("linear")
def _linear(L, n):
    ins = _ins(L, n)
    xs = _shape(L, n.inputs[0])
    x2, lead = L.B.to_2d(ins[0], xs)
    y = L.B.matmul_nt(x2, ins[1], (lead, xs[-1]), _shape(L, n.inputs[1]))
    if len(ins) == 3:
        y = L.B.binary(y, ins[2], (lead, _shape(L, n.inputs[1])[0]), (_shape(L, n.inputs[1])[0],), "add")
    return [L.B.from_2d(y, _shape(L, n.outputs[0]))]


@conv("qlinear")
def _qlinear(L, n):
    a = n.attrs
    B = L.B
    xs = _shape(L, n.inputs[0])
    x2, lead = B.to_2d(L.value(n.inputs[0]), xs)
    src = n.inputs[0]
    if a["act"] == "a8":
        if src not in L.a8_cache:
            L.a8_cache[src] = B.quantize_a8(x2, lead, a["k"])
        xin = L.a8_cache[src]
    else:
        if src not in L.a16_cache:
            L.a16_cache[src] = B.round_f16(x2, (lead, a["k"]))
        xin = (L.a16_cache[src], None)
    bias = L.value(n.inputs[4]) if len(n.inputs) == 5 else None
    if n.outputs[0] in L.blocked:
        lanes, keys = L.blocked[n.outputs[0]]
        y, form = K.qlinear_blocked(B, xin, lead, *(L.value(c) for c in keys), bias, a, lanes)
    else:
        packed, scales, zeros = (L.value(c) for c in n.inputs[1:4])
        y, form = K.qlinear(B, xin, lead, packed, scales, zeros, bias, a)
    L.kernels[n.inputs[1]] = form
    return [B.from_2d(y, _shape(L, n.outputs[0]))]


@conv("matmul")
def _matmul(L, n):
    raise NotImplementedError("matmul is not produced by any frontend yet")


@conv("rmsnorm")
def _rmsnorm(L, n):
    x, w = _ins(L, n)
    return [L.B.norm(x, w, None, _shape(L, n.inputs[0]), float(n.attrs["eps"]), rms=True)]


@conv("layernorm")
def _layernorm(L, n):
    x, w, b = _ins(L, n)
    return [L.B.norm(x, w, b, _shape(L, n.inputs[0]), float(n.attrs["eps"]), rms=False)]


@conv("rope")
def _rope(L, n):
    x, pos = _ins(L, n)
    shape = _shape(L, n.inputs[0])
    inv = rope_inv_freq(shape[-1], n.attrs["theta"], n.attrs.get("scaling"))
    return [L.B.rope(x, pos, shape, inv)]


@conv("attention")
def _attention(L, n):
    q, k, v = _ins(L, n)
    return [L.B.attention(q, k, v, _shape(L, n.inputs[0]), _shape(L, n.inputs[1]), float(n.attrs["scale"]), bool(n.attrs["causal"]))]


@conv("softmax")
def _softmax(L, n):
    return [L.B.softmax_last(_ins(L, n)[0], _shape(L, n.inputs[0]))]


@conv("silu")
def _silu(L, n):
    return [L.B.unary(_ins(L, n)[0], _shape(L, n.inputs[0]), "silu")]


@conv("gelu")
def _gelu(L, n):
    kind = "gelu_tanh" if n.attrs.get("approximate") == "tanh" else "gelu"
    return [L.B.unary(_ins(L, n)[0], _shape(L, n.inputs[0]), kind)]


@conv("add")
def _add(L, n):
    x, y = _ins(L, n)
    return [L.B.binary(x, y, _shape(L, n.inputs[0]), _shape(L, n.inputs[1]), "add")]


@conv("mul")
def _mul(L, n):
    x, y = _ins(L, n)
    return [L.B.binary(x, y, _shape(L, n.inputs[0]), _shape(L, n.inputs[1]), "mul")]


@conv("reshape")
def _reshape(L, n):
    return [L.B.reshape(_ins(L, n)[0], _shape(L, n.inputs[0]), _shape(L, n.outputs[0]))]


@conv("concat")
def _concat(L, n):
    x, y = _ins(L, n)
    return [L.B.concat(x, y, _shape(L, n.outputs[0]), n.attrs["axis"] % len(_shape(L, n.outputs[0])), L.g.types[n.outputs[0]].dtype, _shape(L, n.inputs[0]))]


@conv("mean")
def _mean(L, n):
    return [L.B.mean(_ins(L, n)[0], _shape(L, n.inputs[0]), n.attrs["axis"] % len(_shape(L, n.inputs[0])))]


@conv("l2norm")
def _l2norm(L, n):
    return [L.B.l2norm(_ins(L, n)[0], _shape(L, n.inputs[0]), float(n.attrs["eps"]))]


LANES = 32  # rows per vector in the blocked qlinear (2 AVX-512 registers of fp32 / int32)


def _blocked_lanes(n: Node) -> int:
    a = n.attrs
    per = 8 if a["layout"] == "planes" else 8 // a["bits"]
    ok = a["n"] % LANES == 0 and a["group_size"] % per == 0 and a["k"] % a["group_size"] == 0
    return LANES if ok else 0


def _dtype(arr: np.ndarray) -> str:
    from compiler.ir import dtype_of

    return dtype_of(arr)


def lower_graph(graph: Graph, kind: str = "cpu") -> LoweredModule:
    """Lower `graph` to a verified MLIR module (kind 'cpu' or 'cuda': the same linalg serves both)."""
    missing = sorted({n.op for n in graph.nodes} - set(CONVERTERS))
    if missing:
        raise NotImplementedError(f"MLIR backend has no converter for ops {missing}")
    return _Lowerer(graph, kind).lower()

