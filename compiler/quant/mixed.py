"""Mixed precision under a bits-per-weight budget (`lowbit compile --bpw B`): one spec per block linear, chosen
from a ladder of specs so that the average bits per weight (compiler.quant.bpw: GGUF's accounting, head and
embedding not counted) is at most B and the measured quantization cost is as low as the greedy finds.

Ladder: `--quant SPEC --bpw B` takes SPEC's family (its group, symmetry and activation mode) at 2, 3, 4 and 8
bits (`--quant w3g32`: w2g32 2.5, w3g32 3.5, w4g32 4.5, w8g32 8.5 bits per weight); `--quant auto` takes
AUTO_LADDER, scale-and-minimum groups with two-level (K-quant) scales where they are cheaper at equal error:
w2g16k4-min 2.625 (Q2_K's layout), w2g16k-min 2.875, w3g32k-min 3.5, w3g16k-min 3.875, w4g32k-min 4.5 (Q4_K's),
w4g32-min 5.0 (Q4_1's), w8g32 8.5. On SmolLM2 (GPTQ --imatrix, docs/results.md) w3g32k-min reaches 32.3 where
w3g32 at the same 3.5 bits reaches 40.8, and w3g16k-min 27.8 where w3g32-min at 4.0 reaches 31.4.

Cost, measured on the calibration sequences (compiler.quant.calib, never the evaluation text):
1. proxy(w, s) = tr(dW H dW^T), dW = RTN_s(W) - W, H = X^T X / T from the float model's inputs X to that linear
   (one float pass over the calibration sequences): the layer's mean squared output error per token.
2. The proxy does not say how an output error reaches the logits (a v_proj error is mixed across positions, a
   down_proj error added to the residual, a late block's error meets fewer layers, and a few outlier channels
   dominate some layers' proxies). So the KL divergence of the logits from the float model's, over KL_SAMPLES
   calibration sequences, is measured with one role (a weight name across blocks, e.g.
   `model.layers.*.mlp.down_proj.weight`) quantized at the calibration rung (the cheapest with CAL_BITS bits) in
   every block, and with one block's linears at it: the cost of layer (role r, block b) at that rung is
   KL(r) KL(b) (a separable estimate of the per-layer KL, 7 + 30 passes instead of 210 on SmolLM2).
3. The other rungs scale it by the layer's proxy ratio: cost(w, s) = KL(r) KL(b) proxy(w, s) / proxy(w, cal).
   Encoders (no logits) use the proxy alone. (A per-role power on that ratio, fitted from a second KL pass per
   role at the cheapest rung, changed SmolLM2's w3-budget perplexity by under 1% for 7 more passes: left out.)
   A KL pass starts from the float run's values at its first quantized block.
Choice: per layer the lower convex hull of (bits, cost) over the ladder; upgrades are taken in the order of
cost drop per extra bit (the Lagrangian greedy) until the next one does not fit. The plan is a prefix of one
order, so a larger budget never gives a higher total cost, and at most one upgrade's bits go unused.
The proxy is RTN's error also under `--method gptq` (GPTQ lowers every rung's error; the ranking is kept).
"""

from __future__ import annotations

import dataclasses
import heapq
import re
import time
from dataclasses import dataclass, field

import numpy as np

from compiler.errors import LowbitError
from compiler.ir import Graph
from compiler.quant.apply import Progress, quantizable
from compiler.quant.bpw import spec_bits
from compiler.quant.spec import QuantSpec, parse_spec

AUTO = "auto"
AUTO_LADDER = ("w2g16k4-min", "w2g16k-min", "w3g32k-min", "w3g16k-min", "w4g32k-min", "w4g32-min", "w8g32")
FAMILY_BITS = (2, 3, 4, 8)
CAL_BITS = 3  # the rung the role factors are measured at: the cheapest with at least this many bits
KL_SAMPLES = 4  # calibration sequences per role's KL pass


def ladder(base: QuantSpec | None, act: str) -> list[QuantSpec]:
    """The candidate specs, cheapest first: base's family at FAMILY_BITS, or AUTO_LADDER (base None)."""
    if base is None:
        return [dataclasses.replace(parse_spec(s), act=act) for s in AUTO_LADDER]
    if base.ternary:
        raise LowbitError(f"--bpw: '{base.name}' has no wider or narrower widths to mix",
                          "give an integer family such as --quant w3g32, or --quant auto")
    return [dataclasses.replace(base, bits=b) for b in FAMILY_BITS]


def role(weight: str) -> str:
    """The weight's name with its block index replaced: one role across blocks."""
    return re.sub(r"(?<=\.)\d+(?=\.)", "*", weight)


@dataclass
class Sensitivity:
    """Per block linear: its element count and, per ladder spec, (bits, cost)."""

    ladder: list[QuantSpec]
    elems: dict[str, int]
    options: dict[str, list[tuple[int, float]]]
    proxy: dict[str, list[float]]
    factors: dict[str, float] = field(default_factory=dict)
    role_kl: dict[str, float] = field(default_factory=dict)
    block_kl: dict = field(default_factory=dict)
    cal_spec: QuantSpec | None = None
    seconds: float = 0.0

    def record(self) -> dict:
        return {"proxy": "tr(dW H dW^T) per linear, RTN, float calibration activations",
                "cost": f"KL(role at {self.cal_spec.name if self.cal_spec else '-'}) x KL(block at it) x proxy / proxy at it",
                "role_kl": {r: float(f"{v:.4g}") for r, v in self.role_kl.items()},
                "block_kl": {str(b): float(f"{v:.4g}") for b, v in self.block_kl.items()},
                "seconds": round(self.seconds, 1)}


def unmeasured(graph: Graph, specs: list[QuantSpec], weights: list[str]) -> Sensitivity:
    """The ladder's bits for `weights` at zero cost: enough for bounds() and a budget check."""
    shapes = {w: graph.consts[w].shape for w in weights}
    return Sensitivity(list(specs), {w: int(np.prod(k)) for w, k in shapes.items()},
                       {w: [(spec_bits(s, *k), 0.0) for s in specs] for w, k in shapes.items()}, {})


def _block_starts(graph: Graph) -> dict[int, int]:
    """block -> index of its first node."""
    out: dict[int, int] = {}
    for i, n in enumerate(graph.nodes):
        if "block" in n.attrs:
            out.setdefault(n.attrs["block"], i)
    return out


def _hessians(graph: Graph, feeds: list[dict], kl_samples: int):
    """({linear input value: x^T x / T as float32} for every quantizable linear's input, the float
    log-probabilities of the first kl_samples feeds (None for a graph without logits), and for those feeds the
    values live at each block's first node, so a KL pass can start there)."""
    from compiler.quant.gptq import HessianAccumulator
    from compiler.reference import Interpreter

    ins = {graph.nodes[i].inputs[0] for i in quantizable(graph)}
    acc: dict[str, HessianAccumulator] = {}
    interp = Interpreter(graph)
    has_logits = "logits" in graph.outputs
    starts = sorted(_block_starts(graph).items(), key=lambda kv: kv[1])
    logp, snaps = [], []

    def hook(i, node, vals):  # a value read by several linears (q/k/v) is accumulated once, at its first reader
        x = node.inputs[0]
        if node.op == "linear" and x in ins and x not in seen:
            seen.add(x)
            acc.setdefault(x, HessianAccumulator(vals[0].shape[-1])).add(vals[0].reshape(-1, vals[0].shape[-1]))

    keep = {"logits"} if has_logits else set()
    for j, f in enumerate(feeds):
        seen: set[str] = set()
        env = interp.start(f)
        if has_logits and j < kl_samples:
            snap, at = {}, 0
            for b, i0 in starts:
                interp.run_nodes(env, range(at, i0), keep=keep, on_node=hook)
                snap[b], at = dict(env), i0
            interp.run_nodes(env, range(at, len(graph.nodes)), keep=keep, on_node=hook)
            logp.append(_log_softmax(env["logits"]))
            snaps.append(snap)
        else:
            interp.run_nodes(env, range(len(graph.nodes)), keep=keep, on_node=hook)
    hs = {x: (a.hessian() / 2).astype(np.float32) for x, a in acc.items()}  # HessianAccumulator holds 2/T x^T x
    return hs, (logp if has_logits else None), snaps


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64).reshape(-1, z.shape[-1])
    z = z - z.max(-1, keepdims=True)
    return (z - np.log(np.exp(z).sum(-1, keepdims=True))).astype(np.float32)


def _kl(graph: Graph, snaps: list[dict], ref_logp: list[np.ndarray], start: int = 0, block: int | None = None) -> float:
    """Mean KL(float || graph) per token over the KL feeds, run from node `start` (the values live there taken
    from the float run's snapshot at `block`'s first node)."""
    from compiler.reference import Interpreter

    interp = Interpreter(graph)
    tot = n = 0
    for snap, p in zip(snaps, ref_logp):
        env = dict(snap[block])
        interp.run_nodes(env, range(start, len(graph.nodes)), keep={"logits"})
        q = _log_softmax(env["logits"])
        tot += float(np.sum(np.exp(p.astype(np.float64)) * (p - q)))
        n += p.shape[0]
    return tot / max(n, 1)


def _rtn(w: np.ndarray, spec: QuantSpec, name: str) -> np.ndarray:
    from compiler.quant.layers import effective_spec
    from compiler.quant.rtn import quantize_rtn

    return quantize_rtn(w, effective_spec(spec, w.shape[1]), name=name).dequantize()


def measure(graph: Graph, specs: list[QuantSpec], feeds: list[dict], progress: Progress | None = None,
            kl_samples: int = KL_SAMPLES, weights: list[str] | None = None) -> Sensitivity:
    """The cost of each block linear (or of `weights`, a subset) at each spec of the ladder (module doc)."""
    t0 = time.perf_counter()
    nodes = {graph.nodes[i].inputs[1]: graph.nodes[i] for i in quantizable(graph)}
    weights = list(nodes) if weights is None else weights
    hs, ref_logp, snaps = _hessians(graph, feeds, kl_samples)
    cal = next((s for s in specs if s.bits >= CAL_BITS), specs[-1])
    ci = specs.index(cal)
    elems, options, proxy, at_cal = {}, {}, {}, {}
    total = len(weights) * len(specs)
    for wi, w in enumerate(weights):
        W = graph.consts[w].astype(np.float32)
        h = hs[nodes[w].inputs[0]]
        elems[w] = W.size
        proxy[w] = []
        for si, s in enumerate(specs):
            q = _rtn(W, s, w)
            if ref_logp is not None and si == ci:
                at_cal[w] = q
            dw = q - W
            proxy[w].append(max(float(np.sum((dw @ h) * dw)), 0.0))
            if progress:
                progress("sensitivity", wi * len(specs) + si + 1, total)
    del hs
    factors, role_kl, block_kl = {w: 1.0 for w in weights}, {}, {}
    if ref_logp is not None:
        starts = _block_starts(graph)
        first_block = min(starts, key=starts.get)
        groups: dict[tuple, list[str]] = {}
        for w in weights:
            groups.setdefault(("role", role(w)), []).append(w)
            groups.setdefault(("block", nodes[w].attrs.get("block")), []).append(w)
        for (kind, key), ws in groups.items():
            g = graph.copy()
            for w in ws:
                g.consts[w] = at_cal[w]
            b = key if kind == "block" and key in starts else first_block  # a pass starts at the group's first block
            (role_kl if kind == "role" else block_kl)[key] = _kl(g, snaps, ref_logp, starts[b], b)
        # a group whose KL is lost in float noise counts at the smallest measured one
        floor_r = min([v for v in role_kl.values() if v > 0] or [1.0])
        floor_b = min([v for v in block_kl.values() if v > 0] or [1.0])
        for w in weights:
            kl = max(role_kl[role(w)], floor_r) * max(block_kl[nodes[w].attrs.get("block")], floor_b)
            factors[w] = kl
    for w in weights:
        k = graph.consts[w].shape
        pc = proxy[w][ci]
        cost = [factors[w] * p / pc if pc > 0 else p for p in proxy[w]] if ref_logp is not None else proxy[w]
        options[w] = [(spec_bits(s, k[0], k[1]), c) for s, c in zip(specs, cost)]
    return Sensitivity(list(specs), elems, options, proxy, factors, role_kl, block_kl, cal, time.perf_counter() - t0)


def _hull(opts: list[tuple[int, float]]) -> list[int]:
    """Indices of the lower convex hull of (bits, cost), bits rising and cost falling."""
    order = sorted(range(len(opts)), key=lambda i: (opts[i][0], opts[i][1], i))
    pts: list[int] = []
    for i in order:
        if pts and (opts[i][1] >= opts[pts[-1]][1] or opts[i][0] == opts[pts[-1]][0]):
            continue  # no cheaper in cost, or the same bits at no lower cost
        while len(pts) >= 2:
            (b0, c0), (b1, c1), (b2, c2) = opts[pts[-2]], opts[pts[-1]], opts[i]
            if (c0 - c1) * (b2 - b1) <= (c1 - c2) * (b1 - b0):  # the middle point lies on or above the chord
                pts.pop()
            else:
                break
        pts.append(i)
    return pts


@dataclass
class Choice:
    specs: dict[str, QuantSpec]
    bits: int
    elems: int
    cost: float

    @property
    def bpw(self) -> float:
        return self.bits / self.elems


def bounds(sens: Sensitivity, fixed_bits: int = 0, fixed_elems: int = 0) -> tuple[float, float]:
    """(least, most) bits per weight a plan can have."""
    lo = sum(min(b for b, _ in o) for o in sens.options.values()) + fixed_bits
    hi = sum(max(b for b, _ in o) for o in sens.options.values()) + fixed_bits
    n = sum(sens.elems.values()) + fixed_elems
    return lo / n, hi / n


def choose(sens: Sensitivity, budget: float, fixed_bits: int = 0, fixed_elems: int = 0) -> Choice:
    """Specs under `budget` bits per weight over the chosen layers plus fixed ones (fixed_bits over
    fixed_elems: layers whose spec is given). Raises LowbitError for a budget outside bounds()."""
    lo, hi = bounds(sens, fixed_bits, fixed_elems)
    names = ", ".join(s.name for s in sens.ladder)
    n = sum(sens.elems.values()) + fixed_elems
    cap = int(np.floor(budget * n)) - fixed_bits  # the plan's bits, so that bits / n <= budget
    if sum(min(b for b, _ in o) for o in sens.options.values()) > cap:
        raise LowbitError(f"--bpw {budget:g} is below the cheapest plan, {lo:.4g} bits per weight (ladder {names})",
                          f"pass --bpw {lo:.4g} or more")
    if budget > hi:
        raise LowbitError(f"--bpw {budget:g} is above the widest plan, {hi:.4g} bits per weight (ladder {names})",
                          f"pass --bpw {hi:.4g} or less, or one spec for every layer (--quant {sens.ladder[-1].name})")
    hulls = {w: _hull(o) for w, o in sens.options.items()}
    pos = {w: 0 for w in hulls}
    order = {w: j for j, w in enumerate(hulls)}
    used = sum(sens.options[w][h[0]][0] for w, h in hulls.items())
    heap = []

    def push(w):
        h, p = hulls[w], pos[w]
        if p + 1 < len(h):
            (b0, c0), (b1, c1) = sens.options[w][h[p]], sens.options[w][h[p + 1]]
            heapq.heappush(heap, (-(c0 - c1) / (b1 - b0), order[w], w))

    for w in hulls:
        push(w)
    while heap:
        _, _, w = heap[0]
        h, p = hulls[w], pos[w]
        extra = sens.options[w][h[p + 1]][0] - sens.options[w][h[p]][0]
        if used + extra > cap:
            break
        heapq.heappop(heap)
        used += extra
        pos[w] = p + 1
        push(w)
    specs = {w: sens.ladder[hulls[w][pos[w]]] for w in hulls}
    cost = sum(sens.options[w][hulls[w][pos[w]]][1] for w in hulls)
    return Choice(specs, used + fixed_bits, n, cost)
