"""Why `--rotate hadamard` helps some formats and hurts others under RTN: per-layer quantization error with and
without the rotation, on real activations.

For every block linear of the model (float graph, and the same graph after compiler.passes.rotate), the inputs
X of a calibration batch are captured and each weight W is RTN-quantized at each spec. The table gives, per
layer kind, the mean relative weight error ||W - Wq|| / ||W|| and the mean relative output error
||X (W - Wq)^T|| / ||X W^T||, unrotated (the baseline, same run) and rotated, and their ratio.

A second table looks at the residual stream at each RMSNorm: the share of the normalized energy in its two
largest channels (massive activations), the norm's gains there, and sqrt(r) with
r = ||x_hat||^2 mean(gamma^2) / ||x_hat * gamma||^2. When the gain suppresses a massive channel (small gamma
where x_hat is large), folding gamma into the weights and rotating moves that channel's unsuppressed size into
every rotated input. With white quantization noise the output error then grows by about sqrt(r).

    python benchmarks/rotation_error.py [--model smollm2-135m] [--specs w4g32,fp8,mxfp4,w8pc] [--tokens 192]
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.common import machine  # noqa: E402


def captured(graph, names, feeds):
    """The values `names` of one run of the float graph (kept to the end of the run)."""
    from compiler.reference import Interpreter

    it = Interpreter(graph)
    for v in names:
        it._last_use[v] = len(graph.nodes)
    return it.run(feeds, outputs=sorted(set(names)))


def layer_errors(graph, feeds, specs):
    from compiler.quant.rtn import quantize_rtn
    from compiler.quant.spec import parse_spec

    lin = [n for n in graph.nodes if n.op == "linear" and "logits" not in n.outputs]
    outs = captured(graph, [n.inputs[0] for n in lin], feeds)
    res = {}
    for spec in specs:
        s = parse_spec(spec)
        agg = defaultdict(list)
        for n in lin:
            w = graph.consts[n.inputs[1]]
            x = outs[n.inputs[0]].reshape(-1, w.shape[1]).astype(np.float64)
            wq = quantize_rtn(w, s, name=n.inputs[1]).dequantize().astype(np.float64)
            d = w.astype(np.float64) - wq
            agg[n.inputs[1].split(".")[-2]].append((np.linalg.norm(x @ d.T) / np.linalg.norm(x @ w.T.astype(np.float64)),
                                                    np.linalg.norm(d) / np.linalg.norm(w)))
        res[spec] = {k: np.mean(v, axis=0) for k, v in agg.items()}
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--specs", default="w4g32,fp8,mxfp4,w8pc")
    ap.add_argument("--tokens", type=int, default=192)
    args = ap.parse_args(argv)

    from compiler.frontend import load_model
    from compiler.frontend.llama import empty_cache
    from compiler.passes.rotate import rotate_graph
    from compiler.quant.calib import default_text

    m = load_model(args.model)
    ids = np.asarray(m.tokenizer.encode(default_text())[: args.tokens], np.int64)
    specs = [s.strip() for s in args.specs.split(",") if s.strip()]
    rows = {}
    for tag, g in (("plain", m.graph), ("rotated", rotate_graph(m.graph, 0)[0])):
        feeds = {"input_ids": ids, "positions": np.arange(len(ids)), **empty_cache(g, len(ids) + 1)}
        rows[tag] = layer_errors(g, feeds, specs)
    print(f"machine: {machine()}\nmodel {args.model}, {len(ids)} tokens of the default calibration text; RTN per spec\n")
    print("| spec | layer | weight error | rotated | output error | rotated | rotated / unrotated |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for spec in specs:
        for k in sorted(rows["plain"][spec]):
            p, r = rows["plain"][spec][k], rows["rotated"][spec][k]
            print(f"| {spec} | {k} | {p[1]:.4f} | {r[1]:.4f} | {p[0]:.4f} | {r[0]:.4f} | {r[0] / p[0]:.2f}x |")

    g = m.graph
    norms = [n for n in g.nodes if n.op == "rmsnorm"]
    feeds = {"input_ids": ids, "positions": np.arange(len(ids)), **empty_cache(g, len(ids) + 1)}
    outs = captured(g, [n.inputs[0] for n in norms], feeds)
    print("\n| norm | sqrt(r) | top-2 channels | their energy share | gains there | mean abs gain |")
    print("|---|---:|---|---:|---|---:|")
    for n in norms:
        x = outs[n.inputs[0]].astype(np.float64).reshape(-1, outs[n.inputs[0]].shape[-1])
        xh = x / np.sqrt((x * x).mean(-1, keepdims=True))
        gm = g.consts[n.inputs[1]].astype(np.float64)
        r = (xh**2).sum() * (gm**2).mean() / ((xh * gm) ** 2).sum()
        top = np.argsort(-(xh**2).mean(0))[:2]
        print(f"| {n.outputs[0]} | {np.sqrt(r):.2f} | {', '.join(map(str, top))} | {(xh[:, top] ** 2).sum() / (xh**2).sum():.2f} | "
              f"{', '.join(f'{v:.3f}' for v in gm[top])} | {np.abs(gm).mean():.3f} |")


if __name__ == "__main__":
    main()
