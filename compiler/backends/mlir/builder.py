"""A small builder over the MLIR Python bindings of iree-base-compiler: tensor types with dynamic dims, the
index values of symbolic dims ("S", "P", "P+S"), constants, linalg.generic with a Python region body,
elementwise ops and last-axis reductions over it, reshapes by dim grouping, slices and concatenation.
It knows no model op: the lowering (lower.py) and the qlinear kernels (qlinear.py) are written with it.
Ops are emitted at the current insertion point, inside `with ir.Context(), ir.Location...`.
"""

from __future__ import annotations

import numpy as np

ITER = {"p": "parallel", "r": "reduction"}


class Builder:
    """Emits ops at the current insertion point (inside `with ir.Context(), ir.Location...`)."""

    def __init__(self):
        from iree.compiler import ir

        self.ir = ir
        self.f32 = ir.F32Type.get()
        self.f16 = ir.F16Type.get()
        self.f64 = ir.F64Type.get()
        self.i1 = ir.IntegerType.get_signless(1)
        self.i8 = ir.IntegerType.get_signless(8)
        self.i16 = ir.IntegerType.get_signless(16)
        self.i32 = ir.IntegerType.get_signless(32)
        self.i64 = ir.IntegerType.get_signless(64)
        self.index = ir.IndexType.get()
        self.dims: dict[str, object] = {}
        self.kind = "cpu"  # 'cpu': qlinear kernels carry llvm-cpu tile configurations; 'cuda': IREE picks

    # types and dims ---------------------------------------------------------------------------------------
    def elem(self, dtype: str):
        return {"f32": self.f32, "f16": self.f16, "i64": self.i64, "i32": self.i32, "i16": self.i16, "u8": self.i8, "i8": self.i8}[dtype]

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
    def axis_names(r: int) -> list[str]:
        return [f"d{i}" for i in range(r)]

    def identity_map(self, r: int) -> str:
        d = ", ".join(self.axis_names(r))
        return f"({d}) -> ({d})"

    def elementwise(self, ins, shape, elem, body, in_maps=None):
        r = len(shape)
        maps = in_maps or [self.identity_map(r)] * len(ins)
        return self.generic(ins, [self.empty(shape, elem)], [*maps, self.identity_map(r)], "p" * r, lambda *a: body(*a[:-1]))[0]

    def reduce_last(self, x, shape, init, combine, pre=None):
        """Reduce the last axis of x -> shape[:-1] (fp32)."""
        r = len(shape)
        d = self.axis_names(r)
        out = self.fill(init, shape[:-1], self.f32)
        maps = [self.identity_map(r), f"({', '.join(d)}) -> ({', '.join(d[:-1])})"]

        def body(v, acc):
            return combine(pre(v) if pre else v, acc)

        return self.generic([x], [out], maps, "p" * (r - 1) + "r", body)[0]

    def bcast_last(self, r: int) -> str:
        d = self.axis_names(r)
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
