"""Quantize a float graph: every `linear` marked quantize=True becomes a `qlinear` with packed codes,
per-group scales and zero points (RTN, or GPTQ with calibration inputs). `quantize_layers` takes one format
per weight (a `LayerPlan`: per-layer overrides, `--quant keep`, the LM head); a weight it does not name stays
float. A quantized table that an `embedding` node also reads (a tied LM head) becomes a `qembedding` on the
same packed constants, so the artifact holds it once.

GPTQ runs block by block, as in the paper: the calibration activations entering block i come from the
already-quantized blocks 0..i-1, each block's Hessians are collected from a float run of that block, and
the block is then re-run with its quantized weights to produce the next block's inputs.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import numpy as np

from compiler.errors import LowbitError
from compiler.ir import Graph, Node
from compiler.quant.pack import pack, storage_layout
from compiler.quant.qweight import QuantizedWeight
from compiler.quant.spec import QuantSpec

Progress = Callable[[str, int, int], None]  # (description, done, total)


@dataclass
class LayerPlan:
    """One weight's treatment: its format (the activation mode included), and the weight to keep as is
    (`--quant keep`: the checkpoint's own quantization) or None to quantize it at `spec`."""

    spec: QuantSpec
    weight: QuantizedWeight | None = None


def quantizable(graph: Graph) -> list[int]:
    return [i for i, n in enumerate(graph.nodes) if n.op == "linear" and n.attrs.get("quantize")]


def head_nodes(graph: Graph) -> list[int]:
    """The float LM head: the linear producing `logits` (causal LMs; the frontends leave it float)."""
    return [i for i, n in enumerate(graph.nodes) if n.op == "linear" and "logits" in n.outputs]


def check_shapes(graph: Graph, spec: QuantSpec):
    """Fail early on a weight that cannot be quantized at all (K = 0); a group that does not divide K falls
    back by QuantSpec.group_for."""
    for i in quantizable(graph):
        n = graph.nodes[i]
        nout, k = graph.consts[n.inputs[1]].shape
        if k == 0:
            raise LowbitError(f"layer {n.inputs[1]} has K=0 input features (quant '{spec.name}')", "check the model's config")


def qlinear_node(graph: Graph, node: Node, qw: QuantizedWeight, spec: QuantSpec) -> Node:
    """Replace node's float weight by packed constants; returns the qlinear node (same inputs/outputs)."""
    wname = node.inputs[1]
    base = wname[: -len(".weight")] if wname.endswith(".weight") else wname
    layout = storage_layout(qw.bits)
    n, k = qw.shape
    ins = [
        node.inputs[0],
        graph.add_const(base + ".qweight", pack(qw.codes, qw.bits, layout)),
        graph.add_const(base + ".scales", qw.scales.astype(np.float32)),
        graph.add_const(base + ".table", qw.table) if qw.table is not None
        else graph.add_const(base + ".mins", qw.mins.astype(np.float32)) if qw.has_mins else graph.add_const(base + ".zeros", qw.zeros.astype(np.uint8)),
    ]
    if len(node.inputs) == 3:
        ins.append(node.inputs[2])
    attrs = {k2: v for k2, v in node.attrs.items() if k2 != "quantize"}
    attrs.update(bits=qw.bits, group_size=qw.group_size, n=n, k=k, act=spec.act, layout=layout, ternary=qw.ternary)
    if qw.has_mins:
        attrs["mins"] = True
    if qw.table is not None:
        attrs["codebook"] = True
        if qw.fp:
            attrs["fp"] = qw.fp
    if qw.sub_bits:  # the scales are on a two-level grid: artifacts store them so (compiler.quant.twolevel)
        attrs["two_level"] = {"sub_bits": qw.sub_bits, "signed": qw.sub_signed}
    if qw.has_sparse:  # a marker until split_sparse makes the side matrix its own node
        attrs["sparse"] = [graph.add_const(base + ".sp_cols", qw.sparse_cols), graph.add_const(base + ".sp_vals", qw.sparse_vals)]
    return Node("qlinear", ins, list(node.outputs), attrs)


def split_sparse(graph: Graph):
    """Every qlinear carrying outliers (attr `sparse`, set by qlinear_node) becomes qlinear -> `<out>.dense`,
    sparse_matmul(x, cols, vals) -> `<out>.sparse`, add -> `<out>` (compiler.quant.outliers), in place."""
    nodes = []
    for n in graph.nodes:
        if n.op != "qlinear" or "sparse" not in n.attrs:
            nodes.append(n)
            continue
        cols, vals = n.attrs.pop("sparse")
        out = n.outputs[0]
        keep = {k: n.attrs[k] for k in ("block",) if k in n.attrs}
        nodes.append(Node("qlinear", list(n.inputs), [out + ".dense"], n.attrs))
        nodes.append(Node("sparse_matmul", [n.inputs[0], cols, vals], [out + ".sparse"], {"n": n.attrs["n"], "k": n.attrs["k"], **keep}))
        nodes.append(Node("add", [out + ".dense", out + ".sparse"], [out], dict(keep)))
    graph.nodes = nodes


def sparse_output(graph: Graph, node: Node, ins: list, outs: list) -> list:
    """outs of a node, with the side matrix added if it is a qlinear still carrying its outlier marker (the
    calibration runs between quantizing a block and split_sparse)."""
    if node.op == "qlinear" and "sparse" in node.attrs:
        from compiler.quant.outliers import sparse_matmul

        cols, vals = (graph.consts[c] for c in node.attrs["sparse"])
        return [outs[0] + sparse_matmul(ins[0], cols, vals)]
    return outs


def _drop_unused_consts(graph: Graph):
    used = {i for n in graph.nodes for i in n.inputs}
    for c in [c for c in graph.consts if c not in used]:
        del graph.consts[c]


def quantize_graph(
    graph: Graph,
    spec: QuantSpec,
    method: str = "rtn",
    calib: list[dict[str, np.ndarray]] | None = None,
    progress: Progress | None = None,
    damp: float = 0.01,
    act_order: bool = False,
) -> Graph:
    """Return a quantized copy of graph. calib: feeds (one dict per sequence) for GPTQ; damp: GPTQ's
    dampening as a fraction of the mean Hessian diagonal; act_order: GPTQ quantizes each layer's columns in
    descending Hessian-diagonal order, with static groups (see compiler.quant.gptq)."""
    check_shapes(graph, spec)
    plan = {graph.nodes[i].inputs[1]: LayerPlan(spec) for i in quantizable(graph)}
    g = quantize_layers(graph, plan, method, calib, progress, damp, act_order)
    g.meta["quant"] = {**spec.to_dict(), "method": method, "name": spec.name}
    return g


def quantize_layers(
    graph: Graph,
    plan: dict[str, LayerPlan],
    method: str = "rtn",
    calib: list[dict[str, np.ndarray]] | None = None,
    progress: Progress | None = None,
    damp: float = 0.01,
    act_order: bool = False,
    weighted: bool = False,
) -> Graph:
    """A copy of graph with every linear whose weight `plan` names replaced by a qlinear: kept weights as
    they are, the others quantized at their spec (RTN, or GPTQ block by block; linears outside any block,
    such as the LM head, by RTN). An `embedding` reading a quantized table becomes a `qembedding` on the same
    packed constants (a tied head is stored once). Weights the plan does not name stay float.
    weighted: the scale searches weigh each input feature by its importance, the mean square of that
    feature over the calibration tokens (llama.cpp's importance matrix): RTN collects it in one float run
    of `calib`, GPTQ reads it from each layer's Hessian diagonal."""
    if method not in ("rtn", "gptq"):
        raise LowbitError(f"unknown quantization method '{method}'", "use rtn or gptq")
    g = graph.copy()
    linears = {i: g.nodes[i].inputs[1] for i, n in enumerate(g.nodes) if n.op == "linear" and n.inputs[1] in plan}
    missing = sorted(set(plan) - set(linears.values()))
    if missing:
        raise ValueError(f"plan names weights no linear reads: {missing[:4]}")
    tables: dict[str, Node] = {}
    for i, w in linears.items():  # kept weights first: a GPTQ run then calibrates on them as they will be
        if plan[w].weight is not None:
            g.nodes[i] = qlinear_node(g, g.nodes[i], plan[w].weight, plan[w].spec)
    todo = [i for i, w in linears.items() if plan[w].weight is None]
    specs = {i: plan[linears[i]].spec for i in todo}
    tied = {n.inputs[1] for n in g.nodes if n.op == "embedding"}
    for i, spec in specs.items():
        if (spec.outliers or spec.codebook) and ("logits" in g.nodes[i].outputs or linears[i] in tied):
            what = "sparse outliers" if spec.outliers else "codebook weights"
            raise LowbitError(f"{what} ({spec.name}) are for the block linears, not the LM head {linears[i]}",
                              "give the head a group spec (e.g. lm_head=w8g32)")
    if method == "gptq" and todo:
        if not calib:
            raise LowbitError("GPTQ needs calibration inputs", "pass calibration sequences or use --method rtn")
        _quantize_gptq(g, specs, calib, progress, damp, act_order, weighted)
    elif weighted and todo:
        if not calib:
            raise LowbitError("importance-weighted RTN needs calibration inputs", "pass calibration sequences or drop the importance weighting")
        _quantize_rtn(g, specs, progress, importance_matrix(g, set(specs), calib))
    else:
        _quantize_rtn(g, specs, progress)
    for i in linears:
        tables.setdefault(g.nodes[i].inputs[1][: -len(".qweight")], g.nodes[i])
    for i, n in enumerate(g.nodes):  # a quantized table that the embedding gathers from too: one copy
        if n.op == "embedding" and n.inputs[1] in linears.values():
            g.nodes[i] = qembedding_node(n, tables[_base(n.inputs[1])])
    split_sparse(g)
    g.infer_types()
    _drop_unused_consts(g)
    g.verify()
    return g


def _base(wname: str) -> str:
    return wname[: -len(".weight")] if wname.endswith(".weight") else wname


def qembedding_node(emb: Node, q: Node) -> Node:
    """The embedding `emb` as a gather from the packed table of the qlinear `q` (the same constants)."""
    attrs = {k: q.attrs[k] for k in ("bits", "group_size", "n", "k", "layout", "ternary")}
    if q.attrs.get("mins"):
        attrs["mins"] = True
    return Node("qembedding", [emb.inputs[0], *q.inputs[1:4]], list(emb.outputs), attrs)


def quantize_head(graph: Graph, spec: QuantSpec) -> Graph:
    """A copy of graph whose LM head (the float linear producing `logits`, left float by the frontends, as
    GPTQ/AutoGPTQ do) is RTN-quantized at `spec`: at llama-1b the fp32 head is 2/3 of the bytes of a W4
    decode step, so quantizing it (llama.cpp keeps it at 6-8 bits) halves decode traffic. With tied
    embeddings the embedding gathers from the same packed table (`qembedding`), and no float copy remains."""
    idx = head_nodes(graph)
    if not idx:
        raise LowbitError(f"--quant-head: model {graph.name} has no float LM head (encoders have none)", "drop --quant-head")
    g = quantize_layers(graph, {graph.nodes[i].inputs[1]: LayerPlan(spec) for i in idx})
    g.meta["quant_head"] = spec.name
    return g


def importance_matrix(g: Graph, nodes: set[int], calib: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Mean square of each input feature of the linears `nodes`, float64 [K] per input value, over every
    token of the calibration feeds run through the float graph (llama.cpp's imatrix)."""
    from compiler.reference import Interpreter

    wanted = {g.nodes[i].inputs[0] for i in nodes}
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    interp = Interpreter(g)
    for feeds in calib:
        seen: set[str] = set()

        def hook(i, node, ins, seen=seen):  # several linears read one value (q/k/v): count it once per run
            x = node.inputs[0]
            if node.op == "linear" and x in wanted and x not in seen:
                seen.add(x)
                x2 = ins[0].reshape(-1, ins[0].shape[-1]).astype(np.float64)
                sums[x] = sums.get(x, 0) + np.einsum("tk,tk->k", x2, x2)
                counts[x] = counts.get(x, 0) + x2.shape[0]

        interp.run_nodes(interp.start(feeds), range(len(g.nodes)), on_node=hook)
    return {x: sums[x] / max(counts[x], 1) for x in sums}


def _quantize_rtn(g: Graph, specs: dict[int, QuantSpec], progress: Progress | None, importance: dict[str, np.ndarray] | None = None):
    from compiler.quant.rtn import quantize_rtn

    for done, (i, spec) in enumerate(specs.items()):
        node = g.nodes[i]
        imp = None if importance is None else importance.get(node.inputs[0])
        qw = quantize_rtn(g.consts[node.inputs[1]], spec, name=node.inputs[1], importance=imp)
        g.nodes[i] = qlinear_node(g, node, qw, spec)
        if progress:
            progress("RTN", done + 1, len(specs))


def _quantize_gptq(g: Graph, specs: dict[int, QuantSpec], calib: list[dict[str, np.ndarray]], progress: Progress | None, damp: float, act_order: bool = False, weighted: bool = False):
    from compiler.quant.gptq import HessianAccumulator, gptq_factor, quantize_gptq
    from compiler.reference import Interpreter

    targets = set(specs)
    blocks: dict[int, list[int]] = {}
    for i, n in enumerate(g.nodes):
        if "block" in n.attrs:
            blocks.setdefault(n.attrs["block"], []).append(i)
    in_block = {i for ids in blocks.values() for i in ids}
    stray = targets - in_block
    if stray:  # quantizable linears outside any transformer block have no block run to calibrate: RTN
        blocks[-1] = sorted(stray)
    first = min(in_block) if in_block else len(g.nodes)
    interp = Interpreter(g)
    envs = []
    for feeds in calib:
        env = interp.start(feeds)
        interp.run_nodes(env, range(first))
        envs.append(env)
    total, done = len(targets), 0
    for b in sorted(k for k in blocks if k >= 0):
        ids = blocks[b]
        # Linears that read the same value (q/k/v, gate/up) share one Hessian and one inverse factor:
        # record each input once, at its first quantizable reader.
        first_reader: dict[str, int] = {}
        for i in ids:
            if i in targets:
                first_reader.setdefault(g.nodes[i].inputs[0], i)
        hessians: dict[str, HessianAccumulator] = {}

        def hook(i, node, ins):
            if first_reader.get(node.inputs[0]) == i:
                hessians.setdefault(node.inputs[0], HessianAccumulator(ins[0].shape[-1])).add(ins[0].reshape(-1, ins[0].shape[-1]))

        saved = [dict(e) for e in envs]
        for env in envs:  # float run of the block: collect each linear input's statistics
            interp.run_nodes(env, ids, on_node=hook)
        factors = {}
        for i in ids:
            if i in targets:
                node = g.nodes[i]
                x = node.inputs[0]
                if x not in factors:
                    factors[x] = gptq_factor(hessians.pop(x).hessian(), damp, node.inputs[1], act_order)
                qw = quantize_gptq(g.consts[node.inputs[1]], None, specs[i], name=node.inputs[1], factor=factors[x], weighted=weighted)
                g.nodes[i] = qlinear_node(g, node, qw, specs[i])
                done += 1
                if progress:
                    progress("GPTQ", done, total)
        envs = saved
        for env in envs:  # quantized run: the next block sees what the quantized model produces
            interp.run_nodes(env, ids, after_node=lambda i, node, ins, outs: sparse_output(g, node, ins, outs))
    if -1 in blocks:
        _quantize_rtn(g, {i: specs[i] for i in blocks[-1]}, None)


def progress_bar(enabled: bool = True):
    """A rich progress bar as a Progress callback (a no-op context when disabled)."""
    if not enabled:
        return nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn

    class _Bar:
        def __enter__(self):
            self.p = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True)
            self.p.__enter__()
            self.tasks = {}
            return self

        def __call__(self, desc, done, total):
            t = self.tasks.get(desc)
            if t is None:
                t = self.tasks[desc] = self.p.add_task(f"quantizing ({desc})", total=total)
            self.p.update(t, completed=done)

        def __exit__(self, *exc):
            return self.p.__exit__(*exc)

    return _Bar()
