"""Graph -> MLIR (func, arith, math, linalg, tensor), built with the upstream MLIR Python bindings that ship
in iree-base-compiler. One converter per IR op, as in the TVM backend's lower.py: the float ops (embedding,
linear, norms, RoPE, attention, softmax, activations, mean, L2 norm) are written here with the general
Builder of builder.py, qlinear with the kernels of qlinear.py. The converter table and the lowerer's
environment come from compiler/backends/lowering.py.

The module holds one function, `@main(*graph inputs, *params) -> (*graph outputs)`. Symbolic dims stay
dynamic (`?`): "S" and "P" are read from the inputs that carry them (tensor.dim) and "P+S" is their sum,
so one compiled module serves prefill (S = prompt length), decode (S = 1) and every KV-cache length P.
Weights are parameters, never constants baked into the module: `LoweredModule.params` lists them in call
order with where each comes from: a graph constant (the artifact's weights.safetensors) or a re-laid-out
copy made at compile time (`relayout`, stored in the target folder's params.safetensors).

qlinear follows compiler/reference.py's contract (see qlinear.py): codes are unpacked from the bytes
inside one linalg.generic that also computes the per-group sums (exact int32 for A8, fp32 of fp16 values
for A16, fp32 of the float32 activations as given for A32); a second generic applies the group scales to the finished group sums. Where N is a multiple of
the lane count (LANES), weights are re-laid out "blocked" (L rows interleaved byte by byte) and the kernel
vectorizes over rows; otherwise it reads the stored layout (the "groupsum" form, slower). Scale-and-minimum
groups (attr mins) take the same kernels with the minimums in place of the zero points. qembedding gathers
and dequantizes rows of a quantized table; a table that a blocked qlinear also reads (the tied LM head) is
read from that qlinear's blocked copy, so the module is passed the table once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from compiler.backends.lowering import Converters, GraphLowerer
from compiler.backends.mlir import qlinear
from compiler.backends.mlir.builder import Builder
from compiler.ir import Graph, Node
from compiler.reference import rope_inv_freq
from compiler.quant.spec import CODED_ACTS

LOWEST_F32 = float(np.finfo(np.float32).min)

# Converters: (lowerer, node) -> list of MLIR values, one per node output
CONVERTERS = Converters("MLIR")
conv = CONVERTERS.register


@dataclass
class LoweredModule:
    module: object  # iree.compiler.ir.Module (keeps its Context alive)
    context: object
    inputs: list[str]  # graph input names, in call order
    params: list[dict]  # [{"key": array name, "source": "weights" | "relayout"}], in call order after the inputs
    outputs: list[str]
    kernels: dict[str, str] = field(default_factory=dict)  # qlinear weight name -> kernel form
    relayout: dict[str, np.ndarray] = field(default_factory=dict)  # arrays the target folder must store
    functions: list[str] = field(default_factory=lambda: ["main"])  # (main_last: LAST_ROW_FUNCTION)

    @property
    def asm(self) -> str:
        return str(self.module)


LAST_ROW_FUNCTION = "main_last"  # main with logits of the last row only (a causal model's prefill for generation)


def _head(g: Graph):
    """The node producing `logits` [S, V] of a causal LM (its last-row function slices the head's input), or None."""
    if not g.meta.get("causal") or "logits" not in g.outputs:
        return None
    node = next((n for n in g.nodes if "logits" in n.outputs and n.op in ("linear", "qlinear")), None)
    return node if node is not None and len(g.types["logits"].shape) == 2 else None


class _Lowerer(GraphLowerer):
    converters = CONVERTERS

    def __init__(self, graph: Graph, kind: str):
        super().__init__(graph, kind)
        self.params: list[str] = []
        self.kernels: dict[str, str] = {}
        self.a8_cache: dict[str, tuple] = {}
        self.a16_cache: dict[tuple[str, str], object] = {}  # (activation, act mode) -> the float activations a qlinear sums
        self.relayout: dict[str, np.ndarray] = {}
        self.blocked: dict[str, tuple[int, list[str]]] = {}  # qlinear output -> (lanes, relaid keys)
        self.override: dict[str, tuple] = {}  # value -> its shape in the function being built (main_last's head)

    def shape(self, name: str) -> tuple:
        return self.override.get(name) or super().shape(name)

    def lower(self) -> LoweredModule:
        from iree.compiler import ir

        g = self.g
        ctx = ir.Context()
        with ctx, ir.Location.unknown():
            module = ir.Module.create()
            module.operation.attributes["sym_name"] = ir.StringAttr.get("lowbit")
            arrays: dict[str, np.ndarray] = {}
            params: list[dict] = []
            # a table that a blocked qlinear also reads (a tied LM head) is gathered from the blocked copy
            shared = {tuple(n.inputs[1:4]): n for n in g.nodes if n.op == "qlinear" and _blocked_lanes(n)}
            for n in g.nodes:
                lanes = _blocked_lanes(n) if n.op == "qlinear" else 0
                head = shared.get(tuple(n.inputs[1:4])) if n.op == "qembedding" else None
                if head is not None:
                    lanes = _blocked_lanes(head)
                if lanes:
                    keys = [f"{c}@blocked{lanes}" for c in n.inputs[1:4]]
                    if keys[0] not in arrays:
                        new = qlinear.relayout_blocked(*(g.consts[c] for c in n.inputs[1:4]), n.attrs, lanes)
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
            self.B = B
            self._function(module, "main", in_types, out_types, used)
            functions = ["main"]
            head = _head(g)
            if head is not None:  # the same calls, the head on the last row: [1, V] logits (TVM's main_last)
                kernels = dict(self.kernels)
                last = [(1, g.types[o].shape[1]) if o == "logits" else g.types[o].shape for o in g.outputs]
                self._function(module, LAST_ROW_FUNCTION, in_types, [B.tensor_type(s, g.types[o].dtype) for s, o in zip(last, g.outputs)], used, head)
                if self.kernels != kernels:
                    raise RuntimeError("main_last took other kernels than main")
                functions.append(LAST_ROW_FUNCTION)
            if not module.operation.verify():
                raise RuntimeError("the lowered MLIR module does not verify")
        return LoweredModule(module, ctx, list(g.inputs), self.params, list(g.outputs), self.kernels, self.relayout, functions)

    def _function(self, module, name: str, in_types, out_types, used: list[str], head=None):
        """One function `name(*graph inputs, *params)` over the whole graph; with `head`, that node reads the last row
        of its input only."""
        from iree.compiler import ir
        from iree.compiler.dialects import func, tensor

        g, B = self.g, self.B
        self.env, self.a8_cache, self.a16_cache, self.override = {}, {}, {}, {}
        B.dims = {}  # (index values belong to the function they were made in)
        with ir.InsertionPoint(module.body):
            fn = func.FuncOp(name, (in_types, out_types))
            fn.attributes["llvm.emit_c_interface"] = ir.UnitAttr.get()
            entry = fn.add_entry_block()
            with ir.InsertionPoint(entry):
                for n, arg in zip(list(g.inputs) + used, entry.arguments):
                    self.env[n] = arg
                B.bind_dims({n: (self.env[n], g.types[n].shape) for n in g.inputs})

                def last_row(node):
                    if node is not head:
                        return
                    from iree.compiler.dialects import arith

                    src = node.inputs[0]
                    rows, k = super(_Lowerer, self).shape(src)
                    dyn = ir.ShapedType.get_dynamic_size()
                    off = arith.subi(B.size_value(rows), B.cindex(1))
                    self.env[src] = tensor.ExtractSliceOp(B.tensor_type((1, k), "f32"), self.env[src], [off], [], [], [dyn, 0], [1, k], [1, 1]).result
                    self.override[src] = (1, k)
                    self.override[node.outputs[0]] = (1, super(_Lowerer, self).shape(node.outputs[0])[1])

                self.convert_nodes(last_row if head is not None else None)
                func.ReturnOp([self.env[o] for o in g.outputs])


# ----------------------------------------------------------------------------------------------------------
# Float ops (B: the Builder; shapes as the graph types give them, symbolic dims as their names)


def gather_rows(B, ids, table, ids_shape, table_shape):
    from iree.compiler.dialects import arith, tensor

    v, h = table_shape
    out_shape = (*ids_shape, h)
    r = len(out_shape)
    d = B.axis_names(r)

    def body(i, _o):
        i64 = B.i64 if B.ir.IntegerType(i.type).width == 64 else B.i32
        c = arith.minsi(arith.maxsi(i, arith.constant(i64, 0)), arith.constant(i64, v - 1))  # clip, as TVM's take
        row = arith.index_cast(B.index, c)
        return tensor.extract(table, [row, B.index_in_region(r - 1)])

    out = B.empty(out_shape, B.f32)
    return B.generic([ids], [out], [f"({', '.join(d)}) -> ({', '.join(d[:-1])})", B.identity_map(r)], "p" * r, body)[0]


def matmul_nt(B, x, w, xshape, wshape):
    from iree.compiler.dialects import arith

    m, n = xshape[0], wshape[0]
    out = B.fill(0.0, (m, n), B.f32)
    return B.generic([x, w], [out], ["(m, n, k) -> (m, k)", "(m, n, k) -> (n, k)", "(m, n, k) -> (m, n)"], "ppr", lambda a, b, o: arith.addf(o, arith.mulf(a, b)))[0]


def binary(B, x, y, xshape, yshape, op):
    from iree.compiler.dialects import arith

    r, ry = len(xshape), len(yshape)
    d = B.axis_names(r)
    ymap = f"({', '.join(d)}) -> ({', '.join(d[r - ry:])})"
    f = arith.addf if op == "add" else arith.mulf
    return B.elementwise([x, y], xshape, B.f32, lambda a, b: f(a, b), [B.identity_map(r), ymap])


def unary(B, x, shape, kind):
    from iree.compiler.dialects import arith, math as m

    one = lambda: B.cf(1.0)  # noqa: E731 - constants are made inside the region

    def silu(v):
        return arith.divf(v, arith.addf(one(), m.exp(arith.negf(v))))

    def gelu(v):
        e = m.erf(arith.mulf(v, B.cf(1.0 / math.sqrt(2.0))))
        return arith.mulf(arith.mulf(B.cf(0.5), v), arith.addf(one(), e))

    def gelu_tanh(v):
        cube = arith.mulf(arith.mulf(v, v), v)
        inner = arith.mulf(B.cf(math.sqrt(2.0 / math.pi)), arith.addf(v, arith.mulf(B.cf(0.044715), cube)))
        return arith.mulf(arith.mulf(B.cf(0.5), v), arith.addf(one(), m.tanh(inner)))

    fn = {"silu": silu, "gelu": gelu, "gelu_tanh": gelu_tanh}[kind]
    return B.elementwise([x], shape, B.f32, fn)


def norm(B, x, w, b, shape, eps, rms):
    """RMSNorm: x / sqrt(mean(x^2) + eps) * w; LayerNorm: (x - mean) / sqrt(var + eps) * w + b."""
    from iree.compiler.dialects import arith, math as m

    r = len(shape)
    hsize = shape[-1]
    wmap = f"({', '.join(B.axis_names(r))}) -> (d{r - 1})"
    if not rms:
        s = B.reduce_last(x, shape, 0.0, arith.addf)
        mean = B.elementwise([s], shape[:-1], B.f32, lambda v: arith.divf(v, B.cf(hsize)))
        x = B.elementwise([x, mean], shape, B.f32, lambda v, mu: arith.subf(v, mu), [B.identity_map(r), B.bcast_last(r)])
    ss = B.reduce_last(x, shape, 0.0, arith.addf, pre=lambda v: arith.mulf(v, v))

    def fin(v, s, wv, *bv):
        den = m.sqrt(arith.addf(arith.divf(s, B.cf(hsize)), B.cf(eps)))
        y = arith.mulf(arith.divf(v, den), wv)
        return arith.addf(y, bv[0]) if bv else y

    ins = [x, ss, w] + ([b] if b is not None else [])
    maps = [B.identity_map(r), B.bcast_last(r), wmap] + ([wmap] if b is not None else [])
    return B.elementwise(ins, shape, B.f32, fin, maps)


def rope(B, x, pos, shape, inv: np.ndarray):
    """Rotate-half RoPE. Angles pos * inv_freq in float64 (as the reference), reduced modulo 2 pi in
    float64, then cos/sin in float32 of the reduced angle."""
    from iree.compiler.dialects import arith, math as m, tensor

    s, h, dd = shape
    half = dd // 2
    inv_full = B.dense(np.concatenate([inv, inv]).astype(np.float64))
    two_pi = 2.0 * math.pi

    def body(p, v, f):
        ang = arith.mulf(arith.sitofp(B.f64, p), f)
        red = arith.subf(ang, arith.mulf(m.floor(arith.divf(ang, B.cf(two_pi, B.f64))), B.cf(two_pi, B.f64)))
        a32 = arith.truncf(B.f32, red)
        cos, sin = m.cos(a32), m.sin(a32)
        i0, i1, c = (B.index_in_region(k) for k in range(3))
        lo = arith.cmpi(arith.CmpIPredicate.ult, c, B.cindex(half))
        partner = arith.select(lo, arith.addi(c, B.cindex(half)), arith.subi(c, B.cindex(half)))
        other = tensor.extract(x, [i0, i1, partner])
        rot = arith.select(lo, arith.negf(other), other)
        return arith.addf(arith.mulf(v, cos), arith.mulf(rot, sin))

    return B.elementwise([pos, x, inv_full], shape, B.f32, body, ["(d0, d1, d2) -> (d0)", B.identity_map(3), "(d0, d1, d2) -> (d2)"])


def softmax_last(B, x, shape):
    from iree.compiler.dialects import arith, math as m

    r = len(shape)
    mx = B.reduce_last(x, shape, LOWEST_F32, arith.maximumf)
    e = B.elementwise([x, mx], shape, B.f32, lambda v, mv: m.exp(arith.subf(v, mv)), [B.identity_map(r), B.bcast_last(r)])
    s = B.reduce_last(e, shape, 0.0, arith.addf)
    return B.elementwise([e, s], shape, B.f32, lambda v, sv: arith.divf(v, sv), [B.identity_map(r), B.bcast_last(r)])


def attention(B, q, k, v, qshape, kshape, scale, causal, pos=None):
    """softmax(q k^T * scale [+ causal mask]) v for q [S, Hq, D], k/v [T, Hk, D]. Query heads are viewed
    as [S, Hk, rep, D] so that head (g, r) reads KV head g with plain (projected-permutation) maps (GQA
    without copies; a floordiv in a map crashes IREE's cuda tiling). Query i sits at (T - S) + i, or, over
    a preallocated cache (`pos` given, i64[S]), at pos[i]: rows past it weigh exactly 0."""
    from iree.compiler.dialects import arith

    s, hq, dd = qshape
    t, hk, _ = kshape
    rep = hq // hk
    q4 = B.reshape(q, qshape, (s, hk, rep, dd))
    sshape = (hk, rep, s, t)
    sc0 = B.fill(0.0, sshape, B.f32)
    sc = B.generic(
        [q4, k],
        [sc0],
        ["(g, r, i, j, c) -> (i, g, r, c)", "(g, r, i, j, c) -> (j, g, c)", "(g, r, i, j, c) -> (g, r, i, j)"],
        "ppppr",
        lambda a, b, o: arith.addf(o, arith.mulf(a, b)),
    )[0]
    if pos is not None:

        def masked(v, p):
            j = arith.index_cast(B.i64, B.index_in_region(3))
            ok = arith.cmpi(arith.CmpIPredicate.sle, j, p)
            return arith.select(ok, arith.mulf(v, B.cf(scale)), B.cf(LOWEST_F32))

        sc = B.elementwise([sc, pos], sshape, B.f32, masked, [B.identity_map(4), "(g, r, i, j) -> (i)"])
        mask = None
    elif causal:
        off = arith.subi(B.size_value(t), B.size_value(s))

        def mask(v):
            i, j = B.index_in_region(2), B.index_in_region(3)
            ok = arith.cmpi(arith.CmpIPredicate.sle, j, arith.addi(off, i))
            return arith.select(ok, arith.mulf(v, B.cf(scale)), B.cf(LOWEST_F32))

    else:

        def mask(v):
            return arith.mulf(v, B.cf(scale))

    if mask is not None:
        sc = B.elementwise([sc], sshape, B.f32, mask)
    p = softmax_last(B, sc, sshape)
    o0 = B.fill(0.0, (s, hk, rep, dd), B.f32)
    o = B.generic(
        [p, v],
        [o0],
        ["(i, g, r, c, j) -> (g, r, i, j)", "(i, g, r, c, j) -> (j, g, c)", "(i, g, r, c, j) -> (i, g, r, c)"],
        "ppppr",
        lambda a, b, o: arith.addf(o, arith.mulf(a, b)),
    )[0]
    return B.reshape(o, (s, hk, rep, dd), qshape)


def kv_write(B, cache, new, pos):
    """The new rows [S, H, D] inserted at row pos[0] of the cache [C, H, D]: a tensor.insert_slice into the
    function argument, which IREE bufferizes in place (the result is the argument's buffer, written in S rows;
    runtime/backends/mlir.py passes the same device array every step)."""
    from iree.compiler.dialects import arith, tensor

    dyn = B.ir.ShapedType.get_dynamic_size()
    st = B.ir.RankedTensorType(new.type)
    sizes = [dyn if st.is_dynamic_dim(i) else st.shape[i] for i in range(3)]
    dyn_sizes = [tensor.dim(new, B.cindex(i)) for i in range(3) if st.is_dynamic_dim(i)]
    off = arith.index_cast(B.index, tensor.extract(pos, [B.cindex(0)]))
    return tensor.InsertSliceOp(new, cache, [off], dyn_sizes, [], [dyn, 0, 0], sizes, [1, 1, 1]).result


def mean(B, x, shape, axis):
    from iree.compiler.dialects import arith

    r = len(shape)
    d = B.axis_names(r)
    out_shape = tuple(dim for i, dim in enumerate(shape) if i != axis)
    out = B.fill(0.0, out_shape, B.f32)
    # loop order: the kept dims, then the reduced one
    loop = [x for i, x in enumerate(d) if i != axis] + [d[axis]]
    s = B.generic([x], [out], [f"({', '.join(loop)}) -> ({', '.join(d)})", f"({', '.join(loop)}) -> ({', '.join(loop[:-1])})"], "p" * (r - 1) + "r", lambda v, o: arith.addf(o, v))[0]
    n = arith.sitofp(B.f32, arith.index_cast(B.i64, B.size_value(shape[axis])))
    return B.elementwise([s], out_shape, B.f32, lambda v: arith.divf(v, n))


def l2norm(B, x, shape, eps):
    from iree.compiler.dialects import arith, math as m

    r = len(shape)
    ss = B.reduce_last(x, shape, 0.0, arith.addf, pre=lambda v: arith.mulf(v, v))
    return B.elementwise([x, ss], shape, B.f32, lambda v, s: arith.divf(v, arith.maximumf(m.sqrt(s), B.cf(eps))), [B.identity_map(r), B.bcast_last(r)])


# ----------------------------------------------------------------------------------------------------------
# Converters


@conv("embedding")
def _embedding(L, n):
    ids, table = L.ins(n)
    return [gather_rows(L.B, ids, table, L.shape(n.inputs[0]), L.shape(n.inputs[1]))]


@conv("linear")
def _linear(L, n):
    ins = L.ins(n)
    xs = L.shape(n.inputs[0])
    x2, lead = L.B.to_2d(ins[0], xs)
    y = matmul_nt(L.B, x2, ins[1], (lead, xs[-1]), L.shape(n.inputs[1]))
    if len(ins) == 3:
        y = binary(L.B, y, ins[2], (lead, L.shape(n.inputs[1])[0]), (L.shape(n.inputs[1])[0],), "add")
    return [L.B.from_2d(y, L.shape(n.outputs[0]))]


@conv("qlinear")
def _qlinear(L, n):
    a = n.attrs
    B = L.B
    xs = L.shape(n.inputs[0])
    x2, lead = B.to_2d(L.value(n.inputs[0]), xs)
    src = n.inputs[0]
    if a["act"] in ("a8", *CODED_ACTS):
        key = (src, a["act"])
        if key not in L.a8_cache:
            L.a8_cache[key] = qlinear.activations(B, x2, lead, a["k"], a["act"])
        xin = L.a8_cache[key]
        a = qlinear.kernel_attrs(a)
    else:
        key = (src, a["act"])  # A16: rounded to fp16 once per activation; A32: x as given
        if key not in L.a16_cache:
            L.a16_cache[key] = qlinear.float_activations(B, x2, (lead, a["k"]), a["act"])
        xin = (L.a16_cache[key], None)
    bias = L.value(n.inputs[4]) if len(n.inputs) == 5 else None
    if n.outputs[0] in L.blocked:
        lanes, keys = L.blocked[n.outputs[0]]
        y, form = qlinear.qlinear_blocked(B, xin, lead, *(L.value(c) for c in keys), bias, a, lanes)
    else:
        packed, scales, zeros = (L.value(c) for c in n.inputs[1:4])
        y, form = qlinear.qlinear(B, xin, lead, packed, scales, zeros, bias, a)
    L.kernels[n.inputs[1]] = form
    return [B.from_2d(y, L.shape(n.outputs[0]))]


@conv("qembedding")
def _qembedding(L, n):
    ids = L.value(n.inputs[0])
    if n.outputs[0] in L.blocked:
        lanes, keys = L.blocked[n.outputs[0]]
        table = [L.value(c) for c in keys]
    else:
        lanes, table = 0, [L.value(c) for c in n.inputs[1:4]]
    return [qlinear.qembedding_rows(L.B, ids, *table, n.attrs, L.shape(n.inputs[0]), lanes)]


@conv("sparse_matmul")
def _sparse_matmul(L, n):
    # y[m, n] = sum_c x[m, cols[n, c]] * f32(vals[n, c]): a reduction over c with the input gathered by column
    from iree.compiler.dialects import arith, tensor

    B = L.B
    x, cols, vals = L.ins(n)
    xs = L.shape(n.inputs[0])
    x2, lead = B.to_2d(x, xs)
    nn = n.attrs["n"]

    def body(ci, v, o):
        k = arith.index_cast(B.index, ci)
        xv = tensor.extract(x2, [B.index_in_region(0), k])
        return arith.addf(o, arith.mulf(xv, arith.extf(B.f32, v)))

    out = B.fill(0.0, (lead, nn), B.f32)
    y = B.generic([cols, vals], [out], ["(m, n, c) -> (n, c)", "(m, n, c) -> (n, c)", "(m, n, c) -> (m, n)"], "ppr", body)[0]
    return [B.from_2d(y, L.shape(n.outputs[0]))]


@conv("matmul")
def _matmul(L, n):
    raise NotImplementedError("matmul is not produced by any frontend yet")


@conv("rmsnorm")
def _rmsnorm(L, n):
    x, w = L.ins(n)
    return [norm(L.B, x, w, None, L.shape(n.inputs[0]), float(n.attrs["eps"]), rms=True)]


@conv("layernorm")
def _layernorm(L, n):
    x, w, b = L.ins(n)
    return [norm(L.B, x, w, b, L.shape(n.inputs[0]), float(n.attrs["eps"]), rms=False)]


@conv("rope")
def _rope(L, n):
    x, pos = L.ins(n)
    shape = L.shape(n.inputs[0])
    inv = rope_inv_freq(shape[-1], n.attrs["theta"], n.attrs.get("scaling"))
    return [rope(L.B, x, pos, shape, inv)]


@conv("attention")
def _attention(L, n):
    q, k, v = L.ins(n)
    return [attention(L.B, q, k, v, L.shape(n.inputs[0]), L.shape(n.inputs[1]), float(n.attrs["scale"]), bool(n.attrs["causal"]))]


@conv("cache_attention")
def _cache_attention(L, n):
    from iree.compiler.dialects import arith

    q, k, v, pos = L.ins(n)
    kshape = L.shape(n.inputs[1])
    if L.g.types[n.inputs[1]].dtype == "f16":  # --kv fp16: a float32 copy for the masked attention
        k, v = (L.B.elementwise([c], kshape, L.B.f32, lambda x: arith.extf(L.B.f32, x)) for c in (k, v))
    return [attention(L.B, q, k, v, L.shape(n.inputs[0]), kshape, float(n.attrs["scale"]), True, pos)]


@conv("kv_write")
def _kv_write(L, n):
    from iree.compiler.dialects import arith

    cache, new, pos = L.ins(n)
    if L.g.types[n.inputs[0]].dtype == "f16":  # rounded to nearest even as they are stored
        new = L.B.elementwise([new], L.shape(n.inputs[1]), L.B.f16, lambda x: arith.truncf(L.B.f16, x))
    return [kv_write(L.B, cache, new, pos)]


def e4m3_code(B, y):
    """The E4M3 code (i32) of f32 y, |y| <= 448, by the arithmetic of compiler/backends/tvm/kv_cache.e4m3_code:
    e = max(exponent of |y|, -6), m = roundeven(|y| 2^(3 - e)), code ((e + 7) << 3) + m - 8, the sign bit for y < 0."""
    from iree.compiler.dialects import arith, math as m

    a = m.absf(y)
    e = arith.maxsi(arith.subi(arith.shrui(arith.bitcast(B.i32, a), B.ci(23)), B.ci(127)), B.ci(-6))
    scale = arith.bitcast(B.f32, arith.shli(arith.subi(B.ci(130), e), B.ci(23)))
    sig = arith.fptosi(B.i32, m.roundeven(arith.mulf(a, scale)))
    mag = arith.subi(arith.addi(arith.shli(arith.addi(e, B.ci(7)), B.ci(3)), sig), B.ci(8))
    return arith.ori(mag, arith.select(arith.cmpf(arith.CmpFPredicate.OLT, y, B.cf(0.0)), B.ci(128), B.ci(0)))


def kv_quantize(B, new, shape, bits: int, group: int, code: str = "int"):
    """(codes, scales) of the new rows [S, H, D] in the quantized cache's forms (compiler.passes.kv_quant): the
    group's max |x| / qmax rounded to f16, codes clamp(roundeven(x / s)) as i8 (int8) or q + 8 in nibbles (int4);
    code e4m3 (fp8): e4m3_code(clamp(x / s, -448, 448)), qmax 448."""
    from iree.compiler.dialects import arith, math as m

    s_, h, d = shape
    ng = d // group
    qmax = 448.0 if code == "e4m3" else {8: 127.0, 4: 7.0, 2: 1.5}[bits]  # 2 bits: four levels (q - 1.5) s, s = max |x| / 1.5
    lo, hi, off = (0.0, 3.0, 1.5) if bits == 2 else (-qmax, qmax, 0.0)
    xg = B.reshape(new, shape, (s_, h, ng, group))
    amax = B.reduce_last(xg, (s_, h, ng, group), 0.0, arith.maximumf, pre=lambda v: m.absf(v))
    sc16 = B.elementwise([amax], (s_, h, ng), B.f16, lambda v: arith.truncf(B.f16, arith.divf(v, B.cf(qmax))))

    def qcode(v, s16):
        sf = arith.extf(B.f32, s16)
        safe = arith.select(arith.cmpf(arith.CmpFPredicate.OGT, sf, B.cf(0.0)), sf, B.cf(1.0))
        x = arith.divf(v, safe)
        if code == "e4m3":
            return e4m3_code(B, arith.minimumf(arith.maximumf(x, B.cf(-qmax)), B.cf(qmax)))
        r = m.roundeven(arith.addf(x, B.cf(off)) if off else x)
        return arith.fptosi(B.i32, arith.minimumf(arith.maximumf(r, B.cf(lo)), B.cf(hi)))

    q = B.elementwise([xg, sc16], (s_, h, ng, group), B.i32, qcode, [B.identity_map(4), B.bcast_last(4)])
    q = B.reshape(q, (s_, h, ng, group), (s_, h, d))
    if bits == 2:  # byte e of each 64 values holds elements e + 16 k at bits 2 k
        q4 = B.reshape(q, (s_, h, d), (s_, h, d // 64, 4, 16))

        def pack2(a, b, c, e):
            v = arith.ori(arith.ori(a, arith.shli(b, B.ci(2))), arith.ori(arith.shli(c, B.ci(4)), arith.shli(e, B.ci(6))))
            return arith.trunci(B.i8, v)

        maps = [f"(a, b, c, e) -> (a, b, c, {k}, e)" for k in range(4)]
        codes = B.elementwise([q4] * 4, (s_, h, d // 64, 16), B.i8, pack2, maps)
        return B.reshape(codes, (s_, h, d // 64, 16), (s_, h, d // 4)), sc16
    if bits == 8:  # int8 codes, or the E4M3 bit patterns
        return B.elementwise([q], (s_, h, d), B.i8, lambda v: arith.trunci(B.i8, v)), sc16
    half = group // 2  # q4_0 order: byte i of a group holds elements i (low nibble) and i + 16 (high)
    q2 = B.reshape(q, (s_, h, d), (s_, h, ng, 2, half))

    def pack(lo, hi):
        lo8 = arith.addi(lo, B.ci(8))
        hi8 = arith.shli(arith.addi(hi, B.ci(8)), B.ci(4))
        return arith.trunci(B.i8, arith.ori(lo8, hi8))

    codes = B.elementwise([q2, q2], (s_, h, ng, half), B.i8, pack, ["(a, b, c, e) -> (a, b, c, 0, e)", "(a, b, c, e) -> (a, b, c, 1, e)"])
    return B.reshape(codes, (s_, h, ng, half), (s_, h, d // 2)), sc16


def kv_dequantize(B, codes, scales, rows, heads, d: int, bits: int, group: int, code: str = "int"):
    """The float rows [C, H, D] of a quantized cache: s * q (a float copy of the cache; tvm-cpu reads it in registers)."""
    from iree.compiler.dialects import arith

    if code == "e4m3":
        def body(c, s, _o):  # the code's fp16 bit pattern (sign << 15 | exp.man << 7) is its value times 2^-8
            ci = arith.extui(B.i32, c)
            h16 = arith.ori(arith.shli(arith.andi(ci, B.ci(0x7F)), B.ci(7)), arith.shli(arith.andi(ci, B.ci(0x80)), B.ci(8)))
            v = arith.extf(B.f32, arith.bitcast(B.f16, arith.trunci(B.i16, h16)))
            return arith.mulf(v, arith.mulf(arith.extf(B.f32, s), B.cf(256.0)))

        maps = ["(a, b, c) -> (a, b, c)", f"(a, b, c) -> (a, b, c floordiv {group})", "(a, b, c) -> (a, b, c)"]
    elif bits == 8:
        def body(c, s, _o):
            return arith.mulf(arith.sitofp(B.f32, c), arith.extf(B.f32, s))

        maps = ["(a, b, c) -> (a, b, c)", f"(a, b, c) -> (a, b, c floordiv {group})", "(a, b, c) -> (a, b, c)"]
    elif bits == 2:
        def body(c, s, _o):  # element c: byte (c / 64) * 16 + c % 16, bits 2 ((c % 64) / 16); (q - 1.5) s
            sh = arith.muli(arith.divui(arith.remui(arith.index_cast(B.i32, B.index_in_region(2)), B.ci(64)), B.ci(16)), B.ci(2))
            q = arith.andi(arith.shrui(arith.extui(B.i32, c), sh), B.ci(3))
            return arith.mulf(arith.subf(arith.sitofp(B.f32, q), B.cf(1.5)), arith.extf(B.f32, s))

        maps = ["(a, b, c) -> (a, b, (c floordiv 64) * 16 + c mod 16)", f"(a, b, c) -> (a, b, c floordiv {group})", "(a, b, c) -> (a, b, c)"]
    else:
        half = group // 2

        def body(c, s, _o):  # element c of the row: byte (c / 32) * 16 + c % 16, the high nibble when c % 32 >= 16
            sh = arith.muli(arith.divui(arith.remui(arith.index_cast(B.i32, B.index_in_region(2)), B.ci(group)), B.ci(half)), B.ci(4))
            q = arith.subi(arith.andi(arith.shrui(arith.extui(B.i32, c), sh), B.ci(15)), B.ci(8))
            return arith.mulf(arith.sitofp(B.f32, q), arith.extf(B.f32, s))

        maps = [f"(a, b, c) -> (a, b, (c floordiv {group}) * {half} + c mod {half})", f"(a, b, c) -> (a, b, c floordiv {group})", "(a, b, c) -> (a, b, c)"]
    out = B.empty((rows, heads, d), B.f32)
    return B.generic([codes, scales], [out], maps, "ppp", body)[0]


def pack_unsigned(B, u, shape, bits: int, group: int):
    """Unsigned codes u i32[R, H, D] packed as the cache's bytes (compiler.reference._pack): int4 nibbles per group
    (byte i holds elements i and i + group / 2), int2 per 64 values (byte e holds elements e + 16 k at bits 2 k)."""
    from iree.compiler.dialects import arith

    r, h, d = shape
    if bits == 2:
        q4 = B.reshape(u, shape, (r, h, d // 64, 4, 16))

        def pack2(a, b, c, e):
            return arith.trunci(B.i8, arith.ori(arith.ori(a, arith.shli(b, B.ci(2))), arith.ori(arith.shli(c, B.ci(4)), arith.shli(e, B.ci(6)))))

        codes = B.elementwise([q4] * 4, (r, h, d // 64, 16), B.i8, pack2, [f"(a, b, c, e) -> (a, b, c, {k}, e)" for k in range(4)])
        return B.reshape(codes, (r, h, d // 64, 16), (r, h, d // 4))
    half = group // 2
    q2 = B.reshape(u, shape, (r, h, d // group, 2, half))
    codes = B.elementwise([q2, q2], (r, h, d // group, half), B.i8, lambda lo, hi: arith.trunci(B.i8, arith.ori(lo, arith.shli(hi, B.ci(4)))),
                          ["(a, b, c, e) -> (a, b, c, 0, e)", "(a, b, c, e) -> (a, b, c, 1, e)"])
    return B.reshape(codes, (r, h, d // group, half), (r, h, d // 2))


@conv("kv_write_kc")
def _kv_write_kc(L, n):
    """Keys per channel (compiler.reference's kv_write_kc): the token groups g0 = positions[0] / 32 .. g1 = positions[-1] / 32
    gathered in float (ring rows before the step, the step's rows after it, rows past the last position left out of
    the minimum and maximum), their scale and minimum rows inserted at g0 and their rows' codes at 32 g0, in place."""
    from iree.compiler.dialects import arith, math as m, tensor

    from compiler.kvformat import TOKEN_GROUP as TG

    B, a = L.B, n.attrs
    codes, params, ring, new, pos = L.ins(n)
    heads, d = L.shape(n.inputs[3])[1:]
    bits, w = a["bits"], a["window"]
    qmax = float(2**bits - 1)
    sdim = tensor.dim(new, B.cindex(0))
    p0 = arith.index_cast(B.index, tensor.extract(pos, [B.cindex(0)]))
    pl = arith.index_cast(B.index, tensor.extract(pos, [arith.subi(sdim, B.cindex(1))]))
    g0 = arith.divui(p0, B.cindex(TG))
    r0 = arith.muli(g0, B.cindex(TG))
    ng = arith.addi(arith.subi(arith.divui(pl, B.cindex(TG)), g0), B.cindex(1))
    tag = f"kc{L.__dict__.setdefault('kc_count', 0)}"
    L.kc_count += 1
    B.dims[f"{tag}.rows"], B.dims[f"{tag}.groups"] = arith.muli(ng, B.cindex(TG)), ng
    rows, groups = f"{tag}.rows", f"{tag}.groups"

    def gather(_o):  # row r0 + t of the groups, in float
        t, h, e = (B.index_in_region(k) for k in range(3))
        r = arith.addi(r0, t)
        is_new = arith.cmpi(arith.CmpIPredicate.sge, r, p0)
        nr = arith.select(is_new, arith.subi(r, p0), B.cindex(0))
        nr = arith.minui(nr, arith.subi(sdim, B.cindex(1)))  # rows past the last position: any row in bounds (left out below)
        return arith.select(is_new, tensor.extract(new, [nr, h, e]), tensor.extract(ring, [arith.remui(r, B.cindex(w)), h, e]))

    xs = B.generic([], [B.empty((rows, heads, d), B.f32)], [B.identity_map(3)], "ppp", gather)[0]

    def extrema(x, _t, lo, hi):  # over the group's rows up to the last position
        g, t = B.index_in_region(0), B.index_in_region(1)
        ok = arith.cmpi(arith.CmpIPredicate.ule, arith.addi(r0, arith.addi(arith.muli(g, B.cindex(TG)), t)), pl)
        return arith.select(ok, arith.minimumf(lo, x), lo), arith.select(ok, arith.maximumf(hi, x), hi)

    lo, hi = B.generic([xs, B.empty((TG,), B.f32)], [B.fill(3.0e38, (groups, heads, d), B.f32), B.fill(-3.0e38, (groups, heads, d), B.f32)],
                       [f"(g, t, h, e) -> (g * {TG} + t, h, e)", "(g, t, h, e) -> (t)", "(g, t, h, e) -> (g, h, e)", "(g, t, h, e) -> (g, h, e)"], "prpp", extrema)
    sc16 = B.elementwise([lo, hi], (groups, heads, d), B.f16, lambda a_, b_: arith.truncf(B.f16, arith.divf(arith.subf(b_, a_), B.cf(qmax))))
    mn16 = B.elementwise([lo], (groups, heads, d), B.f16, lambda a_: arith.truncf(B.f16, a_))

    def code(x, s16, m16):
        sf = arith.extf(B.f32, s16)
        safe = arith.select(arith.cmpf(arith.CmpFPredicate.OGT, sf, B.cf(0.0)), sf, B.cf(1.0))
        r = m.roundeven(arith.divf(arith.subf(x, arith.extf(B.f32, m16)), safe))
        return arith.fptosi(B.i32, arith.minimumf(arith.maximumf(r, B.cf(0.0)), B.cf(qmax)))

    grp = f"(r, h, e) -> (r floordiv {TG}, h, e)"
    u = B.elementwise([xs, sc16, mn16], (rows, heads, d), B.i32, code, [B.identity_map(3), grp, grp])
    packed = pack_unsigned(B, u, (rows, heads, d), bits, a["group"])
    dyn = B.ir.ShapedType.get_dynamic_size()
    nrows = arith.subi(arith.addi(pl, B.cindex(1)), r0)  # the rows written so far: up to the last position
    nb = d * bits // 8
    part = tensor.ExtractSliceOp(B.tensor_type((None, heads, nb), B.i8), packed, [], [nrows], [], [0, 0, 0], [dyn, heads, nb], [1, 1, 1]).result
    codes = tensor.InsertSliceOp(part, codes, [r0], [nrows], [], [dyn, 0, 0], [dyn, heads, nb], [1, 1, 1]).result
    params = tensor.InsertSliceOp(sc16, params, [g0], [ng], [], [dyn, 0, 0], [dyn, heads, d], [1, 1, 1]).result
    params = tensor.InsertSliceOp(mn16, params, [g0], [ng], [], [dyn, 0, d], [dyn, heads, d], [1, 1, 1]).result
    return [codes, params]


def kv_dequantize_channels(B, codes, params, rows, heads, d: int, bits: int, group: int):
    """The float rows [C, H, D] of -kc keys: u s + m with row j's token group's scale and minimum (reference.kv_dequantize_channels)."""
    from iree.compiler.dialects import arith

    from compiler.kvformat import TOKEN_GROUP as TG

    if bits == 2:
        cmap = "(a, b, c) -> (a, b, (c floordiv 64) * 16 + c mod 16)"

        def unsigned(c):
            sh = arith.muli(arith.divui(arith.remui(arith.index_cast(B.i32, B.index_in_region(2)), B.ci(64)), B.ci(16)), B.ci(2))
            return arith.andi(arith.shrui(arith.extui(B.i32, c), sh), B.ci(3))
    else:
        half = group // 2
        cmap = f"(a, b, c) -> (a, b, (c floordiv {group}) * {half} + c mod {half})"

        def unsigned(c):
            sh = arith.muli(arith.divui(arith.remui(arith.index_cast(B.i32, B.index_in_region(2)), B.ci(group)), B.ci(half)), B.ci(4))
            return arith.andi(arith.shrui(arith.extui(B.i32, c), sh), B.ci(15))

    def body(c, s, mn, _o):
        return arith.addf(arith.mulf(arith.sitofp(B.f32, unsigned(c)), arith.extf(B.f32, s)), arith.extf(B.f32, mn))

    from iree.compiler.dialects import tensor

    # the scale and minimum halves as their own tensors (a map reading c + D would size the loop by the 2 D row)
    dyn = B.ir.ShapedType.get_dynamic_size()
    ng = tensor.dim(params, B.cindex(0))
    half_of = [tensor.ExtractSliceOp(B.tensor_type((None, heads, d), B.f16), params, [], [ng], [], [0, 0, o], [dyn, heads, d], [1, 1, 1]).result for o in (0, d)]
    grp = f"(a, b, c) -> (a floordiv {TG}, b, c)"
    return B.generic([codes, *half_of], [B.empty((rows, heads, d), B.f32)], [cmap, grp, grp, "(a, b, c) -> (a, b, c)"], "ppp", body)[0]


@conv("kv_write_q")
def _kv_write_q(L, n):
    codes, scales, new, pos = L.ins(n)
    a = n.attrs
    qc, qs = kv_quantize(L.B, new, L.shape(n.inputs[2]), a["bits"], a["group"], a.get("code", "int"))
    return [kv_write(L.B, codes, qc, pos), kv_write(L.B, scales, qs, pos)]


@conv("cache_attention_q")
def _cache_attention_q(L, n):
    q, kc, ks, vc, vs, pos = L.ins(n)[:6]
    a = n.attrs
    rows, heads = L.shape(n.inputs[1])[:2]
    d = L.shape(n.inputs[0])[2]
    if a.get("keys") == "channel":
        k = kv_dequantize_channels(L.B, kc, ks, rows, heads, d, a["bits"], a["group"])
    else:
        k = kv_dequantize(L.B, kc, ks, rows, heads, d, a["bits"], a["group"], a.get("code", "int"))
    v = kv_dequantize(L.B, vc, vs, rows, heads, d, a["bits"], a["group"], a.get("code", "int"))
    if not a.get("window"):
        return [attention(L.B, q, k, v, L.shape(n.inputs[0]), (rows, heads, d), float(a["scale"]), True, pos)]
    kw, vw, kn, vn = L.ins(n)[6:]
    return window_attention(L.B, q, k, v, kw, vw, kn, vn, pos, L.shape(n.inputs[0]), (rows, heads, d), float(a["scale"]), a["window"])


def window_attention(B, q, kq, vq, kw, vw, kn, vn, pos, qshape, kshape, scale, w):
    """cache_attention_q with a float window of w rows (docs/DESIGN.md, KV cache), masked over the cache's C rows as
    `attention` is: float rows kf / vf (this step's new rows at positions[0].., ring rows j % w for the w rows before),
    scores from both, each (i, j) taking the float one when j > positions[i] - w; then the rings with the step's last
    min(S, w) rows in place of the oldest. Returns (o, k ring, v ring)."""
    from iree.compiler.dialects import arith, tensor

    s, hq, dd = qshape
    t, hk, _ = kshape
    rep = hq // hk
    p0 = arith.index_cast(B.index, tensor.extract(pos, [B.cindex(0)]))
    sdim = tensor.dim(kn, B.cindex(0))

    def floats(new, ring):
        def body(_o):  # row j: the step's row j - p0, or ring row j % w before the step (zeros elsewhere: never read)
            j, h, e = (B.index_in_region(k) for k in range(3))
            off = arith.subi(j, p0)
            in_new = arith.andi(arith.cmpi(arith.CmpIPredicate.sge, j, p0), arith.cmpi(arith.CmpIPredicate.slt, off, sdim))
            in_ring = arith.andi(arith.cmpi(arith.CmpIPredicate.slt, j, p0), arith.cmpi(arith.CmpIPredicate.sge, arith.addi(j, B.cindex(w)), p0))
            a = tensor.extract(new, [arith.select(in_new, off, B.cindex(0)), h, e])
            b = tensor.extract(ring, [arith.remui(j, B.cindex(w)), h, e])
            return arith.select(in_new, a, arith.select(in_ring, b, B.cf(0.0)))

        return B.generic([], [B.empty(kshape, B.f32)], [B.identity_map(3)], "ppp", body)[0]

    kf, vf = floats(kn, kw), floats(vn, vw)
    q4 = B.reshape(q, qshape, (s, hk, rep, dd))
    sshape = (hk, rep, s, t)

    def scores(k):
        return B.generic([q4, k], [B.fill(0.0, sshape, B.f32)],
                         ["(g, r, i, j, c) -> (i, g, r, c)", "(g, r, i, j, c) -> (j, g, c)", "(g, r, i, j, c) -> (g, r, i, j)"], "ppppr",
                         lambda x, y, o: arith.addf(o, arith.mulf(x, y)))[0]

    def is_float(p):  # (g, r, i, j) region: row j read in float by query i
        j = arith.index_cast(B.i64, B.index_in_region(3))
        return arith.cmpi(arith.CmpIPredicate.sgt, arith.addi(j, arith.constant(B.i64, w)), p)

    def masked(vq_, vf_, p):
        j = arith.index_cast(B.i64, B.index_in_region(3))
        val = arith.mulf(arith.select(is_float(p), vf_, vq_), B.cf(scale))
        return arith.select(arith.cmpi(arith.CmpIPredicate.sle, j, p), val, B.cf(LOWEST_F32))

    bmaps = [B.identity_map(4), B.identity_map(4), "(g, r, i, j) -> (i)"]
    sc = B.elementwise([scores(kq), scores(kf), pos], sshape, B.f32, masked, bmaps)
    pr = softmax_last(B, sc, sshape)
    pq = B.elementwise([pr, pos], sshape, B.f32, lambda x, p: arith.select(is_float(p), B.cf(0.0), x), [B.identity_map(4), "(g, r, i, j) -> (i)"])
    pf = B.elementwise([pr, pos], sshape, B.f32, lambda x, p: arith.select(is_float(p), x, B.cf(0.0)), [B.identity_map(4), "(g, r, i, j) -> (i)"])
    o = B.fill(0.0, (s, hk, rep, dd), B.f32)
    for pp, vv in ((pq, vq), (pf, vf)):
        o = B.generic([pp, vv], [o], ["(i, g, r, c, j) -> (g, r, i, j)", "(i, g, r, c, j) -> (j, g, c)", "(i, g, r, c, j) -> (i, g, r, c)"], "ppppr",
                      lambda x, y, acc: arith.addf(acc, arith.mulf(x, y)))[0]
    last = arith.subi(arith.addi(p0, sdim), B.cindex(1))

    def ring_out(new, ring):
        def body(old, _o):  # slot r holds row last - ((last - r) mod w): this step's when that row is >= p0
            r, h, e = (B.index_in_region(k) for k in range(3))
            back = arith.remsi(arith.addi(arith.subi(last, r), B.cindex(w * (1 << 20))), B.cindex(w))  # (non-negative: last - r > -w)
            tt = arith.subi(arith.subi(last, back), p0)
            fresh = arith.cmpi(arith.CmpIPredicate.sge, tt, B.cindex(0))
            return arith.select(fresh, tensor.extract(new, [arith.select(fresh, tt, B.cindex(0)), h, e]), old)

        rshape = (w, hk, dd)
        return B.generic([ring], [B.empty(rshape, B.f32)], [B.identity_map(3), B.identity_map(3)], "ppp", body)[0]

    return [B.reshape(o, (s, hk, rep, dd), qshape), ring_out(kn, kw), ring_out(vn, vw)]


def hadamard(B, x, shape, size: int):
    """The reference's butterfly (compiler.reference.hadamard), one elementwise stage per h = 1, 2, 4, ...: element c
    and its partner c ^ h (in the same block of `size`) give their sum at the lower index and their difference at
    the upper, then one multiply by float32(1 / sqrt(size)); the same float operations, so bit for bit."""
    from iree.compiler.dialects import arith, tensor

    r = len(shape)
    h = 1
    while h < size:
        def body(v, x=x, h=h):
            idx = [B.index_in_region(k) for k in range(r)]
            c = idx[-1]
            partner = arith.xori(c, B.cindex(h))
            other = tensor.extract(x, [*idx[:-1], partner])
            lo = arith.cmpi(arith.CmpIPredicate.eq, arith.andi(c, B.cindex(h)), B.cindex(0))
            return arith.select(lo, arith.addf(v, other), arith.subf(other, v))

        x = B.elementwise([x], shape, B.f32, body)
        h *= 2
    scale = float(np.float32(1.0 / math.sqrt(size)))
    return B.elementwise([x], shape, B.f32, lambda v: arith.mulf(v, B.cf(scale)))


@conv("hadamard")
def _hadamard(L, n):
    return [hadamard(L.B, L.ins(n)[0], L.shape(n.inputs[0]), n.attrs["size"])]


@conv("softmax")
def _softmax(L, n):
    return [softmax_last(L.B, L.ins(n)[0], L.shape(n.inputs[0]))]


@conv("silu")
def _silu(L, n):
    return [unary(L.B, L.ins(n)[0], L.shape(n.inputs[0]), "silu")]


@conv("gelu")
def _gelu(L, n):
    kind = "gelu_tanh" if n.attrs.get("approximate") == "tanh" else "gelu"
    return [unary(L.B, L.ins(n)[0], L.shape(n.inputs[0]), kind)]


@conv("add")
def _add(L, n):
    x, y = L.ins(n)
    return [binary(L.B, x, y, L.shape(n.inputs[0]), L.shape(n.inputs[1]), "add")]


@conv("mul")
def _mul(L, n):
    x, y = L.ins(n)
    return [binary(L.B, x, y, L.shape(n.inputs[0]), L.shape(n.inputs[1]), "mul")]


@conv("reshape")
def _reshape(L, n):
    return [L.B.reshape(L.ins(n)[0], L.shape(n.inputs[0]), L.shape(n.outputs[0]))]


@conv("concat")
def _concat(L, n):
    x, y = L.ins(n)
    return [L.B.concat(x, y, L.shape(n.outputs[0]), n.attrs["axis"] % len(L.shape(n.outputs[0])), L.g.types[n.outputs[0]].dtype, L.shape(n.inputs[0]))]


@conv("mean")
def _mean(L, n):
    return [mean(L.B, L.ins(n)[0], L.shape(n.inputs[0]), n.attrs["axis"] % len(L.shape(n.inputs[0])))]


@conv("l2norm")
def _l2norm(L, n):
    return [l2norm(L.B, L.ins(n)[0], L.shape(n.inputs[0]), float(n.attrs["eps"]))]


LANES = 32  # rows per vector in the blocked qlinear (2 AVX-512 registers of fp32 / int32)


def _blocked_lanes(n: Node) -> int:
    a = n.attrs
    per = 8 if a["layout"] == "planes" else 8 // a["bits"]
    ok = a["n"] % LANES == 0 and a["group_size"] % per == 0 and a["k"] % a["group_size"] == 0 and not a.get("codebook")
    return LANES if ok else 0  # codebook weights take the stored-layout form (a table lookup per code)


def _dtype(arr: np.ndarray) -> str:
    from compiler.ir import dtype_of

    return dtype_of(arr)


def lower_graph(graph: Graph, kind: str = "cpu") -> LoweredModule:
    """Lower `graph` to a verified MLIR module (kind 'cpu' or 'cuda': the same linalg serves both)."""
    return _Lowerer(graph, kind).lower()  # (refuses a graph with ops CONVERTERS lacks, naming them all)

