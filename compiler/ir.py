"""The graph IR: a small, typed dataflow graph shared by every frontend, pass and backend.

A `Graph` has named inputs, named constants (weights, held as numpy arrays), nodes in topological order,
and named outputs. Every value has a `TensorType` (shape and dtype). Dimensions are ints or symbols
(strings such as "S" for the sequence length, "P" for the KV-cache length, or "P+S"), so one graph serves
prefill and decode. `infer_types` derives the type of every node output from its inputs and attributes;
`verify` checks the graph is well formed. The text form (`str(graph)`) is meant to be read by people;
`to_json`/`from_json` round-trip the structure (constants travel separately, in safetensors).

Batch is one sequence: activations are [S, features]. Attention works on [S, heads, head_dim].
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

Dim = int | str

DTYPES = {"f32": np.float32, "f16": np.float16, "i64": np.int64, "i32": np.int32, "i16": np.int16, "u8": np.uint8, "i8": np.int8}
_NP_TO_DTYPE = {np.dtype(v): k for k, v in DTYPES.items()}


def dtype_of(a: np.ndarray) -> str:
    try:
        return _NP_TO_DTYPE[a.dtype]
    except KeyError:
        raise TypeError(f"unsupported array dtype {a.dtype}") from None


@dataclass(frozen=True)
class TensorType:
    shape: tuple[Dim, ...]
    dtype: str = "f32"

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise TypeError(f"unknown dtype {self.dtype}")
        object.__setattr__(self, "shape", tuple(self.shape))

    def __str__(self) -> str:
        return f"{self.dtype}[{','.join(str(d) for d in self.shape)}]"

    def to_json(self) -> dict:
        return {"shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, d: dict) -> "TensorType":
        return cls(tuple(d["shape"]), d["dtype"])


@dataclass
class Node:
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"op": self.op, "inputs": self.inputs, "outputs": self.outputs, "attrs": self.attrs}

    @classmethod
    def from_json(cls, d: dict) -> "Node":
        return cls(d["op"], list(d["inputs"]), list(d["outputs"]), dict(d.get("attrs", {})))


class IRError(Exception):
    """A malformed graph (a bug in a frontend or pass, not a user error)."""


# ----------------------------------------------------------------------------------------------------------
# Symbolic dimensions


def dim_add(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a + b
    if a == 0:
        return b
    if b == 0:
        return a
    return f"{a}+{b}"


def dims_equal(a: Dim, b: Dim) -> bool:
    return str(a) == str(b)


def _same_shape(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(dims_equal(x, y) for x, y in zip(a, b))


# ----------------------------------------------------------------------------------------------------------
# Op definitions: for each op, its arity and a type-inference rule. Semantics live in compiler.reference.


@dataclass(frozen=True)
class OpDef:
    name: str
    min_inputs: int
    max_inputs: int
    infer: Callable[[list[TensorType], dict], list[TensorType]]
    required_attrs: tuple[str, ...] = ()
    doc: str = ""


OPS: dict[str, OpDef] = {}


def _op(name, min_in, max_in=None, attrs=(), doc=""):
    def deco(fn):
        OPS[name] = OpDef(name, min_in, min_in if max_in is None else max_in, fn, tuple(attrs), doc)
        return fn

    return deco


def _expect(cond: bool, msg: str):
    if not cond:
        raise IRError(msg)


@_op("embedding", 2, doc="table[ids]: ids i64[S], table f32[V,H] -> f32[S,H]")
def _infer_embedding(t, a):
    ids, table = t
    _expect(ids.dtype in ("i64", "i32"), "embedding ids must be integer")
    _expect(len(table.shape) == 2, "embedding table must be 2-D")
    return [TensorType((*ids.shape, table.shape[1]), "f32")]


@_op("linear", 2, 3, doc="x W^T + b: x f32[..,K], W f32[N,K], b f32[N] -> f32[..,N]")
def _infer_linear(t, a):
    x, w = t[0], t[1]
    _expect(len(w.shape) == 2, "linear weight must be 2-D")
    _expect(dims_equal(x.shape[-1], w.shape[1]), f"linear: x has K={x.shape[-1]}, weight has K={w.shape[1]}")
    if len(t) == 3:
        _expect(_same_shape(t[2].shape, (w.shape[0],)), "linear bias must be [N]")
    return [TensorType((*x.shape[:-1], w.shape[0]), "f32")]


@_op(
    "qlinear",
    4,
    5,
    attrs=("bits", "group_size", "n", "k", "act", "layout", "ternary"),
    doc="quantized linear (numeric contract): x f32[..,K], packed codes u8, scales f32[N,J], zeros u8[N,J] "
    "(attr mins: float minimums f32[N,J] instead; attr codebook: a table f32[N,2^bits] the codes index), b f32[N]",
)
def _infer_qlinear(t, a):
    x = t[0]
    _check_qweight("qlinear", t[1:4], a)
    n, k = a["n"], a["k"]
    _expect(dims_equal(x.shape[-1], k), f"qlinear: x has K={x.shape[-1]}, weight has K={k}")
    _expect(a["act"] in ("a16", "a8", "afp8", "amx8", "amxfp4", "a32"), f"qlinear: unknown act mode {a['act']}")
    _expect(a["act"] not in ("amx8", "amxfp4") or k % 32 == 0, f"qlinear: {a['act']} activations come in blocks of 32, and K={k} is not a multiple of 32")
    if len(t) == 5:
        _expect(_same_shape(t[4].shape, (n,)), "qlinear bias must be [N]")
    return [TensorType((*x.shape[:-1], n), "f32")]


def _check_qweight(op: str, t: list[TensorType], a: dict):
    """The packed weight of qlinear / qembedding: codes u8, scales f32[N,J], zeros u8[N,J] or mins f32[N,J]."""
    packed, scales, offsets = t
    n, k, g = a["n"], a["k"], a["group_size"]
    _expect(k % g == 0, f"{op}: K={k} not a multiple of group {g}")
    _expect(packed.dtype == "u8", f"{op} codes must be packed u8")
    _expect(_same_shape(scales.shape, (n, k // g)) and scales.dtype == "f32", f"{op} scales must be f32[N,K/g]")
    if a.get("codebook"):
        _expect((_same_shape(offsets.shape, (n, 1 << a["bits"])) or _same_shape(offsets.shape, (1, 1 << a["bits"]))) and offsets.dtype == "f32",
                f"{op} codebook table must be f32[N,2^bits] (or [1,2^bits], shared)")
        _expect(not a.get("mins") and not a.get("ternary"), f"{op}: codebook weights have no minimum and are not ternary")
    elif a.get("mins"):
        _expect(_same_shape(offsets.shape, (n, k // g)) and offsets.dtype == "f32", f"{op} mins must be f32[N,K/g]")
        _expect(not a.get("ternary"), f"{op}: ternary weights have no minimum")
    else:
        _expect(_same_shape(offsets.shape, (n, k // g)) and offsets.dtype == "u8", f"{op} zeros must be u8[N,K/g]")


@_op(
    "qembedding",
    4,
    attrs=("bits", "group_size", "n", "k", "layout", "ternary"),
    doc="rows of a quantized table: ids i64[S], packed codes u8 [V rows], scales f32[V,J], zeros u8[V,J] (or mins) -> f32[S,K]",
)
def _infer_qembedding(t, a):
    ids = t[0]
    _expect(ids.dtype in ("i64", "i32"), "qembedding ids must be integer")
    _check_qweight("qembedding", t[1:4], a)
    return [TensorType((*ids.shape, a["k"]), "f32")]


@_op(
    "sparse_matmul",
    3,
    attrs=("n", "k"),
    doc="x S^T for a sparse side matrix with C entries per row (ELL): x f32[..,K], cols i16[N,C], vals f16[N,C] -> f32[..,N]; "
    "y[.., n] = sum_c x[.., cols[n,c]] vals[n,c] (compiler.quant.outliers)",
)
def _infer_sparse_matmul(t, a):
    x, cols, vals = t
    n, k = a["n"], a["k"]
    _expect(dims_equal(x.shape[-1], k), f"sparse_matmul: x has K={x.shape[-1]}, the side matrix has K={k}")
    _expect(len(cols.shape) == 2 and _same_shape(cols.shape[:1], (n,)) and cols.dtype == "i16", "sparse_matmul cols must be i16[N,C]")
    _expect(_same_shape(vals.shape, cols.shape) and vals.dtype == "f16", "sparse_matmul vals must be f16[N,C]")
    return [TensorType((*x.shape[:-1], n), "f32")]


@_op("matmul", 2, doc="a @ b over the last two dims")
def _infer_matmul(t, a):
    x, y = t
    _expect(len(x.shape) >= 2 and len(y.shape) >= 2, "matmul needs >= 2-D operands")
    _expect(dims_equal(x.shape[-1], y.shape[-2]), "matmul: inner dims differ")
    return [TensorType((*x.shape[:-1], y.shape[-1]), "f32")]


def _norm_infer(t, a):
    x = t[0]
    for p in t[1:]:
        _expect(_same_shape(p.shape, (x.shape[-1],)), "norm parameters must be [H]")
    return [x]


_op("rmsnorm", 2, attrs=("eps",), doc="x / sqrt(mean(x^2) + eps) * w")(_norm_infer)
_op("layernorm", 3, attrs=("eps",), doc="(x - mean) / sqrt(var + eps) * w + b")(_norm_infer)


@_op("rope", 2, attrs=("theta",), doc="rotary embedding (rotate-half form): x f32[S,H,D], positions i64[S]")
def _infer_rope(t, a):
    x, pos = t
    _expect(len(x.shape) == 3, "rope input must be [S,H,D]")
    _expect(_same_shape(pos.shape, x.shape[:1]), "rope positions must be [S]")
    return [x]


@_op("attention", 3, attrs=("causal", "scale"), doc="softmax(q k^T * scale [+ causal mask]) v with GQA")
def _infer_attention(t, a):
    q, k, v = t
    _expect(len(q.shape) == 3 and len(k.shape) == 3 and len(v.shape) == 3, "attention operands must be [S,H,D]")
    _expect(_same_shape(k.shape, v.shape), "attention: k and v shapes differ")
    _expect(dims_equal(q.shape[2], k.shape[2]), "attention: head_dim of q and k differ")
    hq, hk = q.shape[1], k.shape[1]
    _expect(isinstance(hq, int) and isinstance(hk, int) and hq % hk == 0, "attention: q heads must be a multiple of kv heads")
    return [q]


@_op("kv_write", 3, doc="cache with rows positions[i] set to new[i] (in place where the backend can): cache f32[C,H,D] or f16[C,H,D] (new rows "
     "rounded to nearest even), new f32[S,H,D], positions i64[S] -> the cache")
def _infer_kv_write(t, a):
    cache, new, pos = t
    _expect(cache.dtype in ("f32", "f16") and new.dtype == "f32", "kv_write: the cache must be f32 or f16 and the new rows f32")
    _expect(len(cache.shape) == 3 and len(new.shape) == 3, "kv_write: cache and new rows must be [rows,H,D]")
    _expect(_same_shape(cache.shape[1:], new.shape[1:]), f"kv_write: rows {new} do not fit cache {cache}")
    _expect(_same_shape(pos.shape, new.shape[:1]) and pos.dtype == "i64", "kv_write: positions must be i64[S]")
    return [cache]


@_op("cache_attention", 4, attrs=("scale",), doc="attention over a preallocated KV cache: q f32[S,Hq,D], k/v caches f32[C,Hk,D] (or f16, read as "
     "f32), positions i64[S]; query i sees cache rows 0..positions[i]")
def _infer_cache_attention(t, a):
    q, k, v, pos = t
    _expect(k.dtype == v.dtype and k.dtype in ("f32", "f16"), "cache_attention: k and v caches must both be f32 or both f16")
    _infer_attention([q, k, v], a)
    _expect(_same_shape(pos.shape, q.shape[:1]) and pos.dtype == "i64", "cache_attention: positions must be i64[S]")
    return [q]


def _check_channel_keys(op: str, codes: TensorType, params: TensorType, a: dict):
    # -kc keys: unsigned codes u8[C,H,D*bits/8], parameters f16[G,H,2D] (a scale and a minimum per channel and token group)
    bits = a["bits"]
    _expect(bits in (4, 2) and a.get("code", "int") == "int", f"{op}: keys per channel are int4 or int2 codes")
    _expect(len(codes.shape) == 3 and codes.dtype == "u8", f"{op}: keys per channel must be u8[C,H,D/{8 // bits}]")
    d = codes.shape[2] * (8 // bits)
    _expect(params.dtype == "f16" and len(params.shape) == 3 and _same_shape(params.shape[1:], (codes.shape[1], 2 * d)),
            f"{op}: key parameters must be f16[G,H,2D] (scales, then minimums)")
    return d


def _check_qcache(op: str, codes: TensorType, scales: TensorType, a: dict):
    bits, grp, code = a["bits"], a["group"], a.get("code", "int")
    _expect(bits in (8, 4, 2), f"{op}: cache bits must be 8, 4 or 2")
    _expect(code == "int" or (code == "e4m3" and bits == 8), f"{op}: cache code must be int, or e4m3 with 8 bits")
    per = 8 // bits  # values per byte
    dt = "i8" if bits == 8 and code == "int" else "u8"
    _expect(len(codes.shape) == 3 and codes.dtype == dt, f"{op}: {bits}-bit {code} cache codes must be {dt}[C,H,D{'' if bits == 8 else f'/{per}'}]")
    d = codes.shape[2] * per
    _expect(scales.dtype == "f16" and _same_shape(scales.shape, (*codes.shape[:2], d // grp)), f"{op}: cache scales must be f16[C,H,D/{grp}]")
    return d


@_op("kv_write_q", 4, attrs=("bits", "group"), doc="quantized kv_write (compiler.passes.kv_quant): codes i8[C,H,D] (int4: u8[C,H,D/2]; attr code e4m3: "
     "FP8 codes u8[C,H,D]), scales f16[C,H,D/g], "
     "new f32[S,H,D], positions i64[S] -> (codes, scales) with rows positions[i] set to new[i] quantized per group of g along D")
def _infer_kv_write_q(t, a):
    codes, scales, new, pos = t
    d = _check_qcache("kv_write_q", codes, scales, a)
    _expect(len(new.shape) == 3 and _same_shape(new.shape[1:], (codes.shape[1], d)), f"kv_write_q: rows {new} do not fit cache {codes}")
    _expect(_same_shape(pos.shape, new.shape[:1]) and pos.dtype == "i64", "kv_write_q: positions must be i64[S]")
    return [codes, scales]


@_op("kv_write_kc", 5, attrs=("bits", "group", "window"), doc="kv_write_q for keys per channel (--kv ...-kc): codes u8[C,H,D*bits/8], "
     "parameters f16[G,H,2D] (G = C/32: a scale and a minimum per channel and group of 32 rows), the window ring f32[R,H,D], new f32[S,H,D], "
     "positions i64[S] (contiguous) -> (codes, parameters): each group the rows touch quantized again over its rows so far")
def _infer_kv_write_kc(t, a):
    codes, params, ring, new, pos = t
    d = _check_channel_keys("kv_write_kc", codes, params, a)
    _expect(len(new.shape) == 3 and _same_shape(new.shape[1:], (codes.shape[1], d)), f"kv_write_kc: rows {new} do not fit cache {codes}")
    _expect(len(ring.shape) == 3 and ring.dtype == "f32" and _same_shape(ring.shape, (a["window"], codes.shape[1], d)), "kv_write_kc: the ring must be f32[R,H,D]")
    _expect(_same_shape(pos.shape, new.shape[:1]) and pos.dtype == "i64", "kv_write_kc: positions must be i64[S]")
    return [codes, params]


@_op("cache_attention_q", 6, 10, attrs=("scale", "bits", "group"), doc="cache_attention over a quantized cache: q f32[S,Hq,D], k codes and scales, v codes and "
     "scales (kv_write_q's forms), positions i64[S]; the cache rows read as s * q. With attr window R > 0 and four more inputs (k / v window rings "
     "f32[R,Hk,D], this step's new k / v rows f32[S,Hk,D]): query i reads rows past positions[i] - R in float (the new rows, or ring row j % R), "
     "and the outputs are (o, k ring, v ring) with the step's last rows stored in the rings; attr keys = channel: k is kv_write_kc's codes and "
     "parameters, row j read as u s + m with its group's (j // 32)")
def _infer_cache_attention_q(t, a):
    q, kc, ks, vc, vs, pos = t[:6]
    d = (_check_channel_keys if a.get("keys") == "channel" else _check_qcache)("cache_attention_q", kc, ks, a)
    _check_qcache("cache_attention_q", vc, vs, a)
    _expect(len(q.shape) == 3 and dims_equal(q.shape[2], d), "cache_attention_q: head_dim of q and the cache differ")
    hq, hk = q.shape[1], kc.shape[1]
    _expect(isinstance(hq, int) and isinstance(hk, int) and hq % hk == 0, "cache_attention_q: q heads must be a multiple of kv heads")
    _expect(_same_shape(pos.shape, q.shape[:1]) and pos.dtype == "i64", "cache_attention_q: positions must be i64[S]")
    w = a.get("window", 0)
    _expect((w > 0) == (len(t) == 10), "cache_attention_q: a window needs the two rings and the step's new rows (10 inputs), none needs 6")
    if not w:
        return [q]
    kw, vw, kn, vn = t[6:]
    for r in (kw, vw):
        _expect(r.dtype == "f32" and _same_shape(r.shape, (w, hk, d)), f"cache_attention_q: window rings must be f32[{w},{hk},{d}]")
    for r in (kn, vn):
        _expect(r.dtype == "f32" and _same_shape(r.shape, (q.shape[0], hk, d)), "cache_attention_q: new rows must be f32[S,Hk,D]")
    return [q, kw, vw]


def _unary(t, a):
    return [t[0]]


for _name, _doc in (("softmax", "softmax over the last axis"), ("silu", "x * sigmoid(x)"), ("gelu", "GELU (erf form, or tanh when approximate='tanh')")):
    _op(_name, 1, doc=_doc)(_unary)


def _binary(t, a):
    x, y = t
    # Broadcasting is limited to the trailing-dims form the models need (e.g. [S,H] + [H]).
    n = len(y.shape)
    _expect(n <= len(x.shape) and _same_shape(x.shape[len(x.shape) - n :], y.shape), f"cannot broadcast {y} to {x}")
    return [x]


_op("add", 2, doc="x + y (y broadcast over leading dims)")(_binary)
_op("mul", 2, doc="x * y (y broadcast over leading dims)")(_binary)


@_op("reshape", 1, attrs=("shape",), doc="reshape; 0 copies the input dim at that position, -1 is inferred")
def _infer_reshape(t, a):
    x = t[0]
    out = []
    for i, d in enumerate(a["shape"]):
        out.append(x.shape[i] if d == 0 else d)
    if -1 in out:
        known = [d for d in x.shape if not (isinstance(d, str))]
        sym_in = [d for d in x.shape if isinstance(d, str)]
        sym_out = [d for d in out if isinstance(d, str)]
        _expect(sorted(sym_in) == sorted(sym_out), "reshape with -1 must keep symbolic dims")
        total = int(np.prod(known)) if known else 1
        rest = int(np.prod([d for d in out if isinstance(d, int) and d != -1])) or 1
        _expect(total % rest == 0, f"reshape {x} -> {a['shape']}: sizes do not divide")
        out = [total // rest if d == -1 else d for d in out]
    return [TensorType(tuple(out), x.dtype)]


@_op("concat", 2, attrs=("axis",), doc="concatenate along axis")
def _infer_concat(t, a):
    x, y = t
    ax = a["axis"] % len(x.shape)
    _expect(len(x.shape) == len(y.shape), "concat ranks differ")
    for i, (p, q) in enumerate(zip(x.shape, y.shape)):
        if i != ax:
            _expect(dims_equal(p, q), f"concat: dim {i} differs ({p} vs {q})")
    shape = list(x.shape)
    shape[ax] = dim_add(x.shape[ax], y.shape[ax])
    return [TensorType(tuple(shape), x.dtype)]


@_op("mean", 1, attrs=("axis",), doc="mean over one axis (mean pooling)")
def _infer_mean(t, a):
    x = t[0]
    ax = a["axis"] % len(x.shape)
    return [TensorType(tuple(d for i, d in enumerate(x.shape) if i != ax), x.dtype)]


@_op("hadamard", 1, attrs=("size",), doc="orthonormal Walsh-Hadamard transform of the last axis in blocks of `size` (a power of two): "
     "Sylvester order, H[i,j] = (-1)^popcount(i&j) / sqrt(size); its own inverse")
def _infer_hadamard(t, a):
    x, n = t[0], a["size"]
    _expect(x.dtype == "f32" and len(x.shape) >= 1, "hadamard: input must be f32")
    _expect(isinstance(n, int) and n >= 2 and n & (n - 1) == 0, f"hadamard: size {n} is not a power of two")
    _expect(isinstance(x.shape[-1], int) and x.shape[-1] % n == 0, f"hadamard: last dim of {x} is not a multiple of {n}")
    return [x]


@_op("l2norm", 1, attrs=("eps",), doc="x / max(||x||_2, eps) over the last axis")
def _infer_l2norm(t, a):
    return [t[0]]


# ----------------------------------------------------------------------------------------------------------
# Graph


class Graph:
    def __init__(self, name: str):
        self.name = name
        self.inputs: dict[str, TensorType] = {}
        self.consts: dict[str, np.ndarray] = {}
        self.nodes: list[Node] = []
        self.outputs: list[str] = []
        self.meta: dict = {}
        self.types: dict[str, TensorType] = {}

    # construction ----------------------------------------------------------------------------------------
    def add_input(self, name: str, ttype: TensorType) -> str:
        self._new_name(name)
        self.inputs[name] = ttype
        self.types[name] = ttype
        return name

    def add_const(self, name: str, value: np.ndarray) -> str:
        self._new_name(name)
        self.consts[name] = value
        self.types[name] = TensorType(value.shape, dtype_of(value))
        return name

    def add_node(self, op: str, inputs: list[str], outputs: list[str] | str, **attrs) -> list[str]:
        outs = [outputs] if isinstance(outputs, str) else list(outputs)
        node = Node(op, list(inputs), outs, attrs)
        for o, t in zip(outs, self._infer(node)):
            self._new_name(o)
            self.types[o] = t
        self.nodes.append(node)
        return outs

    def set_outputs(self, names: list[str]):
        for n in names:
            if n not in self.types:
                raise IRError(f"output {n} is not defined")
        self.outputs = list(names)

    def _new_name(self, name: str):
        if name in self.types:
            raise IRError(f"value {name} defined twice")

    def _infer(self, node: Node) -> list[TensorType]:
        opdef = OPS.get(node.op)
        if opdef is None:
            raise IRError(f"unknown op {node.op}")
        if not opdef.min_inputs <= len(node.inputs) <= opdef.max_inputs:
            raise IRError(f"{node.op} takes {opdef.min_inputs}..{opdef.max_inputs} inputs, got {len(node.inputs)}")
        for a in opdef.required_attrs:
            if a not in node.attrs:
                raise IRError(f"{node.op} needs attribute {a}")
        missing = [i for i in node.inputs if i not in self.types]
        if missing:
            raise IRError(f"{node.op} -> {node.outputs}: inputs not defined before use: {missing}")
        outs = opdef.infer([self.types[i] for i in node.inputs], node.attrs)
        if len(outs) != len(node.outputs):
            raise IRError(f"{node.op} produces {len(outs)} outputs, node names {len(node.outputs)}")
        return outs

    # queries ---------------------------------------------------------------------------------------------
    def producer(self) -> dict[str, Node]:
        return {o: n for n in self.nodes for o in n.outputs}

    def consumers(self) -> dict[str, list[Node]]:
        c: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                c.setdefault(i, []).append(n)
        return c

    def n_params(self) -> int:
        return int(sum(v.size for v in self.consts.values()))

    # checks ----------------------------------------------------------------------------------------------
    def infer_types(self):
        """Recompute every value's type from the inputs and constants (after a pass edits nodes)."""
        self.types = dict(self.inputs)
        for k, v in self.consts.items():
            if k in self.types:
                raise IRError(f"value {k} defined twice")
            self.types[k] = TensorType(v.shape, dtype_of(v))
        for node in self.nodes:
            for o, t in zip(node.outputs, self._infer(node)):
                self._new_name(o)
                self.types[o] = t

    def verify(self):
        """Raise IRError unless the graph is well formed: defined-before-use, single definition, known ops,
        types consistent with the constants, and every output defined."""
        self.infer_types()
        for o in self.outputs:
            if o not in self.types:
                raise IRError(f"output {o} is not defined")
        used = {i for n in self.nodes for i in n.inputs} | set(self.outputs)
        dangling = [c for c in self.consts if c not in used]
        if dangling:
            raise IRError(f"constants never used: {dangling[:5]}")

    # text ------------------------------------------------------------------------------------------------
    def __str__(self) -> str:
        lines = [f"graph {self.name}("]
        lines += [f"    %{k}: {t}," for k, t in self.inputs.items()]
        lines.append(f") consts {len(self.consts)} ({self.n_params() / 1e6:.2f} M elements) {{")
        for n in self.nodes:
            args = ", ".join(("@" if i in self.consts else "%") + i for i in n.inputs)
            attrs = ", ".join(f"{k}={v}" for k, v in n.attrs.items())
            outs = ", ".join("%" + o for o in n.outputs)
            types = ", ".join(str(self.types[o]) for o in n.outputs)
            lines.append(f"  {outs} = {n.op}({args}){' {' + attrs + '}' if attrs else ''} : {types}")
        lines.append("  return " + ", ".join("%" + o for o in self.outputs))
        lines.append("}")
        return "\n".join(lines)

    # serialization ---------------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {
            "name": self.name,
            "inputs": [{"name": k, **t.to_json()} for k, t in self.inputs.items()],
            "consts": [{"name": k, "shape": list(v.shape), "dtype": dtype_of(v)} for k, v in self.consts.items()],
            "nodes": [n.to_json() for n in self.nodes],
            "outputs": self.outputs,
            "meta": self.meta,
        }

    @classmethod
    def from_json(cls, d: dict, consts: dict[str, np.ndarray]) -> "Graph":
        g = cls(d["name"])
        for i in d["inputs"]:
            g.inputs[i["name"]] = TensorType(tuple(i["shape"]), i["dtype"])
        for c in d["consts"]:
            if c["name"] not in consts:
                raise IRError(f"constant {c['name']} missing from the weights")
            arr = consts[c["name"]]
            if list(arr.shape) != c["shape"] or dtype_of(arr) != c["dtype"]:
                raise IRError(f"constant {c['name']} has shape {arr.shape} {arr.dtype}, expected {c['shape']} {c['dtype']}")
            g.consts[c["name"]] = arr
        g.nodes = [Node.from_json(n) for n in d["nodes"]]
        g.outputs = list(d["outputs"])
        g.meta = dict(d.get("meta", {}))
        g.verify()
        return g

    def copy(self) -> "Graph":
        """A structural copy sharing constant arrays (passes replace constants rather than mutate them)."""
        g = Graph(self.name)
        g.inputs = dict(self.inputs)
        g.consts = dict(self.consts)
        g.nodes = [Node(n.op, list(n.inputs), list(n.outputs), dict(n.attrs)) for n in self.nodes]
        g.outputs = list(self.outputs)
        g.meta = json.loads(json.dumps(self.meta))
        g.types = dict(self.types)
        return g
