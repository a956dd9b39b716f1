"""Per-channel smoothing of norm-fed linears (SmoothQuant, Xiao et al. 2022; the same rewrite AWQ uses
to protect salient input channels): an exact float rewrite of the graph, applied before quantization.

A LayerNorm output y = norm(x) * gamma + beta (or an RMSNorm output, without beta) that feeds quantizable
linears (q/k/v, the FFN's first layer(s)) is replaced, for those linears only, by y / s (per input channel
j: gamma_j / s_j, beta_j / s_j), and the linears' weight columns are multiplied by s (W[:, j] * s_j), so
every linear computes what it did: (y / s) (W * s)^T = y W^T. Channels with large activations (the outlier
features of BERT-style models) get s_j > 1: the int8 per-token activation grid no longer spends its range
on them, and their weight columns grow, so per-group weight rounding costs them relatively less. The scale
is SmoothQuant's
    s_j = max|y_j|^alpha / max|W[:, j]|^(1 - alpha)
(max|y_j| over the calibration tokens, max|W| over all the norm's quantizable readers), normalized to
geometric mean 1.

Where the norm's output also feeds something else (the residual stream of a post-LN encoder such as BERT),
the norm is duplicated: a second norm node with the divided gamma/beta feeds the linears and the original
keeps feeding the rest, so the graph stays equivalent (to float32 rounding). Only linears that read a norm
output directly are smoothed; inputs produced by other ops (attention output, GELU) are left as they are.
"""

from __future__ import annotations

import numpy as np

from compiler.ir import Graph, Node

NORMS = ("layernorm", "rmsnorm")  # their per-channel weight (and layernorm's bias) absorb 1 / s


def smoothing_sites(graph: Graph) -> dict[int, list[int]]:
    """{norm node index: [indices of the quantizable linears that read its output]}."""
    producer = {o: i for i, n in enumerate(graph.nodes) for o in n.outputs}
    sites: dict[int, list[int]] = {}
    for i, n in enumerate(graph.nodes):
        if n.op == "linear" and n.attrs.get("quantize"):
            p = producer.get(n.inputs[0])
            if p is not None and graph.nodes[p].op in NORMS:
                sites.setdefault(p, []).append(i)
    return sites


def activation_absmax(graph: Graph, values: list[str], calib: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-channel max |value| over all calibration tokens, for each named value (float graph run)."""
    from compiler.reference import Interpreter

    interp = Interpreter(graph)
    want = set(values)
    amax: dict[str, np.ndarray] = {}
    for feeds in calib:
        env = interp.start(feeds)
        interp.run_nodes(env, range(len(graph.nodes)), keep=want)
        for v in values:
            a = np.abs(env[v]).reshape(-1, env[v].shape[-1]).max(axis=0)
            amax[v] = a if v not in amax else np.maximum(amax[v], a)
    return amax


def smooth_scales(act_absmax: np.ndarray, w_absmax: np.ndarray, alpha: float) -> np.ndarray:
    """s = act^alpha / w^(1-alpha) per channel, geometric mean 1; channels with no activation or no weight
    (or a non-finite result) get 1."""
    a = np.asarray(act_absmax, np.float64)
    w = np.asarray(w_absmax, np.float64)
    ok = (a > 0) & (w > 0)
    s = np.ones_like(a)
    s[ok] = a[ok] ** alpha / w[ok] ** (1.0 - alpha)
    s[~np.isfinite(s) | (s <= 0)] = 1.0
    if ok.any():
        s[ok] /= np.exp(np.mean(np.log(s[ok])))
    return s.astype(np.float32)


def smooth_graph(graph: Graph, calib: list[dict[str, np.ndarray]], alpha: float = 0.5) -> Graph:
    """A copy of graph with every norm -> quantizable-linear site smoothed (see the module doc).
    calib: float-graph feeds to measure the activations on. The copy computes the same function."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"smoothing alpha must be in [0, 1], got {alpha}")
    sites = foldable_sites(graph)
    if not sites:
        return graph.copy()
    amax = activation_absmax(graph, [graph.nodes[p].outputs[0] for p in sites], calib)
    scales = {}
    for p, readers in sites.items():
        wabs = np.max([np.abs(graph.consts[graph.nodes[i].inputs[1]]).max(axis=0) for i in readers], axis=0)
        scales[p] = smooth_scales(amax[graph.nodes[p].outputs[0]], wabs, alpha)
    return fold_scales(graph, scales)


def _consumers(g: Graph) -> dict[str, int]:
    consumers: dict[str, int] = {}
    for n in g.nodes:
        for v in n.inputs:
            consumers[v] = consumers.get(v, 0) + 1
    consumers.update({o: consumers.get(o, 0) + 1 for o in g.outputs})
    return consumers


def foldable_sites(graph: Graph) -> dict[int, list[int]]:
    """The smoothing sites whose readers' weights nothing else reads (a tied embedding cannot absorb s)."""
    consumers = _consumers(graph)
    return {p: r for p, r in smoothing_sites(graph).items() if all(consumers[graph.nodes[i].inputs[1]] == 1 for i in r)}


def fold_scales(graph: Graph, scales: dict[int, np.ndarray]) -> Graph:
    """A copy of graph where each site p of `foldable_sites` in `scales` has its readers' weight columns times
    scales[p] and its norm's output divided by it (module doc): the same function, to float32 rounding."""
    g = graph.copy()
    consumers = _consumers(g)
    sites = foldable_sites(g)
    inserts: list[tuple[int, Node]] = []
    for p, s in scales.items():
        readers = sites[p]
        ln = g.nodes[p]
        y = ln.outputs[0]
        for i in readers:
            wname = g.nodes[i].inputs[1]
            g.consts[wname] = (g.consts[wname] * s[None, :]).astype(np.float32)
        params = [(g.consts[c] / s).astype(np.float32) for c in ln.inputs[1:]]  # gamma (and beta) / s
        if consumers[y] == len(readers) and all(consumers[c] == 1 for c in ln.inputs[1:]):  # pre-norm: in place
            for c, v in zip(ln.inputs[1:], params):
                g.consts[c] = v
            continue
        base = y + ".smooth"
        names = [g.add_const(base + suffix, v) for suffix, v in zip((".weight", ".bias"), params)]
        attrs = dict(ln.attrs)
        blocks = {g.nodes[i].attrs.get("block") for i in readers}
        if len(blocks) == 1 and None not in blocks:  # runs with its readers' block (block-sequential GPTQ)
            attrs["block"] = blocks.pop()
        inserts.append((p, Node(ln.op, [ln.inputs[0], *names], [base], attrs)))
        for i in readers:
            g.nodes[i].inputs[0] = base
    for p, node in sorted(inserts, key=lambda t: -t[0]):
        g.nodes.insert(p + 1, node)
    g.infer_types()
    g.verify()
    return g
