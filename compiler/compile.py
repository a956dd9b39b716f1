"""The compile driver: model -> quantize -> target builds -> artifact directory."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from compiler.artifact import write_artifact
from compiler.backends import BuildOptions, check_options, parse_targets
from compiler.errors import LowbitError
from compiler.frontend import Model, load_model
from compiler.quant.spec import ACT_MODES, CODED_ACTS, MX_ACTS, MX_BLOCK, QuantSpec, names_act, parse_spec

# GPTQ calibration (samples, tokens per sample) per family: encoders see sentence-length inputs, where the
# [CLS]/[SEP] rows weigh much more than in long windows (measured on MiniLM: 64 x 32 beats 32 x 64 and
# 8 x 128 on held-out sentences; see the README).
CALIB_DEFAULTS = {"bert": (64, 32), "llama": (16, 128)}


KEEP = "keep"  # --quant keep: the checkpoint's own quantization (compiler.quant.keep)
# --quant keep's activation mode without --act: float32 activations, so a kept model computes what the float of
# the checkpoint computes (the same weights; only the order of float32 sums differs)
KEEP_ACT = "a32"


def _gpu_targets(target_list) -> list[str]:
    """The compiled targets beyond tvm-cpu and mlir-cpu (the CUDA ones): what the CPU-only features refuse."""
    return [t.name for t in target_list if t.family in ("tvm", "mlir") and t.name not in ("tvm-cpu", "mlir-cpu")]


def check_act(act: str) -> str:
    act = act.lower()
    if act not in ACT_MODES:
        raise LowbitError(f"unknown activation mode '{act}'", "use --act a16, a8, afp8, amx8, amxfp4 or a32")
    return act


def resolve_spec(quant: str, act: str | None) -> QuantSpec | None:
    if quant.strip().lower() == KEEP:
        return None
    spec = parse_spec(quant)
    if act is None:
        return spec
    act = check_act(act)
    if spec is None:
        raise LowbitError("--act needs quantized weights", "drop --act or pass --quant, e.g. --quant w4g128 --act a8")
    if names_act(quant):
        if spec.act != act:
            raise LowbitError(f"--act {act} contradicts the quant spec '{quant}'", "give the activation mode once")
        return spec
    return dataclasses.replace(spec, act=act)


def _mixed_plan(graph, rungs, budget: float, overrides, feeds, progress):
    """(layer specs, the manifest's bpw record, the note line) under `budget` (compiler.quant.mixed)."""
    from compiler.quant.apply import progress_bar, quantizable
    from compiler.quant.bpw import spec_bits
    from compiler.quant.layers import overridden
    from compiler.quant.mixed import bounds, choose, measure, unmeasured

    fixed = overridden(graph, overrides)
    free = [graph.nodes[i].inputs[1] for i in quantizable(graph) if graph.nodes[i].inputs[1] not in fixed]
    if not free:
        raise LowbitError("--bpw: --quant-layer gives every block linear its format, so there is nothing to choose", "drop --bpw or some overrides")
    fixed_bits = sum(spec_bits(s, *graph.consts[w].shape) for w, s in fixed.items() if s is not None)
    fixed_elems = sum(graph.consts[w].size for w, s in fixed.items() if s is not None)
    probe = unmeasured(graph, rungs, free)
    lo, hi = bounds(probe, fixed_bits, fixed_elems)
    choose(probe, budget, fixed_bits, fixed_elems)  # a budget outside the ladder fails here, before any measurement
    with progress_bar(progress) as bar:
        sens = measure(graph, rungs, feeds, bar, weights=free)
    c = choose(sens, budget, fixed_bits, fixed_elems)
    rec = {"budget": budget, "ladder": [s.name for s in rungs], "range": [round(lo, 4), round(hi, 4)],
           "cost": float(f"{c.cost:.4g}"), "sensitivity": sens.record()}
    line = (f"--bpw {budget:g}: {{achieved}} bits per weight over the block linears (head and embedding not counted), "
            f"from {', '.join(s.name for s in rungs)}; sensitivity measured in {sens.seconds:.0f} s")
    return c.specs, rec, line


def compile_model(
    model: str | Model,
    out: str | Path,
    quant: str = "w4g128",
    act: str | None = None,
    method: str = "rtn",
    targets: str = "ref",
    seed: int = 0,
    calib: str | None = None,
    calib_samples: int | None = None,
    calib_seqlen: int | None = None,
    damp: float = 0.1,
    progress: bool = True,
    options: BuildOptions | None = None,
    smooth: float | None = None,
    act_order: bool = False,
    quant_head: str | None = None,
    quant_layer: str | None = None,
    bpw: float | None = None,
    imatrix: bool = False,
    awq: bool = False,
    act_outliers: int | None = None,
    kv: str | None = None,
    rotate: str | None = None,
) -> dict:
    """Compile and write the artifact; returns a summary dict. User errors raise LowbitError before any
    output is written. options: what only some targets read (compiler.backends.BuildOptions: tune, dump_mlir,
    array). smooth: SmoothQuant alpha; rescales every layernorm -> linear site before quantizing (an exact float
    rewrite, compiler.passes.smooth; measured on the calibration data). act_order: GPTQ's act-order.
    quant_head: also RTN-quantize the LM head (causal LMs) at this spec, e.g. 'w8pc' (default: float).
    quant='keep': keep the checkpoint's own quantization (compiler.quant.keep), at float32 activations (a32)
    unless `act` names another mode. quant_layer: per-layer
    overrides 'PATTERN=SPEC,...' (compiler.quant.layers). bpw: a bits-per-weight budget over the block linears;
    each gets a spec of quant's family, or of compiler.quant.mixed.AUTO_LADDER with quant='auto', chosen by its
    measured cost on the calibration sequences (compiler.quant.mixed). imatrix: importance-weighted rounding, each
    input feature weighed by its mean square over the calibration sequences (compiler.quant.rtn; GPTQ takes it from
    the Hessian diagonal). awq: activation-aware per-channel weight scaling at the norm -> linear sites, its exponent
    searched per site on the calibration sequences (compiler.passes.awq). act_outliers: at every A8 linear, this many
    input features (the largest max |x| on the calibration sequences) multiply in 16 bits, LLM.int8()-style
    (compiler.passes.act_outliers). kv: the KV cache's storage (compiler.passes.kv_quant: f32, fp16, int8 / int4 codes with a scale
    per 32, options -rot / -wN); None: DEFAULT_KV for a causal model's in-place cache, nothing for an encoder.
    rotate: 'hadamard' rotates the residual stream, the attention values per head and the FFN's inner activations
    before anything else (an exact float rewrite, compiler.passes.rotate); None or 'none': no rotation.
    The summary's "notes" are lines for the user."""
    from compiler.quant.apply import progress_bar, quantize_layers
    from compiler.quant.layers import layer_formats, parse_overrides, plan_layers, summary, with_act
    from compiler.quant.mixed import AUTO

    keep = quant.strip().lower() == KEEP
    auto = quant.strip().lower() == AUTO
    if bpw is not None and keep:
        raise LowbitError("--bpw chooses formats, which --quant keep takes from the checkpoint", "drop --bpw, or give a family such as --quant w3g32 --bpw 3.75")
    if awq and keep:
        raise LowbitError("--awq rescales weights, which --quant keep leaves as the checkpoint stores them", "drop --awq, or give a spec such as --quant w3g32-min --awq")
    if imatrix and keep:
        raise LowbitError("--imatrix weighs the rounding of weights that --quant keep takes from the checkpoint as stored", "drop --imatrix, or give a spec such as --quant w3g32-min --imatrix")
    if auto and bpw is None:
        raise LowbitError("--quant auto needs a bits-per-weight budget", "add --bpw, e.g. --quant auto --bpw 4.0")
    spec = None if auto else resolve_spec(quant, act)
    if bpw is not None and spec is None and not auto:
        raise LowbitError("--bpw needs quantized weights", "give a family such as --quant w3g32 --bpw 3.75, or --quant auto --bpw 3.75")
    model_act = (check_act(act) if act is not None else KEEP_ACT) if keep else (spec.act if spec is not None else (check_act(act) if auto and act else "a16"))
    if bpw is not None:
        from compiler.quant.mixed import ladder

        rungs = ladder(spec, model_act)
    overrides = parse_overrides(quant_layer, model_act)
    rotate = None if rotate is None or rotate.strip().lower() == "none" else rotate.strip().lower()
    if rotate is not None:
        from compiler.passes.rotate import METHODS

        if rotate not in METHODS:
            raise LowbitError(f"unknown --rotate '{rotate}'", f"use {' or '.join(METHODS)}")
        if keep:
            raise LowbitError("--rotate rewrites weights, which --quant keep leaves as the checkpoint stores them",
                              "drop --rotate, or give a spec such as --quant mxfp4 --rotate hadamard")
    if keep and smooth is not None:
        raise LowbitError("--smooth rescales weights, which --quant keep leaves as the checkpoint stores them",
                          "drop --smooth, or give a spec such as --quant w4g32a8-asym")
    options = options or BuildOptions()
    target_list = parse_targets(targets)
    check_options(target_list, options)
    from compiler.passes.kv_quant import DEFAULT_KV, KVSpec, parse_kv

    kv_spec = parse_kv(kv if kv is not None else DEFAULT_KV)
    if kv_spec not in (KVSpec("f32"), KVSpec("fp16")):
        compiled = _gpu_targets(target_list)
        if compiled:
            raise LowbitError(f"--kv {kv}: target {compiled[0]} reads a plain float KV cache (f32 or fp16) only, so far",
                              "compile the quantized cache for ref, tvm-cpu, mlir-cpu and the accelerator targets, or use --kv fp16")
    if rotate is not None:
        compiled = _gpu_targets(target_list)
        if compiled:
            raise LowbitError(f"--rotate {rotate}: target {compiled[0]} has no kernel for the online Hadamard transform, so far",
                              "compile the rotated model for ref, tvm-cpu, mlir-cpu and the accelerator targets, or drop --rotate")
    if model_act in CODED_ACTS:
        compiled = _gpu_targets(target_list)
        if compiled:
            raise LowbitError(f"{model_act} activations: target {compiled[0]} has no {'FP8' if model_act == 'afp8' else 'MX'} activation kernel, so far",
                              f"compile {model_act} for ref, tvm-cpu and mlir-cpu, or use --act a8 / a16 on that target")
    if method not in ("rtn", "gptq"):
        raise LowbitError(f"unknown quantization method '{method}'", "use --method rtn or --method gptq")
    if smooth is not None and ((spec is None and not auto) or not 0.0 <= smooth <= 1.0):
        raise LowbitError(f"--smooth {smooth}: needs quantized weights and an alpha in [0, 1]", "e.g. --quant w4g32a8-asym --smooth 0.5")
    head_spec = None
    if quant_head is not None and quant_head.lower() != "none":
        if spec is None and not keep and not auto:
            parse_spec(quant_head)  # a malformed spec is named first
            raise LowbitError("--quant-head needs quantized weights", "add --quant, e.g. --quant w4g128 --quant-head w8pc")
        head_spec = with_act(quant_head, model_act, "--quant-head")
    if act_order and method != "gptq":
        raise LowbitError("--act-order is a GPTQ option", "add --method gptq or drop --act-order")
    for t in target_list:  # refuse what a target cannot build before any work (keep: once the formats are known)
        if t.check is not None and not keep:
            for f in (rungs if bpw is not None else [spec]):
                t.check(f, t.name, options)
    t0 = time.perf_counter()
    m = model if isinstance(model, Model) else load_model(model, seed)
    t_load = time.perf_counter() - t0
    graph = m.graph
    t1 = time.perf_counter()
    if keep and not (m.prequant or m.prequant_types):
        raise LowbitError(f"--quant keep: model {m.name} stores no quantized weights (it is a float checkpoint)",
                          "give a spec such as --quant w4g128, or a GGUF / pre-quantized checkpoint")
    if head_spec is not None and not any(n.op == "linear" and "logits" in n.outputs for n in graph.nodes):
        raise LowbitError(f"--quant-head: model {m.name} has no float LM head (encoders have none)", "drop --quant-head")
    rotation = None
    if rotate is not None:
        from compiler.passes.rotate import rotate_graph

        graph, rotation = rotate_graph(graph, seed)
    feeds = None

    def calib_feeds():
        from compiler.quant.calib import calibration_feeds

        n, sl = CALIB_DEFAULTS[m.family]
        return calibration_feeds(m, calib_samples or n, calib_seqlen or sl, calib, seed)

    if smooth is not None:
        from compiler.passes.smooth import smooth_graph

        feeds = calib_feeds()
        graph = smooth_graph(graph, feeds, smooth)
    layer_specs = mixed = None
    if bpw is not None:
        layer_specs, mixed, line = _mixed_plan(graph, rungs, bpw, overrides, feeds or (feeds := calib_feeds()), progress)
    plan, records, notes = plan_layers(graph, spec, keep=m if keep else None, act=model_act, overrides=overrides, head_spec=head_spec,
                                       layer_specs=layer_specs)
    odd = [w for w in plan if plan[w].spec.act in MX_ACTS and graph.consts[w].shape[1] % MX_BLOCK]
    if odd:
        raise LowbitError(f"{model_act}: layer {odd[0]} has K={graph.consts[odd[0]].shape[1]}, not a multiple of the MX block of {MX_BLOCK}",
                          f"keep it float with --quant-layer '{odd[0].removesuffix('.weight')}=none', or use --act a8")
    if mixed is not None:
        from compiler.quant.apply import quantizable
        from compiler.quant.bpw import spec_bits

        qs = [graph.nodes[i].inputs[1] for i in quantizable(graph) if graph.nodes[i].inputs[1] in plan]
        mixed["achieved"] = round(sum(spec_bits(plan[w].spec, *graph.consts[w].shape) for w in qs) / sum(graph.consts[w].size for w in qs), 4)
        notes = [*notes, line.format(achieved=mixed["achieved"])]
    for t in target_list:  # every distinct layer format, before anything is written
        if t.check is not None and plan:
            for f in layer_formats(plan):
                t.check(f, t.name, options)
        elif t.check is not None and keep:
            t.check(None, t.name, options)
    alphas = None
    if awq:
        from compiler.passes.awq import awq_graph

        if not any(lp.weight is None for lp in plan.values()):
            raise LowbitError("--awq needs weights to quantize", "give a spec such as --quant w3g32-min --awq")
        graph, alphas = awq_graph(graph, feeds or (feeds := calib_feeds()), lambda w: plan[w].spec if w in plan and plan[w].weight is None else None)
    act_record = None
    if act_outliers is not None:
        from compiler.passes.act_outliers import act_outlier_graph

        graph, act_record = act_outlier_graph(graph, feeds or (feeds := calib_feeds()), act_outliers,
                                              lambda w: plan[w].spec if w in plan and plan[w].weight is None else None)
    if plan:
        needs_calib = (method == "gptq" or imatrix) and any(lp.weight is None for lp in plan.values())
        if needs_calib and feeds is None:
            feeds = calib_feeds()
        with progress_bar(progress) as bar:
            graph = quantize_layers(graph, plan, method, feeds if needs_calib else None, bar, damp=damp, act_order=act_order, weighted=imatrix)
    if kv is not None or (graph.meta.get("causal") and graph.meta.get("kv") == "inplace"):  # the default: where there is a cache to store
        from compiler.passes.kv_quant import kv_quant_graph

        graph = kv_quant_graph(graph, str(kv_spec))
    t_quant = time.perf_counter() - t1
    files = {}
    tok = m.tokenizer
    tok_json = tok.to_json() if tok is not None else None
    if tok is not None and hasattr(tok, "artifact_files"):  # tokenizer.json: copied, or written from memory (GGUF)
        files.update(tok.artifact_files())
    extra = {**({"damp": damp} if method == "gptq" else {}), **({"act_order": True} if act_order else {}),
             **({"rotate": rotation} if rotation is not None else {}), **({"smooth": smooth} if smooth is not None else {}), **({"imatrix": True} if imatrix else {}), **({"awq": {"alphas": alphas}} if alphas is not None else {}),
             **({"act_outliers": {"count": act_outliers, "inputs": act_record}} if act_record is not None else {}), **({"head": head_spec.name} if head_spec is not None else {}),
             **({"overrides": {p: "none" if s is None else s.name for p, s in overrides}} if overrides else {}),
             **({"layers": records, "summary": summary(records)} if records else {}), **({"bpw": mixed} if mixed is not None else {})}
    if keep or auto:
        quant_record = {"name": KEEP if keep else AUTO, "act": model_act, "method": method, **extra}
    elif spec is not None:
        quant_record = {**spec.to_dict(), "name": spec.name, "method": method, **extra}
    else:
        quant_record = {"name": "none", "method": method, **extra} if plan else None
    manifest = {
        "model": {"name": m.name, "family": m.family, "config": m.config, "source": m.source},
        "quant": quant_record,
        "tokenizer": tok_json,
        "targets": {t.name: {} for t in target_list},
        "timings_s": {"load": round(t_load, 3), "quantize": round(t_quant, 3)},
    }

    if options.vector_unit is not None and any(t.family == "accel" for t in target_list):  # the vector unit's static scales
        from dataclasses import replace

        options = replace(options, calib_feeds=feeds or calib_feeds())

    def build_targets(tmp: Path):  # each compiled target writes its sub-folder into the temporary artifact
        for t in target_list:
            if t.build is not None:
                manifest["targets"][t.name] = t.build(graph, t.name, tmp / t.name, options)

    write_artifact(Path(out), manifest, graph, files, build_targets=build_targets)
    return {"path": str(out), "params": graph.n_params(), "load_s": t_load, "quantize_s": t_quant, "spec": spec, "graph": graph, "model": m,
            "notes": notes, "quant": quant_record}
