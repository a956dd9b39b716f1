"""Activation outlier features in 16 bits at A8 (LLM.int8(), Dettmers et al. 2022): `lowbit compile --act-outliers N`.

A few input features of some linears carry activations tens of times larger than the rest (SmolLM2-135M's
down_proj inputs reach |x| = 90 where the median feature peaks near 1). A per-token int8 scale set by such a
feature leaves the others a handful of levels. LLM.int8() takes those features out of the int8 product and
multiplies them in 16 bits. Here, for every quantizable linear that will be quantized at A8, the N input
features with the largest max |x| over the calibration tokens are the outliers, and the linear becomes

    y = linear(x * mask, W')  +  sparse_matmul(x, cols, vals)

mask is 0 at the outlier features and 1 elsewhere (one `mul` per input value, shared by q/k/v or gate/up);
W' is W with the outlier columns replaced by their group's median (those columns meet zeros, so any value is
exact, and the median keeps them out of the group's range); the side matrix has the same N columns in every
row, vals = fp16(W[:, cols]) (LLM.int8's fp16 outlier product; the activations stay float32 as given). The
rewrite is exact in float but for that fp16 rounding of N weights per row. The quantizer then sees an
ordinary linear reading x * mask: GPTQ's Hessian has zero rows there (dead columns), the int8 per-token scale
ignores the outliers, and a -sp spec's own outliers compose (they read x * mask).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from compiler.errors import LowbitError
from compiler.ir import Graph, Node
from compiler.quant import outliers
from compiler.quant.spec import QuantSpec


def activation_max(graph: Graph, values: set[str], calib: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """max |x| per feature (float32 [K]) of each named value over every calibration token (float graph run)."""
    from compiler.reference import Interpreter

    interp = Interpreter(graph)
    out: dict[str, np.ndarray] = {}

    def hook(i, node, ins):
        x = node.inputs[0]
        if node.op == "linear" and x in values:
            m = np.abs(ins[0].reshape(-1, ins[0].shape[-1])).max(axis=0).astype(np.float32)
            out[x] = np.maximum(out[x], m) if x in out else m

    for feeds in calib:
        interp.run_nodes(interp.start(feeds), range(len(graph.nodes)), on_node=hook)
    return out


def act_outlier_graph(graph: Graph, calib: list[dict[str, np.ndarray]], count: int, spec_of: Callable[[str], QuantSpec | None]) -> tuple[Graph, dict]:
    """A copy of graph with the rewrite of the module doc at every quantizable linear whose spec (spec_of(weight
    name); None: not quantized) is A8. Returns (graph, record): record maps each input value to its outlier
    features and the weights that read it (for the manifest)."""
    if count < 1:
        raise LowbitError(f"--act-outliers {count}: the number of float features per linear input must be at least 1", "use e.g. --act-outliers 8")
    g = graph.copy()
    readers: dict[str, list[int]] = {}
    for i, n in enumerate(g.nodes):
        if n.op == "linear" and n.attrs.get("quantize"):
            spec = spec_of(n.inputs[1])
            if spec is not None and spec.act == "a8":
                readers.setdefault(n.inputs[0], []).append(i)
    if not readers:
        raise LowbitError("--act-outliers keeps A8 layers' outlier features in 16 bits, and no layer is quantized at A8", "add a8 to the spec (e.g. --quant w8g32a8) or drop --act-outliers")
    k_of = {x: g.consts[g.nodes[ids[0]].inputs[1]].shape[1] for x, ids in readers.items()}
    too_many = [x for x, k in k_of.items() if count >= k]
    if too_many:
        raise LowbitError(f"--act-outliers {count} is not below input {too_many[0]}'s {k_of[too_many[0]]} features", "use a smaller count (LLM.int8 keeps a few)")
    stats = activation_max(g, set(readers), calib)
    record: dict[str, dict] = {}
    new_nodes: list[Node] = []
    masked: set[str] = set()
    for i, n in enumerate(g.nodes):
        x = n.inputs[0] if n.op == "linear" else None
        if x not in readers or i not in readers[x]:
            new_nodes.append(n)
            continue
        k = k_of[x]
        keep = {a: n.attrs[a] for a in ("block",) if a in n.attrs}
        if x not in masked:  # one mask per input value, before its first reader
            feats = np.sort(np.argsort(-stats[x], kind="stable")[:count]).astype(np.int16)
            mask = np.ones(k, np.float32)
            mask[feats.astype(np.int64)] = 0.0
            g.add_const(x + ".int8_mask", mask)
            new_nodes.append(Node("mul", [x, x + ".int8_mask"], [x + ".int8"], dict(keep)))
            masked.add(x)
            record[x] = {"features": feats.tolist(), "max_abs": [round(float(stats[x][f]), 3) for f in feats], "weights": []}
        feats = np.asarray(record[x]["features"], np.int16)
        wname = n.inputs[1]
        w = g.consts[wname]
        rows = w.shape[0]
        cols = np.tile(feats, (rows, 1))
        spec = spec_of(wname)
        g.consts[wname] = outliers.fill(w, cols, spec.group_for(k))
        base = wname.removesuffix(".weight")
        cname = g.add_const(base + ".act_cols", cols)
        vname = g.add_const(base + ".act_vals", w[:, feats.astype(np.int64)].astype(np.float16))
        out = n.outputs[0]
        new_nodes.append(Node("linear", [x + ".int8", *n.inputs[1:]], [out + ".int8"], dict(n.attrs)))
        new_nodes.append(Node("sparse_matmul", [x, cname, vname], [out + ".fp"], {"n": rows, "k": k, **keep}))
        new_nodes.append(Node("add", [out + ".int8", out + ".fp"], [out], dict(keep)))
        record[x]["weights"].append(wname)
    g.nodes = new_nodes
    g.infer_types()
    g.verify()
    return g, record
