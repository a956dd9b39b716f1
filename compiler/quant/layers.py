"""Which format each layer gets: the model-wide spec, `--quant keep`, the LM head (`--quant-head`), per-layer
overrides (`--quant-layer 'down_proj=w8pc,lm_head=w8g32'`) and the group rule for a K the group does not
divide (compiler.groups). `plan_layers` returns the `LayerPlan` per weight for `quantize_layers`, one record
per weight that is not simply at the model-wide spec (for the manifest), and the notes compile prints.

Overrides: comma-separated PATTERN=SPEC; a pattern matches a weight's const name as a substring or an
fnmatch glob, `lm_head` also names a tied head (whose weight is the embedding table); SPEC `none` keeps the
layer float; when several patterns match a layer the last one wins; every pattern must match a layer.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections import Counter

from compiler.errors import LowbitError
from compiler.ir import Graph
from compiler.quant.apply import LayerPlan, head_nodes, quantizable
from compiler.quant.spec import QuantSpec, names_act, parse_spec

HEAD = "lm_head"


def with_act(text: str, act: str, what: str) -> QuantSpec | None:
    """Parse `text`; a spec without an activation mode takes the model's `act`, one that names another fails."""
    spec = parse_spec(text)
    if spec is None:
        return None
    if names_act(text) and spec.act != act:
        raise LowbitError(f"{what} '{text}': activation mode {spec.act} differs from the model's {act}",
                          "give every layer the model's activation mode (or leave it out of the spec)")
    return dataclasses.replace(spec, act=act)


def parse_overrides(text: str | None, act: str) -> list[tuple[str, QuantSpec | None]]:
    """`down_proj=w8pc,lm_head=w8g32` -> [(pattern, spec or None for float)]."""
    out = []
    for item in (text or "").split(","):
        if not item.strip():
            continue
        pat, sep, spec = item.partition("=")
        if not sep or not pat.strip() or not spec.strip():
            raise LowbitError(f"--quant-layer item '{item.strip()}' is not PATTERN=SPEC", "write e.g. --quant-layer 'down_proj=w8pc,lm_head=w8g32'")
        out.append((pat.strip(), with_act(spec.strip(), act, f"--quant-layer {pat.strip()}")))
    return out


def _matches(pattern: str, weight: str, is_head: bool) -> bool:
    if is_head and pattern == HEAD:
        return True
    return pattern in weight or fnmatch.fnmatchcase(weight, pattern)


def effective_spec(spec: QuantSpec, k: int) -> QuantSpec:
    """The spec a layer with k input features is quantized at: its group by QuantSpec.group_for."""
    g = spec.group_for(k)
    if spec.group_size == 0 or g == spec.group_size:
        return spec
    return dataclasses.replace(spec, group_size=0 if g == k else g)


def plan_layers(graph: Graph, spec: QuantSpec | None, *, keep=None, act: str = "a16", overrides=(),
                head_spec: QuantSpec | None = None, layer_specs: dict[str, QuantSpec] | None = None
                ) -> tuple[dict[str, LayerPlan], dict[str, dict], list[str]]:
    """(plan, records, notes). spec: the model-wide spec (None with keep, for `--quant auto`, or for a float
    model with only overrides); keep: the compiler.frontend.Model whose prequant / prequant_types are kept
    (compiler.quant.keep); layer_specs: per-weight specs chosen under a bits-per-weight budget
    (compiler.quant.mixed), taking the place of spec for those weights (overrides still win)."""
    from compiler.quant.keep import requant_spec, weight_format

    heads = {graph.nodes[i].inputs[1] for i in head_nodes(graph)}
    weights = list(dict.fromkeys([graph.nodes[i].inputs[1] for i in quantizable(graph)] + sorted(heads)))
    plan: dict[str, LayerPlan] = {}
    records: dict[str, dict] = {}
    for w in weights:
        if keep is not None:
            if w in keep.prequant:
                qw = keep.prequant[w]
                plan[w] = LayerPlan(weight_format(qw, act), qw)
                records[w] = {"kept": keep.prequant_types.get(w, "?"), "as": plan[w].spec.name}
            elif w in keep.prequant_types:
                plan[w] = LayerPlan(requant_spec(keep.prequant_types[w], act))
                records[w] = {"requantized": keep.prequant_types[w], "as": plan[w].spec.name}
            elif w not in heads:
                records[w] = {"float": "stored float"}
        elif layer_specs and w in layer_specs:
            plan[w] = LayerPlan(layer_specs[w])
            if layer_specs[w] != spec:
                records[w] = {"as": layer_specs[w].name, "mixed": True}
        elif spec is not None and w not in heads:
            plan[w] = LayerPlan(spec)
    if head_spec is not None:
        for w in heads:
            plan[w] = LayerPlan(head_spec)
            records[w] = {**records.get(w, {}), "as": head_spec.name, "head": True}
    used = Counter()
    for w in weights:
        hit = [(p, s) for p, s in overrides if _matches(p, w, w in heads)]
        used.update(p for p, _ in hit)
        if hit:
            p, s = hit[-1]
            if s is None:
                plan.pop(w, None)
            else:
                plan[w] = LayerPlan(s)
            stored = {k: v for k, v in records.get(w, {}).items() if k in ("kept", "requantized")}
            records[w] = {**stored, "override": p, "as": "float" if s is None else s.name}
    unmatched = [p for p, _ in overrides if not used[p]]
    if unmatched:
        sample = ", ".join(weights[:3] + ([HEAD] if heads else []))
        raise LowbitError(f"--quant-layer pattern(s) {', '.join(repr(p) for p in unmatched)} match no layer of {graph.name}",
                          f"match a weight name as a substring or glob (e.g. {sample})")
    notes = Counter()
    for w, lp in plan.items():
        if lp.weight is not None:
            continue
        k = graph.consts[w].shape[1]
        eff = effective_spec(lp.spec, k)
        if eff != lp.spec:
            notes[(lp.spec.group_size, k, eff.group_size)] += 1
            plan[w] = LayerPlan(eff)
            records[w] = {**records.get(w, {}), "as": eff.name, "group": f"g{lp.spec.group_size} does not divide K={k}"}
    lines = [f"groups of {g} do not divide K={k} of {n} layer{'s' if n > 1 else ''}: {'per-channel' if e == 0 else f'g{e}'}"
             for (g, k, e), n in sorted(notes.items())]
    text = [f"note: {'; '.join(lines)} (the largest supported group that divides K, else per-channel; docs/DESIGN.md)"] if lines else []
    return plan, records, text


def overridden(graph: Graph, overrides) -> dict[str, QuantSpec | None]:
    """The block linears an override names, with the spec it gives them (None: float); the last match wins."""
    out = {}
    for i in quantizable(graph):
        w = graph.nodes[i].inputs[1]
        hit = [s for p, s in overrides if _matches(p, w, False)]
        if hit:
            out[w] = hit[-1]
    return out


def layer_formats(plan: dict[str, LayerPlan]) -> list[QuantSpec]:
    """The distinct formats of a plan, for the targets' checks."""
    return list(dict.fromkeys(lp.spec for lp in plan.values()))


def summary(records: dict[str, dict]) -> dict[str, int]:
    """Counts per case, e.g. {"kept Q4_1 as w4g32-min": 210, "requantized Q6_K as w8g32-asym": 1}."""
    c = Counter()
    for r in records.values():
        if "override" in r:
            c[f"override {r['override']} -> {r['as']}"] += 1
        elif "kept" in r:
            c[f"kept {r['kept']} as {r['as']}"] += 1
        elif "requantized" in r:
            c[f"requantized {r['requantized']} as {r['as']}"] += 1
        elif "float" in r:
            c["float (stored float)"] += 1
        elif r.get("mixed"):
            c[f"mixed -> {r['as']}"] += 1
        elif r.get("head"):
            c[f"head as {r['as']}"] += 1
        elif "group" in r:
            c[f"{r['as']} ({r['group']})"] += 1
    return dict(c)
