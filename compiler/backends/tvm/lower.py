"""Graph -> Relax IRModule, op by op (one converter per IR op, as TVM's own Relax frontends do).

The module has one function, `main(*graph inputs, *params)`, returning a tuple of the graph outputs in
order. Symbolic dims stay symbolic: "S" and "P" become int64 shape variables, "P+S" their sum, so one
compiled module serves prefill (S = prompt length), decode (S = 1) and every KV-cache length P.
Weights are parameters (never constants baked into the library): `LoweredModule.params` lists, in call
order, where each parameter comes from (a graph constant, or an array re-laid-out for a kernel). A quantized
table that a qembedding and its tied head share is one parameter set: the head kernel's copy where it makes one.

Float ops use Relax ops (legalized by TVM, scheduled by dlight on GPUs) or small TE computes; qlinear goes
through the rule table in kernels.py (or, with tuning, the measured choice of tune.py among the fast CPU
kernels that match), whose chosen kernel brings its TE definition and its schedule. The converter table and
the lowerer's environment come from compiler/backends/lowering.py.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from tvm import relax, te, tirx

from compiler.backends.lowering import Converters, GraphLowerer
from compiler.backends.tvm import kernels, kernels_cpu, norm_cpu, qlinear_te, vmath
from compiler.backends.tvm.attention_cpu import cache_attention_prim_func
from compiler.backends.tvm.kernels import QLinearKernel
from compiler.backends.tvm.kv_cache import kv_write_inplace
from compiler.backends.tvm.qlinear_te import QLinearShape
from compiler.backends.tvm.tune import pick as measured_pick
from compiler.ir import Graph, Node
from compiler.knobs import TVM_FUSE_SIBLINGS, TVM_TUNE
from compiler.quant.spec import CODED_ACTS
from compiler.reference import rope_inv_freq

# Converters: (lowerer, node) -> list of Relax expressions, one per node output
CONVERTERS = Converters("TVM")
conv = CONVERTERS.register


@dataclass
class LoweredModule:
    mod: object  # tvm.IRModule
    inputs: list[str]  # graph input names, in call order
    params: list[dict]  # [{"name": relax param name, "source": "weights"|"relayout", "key": array name}]
    outputs: list[str]
    relayout: dict[str, np.ndarray] = field(default_factory=dict)  # arrays the target folder must store
    kernels: dict[str, str] = field(default_factory=dict)  # qlinear weight name -> kernel name (for the record)
    search: dict = field(default_factory=dict)  # kernel times per shape when tuning (tune.py)
    functions: list[str] = field(default_factory=lambda: ["main"])  # the Relax functions (main_last: LAST_ROW_FUNCTION)
    stacked: list[list[str]] = field(default_factory=list)  # qlinear weight names that run as one kernel (_stack_siblings)


LAST_ROW_FUNCTION = "main_last"  # main with logits of the last row only (a causal model's prefill for generation)


class _Lowerer(GraphLowerer):
    converters = CONVERTERS

    def __init__(self, graph: Graph, target_kind: str, tune: bool | None = None):
        super().__init__(graph, target_kind)
        self.tune = tune  # measured kernel choice among matching fast kernels (tune.py); None: LOWBIT_TVM_TUNE
        self.search: dict = {}  # shape key -> measured or cached kernel times
        self.bb = relax.BlockBuilder()
        self.dims: dict[str, tirx.Var] = {}
        self.params: list[dict] = []
        self.param_vars: list[relax.Var] = []
        self.relayout: dict[str, np.ndarray] = {}
        self.kernels: dict[str, str] = {}
        self.a8_cache: dict[tuple, tuple] = {}  # (activation, act mode) -> (quantized, sa or None): once for q/k/v etc.
        self.sched: dict[str, object] = {}  # prim func name hint -> schedule to apply
        self.relaid: dict[str, dict] = {}  # packed weight name -> its kernel's re-laid-out arrays (made up front)
        self.f16_params: dict[str, bool] = {}  # scales name -> its scales (and minimums) are all fp16 values
        self.stack_consts: dict[str, np.ndarray] = {}  # the stacked weights of _stack_siblings' layers
        self.stacks: dict[int, Node] = {}  # id(qlinear node) -> the stacked layer it runs in
        self.stack_of: dict[str, str] = {}  # stacked array name -> the first layer's graph constant it starts with

    # shapes -----------------------------------------------------------------------------------------------
    def dim(self, d):
        if isinstance(d, int):
            return d
        expr = None
        for part in str(d).split("+"):
            part = part.strip()
            v = int(part) if part.isdigit() else self.dims.setdefault(part, tirx.Var(part, "int64"))
            expr = v if expr is None else expr + v
        return expr

    def ttype(self, t):
        dt = {"f32": "float32", "f16": "float16", "i64": "int64", "i32": "int32", "i16": "int16", "u8": "uint8", "i8": "int8"}[t.dtype]
        return relax.TensorType([self.dim(d) for d in t.shape], dt)

    # values -----------------------------------------------------------------------------------------------
    def const(self, name: str) -> np.ndarray:
        return self.stack_consts[name] if name in self.stack_consts else self.g.consts[name]

    def value(self, name: str) -> relax.Expr:
        if name in self.env:
            return self.env[name]
        if name in self.g.consts:
            return self.param(name, self.g.consts[name], "weights", name)
        if name in self.stack_consts:  # (a stacked layer's bias: stored in the target folder)
            self.relayout[name] = self.stack_consts[name]
            return self.param(name, self.stack_consts[name], "relayout", name, self.stack_of[name])
        raise KeyError(name)

    def param(self, name: str, arr: np.ndarray, source: str, key: str, of: str | None = None) -> relax.Var:
        """of: the graph constant the array holds (a re-laid-out copy, or a stacked layer's first constant)."""
        from compiler.ir import TensorType, dtype_of

        v = relax.Var(name, self.ttype(TensorType(arr.shape, dtype_of(arr))))
        self.param_vars.append(v)
        self.params.append({"name": name, "source": source, "key": key, "of": of or key, "shape": list(arr.shape), "dtype": str(arr.dtype)})
        self.env[name] = v
        return v

    def emit(self, expr, name=None):
        return self.bb.emit(expr, name_hint=name or "")

    # the function -----------------------------------------------------------------------------------------
    def lower(self) -> LoweredModule:
        g = self.g
        if self.kind == "cpu" and TVM_FUSE_SIBLINGS.get():
            _stack_siblings(self)
        # weight re-layouts (numpy, GIL released in its copies and bit operations) for all layers at once, in
        # threads: about 1/4 of a llama-1b compile when done one layer at a time
        layers = {id(m): m for m in (self.stacks.get(id(n), n) for n in g.nodes if n.op == "qlinear")}
        todo = [n for n in layers.values() if _choose(self, n)[0].relayout is not None]
        if todo:
            with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
                self.relaid = dict(zip((n.inputs[1] for n in todo), pool.map(lambda n: _relayout(self, n), todo)))
        self.function("main")
        functions = ["main"]
        head = self.last_row_head()
        if head is not None:
            self.function_last_row(head)
            functions.append(LAST_ROW_FUNCTION)
        mod = self.bb.get()
        for gv, func in list(mod.functions.items()):
            sched = _lookup(self.sched, gv.name_hint)
            if sched is not None:
                mod[gv] = sched(func).with_attr("op_pattern", 8)  # opaque: never fused with neighbours
        stacked = [m.attrs["stacked"] for m in {id(m): m for m in self.stacks.values()}.values()]
        return LoweredModule(mod, list(g.inputs), self.params, list(g.outputs), self.relayout, self.kernels, functions=functions, stacked=stacked)

    def last_row_head(self):
        """The node that makes a causal model's logits from rows [S, H] (the LM head), or None."""
        g = self.g
        if not g.meta.get("causal") or "logits" not in g.outputs:
            return None
        node = next(n for n in g.nodes if "logits" in n.outputs)
        x = self.shape(node.inputs[0])
        return node if node.op in ("linear", "qlinear") and len(x) == 2 and x[0] == "S" else None

    def function(self, name: str, before=None):
        """One Relax function `name(*graph inputs, *weights)` over the whole graph (before: convert_nodes' hook).
        Parameters are created on first use, so the signature is built after the body."""
        g = self.g
        in_vars = [relax.Var(k, self.ttype(t)) for k, t in g.inputs.items()]
        self.env = dict(zip(g.inputs, in_vars))
        with self.bb.function(name):
            with self.bb.dataflow():
                self.convert_nodes(before)
                result = self.bb.emit_output(relax.Tuple([self.env[o] for o in g.outputs]))
            self.bb.emit_func_output(result, params=in_vars + self.param_vars)

    def function_last_row(self, head):
        """`main_last`: the same calls as main, but the head reads the last row only (logits [1, V]), which is all a
        generation's prefill needs; the kernels are main's (the BlockBuilder shares equal functions)."""
        params, kernels = self.params, dict(self.kernels)
        self.params, self.param_vars, self.a8_cache = [], [], {}
        last = relax.const(np.array([-1], np.int64))

        def last_row(node):
            if node is head:
                src = node.inputs[0]
                self.env[src] = self.emit(relax.op.take(self.env[src], last, axis=0, mode="wrap"))

        self.function(LAST_ROW_FUNCTION, last_row)
        if self.params != params or self.kernels != kernels:
            raise RuntimeError("main_last took other parameters or kernels than main")


def _lookup(table: dict, name: str):
    """table[name], where the BlockBuilder may have appended digits to a name hint to keep names unique."""
    if name in table:
        return table[name]
    for key in table:
        if name.startswith(key) and name[len(key):].isdigit():
            return table[key]
    return None


@conv("embedding")
def _embedding(L, n):
    ids, table = L.ins(n)
    return [L.emit(relax.op.take(table, ids, axis=0, mode="clip"))]


@conv("linear")
def _linear(L, n):
    ins = L.ins(n)
    hint = "linear"
    if L.kind == "cpu" and kernels_cpu.float_linear_ok(L.shape(n.inputs[1])[1]) and len(L.shape(n.inputs[0])) == 2:
        hint = "linear_cpu"  # the vectorized float GEMV/GEMM (kernels_cpu.float_linear_prim_func)
        L.sched[hint] = kernels_cpu.schedule_float_linear
    return [L.bb.emit_te(qlinear_te.linear_te, *ins, primfunc_name_hint=hint)]


def choose_kernel(shape: QLinearShape, tune: bool | None = None, log: dict | None = None) -> QLinearKernel:
    """The kernel of the first rule that holds for `shape` (kernels.rules()). With `tune` (default:
    LOWBIT_TVM_TUNE) and several fast CPU kernels matching, the fastest one measured on this machine instead
    (tune.py; cached by shape); `log` collects the times."""
    matching = kernels.matching_kernels(shape)
    if tune is None:
        tune = TVM_TUNE.get()
    fast = [kern for kern in matching if kern.relayout is not None]  # the fallbacks are never faster
    if tune and shape.target == "cpu" and len(fast) > 1:
        return measured_pick(shape, fast, log)
    return matching[0]


def _choose(L, n) -> tuple[QLinearKernel, QLinearShape]:
    a = n.attrs
    mins = bool(a.get("mins"))
    key = n.inputs[2]
    if key not in L.f16_params:  # (asked for several times per layer)
        L.f16_params[key] = _fp16_values(L.const(n.inputs[2])) and (not mins or _fp16_values(L.const(n.inputs[3])))
    coded = a["act"] in CODED_ACTS  # the kernels run on the E4M3 / MX values as float32 activations
    fp8 = a["act"] == "afp8"  # (its per-token scale and the bias after the kernel)
    shape = kernels.qlinear_shape(
        True, a["n"], a["k"], a["bits"], a["group_size"], "a32" if coded else a["act"], L.kind, a["layout"], len(n.inputs) == 5 and not fp8, bool(a.get("ternary")), mins,
        L.f16_params[key], bool(a.get("codebook")), a.get("fp", ""),
    )
    return choose_kernel(shape, L.tune, L.search), shape


def _fp16_values(a: np.ndarray) -> bool:
    """Every value is a finite fp16 number (GGUF's Q4_0 / Q4_1 / Q8_0 d and m are): the fast kernels may then store
    a re-laid-out copy in fp16 without changing a bit of the result."""
    a = np.asarray(a, np.float32)
    with np.errstate(over="ignore"):
        h = a.astype(np.float16)
    return bool(np.isfinite(h).all() and np.array_equal(h.astype(np.float32), a))


def _relayout(L, n) -> dict:
    kern, shape = _choose(L, n)
    return kern.relayout(*(L.const(c) for c in n.inputs[1:4]), shape)


def _relaid_params(L, n, kern: QLinearKernel) -> list:
    """The parameters holding qlinear n's weights re-laid out for `kern` (packed, scales, zeros: the minimums of
    scale-and-minimum groups), made by the first of the layer and a qembedding of the same table to ask."""
    keys = [f"{c}@{kern.name}" for c in n.inputs[1:4]]
    if keys[0] not in L.env:
        if keys[0] not in L.relayout:  # (made once: main_last's parameters are main's arrays)
            new = L.relaid.pop(n.inputs[1], None) or _relayout(L, n)
            for role, key in zip(("packed", "scales", "zeros"), keys):
                L.relayout[key] = new[role]
        for c, key in zip(n.inputs[1:4], keys):
            L.param(key, L.relayout[key], "relayout", key, L.stack_of.get(c, c))
    return [L.env[k] for k in keys]


# act mode -> (TE quantizer, its schedule's block prefix, whether it also returns a per-token scale)
ACT_QUANT = {
    "a8": (qlinear_te.act_quant_a8, "a8", True),
    "afp8": (qlinear_te.act_quant_fp8, "fp8", True),
    "amx8": (lambda t: qlinear_te.act_quant_mx(t, "amx8"), "mx", False),
    "amxfp4": (lambda t: qlinear_te.act_quant_mx(t, "amxfp4"), "mx", False),
}


def _quantized_activations(L, src: str, x2, act: str):
    """(the quantized activations, the per-token scale or None) of `src` in mode `act`, made once per activation
    (q, k and v share them)."""
    key = (src, act)
    if key not in L.a8_cache:
        fn, prefix, scaled = ACT_QUANT[act]
        name = f"act_quant_{act}"
        L.sched[name] = qlinear_te.schedule_act_quant(L.kind, prefix)
        q = L.bb.emit_te(fn, x2, primfunc_name_hint=name)
        L.a8_cache[key] = (L.emit(relax.TupleGetItem(q, 0)), L.emit(relax.TupleGetItem(q, 1))) if scaled else (q, None)
    return L.a8_cache[key]


def _stack_siblings(L) -> None:
    """Qlinears that read the same activation with the same quantization and their own weights (q, k and v; gate
    and up) become one layer over their stacked rows (L.stacks), when the stacked shape's kernel re-lays weights out:
    one call reads all their weights in one pass. Each output row is computed exactly as before (its own groups,
    scales, and the activations quantized once), so the result is bit for bit the separate layers'. A decode step of
    smollm2-135m makes 120 qlinear calls instead of 210, and the small 576-wide GEMVs were the slowest per byte."""
    g = L.g
    uses: dict[str, int] = {}
    for n in g.nodes:
        for i in n.inputs:
            uses[i] = uses.get(i, 0) + 1
    groups: dict[tuple, list[Node]] = {}
    for n in g.nodes:
        a = n.attrs
        if n.op != "qlinear" or a.get("codebook") or any(uses[c] != 1 or c not in g.consts for c in n.inputs[1:]):
            continue
        same = tuple(sorted((k, repr(v)) for k, v in a.items() if k != "n"))
        groups.setdefault((n.inputs[0], len(n.inputs), same), []).append(n)
    for members in groups.values():
        if len(members) < 2:
            continue
        names = [m.inputs[1] for m in members]
        tag = f"+{len(members) - 1}"  # (the stacked arrays are named after the first layer's)
        planes = members[0].attrs["layout"] == "planes"  # [bits, N, bytes]; every other array is [N, ...]
        ins = [members[0].inputs[0]]
        for j in range(1, len(members[0].inputs)):
            name = members[0].inputs[j] + tag
            L.stack_consts[name] = np.concatenate([g.consts[m.inputs[j]] for m in members], axis=1 if planes and j == 1 else 0)
            L.stack_of[name] = members[0].inputs[j]
            ins.append(name)
        st = Node("qlinear", ins, [members[0].outputs[0] + tag], {**members[0].attrs, "n": sum(m.attrs["n"] for m in members), "stacked": names})
        if _choose(L, st)[0].relayout is None:
            for name in ins[1:]:
                del L.stack_consts[name], L.stack_of[name]
            continue
        for m in members:
            L.stacks[id(m)] = st


@conv("qlinear")
def _qlinear(L, n):
    st = L.stacks.get(id(n))
    if st is None:
        return [_qlinear_rows(L, n, n.outputs[0])]
    if n.outputs[0] not in L.env:  # the first of the stacked layers: one call, then each layer's columns
        members = [m for m in L.g.nodes if L.stacks.get(id(m)) is st]
        y = _qlinear_rows(L, st, None)
        cuts = np.cumsum([m.attrs["n"] for m in members])[:-1].tolist()
        parts = L.emit(relax.op.split(y, cuts, axis=-1))
        for i, m in enumerate(members):
            part = L.emit(relax.TupleGetItem(parts, i))
            if len(L.shape(m.outputs[0])) != 2:
                part = L.emit(relax.op.reshape(part, [L.dim(d) for d in L.shape(m.outputs[0])]))
            L.env[m.outputs[0]] = part
            L.kernels[m.inputs[1]] = L.kernels[st.inputs[1]]
        del L.kernels[st.inputs[1]]
    return [L.env[n.outputs[0]]]


def _qlinear_rows(L, n, out: str | None):
    """qlinear n's call; its result reshaped to the graph value `out`'s shape, or kept [rows, N] (out None)."""
    a = n.attrs
    x = L.value(n.inputs[0])
    fp8 = a["act"] == "afp8"
    has_bias = len(n.inputs) == 5 and not fp8
    kern, shape = _choose(L, n)
    ws = _relaid_params(L, n, kern) if kern.relayout is not None else [L.value(c) for c in n.inputs[1:4]]
    L.kernels[n.inputs[1]] = kern.name
    x2 = x
    lead = L.shape(n.inputs[0])
    if len(lead) != 2:
        x2 = L.emit(relax.op.reshape(x, [-1, a["k"]]))
    sa = None
    if a["act"] in ACT_QUANT:
        xq, sa = _quantized_activations(L, n.inputs[0], x2, a["act"])
        args = [xq, *ws, sa] if a["act"] == "a8" else [xq, *ws]  # (afp8's sa after the kernel; MX: in the values)
    else:
        args = [x2, *ws]
    if has_bias:
        args.append(L.value(n.inputs[4]))
    hint = f"qlinear_{kern.name.replace('-', '_')}_n{a['n']}_k{a['k']}_w{a['bits']}g{a['group_size']}{a['act']}{'_b' if has_bias else ''}"
    L.sched[hint] = kern.schedule
    y = L.bb.emit_te(kern.te_func(shape), *args, primfunc_name_hint=hint)
    if fp8:  # y = sa (sum over groups) + bias, as the reference
        y = L.emit(relax.op.multiply(y, L.emit(relax.op.reshape(sa, [-1, 1]))))
        if len(n.inputs) == 5:
            y = L.emit(relax.op.add(y, L.value(n.inputs[4])))
    if len(lead) != 2 and out is not None:
        y = L.emit(relax.op.reshape(y, [L.dim(d) for d in L.shape(out)]))
    return y


def _qembedding_te(ids, packed, scales, offsets, a: dict, kern: QLinearKernel | None = None, shape: QLinearShape | None = None):
    """rows[.., k] of the quantized table: s (q - z), or s q + m (attr mins); ids are clamped into the table
    (as the float embedding's take(mode="clip")). With `kern` (a kernel that re-lays out weights, and the head's
    `shape`), the arrays are that kernel's copy of the table: codes through kern.code_at, scales and zeros (or
    minimums) [N/rows, K/g, rows], possibly fp16."""
    v, k, g = a["n"], a["k"], a["group_size"]

    def row(*idx):
        i, c = idx[:-1], idx[-1]
        r = tirx.max(tirx.min(ids[i].astype("int64"), tirx.const(v - 1, "int64")), tirx.const(0, "int64"))
        if kern is None:
            q = qlinear_te.code_at(packed, a["bits"], a["layout"], r, c)
            s, o = scales[r, c // g], offsets[r, c // g]
        else:
            q = kern.code_at(packed, shape, r, c)
            s, o = scales[r // kern.rows, c // g, r % kern.rows].astype("float32"), offsets[r // kern.rows, c // g, r % kern.rows]
        if a.get("mins"):
            return s * q.astype("float32") + o.astype("float32")
        return s * (q - o.astype("int32")).astype("float32")

    return te.compute((*ids.shape, k), row, name="qembedding")


def _schedule_qembedding(kind: str):
    """Rows in parallel (CPU, features vectorized by LLVM), or one thread per element (CUDA)."""

    def sched(func: tirx.PrimFunc) -> tirx.PrimFunc:
        from tvm import s_tir

        sch = s_tir.Schedule(func)
        loops = sch.get_loops(sch.get_sblock("qembedding"))
        if kind == "cpu":
            sch.parallel(sch.fuse(*loops[:-1]))
        else:
            bo, bi = sch.split(sch.fuse(*loops), factors=[None, 256])
            sch.bind(bo, "blockIdx.x")
            sch.bind(bi, "threadIdx.x")
        return sch.mod["main"].with_attr("tirx.is_scheduled", True)

    return sched


@conv("qembedding")
def _qembedding(L, n):
    """A quantized table's rows (e.g. an embedding that is also the tied LM head). Where the head's kernel reads a
    re-laid-out copy of the table, the rows are read from that copy, so the module takes the table once;
    otherwise from the artifact's packed constants, which the head reads too."""
    L.sched["qembedding"] = _schedule_qembedding(L.kind)
    head = next((m for m in L.g.nodes if m.op == "qlinear" and m.inputs[1:4] == n.inputs[1:4]), None)
    kern, shape = _choose(L, head) if head is not None else (None, None)
    if kern is not None and kern.relayout is not None and kern.code_at is not None:
        table = _relaid_params(L, head, kern)
    else:
        kern, table = None, [L.value(c) for c in n.inputs[1:4]]
    ids = L.value(n.inputs[0])
    return [L.bb.emit_te(lambda *t: _qembedding_te(*t, n.attrs, kern, shape), ids, *table, primfunc_name_hint="qembedding")]


@conv("sparse_matmul")
def _sparse_matmul(L, n):
    from compiler.backends.tvm import sparse

    x, cols, vals = L.ins(n)
    xs = L.shape(n.inputs[0])
    lead = [L.dim(d) for d in xs[:-1]]
    x2 = x if len(xs) == 2 else L.emit(relax.op.reshape(x, [-1, n.attrs["k"]]))
    L.sched["sparse_matmul"] = sparse.schedule(L.kind)
    y = L.bb.emit_te(sparse.sparse_matmul_te, x2, cols, vals, primfunc_name_hint="sparse_matmul")
    return [y if len(xs) == 2 else L.emit(relax.op.reshape(y, [*lead, n.attrs["n"]]))]


@conv("matmul")
def _matmul(L, n):
    a, b = L.ins(n)
    return [L.emit(relax.op.matmul(a, b))]


@conv("rmsnorm")
def _rmsnorm(L, n):
    x, w = L.ins(n)
    shape = L.shape(n.inputs[0])
    if L.kind == "cpu" and norm_cpu.rmsnorm_ok(shape):
        key = (shape[1], float(n.attrs["eps"]))
        fns = L.__dict__.setdefault("rmsnorm_fns", {})  # one kernel per (H, eps), shared by every layer
        if key not in fns:
            fns[key] = L.bb.add_func(norm_cpu.rmsnorm_prim_func(*key), "rmsnorm_cpu")
        return [L.emit(relax.call_tir(fns[key], relax.Tuple([x, w]), out_ty=L.ttype(L.g.types[n.outputs[0]])))]
    return [L.emit(relax.op.nn.rms_norm(x, w, axes=-1, epsilon=float(n.attrs["eps"])))]


@conv("layernorm")
def _layernorm(L, n):
    x, w, b = L.ins(n)
    return [L.emit(relax.op.nn.layer_norm(x, w, b, axes=-1, epsilon=float(n.attrs["eps"])))]


def _rope_te(x, pos, inv):
    """Rotate-half RoPE; angles in float64 as the reference computes them, cos/sin rounded to float32. The
    cos/sin tables are stages of their own, one per (row, frequency): computed per element they were two libm
    calls for every value of every head."""
    s, h, d = x.shape
    half = d // 2
    cos = te.compute((s, half), lambda i, c: tirx.cos(pos[i].astype("float64") * inv[c]).astype("float32"), name="rope_cos")
    sin = te.compute((s, half), lambda i, c: tirx.sin(pos[i].astype("float64") * inv[c]).astype("float32"), name="rope_sin")

    def f(i, hh, c):
        rot = tirx.Select(c < half, -x[i, hh, tirx.min(c + half, d - 1)], x[i, hh, tirx.max(c - half, 0)])
        return x[i, hh, c] * cos[i, c % half] + rot * sin[i, c % half]

    return te.compute(x.shape, f, name="rope")


@conv("rope")
def _rope(L, n):
    x, pos = L.ins(n)
    d = L.shape(n.inputs[0])[-1]
    inv = rope_inv_freq(d, n.attrs["theta"], n.attrs.get("scaling"))
    return [L.bb.emit_te(_rope_te, x, pos, relax.const(inv, "float64"), primfunc_name_hint="rope")]


def _causal_mask_te(scores):
    """scores [Hk, rep, S, T]; query i sits at absolute position (T - S) + i and sees keys 0..(T - S) + i."""
    hk, rep, s, t = scores.shape
    lowest = tirx.min_value("float32")
    return te.compute(scores.shape, lambda a, b, i, j: tirx.Select(j <= t - s + i, scores[a, b, i, j], lowest), name="causal_mask")


@conv("attention")
def _attention(L, n):
    q, k, v = L.ins(n)

    def causal(sc):
        return L.bb.emit_te(_causal_mask_te, sc, primfunc_name_hint="causal_mask")

    return [_attend(L, n, q, k, v, causal if n.attrs["causal"] else None)]


def _attend(L, n, q, k, v, mask):
    s, hq, d = (L.dim(x) for x in L.shape(n.inputs[0]))
    t, hk, _ = (L.dim(x) for x in L.shape(n.inputs[1]))
    rep = hq // hk
    op = relax.op
    qg = L.emit(op.permute_dims(op.reshape(q, [s, hk, rep, d]), [1, 2, 0, 3]))  # [Hk, rep, S, D]
    qg = L.emit(op.reshape(qg, [hk, rep * s, d]))
    kt = L.emit(op.permute_dims(k, [1, 2, 0]))  # [Hk, D, T]
    sc = L.emit(op.matmul(qg, kt))  # [Hk, rep*S, T]
    sc = L.emit(op.multiply(op.reshape(sc, [hk, rep, s, t]), relax.const(np.float32(n.attrs["scale"]))))
    if mask is not None:
        sc = mask(sc)
    p = L.emit(op.nn.softmax(sc, axis=-1))
    vt = L.emit(op.permute_dims(v, [1, 0, 2]))  # [Hk, T, D]
    o = L.emit(op.matmul(op.reshape(p, [hk, rep * s, t]), vt))  # [Hk, rep*S, D]
    o = L.emit(op.permute_dims(op.reshape(o, [hk, rep, s, d]), [2, 0, 1, 3]))  # [S, Hk, rep, D]
    return L.emit(op.reshape(o, [s, hq, d]))


def _position_mask_te(scores, pos):
    """scores [Hk, rep, S, C] over a preallocated cache; query i sees cache rows 0..pos[i]."""
    lowest = tirx.min_value("float32")
    return te.compute(scores.shape, lambda a, b, i, j: tirx.Select(j <= pos[i], scores[a, b, i, j], lowest), name="position_mask")


@conv("cache_attention")
def _cache_attention(L, n):
    q, k, v, pos = L.ins(n)
    if L.kind == "cpu":
        # one TIR kernel that walks cache rows 0..positions[i] only (attention_cpu.py)
        hq, d = L.shape(n.inputs[0])[1:]
        hkv = L.shape(n.inputs[1])[1]
        cdt = L.ttype(L.g.types[n.inputs[1]]).dtype
        key = (hq, hkv, d, float(n.attrs["scale"]), cdt)
        fns = L.__dict__.setdefault("cache_attention_fns", {})  # one kernel per shape, shared by every layer
        if key not in fns:
            fns[key] = L.bb.add_func(cache_attention_prim_func(hq, hkv, d, key[3], cache_dtype=cdt), "cache_attention")
        # (the kernel's quantized-cache signature: a float cache passes itself as its scales, which it never reads)
        return [L.emit(relax.call_tir(fns[key], relax.Tuple([q, k, k, v, v, pos]), out_ty=L.ttype(L.g.types[n.outputs[0]])))]
    # GPUs: masked over the cache's C rows (a static-shape matmul and softmax, as `attention`): the rows past the
    # last position weigh exactly 0, and the cache's capacity bounds the extra work. (An fp16 cache: widened first.)
    if L.g.types[n.inputs[1]].dtype == "f16":
        k, v = L.emit(relax.op.astype(k, "float32")), L.emit(relax.op.astype(v, "float32"))
    return [_attend(L, n, q, k, v, lambda sc: L.bb.emit_te(_position_mask_te, sc, pos, primfunc_name_hint="position_mask"))]


@conv("cache_attention_q")
def _cache_attention_q(L, n):
    # the CPU kernel of cache_attention reading s * q from the quantized cache in registers (attention_cpu.py)
    ins = L.ins(n)
    a = n.attrs
    hq, d = L.shape(n.inputs[0])[1:]
    hkv = L.shape(n.inputs[1])[1]
    w = a.get("window", 0)
    key = (hq, hkv, d, float(a["scale"]), a["bits"], a["group"], w, a.get("code", "int"), a.get("keys") == "channel")
    fns = L.__dict__.setdefault("cache_attention_q_fns", {})
    if key not in fns:
        fns[key] = L.bb.add_func(cache_attention_prim_func(hq, hkv, d, key[3], kv_bits=a["bits"], kv_group=a["group"], window=w, kv_code=key[7],
                                                           keys_channel=key[8]), "cache_attention_q")
    out_ty = L.ttype(L.g.types[n.outputs[0]])
    if not w:
        return [L.emit(relax.call_tir(fns[key], relax.Tuple(ins), out_ty=out_ty))]
    # the float window: o is a new tensor, the two rings (inputs 6 and 7) are written in place
    rings = [L.ttype(L.g.types[o]) for o in n.outputs[1:]]
    res = L.emit(relax.call_tir_inplace(fns[key], relax.Tuple(ins), inplace_indices=[-1, 6, 7], out_ty=[out_ty, *rings]))
    return [L.emit(relax.TupleGetItem(res, i)) for i in range(3)]


@conv("kv_write_q")
def _kv_write_q(L, n):
    from compiler.backends.tvm.kv_cache import kv_write_q_inplace

    codes, scales, new, pos = L.ins(n)
    a = n.attrs
    heads, d = L.shape(n.inputs[2])[1:]
    key = (heads, d, a["bits"], a["group"], a.get("code", "int"))
    fns = L.__dict__.setdefault("kv_write_q_fns", {})
    if key not in fns:
        fns[key] = L.bb.add_func(kv_write_q_inplace(*key), "kv_write_q")
    out_ty = [L.ttype(L.g.types[o]) for o in n.outputs]
    res = L.emit(relax.call_tir_inplace(fns[key], relax.Tuple([codes, scales, new, pos]), inplace_indices=[0, 1], out_ty=out_ty))
    return [L.emit(relax.TupleGetItem(res, 0)), L.emit(relax.TupleGetItem(res, 1))]


@conv("kv_write_kc")
def _kv_write_kc(L, n):
    from compiler.backends.tvm.kv_cache import kv_write_kc_inplace

    a = n.attrs
    heads, d = L.shape(n.inputs[3])[1:]
    key = (heads, d, a["bits"], a["group"], a["window"])
    fns = L.__dict__.setdefault("kv_write_kc_fns", {})
    if key not in fns:
        fns[key] = L.bb.add_func(kv_write_kc_inplace(*key), "kv_write_kc")
    out_ty = [L.ttype(L.g.types[o]) for o in n.outputs]
    res = L.emit(relax.call_tir_inplace(fns[key], relax.Tuple(L.ins(n)), inplace_indices=[0, 1], out_ty=out_ty))
    return [L.emit(relax.TupleGetItem(res, 0)), L.emit(relax.TupleGetItem(res, 1))]


@conv("kv_write")
def _kv_write(L, n):
    cache, new, pos = L.ins(n)
    if L.kind != "cpu":
        # GPU: a functional write (a copy of the cache), since the in-place kernel below is not thread-bound
        return [L.bb.emit_te(_kv_write_te, cache, new, pos, primfunc_name_hint="kv_write_copy")]
    heads, head_dim = L.shape(n.inputs[0])[1:]
    cdt = L.ttype(L.g.types[n.inputs[0]]).dtype
    fns = L.__dict__.setdefault("kv_write_fns", {})  # one kernel per cache shape and type, shared by every layer
    if (heads, head_dim, cdt) not in fns:
        fns[heads, head_dim, cdt] = L.bb.add_func(kv_write_inplace(heads, head_dim, cdt), "kv_write")
    gv = fns[heads, head_dim, cdt]
    sinfo = L.ttype(L.g.types[n.outputs[0]])
    return [L.emit(relax.call_tir_inplace(gv, relax.Tuple([cache, new, pos]), inplace_indices=[0], out_ty=sinfo))]


def _kv_write_te(cache, new, pos):
    s = new.shape[0]
    return te.compute(cache.shape, lambda j, h, d: tirx.Select(tirx.all(j >= pos[0], j < pos[0] + s), new[tirx.max(j - pos[0], 0), h, d].astype(cache.dtype),
                                                               cache[j, h, d]), name="kv_write")


@conv("hadamard")
def _hadamard(L, n):
    from compiler.backends.tvm.hadamard import hadamard_prim_func, scale_of

    if L.kind != "cpu":
        raise NotImplementedError("hadamard has a CPU kernel only (a GPU target is refused before lowering)")
    x = L.ins(n)[0]
    shape = L.shape(n.inputs[0])
    width, size = shape[-1], n.attrs["size"]
    fns = L.__dict__.setdefault("hadamard_fns", {})
    if (width, size) not in fns:
        fns[width, size] = L.bb.add_func(hadamard_prim_func(width, size), "hadamard")
    x2 = x if len(shape) == 2 else L.emit(relax.op.reshape(x, [-1, width]))
    rows = 1
    for d in shape[:-1]:
        rows = rows * L.dim(d)
    y = L.emit(relax.call_tir(fns[width, size], relax.Tuple([x2, relax.const(scale_of(size))]), relax.TensorType([rows, width], "float32")))
    return [y if len(shape) == 2 else L.emit(relax.op.reshape(y, [L.dim(d) for d in shape]))]


@conv("softmax")
def _softmax(L, n):
    return [L.emit(relax.op.nn.softmax(L.ins(n)[0], axis=-1))]


def _silu_te(x):
    """x / (1 + e^-x) with a polynomial exp (vmath): Relax's silu calls libm's expf once per value."""
    return te.compute(x.shape, lambda *i: x(*i) / (tirx.const(1.0, "float32") + vmath.exp(-x(*i))), name="silu")


@conv("silu")
def _silu(L, n):
    if L.kind == "cpu":
        return [L.bb.emit_te(_silu_te, L.ins(n)[0], primfunc_name_hint="silu")]
    return [L.emit(relax.op.nn.silu(L.ins(n)[0]))]


@conv("gelu")
def _gelu(L, n):
    x = L.ins(n)[0]
    f = relax.op.nn.gelu_tanh if n.attrs.get("approximate") == "tanh" else relax.op.nn.gelu
    return [L.emit(f(x))]


@conv("add")
def _add(L, n):
    return [L.emit(relax.op.add(*L.ins(n)))]


@conv("mul")
def _mul(L, n):
    return [L.emit(relax.op.multiply(*L.ins(n)))]


@conv("reshape")
def _reshape(L, n):
    return [L.emit(relax.op.reshape(L.ins(n)[0], [L.dim(d) for d in L.shape(n.outputs[0])]))]


@conv("concat")
def _concat(L, n):
    return [L.emit(relax.op.concat(L.ins(n), axis=n.attrs["axis"]))]


@conv("mean")
def _mean(L, n):
    return [L.emit(relax.op.mean(L.ins(n)[0], axis=n.attrs["axis"]))]


@conv("l2norm")
def _l2norm(L, n):
    x = L.ins(n)[0]
    op = relax.op
    norm = op.sqrt(op.sum(op.multiply(x, x), axis=-1, keepdims=True))
    return [L.emit(op.divide(x, op.maximum(norm, relax.const(np.float32(n.attrs["eps"])))))]


def lower_graph(graph: Graph, target_kind: str, tune: bool | None = None) -> LoweredModule:
    """Lower `graph` for target_kind 'cpu' or 'cuda' (qlinear kernels are chosen per target kind; `tune`
    measures the matching fast CPU kernels per shape instead of taking the first rule's)."""
    L = _Lowerer(graph, target_kind, tune)  # (refuses a graph with ops CONVERTERS lacks, naming them all)
    mod = L.lower()
    mod.search = L.search
    return mod
