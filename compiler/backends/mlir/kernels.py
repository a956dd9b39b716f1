"""MLIR building blocks: a small `Builder` over the Python bindings (tensor types with dynamic dims,
linalg.generic with a Python region body, reductions, reshapes) and the ops the lowering needs, and the
qlinear (mpGEMM) kernel in the contract's order.

qlinear, y = x W^T (+ bias), codes q [N, K] packed along K, group size g, J = K / g groups:

1. activations: A16 rounds x to fp16 and back (fp16 values, fp32 arithmetic); A8 quantizes per token
   (sa = max|x| / 127, qa = clamp(roundeven(x / sa), -127, 127) as i8), once per activation tensor.
2. group sums acc[m, n, j] = sum_k x[m, k] (q[n, k] - z[n, j]) in ONE linalg.generic over the bytes: its
   region unpacks every code of a byte (shift and mask on i32; bit-plane layouts combine one bit from each
   plane), subtracts the zero point and multiply-adds the activation. `qlinear_blocked` (the fast form)
   reads weights re-laid out with 32 rows interleaved byte by byte and vectorizes over those rows;
   `qlinear` (fallback) reads the stored layout. A8 sums are exact: int32, or fp32 where every partial sum
   is an integer below 2^24.
3. dequantization after the group sum, a second generic: y[m, n] = sum_j s[n, j] acc[m, n, j], then
   y * sa[m] (A8) and + bias in one elementwise epilogue.

The dequantize-then-matmul form (unpack to a float weight tensor, then linalg.matmul) is what IREE would
otherwise see; it never fuses the unpacking into the contraction, and it changes the numeric order.
"""

from __future__ import annotations

import math
import os

import numpy as np

ITER = {"p": "parallel", "r": "reduction"}
LOWEST_F32 = float(np.finfo(np.float32).min)


class Builder:
    """Helpers that emit ops at the current insertion point (inside `with ir.Context(), ir.Location...`)."""

    def __init__(self):
        from iree.compiler import ir

        self.ir = ir
        self.f32 = ir.F32Type.get()
        self.f16 = ir.F16Type.get()
        self.f64 = ir.F64Type.get()
        self.i1 = ir.IntegerType.get_signless(1)
        self.i8 = ir.IntegerType.get_signless(8)
        self.i32 = ir.IntegerType.get_signless(32)
        self.i64 = ir.IntegerType.get_signless(64)
        self.index = ir.IndexType.get()
        self.dims: dict[str, object] = {}
        self.kind = "cpu"  # 'cpu': qlinear kernels carry llvm-cpu tile configurations; 'cuda': IREE picks

    # types and dims ---------------------------------------------------------------------------------------
    def elem(self, dtype: str):
        return {"f32": self.f32, "f16": self.f16, "i64": self.i64, "i32": self.i32, "u8": self.i8, "i8": self.i8}[dtype]

    def tensor_type(self, shape, dtype):
        dyn = self.ir.ShapedType.get_dynamic_size()
        elem = dtype if not isinstance(dtype, str) else self.elem(dtype)
        return self.ir.RankedTensorType.get([d if isinstance(d, int) else dyn for d in shape], elem)

    def bind_dims(self, values: dict):
        """Record an index value for every simple symbolic dim ("S", "P") from the function arguments."""
        from iree.compiler.dialects import tensor

        for _name, (val, shape) in values.items():
            for axis, d in enumerate(shape):
                if isinstance(d, str) and "+" not in d and d not in self.dims:
                    self.dims[d] = tensor.dim(val, self.cindex(axis))

    def size(self, d):
        """An int for a static dim, an index Value for a symbolic one ("P+S" is built from its parts)."""
        from iree.compiler.dialects import arith

        if isinstance(d, int):
            return d
        d = str(d)
        if d not in self.dims:
            parts = [p.strip() for p in d.split("+")]
            v = None
            for p in parts:
                pv = self.cindex(int(p)) if p.isdigit() else self.dims[p]
                v = pv if v is None else arith.addi(v, pv)
            self.dims[d] = v
        return self.dims[d]

    def size_value(self, d):
        v = self.size(d)
        return self.cindex(v) if isinstance(v, int) else v

    # constants --------------------------------------------------------------------------------------------
    def cindex(self, v: int):
        from iree.compiler.dialects import arith

        return arith.constant(self.index, v)

    def cf(self, v: float, t=None):
        from iree.compiler.dialects import arith

        return arith.constant(t or self.f32, float(v))

    def ci(self, v: int, t=None):
        from iree.compiler.dialects import arith

        return arith.constant(t or self.i32, int(v))

    def dense(self, arr: np.ndarray):
        """A small constant tensor (RoPE frequencies; never weights)."""
        from iree.compiler.dialects import arith

        attr = self.ir.DenseElementsAttr.get(np.ascontiguousarray(arr))
        return arith.constant(attr.type, attr)

    # tensors ----------------------------------------------------------------------------------------------
    def empty(self, shape, elem):
        from iree.compiler.dialects import tensor

        return tensor.EmptyOp([self.size(d) for d in shape], elem).result

    def fill(self, value, shape, elem):
        from iree.compiler.dialects import linalg

        c = self.cf(value, elem) if isinstance(elem, (type(self.f32), type(self.f16), type(self.f64))) else self.ci(value, elem)
        return linalg.fill(c, outs=[self.empty(shape, elem)])

    def generic(self, ins, outs, maps, iters, body, attrs: dict | None = None):
        """linalg.generic; maps are affine map strings such as "(m, n, k) -> (m, k)", iters a string of
        'p'/'r'; body(*scalar block args) returns the yielded value(s). Returns the results."""
        from iree.compiler.dialects import linalg

        ir = self.ir
        op = linalg.GenericOp(
            [o.type for o in outs],
            list(ins),
            list(outs),
            ir.ArrayAttr.get([ir.Attribute.parse(f"affine_map<{m}>") for m in maps]),
            ir.ArrayAttr.get([ir.Attribute.parse(f"#linalg.iterator_type<{ITER[c]}>") for c in iters]),
        )
        for key, text in (attrs or {}).items():
            op.operation.attributes[key] = ir.Attribute.parse(text)
        blk = op.regions[0].blocks.append(*[ir.RankedTensorType(v.type).element_type for v in [*ins, *outs]])
        with ir.InsertionPoint(blk):
            res = body(*blk.arguments)
            linalg.YieldOp(list(res) if isinstance(res, (list, tuple)) else [res])
        return list(op.results)

    def index_in_region(self, dim: int):
        from iree.compiler.dialects import linalg

        return linalg.IndexOp(dim).result

    @staticmethod
    def _dims(r: int) -> list[str]:
        return [f"d{i}" for i in range(r)]

    def _ident(self, r: int) -> str:
        d = ", ".join(self._dims(r))
        return f"({d}) -> ({d})"

    def elementwise(self, ins, shape, elem, body, in_maps=None):
        r = len(shape)
        maps = in_maps or [self._ident(r)] * len(ins)
        return self.generic(ins, [self.empty(shape, elem)], [*maps, self._ident(r)], "p" * r, lambda *a: body(*a[:-1]))[0]

    def reduce_last(self, x, shape, init, combine, pre=None):
        """Reduce the last axis of x -> shape[:-1] (fp32)."""
        r = len(shape)
        d = self._dims(r)
        out = self.fill(init, shape[:-1], self.f32)
        maps = [self._ident(r), f"({', '.join(d)}) -> ({', '.join(d[:-1])})"]

        def body(v, acc):
            return combine(pre(v) if pre else v, acc)

        return self.generic([x], [out], maps, "p" * (r - 1) + "r", body)[0]

    def bcast_last(self, r: int) -> str:
        d = self._dims(r)
        return f"({', '.join(d)}) -> ({', '.join(d[:-1])})"

    # shapes -----------------------------------------------------------------------------------------------
    def reshape(self, x, in_shape, out_shape):
        """Reshape by grouping dims whose products match (symbolic dims must map one to one), then
        tensor.collapse_shape and tensor.expand_shape."""
        from iree.compiler.dialects import tensor

        in_shape, out_shape = tuple(in_shape), tuple(out_shape)
        if [str(d) for d in in_shape] == [str(d) for d in out_shape]:
            return x
        groups = _reshape_groups(in_shape, out_shape)
        mid = [in_shape[gi[0]] if len(gi) == 1 else int(np.prod([in_shape[i] for i in gi])) for gi, _ in groups]
        elem = self.ir.RankedTensorType(x.type).element_type
        y = x
        if any(len(gi) != 1 for gi, _ in groups):
            y = tensor.CollapseShapeOp(self.tensor_type(mid, elem), y, self._reassoc([gi for gi, _ in groups])).result
        if any(len(go) != 1 for _, go in groups):
            dyn = self.ir.ShapedType.get_dynamic_size()
            out_vals = [self.size(d) for d in out_shape if not isinstance(d, int)]
            static = [d if isinstance(d, int) else dyn for d in out_shape]
            y = tensor.ExpandShapeOp(self.tensor_type(out_shape, elem), y, self._reassoc([go for _, go in groups]), out_vals, static).result
        return y

    def _reassoc(self, groups):
        ir = self.ir
        i64 = ir.IntegerType.get_signless(64)
        return ir.ArrayAttr.get([ir.ArrayAttr.get([ir.IntegerAttr.get(i64, i) for i in g]) for g in groups])

    def slice_last(self, x, shape, i: int):
        """x[..., i] of x with the given shape: an extract_slice of size 1 on the last axis, collapsed."""
        from iree.compiler.dialects import tensor

        r = len(shape)
        dyn = self.ir.ShapedType.get_dynamic_size()
        elem = self.ir.RankedTensorType(x.type).element_type
        sizes = [*shape[:-1], 1]
        sl = tensor.ExtractSliceOp(
            self.tensor_type(sizes, elem), x, [], [self.size(d) for d in sizes if not isinstance(d, int)], [], [0] * (r - 1) + [i], [d if isinstance(d, int) else dyn for d in sizes], [1] * r
        ).result
        return tensor.CollapseShapeOp(self.tensor_type(shape[:-1], elem), sl, self._reassoc([[k] for k in range(r - 2)] + [[r - 2, r - 1]])).result

    def slice_first(self, x, shape, i: int):
        """x[i] of a static-shaped x: an extract_slice of size 1 on the first axis, collapsed."""
        from iree.compiler.dialects import tensor

        r = len(shape)
        elem = self.ir.RankedTensorType(x.type).element_type
        sizes = [1, *shape[1:]]
        sl = tensor.ExtractSliceOp(self.tensor_type(sizes, elem), x, [], [], [], [i] + [0] * (r - 1), sizes, [1] * r).result
        return tensor.CollapseShapeOp(self.tensor_type(shape[1:], elem), sl, self._reassoc([[0, 1]] + [[k] for k in range(2, r)])).result

    def to_2d(self, x, shape):
        if len(shape) != 2:
            raise NotImplementedError(f"linear layers take [S, K] activations, got rank {len(shape)}")
        return x, shape[0]

    def from_2d(self, y, shape):
        return y

    def concat(self, x, y, out_shape, axis, dtype, x_shape=None):
        """concat along axis as two tensor.insert_slice into a tensor.empty (tensor.concat crashes IREE's
        cuda tiling of the copy it decomposes into when dims are dynamic)."""
        from iree.compiler.dialects import tensor

        r = len(out_shape)
        dyn = self.ir.ShapedType.get_dynamic_size()
        out = self.empty(out_shape, self.elem(dtype))
        xs = x_shape if x_shape is not None else out_shape
        parts = []
        for src, shape, off in ((x, xs, 0), (y, None, xs[axis])):
            st = self.ir.RankedTensorType(src.type)
            sizes = [st.shape[i] if not st.is_dynamic_dim(i) else dyn for i in range(r)]
            dyn_sizes = [tensor.dim(src, self.cindex(i)) for i in range(r) if st.is_dynamic_dim(i)]
            offs_static = [0] * r
            offs_dyn = []
            if isinstance(off, int):
                offs_static[axis] = off
            else:
                offs_static[axis] = dyn
                offs_dyn.append(self.size(off))
            parts.append((src, offs_dyn, dyn_sizes, offs_static, sizes))
        for src, offs_dyn, dyn_sizes, offs_static, sizes in parts:
            out = tensor.InsertSliceOp(src, out, offs_dyn, dyn_sizes, [], offs_static, sizes, [1] * r).result
        return out

    # float ops --------------------------------------------------------------------------------------------
    def gather_rows(self, ids, table, ids_shape, table_shape):
        from iree.compiler.dialects import arith, tensor

        v, h = table_shape
        out_shape = (*ids_shape, h)
        r = len(out_shape)
        d = self._dims(r)

        def body(i, _o):
            i64 = self.i64 if self.ir.IntegerType(i.type).width == 64 else self.i32
            c = arith.minsi(arith.maxsi(i, arith.constant(i64, 0)), arith.constant(i64, v - 1))  # clip, as TVM's take
            row = arith.index_cast(self.index, c)
            return tensor.extract(table, [row, self.index_in_region(r - 1)])

        out = self.empty(out_shape, self.f32)
        return self.generic([ids], [out], [f"({', '.join(d)}) -> ({', '.join(d[:-1])})", self._ident(r)], "p" * r, body)[0]

    def matmul_nt(self, x, w, xshape, wshape):
        from iree.compiler.dialects import arith

        m, n = xshape[0], wshape[0]
        out = self.fill(0.0, (m, n), self.f32)
        return self.generic([x, w], [out], ["(m, n, k) -> (m, k)", "(m, n, k) -> (n, k)", "(m, n, k) -> (m, n)"], "ppr", lambda a, b, o: arith.addf(o, arith.mulf(a, b)))[0]

    def binary(self, x, y, xshape, yshape, op):
        from iree.compiler.dialects import arith

        r, ry = len(xshape), len(yshape)
        d = self._dims(r)
        ymap = f"({', '.join(d)}) -> ({', '.join(d[r - ry:])})"
        f = arith.addf if op == "add" else arith.mulf
        return self.elementwise([x, y], xshape, self.f32, lambda a, b: f(a, b), [self._ident(r), ymap])

    def unary(self, x, shape, kind):
        from iree.compiler.dialects import arith, math as m

        one = lambda: self.cf(1.0)  # noqa: E731 - constants are made inside the region

        def silu(v):
            return arith.divf(v, arith.addf(one(), m.exp(arith.negf(v))))

        def gelu(v):
            e = m.erf(arith.mulf(v, self.cf(1.0 / math.sqrt(2.0))))
            return arith.mulf(arith.mulf(self.cf(0.5), v), arith.addf(one(), e))

        def gelu_tanh(v):
            cube = arith.mulf(arith.mulf(v, v), v)
            inner = arith.mulf(self.cf(math.sqrt(2.0 / math.pi)), arith.addf(v, arith.mulf(self.cf(0.044715), cube)))
            return arith.mulf(arith.mulf(self.cf(0.5), v), arith.addf(one(), m.tanh(inner)))

        fn = {"silu": silu, "gelu": gelu, "gelu_tanh": gelu_tanh}[kind]
        return self.elementwise([x], shape, self.f32, fn)

    def norm(self, x, w, b, shape, eps, rms):
        """RMSNorm: x / sqrt(mean(x^2) + eps) * w; LayerNorm: (x - mean) / sqrt(var + eps) * w + b."""
        from iree.compiler.dialects import arith, math as m

        r = len(shape)
        hsize = shape[-1]
        wmap = f"({', '.join(self._dims(r))}) -> (d{r - 1})"
        if not rms:
            s = self.reduce_last(x, shape, 0.0, arith.addf)
            mean = self.elementwise([s], shape[:-1], self.f32, lambda v: arith.divf(v, self.cf(hsize)))
            x = self.elementwise([x, mean], shape, self.f32, lambda v, mu: arith.subf(v, mu), [self._ident(r), self.bcast_last(r)])
        ss = self.reduce_last(x, shape, 0.0, arith.addf, pre=lambda v: arith.mulf(v, v))

        def fin(v, s, wv, *bv):
            den = m.sqrt(arith.addf(arith.divf(s, self.cf(hsize)), self.cf(eps)))
            y = arith.mulf(arith.divf(v, den), wv)
            return arith.addf(y, bv[0]) if bv else y

        ins = [x, ss, w] + ([b] if b is not None else [])
        maps = [self._ident(r), self.bcast_last(r), wmap] + ([wmap] if b is not None else [])
        return self.elementwise(ins, shape, self.f32, fin, maps)

    def rope(self, x, pos, shape, inv: np.ndarray):
        """Rotate-half RoPE. Angles pos * inv_freq in float64 (as the reference), reduced modulo 2 pi in
        float64, then cos/sin in float32 of the reduced angle."""
        from iree.compiler.dialects import arith, math as m, tensor

        s, h, dd = shape
        half = dd // 2
        inv_full = self.dense(np.concatenate([inv, inv]).astype(np.float64))
        two_pi = 2.0 * math.pi

        def body(p, v, f):
            ang = arith.mulf(arith.sitofp(self.f64, p), f)
            red = arith.subf(ang, arith.mulf(m.floor(arith.divf(ang, self.cf(two_pi, self.f64))), self.cf(two_pi, self.f64)))
            a32 = arith.truncf(self.f32, red)
            cos, sin = m.cos(a32), m.sin(a32)
            i0, i1, c = (self.index_in_region(k) for k in range(3))
            lo = arith.cmpi(arith.CmpIPredicate.ult, c, self.cindex(half))
            partner = arith.select(lo, arith.addi(c, self.cindex(half)), arith.subi(c, self.cindex(half)))
            other = tensor.extract(x, [i0, i1, partner])
            rot = arith.select(lo, arith.negf(other), other)
            return arith.addf(arith.mulf(v, cos), arith.mulf(rot, sin))

        return self.elementwise([pos, x, inv_full], shape, self.f32, body, ["(d0, d1, d2) -> (d0)", self._ident(3), "(d0, d1, d2) -> (d2)"])

    def softmax_last(self, x, shape):
        from iree.compiler.dialects import arith, math as m

        r = len(shape)
        mx = self.reduce_last(x, shape, LOWEST_F32, arith.maximumf)
        e = self.elementwise([x, mx], shape, self.f32, lambda v, mv: m.exp(arith.subf(v, mv)), [self._ident(r), self.bcast_last(r)])
        s = self.reduce_last(e, shape, 0.0, arith.addf)
        return self.elementwise([e, s], shape, self.f32, lambda v, sv: arith.divf(v, sv), [self._ident(r), self.bcast_last(r)])

    def attention(self, q, k, v, qshape, kshape, scale, causal):
        """softmax(q k^T * scale [+ causal mask]) v for q [S, Hq, D], k/v [T, Hk, D]. Query heads are viewed
        as [S, Hk, rep, D] so that head (g, r) reads KV head g with plain (projected-permutation) maps (GQA
        without copies; a floordiv in a map crashes IREE's cuda tiling). Query i sits at (T - S) + i."""
        from iree.compiler.dialects import arith

        s, hq, dd = qshape
        t, hk, _ = kshape
        rep = hq // hk
        q4 = self.reshape(q, qshape, (s, hk, rep, dd))
        sshape = (hk, rep, s, t)
        sc0 = self.fill(0.0, sshape, self.f32)
        sc = self.generic(
            [q4, k],
            [sc0],
            ["(g, r, i, j, c) -> (i, g, r, c)", "(g, r, i, j, c) -> (j, g, c)", "(g, r, i, j, c) -> (g, r, i, j)"],
            "ppppr",
            lambda a, b, o: arith.addf(o, arith.mulf(a, b)),
        )[0]
        if causal:
            off = arith.subi(self.size_value(t), self.size_value(s))

            def mask(v):
                i, j = self.index_in_region(2), self.index_in_region(3)
                ok = arith.cmpi(arith.CmpIPredicate.sle, j, arith.addi(off, i))
                return arith.select(ok, arith.mulf(v, self.cf(scale)), self.cf(LOWEST_F32))

        else:

            def mask(v):
                return arith.mulf(v, self.cf(scale))

        sc = self.elementwise([sc], sshape, self.f32, mask)
        p = self.softmax_last(sc, sshape)
        o0 = self.fill(0.0, (s, hk, rep, dd), self.f32)
        o = self.generic(
            [p, v],
            [o0],
            ["(i, g, r, c, j) -> (g, r, i, j)", "(i, g, r, c, j) -> (j, g, c)", "(i, g, r, c, j) -> (i, g, r, c)"],
            "ppppr",
            lambda a, b, o: arith.addf(o, arith.mulf(a, b)),
        )[0]
        return self.reshape(o, (s, hk, rep, dd), qshape)

    def mean(self, x, shape, axis):
        from iree.compiler.dialects import arith

        r = len(shape)
        d = self._dims(r)
        out_shape = tuple(dim for i, dim in enumerate(shape) if i != axis)
        out = self.fill(0.0, out_shape, self.f32)
        # loop order: the kept dims, then the reduced one
        loop = [x for i, x in enumerate(d) if i != axis] + [d[axis]]
        s = self.generic([x], [out], [f"({', '.join(loop)}) -> ({', '.join(d)})", f"({', '.join(loop)}) -> ({', '.join(loop[:-1])})"], "p" * (r - 1) + "r", lambda v, o: arith.addf(o, v))[0]
        n = arith.sitofp(self.f32, arith.index_cast(self.i64, self.size_value(shape[axis])))
        return self.elementwise([s], out_shape, self.f32, lambda v: arith.divf(v, n))

    def l2norm(self, x, shape, eps):
        from iree.compiler.dialects import arith, math as m

        r = len(shape)
        ss = self.reduce_last(x, shape, 0.0, arith.addf, pre=lambda v: arith.mulf(v, v))
        return self.elementwise([x, ss], shape, self.f32, lambda v, s: arith.divf(v, arith.maximumf(m.sqrt(s), self.cf(eps))), [self._ident(r), self.bcast_last(r)])

    # activation quantization ------------------------------------------------------------------------------
    def round_f16(self, x, shape):
        from iree.compiler.dialects import arith

        return self.elementwise([x], shape, self.f32, lambda v: arith.extf(self.f32, arith.truncf(self.f16, v)))

    def quantize_a8(self, x, m, k):
        """Per-token int8 (the reference's quantize_activations_a8): (qa i8 [M, K], sa f32 [M])."""
        from iree.compiler.dialects import arith, math as mm

        amax = self.reduce_last(x, (m, k), 0.0, arith.maximumf, pre=lambda v: mm.absf(v))
        sa = self.elementwise(
            [amax],
            (m,),
            self.f32,
            lambda a: arith.select(arith.cmpf(arith.CmpFPredicate.OGT, a, self.cf(0.0)), arith.divf(a, self.cf(127.0)), self.cf(1.0)),
        )

        def q(v, s):
            r = mm.roundeven(arith.divf(v, s))
            r = arith.minimumf(arith.maximumf(r, self.cf(-127.0)), self.cf(127.0))
            return arith.fptosi(self.i8, r)

        qa = self.elementwise([x, sa], (m, k), self.i8, q, [self._ident(2), self.bcast_last(2)])
        return qa, sa


def _reshape_groups(a, b):
    """Pair up runs of dims of a and b with equal products: [([ia...], [ib...]), ...]."""
    groups, i, j = [], 0, 0
    while i < len(a) or j < len(b):
        if groups and (i == len(a) and all(d == 1 for d in b[j:]) or j == len(b) and all(d == 1 for d in a[i:])):
            groups[-1][0].extend(range(i, len(a)))  # trailing unit dims join the last group
            groups[-1][1].extend(range(j, len(b)))
            break
        if i < len(a) and j < len(b) and str(a[i]) == str(b[j]):
            groups.append(([i], [j]))
            i, j = i + 1, j + 1
            continue
        gi, gj, pa, pb = [], [], 1, 1
        while True:
            if (pa <= pb or j >= len(b)) and i < len(a):
                if not isinstance(a[i], int):
                    raise NotImplementedError(f"reshape {a} -> {b} mixes a symbolic dim into a group")
                pa *= a[i]
                gi.append(i)
                i += 1
            elif j < len(b):
                if not isinstance(b[j], int):
                    raise NotImplementedError(f"reshape {a} -> {b} mixes a symbolic dim into a group")
                pb *= b[j]
                gj.append(j)
                j += 1
            else:
                raise NotImplementedError(f"reshape {a} -> {b}: sizes do not match")
            if pa == pb and gi and gj:
                break
        groups.append((gi, gj))
    return groups


# ----------------------------------------------------------------------------------------------------------
# qlinear


def code_layout(attrs) -> tuple[int, int]:
    """(codes per byte, planes): dense/nibble bytes hold 8/bits codes; 'planes' hold one bit of 8 codes
    in each of `bits` planes."""
    if attrs["layout"] == "planes":
        return 8, attrs["bits"]
    return 8 // attrs["bits"], 1


def qlinear(B: Builder, xin, m, packed, scales, zeros, bias, a):
    """The fallback qlinear on the stored layout (N not a multiple of the blocked kernel's lanes): the
    "groupsum" form, correct but slow (IREE vectorizes it poorly; see README.md). xin = (x f32 [M, K]
    already rounded to fp16 values, None) for A16 or (qa i8 [M, K], sa f32 [M]) for A8. Returns
    (y f32 [M, N], form name)."""
    from iree.compiler.dialects import arith

    bits, g, n, k = a["bits"], a["group_size"], a["n"], a["k"]
    a8 = a["act"] == "a8"
    per, planes = code_layout(a)
    if g % per or k % g:
        raise NotImplementedError(f"qlinear K={k}, group {g}: the group must hold whole bytes of {per} codes")
    j, tb = k // g, g // per  # groups, bytes per group
    x, sa = xin
    xv = B.reshape(x, (m, k), (m, j, tb, per))
    if a["layout"] == "planes":
        wins = [B.reshape(packed, (bits, n, k // 8), (bits, n, j, tb))] * bits
    else:
        wins = [B.reshape(packed, (n, k // per), (n, j, tb))]
    acc_t = B.i32 if a8 else B.f32
    acc0 = B.fill(0, (m, n, j), acc_t) if a8 else B.fill(0.0, (m, n, j), acc_t)
    acc = _groupsum_inner(B, xv, wins, zeros, acc0, a, per, planes)

    def dequant(av, s, o):
        af = arith.sitofp(B.f32, av) if a8 else av
        return arith.addf(o, arith.mulf(af, s))

    y0 = B.fill(0.0, (m, n), B.f32)
    y = B.generic([acc, scales], [y0], ["(m, n, j) -> (m, n, j)", "(m, n, j) -> (n, j)", "(m, n, j) -> (m, n)"], "ppr", dequant)[0]
    if sa is not None or bias is not None:
        ins, maps = [y], ["(m, n) -> (m, n)"]
        if sa is not None:
            ins.append(sa)
            maps.append("(m, n) -> (m)")
        if bias is not None:
            ins.append(bias)
            maps.append("(m, n) -> (n)")

        def epi(v, *rest):
            rest = list(rest)
            if sa is not None:
                v = arith.mulf(v, rest.pop(0))
            if bias is not None:
                v = arith.addf(v, rest.pop(0))
            return v

        y = B.elementwise(ins, (m, n), B.f32, epi, maps)
    return y, f"groupsum-{'i32' if a8 else 'f32'}"


def _groupsum_inner(B, xv, wins, zeros, acc0, a, per, planes):
    """Group sums with the code within the byte as the innermost loop: dims (m, n, j, t, i), t the byte in
    the group and i the code in the byte, so activations x[m, j, t, i] are read contiguously along K and each
    byte is broadcast over its codes; the shift is bits * i (linalg.index)."""
    from iree.compiler.dialects import arith

    a8 = a["act"] == "a8"
    bits = a["bits"]
    mask = (1 << bits) - 1
    if planes == 1:
        wmaps = ["(m, n, j, t, i) -> (n, j, t)"]
    else:
        wmaps = [f"(m, n, j, t, i) -> ({p}, n, j, t)" for p in range(planes)]

    def body(x, *rest):
        ws, z, o = rest[:-2], rest[-2], rest[-1]
        i = arith.index_cast(B.i32, B.index_in_region(4))
        if planes == 1:
            w = arith.extui(B.i32, ws[0])
            code = w if per == 1 else arith.andi(arith.shrui(w, arith.muli(i, B.ci(bits))), B.ci(mask))
        else:
            code = None
            for p, wb in enumerate(ws):
                bit = arith.andi(arith.shrui(arith.extui(B.i32, wb), i), B.ci(1))
                bit = arith.shli(bit, B.ci(p)) if p else bit
                code = bit if code is None else arith.ori(code, bit)
        wz = arith.subi(code, arith.extui(B.i32, z))
        if a8:
            return arith.addi(o, arith.muli(arith.extsi(B.i32, x), wz))
        return arith.addf(o, arith.mulf(x, arith.sitofp(B.f32, wz)))

    maps = ["(m, n, j, t, i) -> (m, j, t, i)", *wmaps, "(m, n, j, t, i) -> (n, j)", "(m, n, j, t, i) -> (m, n, j)"]
    return B.generic([xv, *wins, zeros], [acc0], maps, "ppprr", body)[0]


# ----------------------------------------------------------------------------------------------------------
# blocked qlinear: L output rows interleaved byte by byte, so one vector holds the same byte of L rows


def relayout_blocked(packed, scales, zeros, attrs, lanes: int):
    """Stored layout -> blocked: codes [N, KB] -> [N/L, J, C, L] (planes [P, N, K/8] -> [P, N/L, J, C, L]),
    scales/zeros [N, J] -> [N/L, J, L]; C bytes per group, L = lanes rows."""
    n, k, g = attrs["n"], attrs["k"], attrs["group_size"]
    per, planes = code_layout(attrs)
    j, c = k // g, g // per
    if attrs["layout"] == "planes":
        w = packed.reshape(planes, n // lanes, lanes, j, c).transpose(0, 1, 3, 4, 2)
    else:
        w = packed.reshape(n // lanes, lanes, j, c).transpose(0, 2, 3, 1)
    sz = [a.reshape(n // lanes, lanes, j).transpose(0, 2, 1) for a in (scales, zeros)]
    return np.ascontiguousarray(w), np.ascontiguousarray(sz[0]), np.ascontiguousarray(sz[1])


def blocked_shapes(attrs, lanes: int):
    n, k, g = attrs["n"], attrs["k"], attrs["group_size"]
    per, planes = code_layout(attrs)
    j, c = k // g, g // per
    w = (planes, n // lanes, j, c, lanes) if attrs["layout"] == "planes" else (n // lanes, j, c, lanes)
    return w, (n // lanes, j, lanes), (n // lanes, j, lanes)


def qlinear_blocked(B: Builder, xin, m, packed, scales, zeros, bias, a, lanes: int):
    """qlinear on blocked weights (relayout_blocked, codes [Nb, J, C, L], scales/zeros [Nb, J, L]).

    Group sums acc[m, b, j, l] = sum over the C bytes c of group j of every code of byte (b, j, c, l) times
    its activation, for L rows at once: dims (m, b, j, l, c) = (parallel x4, reduction), the row lane l is
    the vector dimension and each activation a broadcast scalar, so no horizontal reductions are needed.
    Then y[m, b, l] = sum_j s[b, j, l] acc[m, b, j, l] (the contract's order), * sa[m] (A8), + bias.
    Unit dims (J = 1 per-channel, Nb = 1) are dropped from the ops, so that the explicit tile configuration
    matches the loops IREE sees.

    A8 where every partial sum fits float32 exactly (g * 127 * qmax < 2^24, the reference's own test):
    the int8 activations and the codes are multiplied in fp32 (integers, so every product and partial sum
    is exact: the same numbers as int32 sums, without AVX-512's slow vpmulld), and the zero point is
    applied once per group: acc = sum qa q - z sum qa, both exact."""
    from iree.compiler.dialects import arith

    from compiler.reference import int_sum_fits_f32

    bits, g, n, k = a["bits"], a["group_size"], a["n"], a["k"]
    a8 = a["act"] == "a8"
    per, planes = code_layout(a)
    j, c = k // g, g // per
    nb = n // lanes
    x, sa = xin
    a8f = a8 and per > 1 and int_sum_fits_f32(g, 127, (1 << bits) - 1) and os.environ.get("LOWBIT_MLIR_A8_INT32") != "1"
    if a8f:
        x = B.elementwise([x], (m, k), B.f32, lambda v: arith.sitofp(B.f32, v))
        a8 = False  # fp32 arithmetic from here on; the zero point is applied after the group sum
    size = {"m": m, "b": nb, "j": j, "l": lanes, "c": c}
    keep = [d for d in ("m", "b", "j", "l", "c") if not (d in ("b", "j") and size[d] == 1)]

    def shape_of(names):
        return tuple(size[d] for d in names if d in keep)

    def amap(dims, names):
        return f"({', '.join(dims)}) -> ({', '.join(d for d in names if d in keep)})"

    xv = B.reshape(x, (m, k), (*shape_of("mjc"), per))
    xs = [B.slice_last(xv, (*shape_of("mjc"), per), i) for i in range(per)]
    wfull = (nb, j, c, lanes)
    if a["layout"] == "planes":
        wins = [B.reshape(B.slice_first(packed, (planes, *wfull), p), wfull, shape_of("bjcl")) for p in range(planes)]
    else:
        wins = [B.reshape(packed, wfull, shape_of("bjcl"))]
    zs = B.reshape(zeros, (nb, j, lanes), shape_of("bjl"))
    ss = B.reshape(scales, (nb, j, lanes), shape_of("bjl"))
    acc_t = B.i32 if a8 else B.f32
    acc0 = B.fill(0, shape_of("mbjl"), acc_t) if a8 else B.fill(0.0, shape_of("mbjl"), acc_t)
    mask = (1 << bits) - 1

    def body(*args):
        xa = args[:per]
        ws = args[per : per + len(wins)]
        z, o = args[-2], args[-1]
        zi = arith.extui(B.i32, z)
        wi = [arith.extui(B.i32, w) for w in ws]
        total = None
        for i in range(per):
            if planes == 1:
                code = wi[0] if per == 1 else (arith.andi(wi[0], B.ci(mask)) if i == 0 else arith.andi(arith.shrui(wi[0], B.ci(bits * i)), B.ci(mask)))
            else:
                code = None
                for p in range(planes):
                    bit = arith.andi(arith.shrui(wi[p], B.ci(i)), B.ci(1)) if i else arith.andi(wi[p], B.ci(1))
                    bit = arith.shli(bit, B.ci(p)) if p else bit
                    code = bit if code is None else arith.ori(code, bit)
            w = code if a8f else arith.subi(code, zi)
            if a8:
                term = arith.muli(arith.extsi(B.i32, xa[i]), w)
                total = term if total is None else arith.addi(total, term)
            else:
                term = arith.mulf(xa[i], arith.sitofp(B.f32, w))
                total = term if total is None else arith.addf(total, term)
        return arith.addi(o, total) if a8 else arith.addf(o, total)

    dims = keep  # (m, b?, j?, l, c)
    maps = [amap(dims, "mjc")] * per + [amap(dims, "bjcl")] * len(wins) + [amap(dims, "bjl"), amap(dims, "mbjl")]
    iters = "p" * (len(dims) - 1) + "r"
    rb = max(1, min(nb, ROWS_PER_WORKGROUP // lanes))
    tiles = {"m": (1, 1, 0), "b": (rb, 1, 0), "j": (0, 1, 0), "l": (0, lanes, 0), "c": (0, 0, 1)}
    cfg = [[tiles[d][t] for d in dims] for t in range(3)]
    acc = B.generic([*xs, *wins, zs], [acc0], maps, iters, body, _cpu_tiles(B, *cfg))[0]

    def dequant(av, s, o):
        af = arith.sitofp(B.f32, av) if a8 else av
        return arith.addf(o, arith.mulf(af, s))

    if a8f:  # acc - z * (sum of the group's activations), exact integers in fp32
        xsum0 = B.fill(0.0, shape_of("mj"), B.f32)
        xg = B.reshape(x, (m, k), (*shape_of("mj"), g))
        r = len(shape_of("mj"))
        dd = [f"d{i}" for i in range(r + 1)]
        xsum = B.generic([xg], [xsum0], [f"({', '.join(dd)}) -> ({', '.join(dd)})", f"({', '.join(dd)}) -> ({', '.join(dd[:-1])})"], "p" * r + "r", lambda v, o: arith.addf(o, v))[0]
        ek = [d for d in "mbjl" if d in keep]
        acc = B.elementwise(
            [acc, zs, xsum],
            shape_of("mbjl"),
            B.f32,
            lambda av, z, sx: arith.subf(av, arith.mulf(arith.uitofp(B.f32, z), sx)),
            [amap(ek, "mbjl"), amap(ek, "bjl"), amap(ek, "mj")],
        )

    if j > 1:
        ddims = [d for d in ("m", "b", "l", "j") if d in keep]
        y0 = B.fill(0.0, shape_of("mbl"), B.f32)
        dcfg = [[tiles[d][t] if d != "j" else (0, 0, 1)[t] for d in ddims] for t in range(3)]
        y = B.generic([acc, ss], [y0], [amap(ddims, "mbjl"), amap(ddims, "bjl"), amap(ddims, "mbl")], "p" * (len(ddims) - 1) + "r", dequant, _cpu_tiles(B, *dcfg))[0]
    else:
        r = len(shape_of("mbl"))
        d = [f"d{i}" for i in range(r)]
        smap = f"({', '.join(d)}) -> ({', '.join(d[1:])})"
        y = B.elementwise([acc, ss], shape_of("mbl"), B.f32, lambda av, s: arith.mulf(arith.sitofp(B.f32, av) if a8 else av, s), [B._ident(r), smap])
    y = B.reshape(y, shape_of("mbl"), (m, n))
    if sa is not None or bias is not None:
        ins, maps = [y], ["(m, n) -> (m, n)"]
        if sa is not None:
            ins.append(sa)
            maps.append("(m, n) -> (m)")
        if bias is not None:
            ins.append(bias)
            maps.append("(m, n) -> (n)")

        def epi(v, *rest):
            rest = list(rest)
            if sa is not None:
                v = arith.mulf(v, rest.pop(0))
            if bias is not None:
                v = arith.addf(v, rest.pop(0))
            return v

        y = B.elementwise(ins, (m, n), B.f32, epi, maps)
    return y, f"blocked{lanes}-{'i32' if a8 else 'f32' + ('-a8exact' if a8f else '')}"


ROWS_PER_WORKGROUP = 256  # output rows per IREE workgroup (the unit of multi-threading)


def _cpu_tiles(B: Builder, distribution, parallel, reduction) -> dict | None:
    """compilation_info for llvm-cpu: workgroup tiles, vector tiles of the parallel dims, and of the
    reduction dims (1 = scalar loops around the vector of rows), with IREE's DoubleTilingExpert pipeline."""
    if B.kind != "cpu":
        return None
    cfg = f"distribution = {distribution}, vector_common_parallel = {parallel}, vector_reduction = {reduction}"
    return {
        "compilation_info": "#iree_codegen.compilation_info<lowering_config = #iree_cpu.lowering_config<"
        + cfg
        + ">, translation_info = #iree_codegen.translation_info<pipeline = #iree_cpu.pipeline<DoubleTilingExpert>>>"
    }
