"""Activation-aware weight scaling (AWQ, Lin et al. 2023): `lowbit compile --awq`.

At every norm -> quantizable-linear site (compiler.passes.smooth's sites: q/k/v after the attention norm,
gate/up or the FFN's first layer after the second one) the readers' weight columns are multiplied by a per
input channel scale s and the norm's output divided by it, the exact float rewrite of compiler.passes.smooth.
Channels whose activations are large get s > 1, so the group grid of their weights is spent on them:

    s = mean|x|^alpha   (over the calibration tokens, geometric mean 1)

and alpha is searched per site on ALPHAS to minimize the readers' output error under their own quantizer (the
layer's spec, RTN): sum over readers of tr(dW H dW^T), dW = Q(W diag s) diag(s)^-1 - W, H = X^T X / T from the
norm's output X on the calibration tokens (at most MAX_TOKENS of them). alpha = 0 is s = 1, the graph as it was,
so on that measure the search never does worse. The sites AWQ also scales through v_proj -> o_proj and
up_proj -> down_proj (a scale folded into the previous linear's rows) are not done here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from compiler.ir import Graph
from compiler.passes.smooth import fold_scales, foldable_sites

ALPHAS = tuple(i / 10 for i in range(10))
MAX_TOKENS = 2048


def norm_outputs(graph: Graph, values: list[str], calib: list[dict[str, np.ndarray]], max_tokens: int = MAX_TOKENS) -> dict[str, np.ndarray]:
    """Rows [T, K] of each named value over the calibration feeds (float graph run), at most max_tokens."""
    from compiler.reference import Interpreter

    interp = Interpreter(graph)
    want = set(values)
    rows: dict[str, list[np.ndarray]] = {v: [] for v in values}
    n = 0
    for feeds in calib:
        env = interp.start(feeds)
        interp.run_nodes(env, range(len(graph.nodes)), keep=want)
        for v in values:
            rows[v].append(env[v].reshape(-1, env[v].shape[-1]).astype(np.float32))
        n += rows[values[0]][-1].shape[0]
        if n >= max_tokens:
            break
    return {v: np.concatenate(r)[:max_tokens] for v, r in rows.items()}


def awq_scales(x: np.ndarray, alpha: float) -> np.ndarray:
    """mean|x|^alpha per channel, geometric mean 1 (channels never active get 1)."""
    a = np.abs(x).mean(axis=0).astype(np.float64)
    s = np.ones_like(a)
    ok = a > 0
    s[ok] = a[ok] ** alpha
    if ok.any():
        s[ok] /= np.exp(np.mean(np.log(s[ok])))
    return s.astype(np.float32)


def output_error(w: np.ndarray, s: np.ndarray, h: np.ndarray, quantize: Callable[[np.ndarray], np.ndarray]) -> float:
    """tr(dW H dW^T) for dW = quantize(W diag s) diag(s)^-1 - W."""
    dw = (quantize(w * s[None, :]) / s[None, :] - w).astype(np.float32)
    return float(np.sum((dw @ h) * dw))


def awq_graph(graph: Graph, calib: list[dict[str, np.ndarray]], spec_of: Callable[[str], object]) -> tuple[Graph, dict[str, float]]:
    """(the rescaled copy of graph, {norm output: chosen alpha}); spec_of(weight name) gives a reader's QuantSpec,
    or None for a weight that is not quantized here (its site is left alone)."""
    from compiler.quant.rtn import quantize_rtn

    sites = {p: r for p, r in foldable_sites(graph).items() if all(spec_of(graph.nodes[i].inputs[1]) is not None for i in r)}
    if not sites:
        return graph.copy(), {}
    xs = norm_outputs(graph, [graph.nodes[p].outputs[0] for p in sites], calib)
    scales, chosen = {}, {}
    for p, readers in sites.items():
        y = graph.nodes[p].outputs[0]
        x = xs[y]
        h = (x.T.astype(np.float64) @ x / len(x)).astype(np.float32)
        layers = [(graph.consts[graph.nodes[i].inputs[1]], spec_of(graph.nodes[i].inputs[1])) for i in readers]
        best = None
        for alpha in ALPHAS:
            s = awq_scales(x, alpha)
            err = sum(output_error(w, s, h, lambda v, sp=sp: quantize_rtn(v, sp).dequantize()) for w, sp in layers)
            if best is None or err < best[0]:
                best = (err, alpha, s)
        chosen[y] = best[1]
        if best[1] > 0:
            scales[p] = best[2]
    return fold_scales(graph, scales), chosen
