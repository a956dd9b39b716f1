"""The `lowbit` command line.

User errors (LowbitError, bad options, click's usage errors) print one line naming the input and the fix and
exit with code 2; no traceback. SIGINT and SIGTERM print "interrupted" and exit with 130 and 143, leaving no
temporary folder (compiler.fsutil). Every numeric option is bounded, and the message names the bound.
Everything heavy is imported inside the commands so `lowbit --help` stays fast.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time

import click

from compiler.errors import LowbitError

SEED_MAX = 2**63 - 1


class Finite(click.FloatRange):
    """click.FloatRange that also refuses nan and inf (which compare false with every bound)."""

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{rv} is not a finite number in the range {self._describe_range()}", param, ctx)
        return rv


class DesignChoice(click.Choice):
    """click.Choice over the accelerator designs registered when the command runs (hwsim.designs); with fp16, also the
    FP16-activation arrays, which `lowbit sim` runs alone (hwsim/designs/_fp16.py: not whole-model targets yet)."""

    def __init__(self, fp16: bool = False):
        self.fp16 = fp16
        super().__init__([])

    @property
    def choices(self):
        from hwsim.designs import DESIGNS

        if not self.fp16:
            return tuple(DESIGNS)
        from hwsim.designs._fp16 import FP16_DESIGNS

        return (*DESIGNS, *FP16_DESIGNS)

    @choices.setter
    def choices(self, value):
        pass


def _console():
    from rich.console import Console

    # markup off: model names, paths and decoded text may contain [brackets]
    return Console(highlight=False, markup=False, soft_wrap=True)


def _parse_ids(text: str) -> list[int]:
    try:
        return [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise LowbitError(f"--ids '{text}' is not a comma-separated list of integers", "write e.g. --ids 1,2,3") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lowbit")
def cli():
    """lowbit: compile, run and simulate low-bit transformer models."""


@cli.command()
def models():
    """List the built-in models (presets and the packaged real models)."""
    from rich.table import Table

    from compiler.frontend import PACKAGED
    from compiler.frontend.presets import PRESETS

    t = Table("name", "family", "what")
    for p in PRESETS.values():
        t.add_row(p.name, p.family, p.about)
    for name, (family, what) in PACKAGED.items():
        t.add_row(name, family, what)
    _console().print(t)


@cli.command("compile")
@click.argument("model")
@click.option("-o", "--out", required=True, type=click.Path(), help="artifact directory to write")
@click.option("--quant", default="w4g128", show_default=True, help="quant spec: w4g128, w2g64a8, w4g128-asym, w4g32-min, w8pc, ternary, none; or keep (a GGUF / pre-quantized checkpoint's own quantization); or auto (with --bpw)")
@click.option("--act", default=None, help="activation mode a16, a8 (per-token int8), afp8 (per-token FP8 E4M3), amx8 / amxfp4 (OCP MXINT8 / MXFP4 per 32; afp8 and MX on CPU targets) or a32 (float32: weight-only quantization; --quant keep defaults to a32), or put it in the spec")
@click.option("--method", type=click.Choice(["rtn", "gptq"]), default="rtn", show_default=True)
@click.option("--target", "targets", default="ref", show_default=True, help="comma-separated targets")
@click.option("--calib", default=None, help="UTF-8 text file for calibration: GPTQ, --imatrix, --bpw, --smooth (models with a tokenizer)")
@click.option("--calib-samples", default=None, type=click.IntRange(1, 4096), help="GPTQ calibration sequences [64 encoders, 16 causal LMs]")
@click.option("--calib-seqlen", default=None, type=click.IntRange(8, 8192), help="tokens per calibration sequence [32 encoders, 128 causal LMs]")
@click.option("--damp", default=0.1, show_default=True, type=Finite(0, 10, min_open=True), help="GPTQ dampening (fraction of mean Hessian diagonal)")
@click.option("--act-order", is_flag=True, help="GPTQ: quantize columns in descending Hessian-diagonal order (static groups)")
@click.option("--smooth", default=None, type=Finite(0, 1), help="SmoothQuant alpha: rescale layernorm -> linear channels before quantizing (exact float rewrite; e.g. 0.5)")
@click.option("--rotate", default="none", show_default=True, type=click.Choice(["none", "hadamard"], case_sensitive=False),
              help="rotate before quantizing (QuaRot): the residual stream by a randomized Hadamard matrix, attention values per head, and the FFN's inner "
              "activations online (a Hadamard transform before each down projection); an exact float rewrite of Llama-family decoders")
@click.option("--awq", is_flag=True, help="activation-aware weight scaling (AWQ): per-channel scales at norm -> linear sites, the exponent searched per site on the calibration text")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, SEED_MAX), help="seed of preset weights and calibration sampling")
@click.option("--print-ir", is_flag=True, help="print the compiled graph")
@click.option("--dump-mlir", is_flag=True, help="mlir-* targets: also write the .mlir of every IREE compilation phase into OUT/<target>/stages/")
@click.option("--array", default=None, help="accelerator targets (one per design): array shape and SRAM, e.g. M=4,N=64,K=4[,lanes=8,weight_sram_kib=1024]")
@click.option("--vector-unit", default=None, help="accelerator targets: run these ops on the vector unit beside the arrays instead of the host "
              "(integer golden models, static scales from the calibration text): all, or a comma list of norm, gate, attn, add, mul, rope, kv (norm16: the norm at int16 inputs; all,norm16) [default: none]")
@click.option("--tune", is_flag=True, help="tvm-cpu: time the matching fast qlinear kernels for each layer shape on this machine and keep the fastest (cached in ~/.cache/lowbit)")
@click.option("--quant-head", default=None, help="also quantize the LM head (causal LMs, RTN), e.g. w8pc or w4g128 [default: float]")
@click.option("--quant-layer", default=None, help="per-layer formats PATTERN=SPEC,... (substring or glob of a weight name; lm_head: the head; none: float), e.g. 'down_proj=w8pc,lm_head=w8g32'")
@click.option("--bpw", default=None, type=Finite(0, min_open=True), help="mixed precision: at most this many bits per weight on average over the block linears "
              "(GGUF's count: codes + fp16 scales/minimums; head and embedding not counted), each layer's spec chosen by its measured error on the "
              "calibration text from --quant's family at 2/3/4/8 bits, or with --quant auto from w2g16k4-min, w2g16k-min, w3g32k-min, w3g16k-min, w4g32k-min, w4g32-min, w8g32")
@click.option("--imatrix", is_flag=True, help="importance-weighted rounding: every scale search weighs each input feature by its mean square over the calibration text "
              "(llama.cpp's importance matrix; RTN: one float pass, GPTQ: the Hessian diagonal)")
@click.option("--act-outliers", default=None, type=click.IntRange(1), help="LLM.int8(): at every A8 layer this many input features (the largest |x| on the "
              "calibration text) multiply in 16 bits beside the int8 product, e.g. 8")
@click.option("--kv", default=None,
              help="KV cache storage FMT[-rot][-kc][-gN][-wN] [fp16 for a causal model]: f32, fp16 (every target), or fp8 (E4M3) / int8 / int4 / int2 codes with an fp16 "
              "scale per 32 values of a head (ref, tvm-cpu, mlir-cpu and the accelerator paths); -rot rotates every K and V head by a Hadamard transform first "
              "(spreads outlier channels); -kc quantizes keys per channel over 32 rows (KIVI, int4/int2, with -wN); -gN a scale per N values (64, 128); "
              "-wN reads the N most recent rows in float32, e.g. int4-rot-w128")
def compile_cmd(model, out, quant, act, method, targets, calib, calib_samples, calib_seqlen, damp, act_order, smooth, rotate, awq, seed, print_ir, dump_mlir, array, vector_unit, tune, quant_head, quant_layer, bpw, imatrix,
                act_outliers, kv):
    """Compile MODEL (a Hugging Face directory or a preset name) into an artifact directory."""
    from compiler.artifact import MANIFEST
    from compiler.backends import BuildOptions
    from compiler.compile import compile_model
    from compiler.fsutil import check_output_dir

    check_output_dir(out, MANIFEST, "lowbit artifact")  # before any work; checked again, under a lock, when writing
    if array is not None:
        _check_array_memory(array)
    con = _console()
    t0 = time.perf_counter()
    opts = BuildOptions(tune=tune, dump_mlir=dump_mlir, array=array, vector_unit=vector_unit)
    r = compile_model(model, out, quant, act, method, targets, seed, calib, calib_samples, calib_seqlen, damp, progress=sys.stderr.isatty(), options=opts, smooth=smooth, act_order=act_order, quant_head=quant_head, quant_layer=quant_layer, bpw=bpw, imatrix=imatrix, awq=awq, act_outliers=act_outliers, kv=kv, rotate=rotate)
    spec = r["spec"]
    if print_ir:
        con.print(str(r["graph"]))
    for note in r["notes"]:
        con.print(note)
    q = "float (no quantization)" if r["quant"] is None else f"{spec.name if spec is not None else r['quant']['name']} ({method})"
    if r["quant"] and r["quant"].get("summary"):
        q += ": " + ", ".join(f"{n} {case}" for case, n in r["quant"]["summary"].items())
    con.print(
        f"compiled {r['model'].name} [{r['model'].family}] -> {out}: {q}, "
        f"load {r['load_s']:.2f} s, quantize {r['quantize_s']:.2f} s, total {time.perf_counter() - t0:.2f} s"
    )


def _check_array_memory(array: str):
    """--array's SRAM sizes against hwsim.memory's bounds, before any work (the array shape is checked with the
    quant spec, by the accelerator targets)."""
    from compiler.backends.accel.lower import memory_config, parse_array

    try:
        memory_config(parse_array(array))
    except ValueError as e:
        raise LowbitError(f"--array: {str(e).removeprefix('MemoryConfig.')}", "give SRAM sizes within the limit") from None


@cli.command()
@click.argument("artifact", type=click.Path())
@click.option("--backend", default="ref", show_default=True)
@click.option("--prompt", "prompts", multiple=True, help="input text (repeat for several sentences with encoders)")
@click.option("--ids", default=None, help="input token ids, e.g. 1,2,3")
@click.option("--tokens", default=16, show_default=True, type=click.IntRange(1, 100000), help="tokens to generate (causal LMs)")
@click.option("--compare", default=None, help="'float' (the source float model) or a backend name such as ref")
@click.option("-v", "--verbose", is_flag=True, help="per-layer cycles / energy / utilization table (hwsim and rtl backends)")
@click.option("--simulator", type=click.Choice(["icarus", "verilator"]), default=None, help="rtl:* backends: the HDL simulator [LOWBIT_RTL_SIMULATOR, icarus]")
@click.option("--chat", is_flag=True, help="causal LMs: wrap the prompt in the model's chat template as a user turn")
@click.option("--system", default=None, help="with --chat: a system message")
@click.option("--temperature", default=0.0, show_default=True, type=Finite(max=100), help="0: greedy; > 0: sample from softmax(logits / T)")
@click.option("--top-k", default=0, show_default=True, type=click.IntRange(max=1 << 24), help="sampling: keep the K most likely tokens (0: all)")
@click.option("--top-p", default=1.0, show_default=True, type=float, help="sampling: keep the most likely tokens up to this total probability, in (0, 1]")
@click.option("--seed", default=None, type=click.IntRange(0, SEED_MAX), help="sampling seed (the same seed draws the same tokens) [random, printed]")
@click.option("--ignore-eos", is_flag=True, help="do not stop at the tokenizer's EOS / end-of-turn tokens")
@click.option("--no-stream", is_flag=True, help="do not print tokens as they are generated")
@click.option("--kv", default=None, help="causal LMs: store the KV cache in this format instead of the artifact's (a --kv spec of `lowbit compile`, e.g. "
              "int4-rot-w128; tvm-cpu and mlir-cpu build their library for it once, cached in ~/.cache/lowbit/kv)")
def run(artifact, backend, prompts, ids, tokens, compare, verbose, simulator, chat, system, temperature, top_k, top_p, seed, ignore_eos, no_stream, kv):
    """Run a compiled ARTIFACT on a backend; --compare reports the distance to another model or backend."""
    import runtime
    from runtime.generate import Sampler, Sampling, chat_ids
    from runtime.inputs import default_texts
    from runtime.model import float_model

    con = _console()
    m = runtime.load(artifact, kv)
    if ids and prompts:
        raise LowbitError("both --prompt and --ids given", "pass one of them")
    sampling = Sampling(temperature, top_k, top_p, seed)
    Sampler(sampling)  # bad sampling options fail before anything runs
    if system is not None and not chat:
        raise LowbitError("--system applies to --chat", "add --chat or drop --system")
    if chat and (ids or len(prompts) > 1 or not m.causal):
        raise LowbitError("--chat takes one --prompt for a causal LM", "pass a single --prompt (no --ids)")
    if simulator is not None:
        if not backend.startswith("rtl:"):
            raise LowbitError(f"--simulator applies to the rtl:* backends, not {backend}", "drop --simulator or use --backend rtl:<design>")
        m.set_backend_options(backend, simulator=simulator)
    if ids:
        inputs = [_parse_ids(ids)]
    elif chat:
        inputs = [chat_ids(m.tokenizer, m.name, prompts[0] if prompts else default_texts(m)[0], system)]
    else:
        texts = list(prompts) or default_texts(m)
        inputs = [m.encode(t) for t in texts]
    for x in inputs:
        m.check_ids(x)
    if m.causal:
        m.check_room(len(inputs[0]), tokens)  # prompt + --tokens within the model's context
    other = None
    if compare:
        other = float_model(m.artifact) if compare == "float" else m
        other_backend = "ref" if compare == "float" else compare
        other.backend(other_backend)  # fail early on a bad name
    m.backend(backend)  # fail early (one error line) on a backend this artifact was not built for
    q = m.artifact.quant
    con.print(f"model {m.name} [{m.family}], weights {q['name'] + ' ' + q['method'] if q else 'float'}, backend {backend}")
    if m.causal:
        _run_causal(con, m, inputs[0], tokens, backend, other, compare, sampling, () if ignore_eos else None, not no_stream)
    else:
        _run_encoder(con, m, inputs, backend, other, compare)
    b = m.backend(backend)
    if hasattr(b, "summary"):  # accelerator backends (hwsim:*, rtl:*): cycles, energy, utilization
        _print_accel_summary(con, b.name, b.summary(), verbose)


def _print_accel_summary(con, name, s, verbose):
    from rich.table import Table

    a = s["array"]
    shape = f"{a['M']}x{a['N']} PEs, K={a['K']}"
    e = s.get("energy_pj")
    energy = f"{e / 1e6:.3f} uJ (28 nm)" if e is not None else "energy n/a"
    if verbose:
        t = Table("layer", "calls", "rows", "tiles", "cycles", "DRAM stall", "energy nJ", "util", title=f"{name} per layer ({shape})")
        for p in s["layers"]:
            en = p.get("energy_pj")
            t.add_row(p["node"], str(p["calls"]), str(p["rows"]), str(p["tiles"]), f"{p['cycles']:,}", f"{p['stall_cycles']:,}", "-" if en is None else f"{en / 1e3:.1f}", f"{p['utilization']:.1%}")
        con.print(t)
    con.print(
        f"{name} ({shape}): {s['calls']} layer runs, {s['cycles']:,} cycles ({s['stall_cycles']:,} DRAM stall), "
        f"{energy}, {s['macs']:,} MACs, utilization {s['utilization']:.1%}"
        + (f", {s['tables']} table precomputes ({s['table_builds_fused']:,} tables; the array's input table unit builds {s['table_builds_array']:,})" if s.get("tables") else "")
    )
    if "vector_cycles" in s:
        if verbose:
            t = Table("vector command", "calls", "cycles", "energy nJ", title=f"{name} vector unit ({s['vector_lanes']} lanes) and attention matmuls (on the array)")
            for op, p in s["vector_by_op"].items():
                t.add_row(op, str(p["calls"]), f"{p['cycles']:,}", f"{p['energy_pj'] / 1e3:.1f}")
            con.print(t)
        con.print(f"{name}: attention matmuls {s['attn_matmul_cycles']:,} array cycles, {s['attn_matmul_energy_pj'] / 1e6:.3f} uJ; "
                  f"vector unit ({s['vector_lanes']} lanes) {s['vector_cycles']:,} cycles, {s['vector_energy_pj'] / 1e6:.3f} uJ")


def _run_causal(con, m, ids, tokens, backend, other, compare, sampling=None, stops=None, stream=True):
    from rich.table import Table

    from runtime.compare import logits_metrics
    from runtime.generate import StreamDecoder, token_name

    con.print(f"prompt ({len(ids)} tokens): {ids[:32]}{' ...' if len(ids) > 32 else ''}")
    sd = StreamDecoder(m.decode)

    def show(tid):
        piece = sd.push(tid)
        if piece:
            click.echo(piece, nl=False)
            sys.stdout.flush()

    g = m.generate(ids, tokens, backend, sampling, stops, show if stream else None, prompt_logits=other is not None)
    if stream:
        click.echo(sd.flush())
    con.print(f"generated ids: {g.tokens}")
    con.print(f"generated text: {m.decode(g.tokens)!r}")
    why = f"stopped at {token_name(m.tokenizer, g.stop_id)!r} (id {g.stop_id})" if g.stop_id is not None else f"ran to --tokens {tokens}"
    con.print(f"{len(g.tokens)} tokens, {why}" + (f"; sampled with seed {g.seed}" if g.seed is not None else ""))
    con.print(f"prefill {g.prefill_s * 1e3:.1f} ms ({len(ids) / g.prefill_s:.1f} tokens/s), decode {g.decode_tokens_per_s:.1f} tokens/s")
    if other is not None:
        ob = "ref" if compare == "float" else compare
        ref_logits, _ = other.prefill(ids, ob)
        met = logits_metrics(g.prompt_logits, ref_logits)
        t = Table("metric", "value", title=f"{backend} vs {compare} over {met['positions']} prompt positions")
        t.add_row("max abs error (logits)", f"{met['max_abs_err']:.4g}")
        t.add_row("cosine similarity (logits)", f"{met['cosine']:.6f}")
        t.add_row("top-1 next-token agreement", f"{met['top1_agreement']:.3f}")
        con.print(t)


def _run_encoder(con, m, inputs, backend, other, compare):
    from rich.table import Table

    from runtime.compare import cosine, embedding_metrics

    t0 = time.perf_counter()
    embs = [m.embed(x, backend) for x in inputs]
    dt = time.perf_counter() - t0
    con.print(f"{len(embs)} sentence embeddings of size {embs[0].shape[0]} in {dt * 1e3:.1f} ms")
    for x, e in zip(inputs, embs):
        con.print(f"  {len(x):3d} tokens -> [{', '.join(f'{v:+.4f}' for v in e[:4])}, ...] |e| = {float((e.astype(float) ** 2).sum() ** 0.5):.4f}")
    if len(embs) > 1:
        con.print(f"cosine(sentence 1, sentence 2) = {cosine(embs[0], embs[1]):.4f}")
    if other is not None:
        ob = "ref" if compare == "float" else compare
        refs = [other.embed(x, ob) for x in inputs]
        met = embedding_metrics(embs, refs)
        t = Table("metric", "value", title=f"{backend} vs {compare} over {met['sentences']} sentences")
        t.add_row("max abs error (embedding)", f"{met['max_abs_err']:.4g}")
        t.add_row("cosine similarity, min", f"{met['cosine_min']:.6f}")
        t.add_row("cosine similarity, mean", f"{met['cosine_mean']:.6f}")
        con.print(t)


@cli.command("eval")
@click.argument("artifact", type=click.Path())
@click.option("--backend", default="ref", show_default=True)
@click.option("--text", default=None, type=click.Path(dir_okay=False), help="UTF-8 text to score [the shipped runtime/data/alice.txt]; encoders: one sentence a line")
@click.option("--ctx", default=None, type=click.IntRange(4, 1 << 20), help="tokens per window [512, or the model's context if shorter]")
@click.option("--protocol", type=click.Choice(["gptq", "llamacpp"]), default="gptq", show_default=True, help="gptq: score every position but the first of each window; llamacpp: the second half")
@click.option("--max-windows", default=None, type=click.IntRange(1, 1 << 20), help="score only the first N windows")
@click.option("--no-kl", is_flag=True, help="perplexity only: skip the float model (KL, same-top-token)")
@click.option("--json", "json_path", default=None, type=click.Path(dir_okay=False), help="also write the result (with per-window figures) as JSON")
@click.option("--no-progress", is_flag=True, help="no progress bar (there is none when stderr is not a terminal)")
@click.option("--simulator", type=click.Choice(["icarus", "verilator"]), default=None, help="rtl:* backends: the HDL simulator")
@click.option("--kv", default=None, help="causal LMs: store the KV cache in this format instead of the artifact's (a --kv spec of `lowbit compile`, e.g. "
              "int4-rot-w128; tvm-cpu and mlir-cpu build their library for it once, cached in ~/.cache/lowbit/kv)")
def eval_cmd(artifact, backend, text, ctx, protocol, max_windows, no_kl, json_path, no_progress, simulator, kv):
    """Measure ARTIFACT on a backend: perplexity, KL-divergence from the float model and same-top-token rate
    (causal LMs), or cosine to the float model's sentence embeddings (encoders)."""
    import json
    from pathlib import Path

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    import runtime
    from runtime import eval as ev
    from runtime.inputs import eval_sentences

    con = _console()
    if json_path and not Path(json_path).resolve().parent.is_dir():
        raise LowbitError(f"--json {json_path}: the folder {Path(json_path).resolve().parent} does not exist", "create it or write the JSON elsewhere")
    m = runtime.load(artifact, kv)
    if simulator is not None:
        m.set_backend_options(backend, simulator=simulator)
    m.backend(backend)  # an unknown backend or one this artifact was not built for: one line, before any work
    show = not no_progress and sys.stderr.isatty()

    def float_model():  # loaded once the inputs are checked (reloading a real model takes a while)
        if no_kl:
            return None
        ref, why = ev.float_reference(m)
        if ref is None:
            con.print(f"no float model to compare with ({why}): KL and same-top-token need it; perplexity only")
        return ref

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True, disable=not show) as prog:
        task = None

        def tick(done, total):
            nonlocal task
            if task is None:
                task = prog.add_task(f"{backend}", total=total)
            prog.update(task, completed=done)

        if m.causal:
            body, path = ev.read_text(text)
            n = ctx or min(ev.DEFAULT_CTX, m.max_positions or ev.DEFAULT_CTX)
            r = ev.evaluate_lm(m, backend, body, n, protocol, max_windows, float_model, tick, path)
        else:
            if ctx or max_windows:
                raise LowbitError(f"--ctx and --max-windows apply to causal LMs; {m.name} is an encoder", "drop them")
            sentences = eval_sentences(text)
            if no_kl:
                raise LowbitError("--no-kl leaves an encoder nothing to measure (its figure is the cosine to the float model)", "drop --no-kl")
            ref, why = ev.float_reference(m)
            if ref is None:
                raise LowbitError(f"no float model to compare {m.name} with ({why})", "restore the model the artifact was compiled from")
            r = ev.evaluate_encoder(m, backend, sentences, ref, tick)
    con.print(ev.result_table(r))
    if json_path:
        tmp = Path(json_path).with_name(f".{Path(json_path).name}.tmp")
        try:
            tmp.write_text(json.dumps(r, indent=1) + "\n")
            tmp.replace(json_path)  # whole or not at all
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise LowbitError(f"cannot write --json {json_path}: {e.strerror}", "choose a path you can write to") from None
        con.print(f"wrote {json_path}")


def _parse_params(text: str | None) -> dict:
    """--params M=2,N=64,quant=w2g128a8 -> dict of array parameters (values stay strings; rtl.sim.make_config
    converts and checks them). quant=SPEC is parsed here into bits, ternary, act and group (mxfp4 / nvfp4:
    weight_format=e2m1, act and group; the other keys override it): the hardware layer takes bit widths and
    weight formats, not spec strings."""
    out = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        if "=" not in item:
            raise LowbitError(f"--params item '{item}' is not KEY=VALUE", "write e.g. --params M=2,N=64,quant=w2g128a8")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    if "quant" in out:
        from compiler.quant.spec import parse_spec

        spec = parse_spec(str(out.pop("quant")))
        if spec is None:
            raise LowbitError("quant 'none' has no hardware array", "give a spec such as w2g128a8")
        if spec.fp in ("mxfp4", "nvfp4"):  # E2M1 codes: the arrays' e2m1 weight format
            fmt = {"weight_format": "e2m1", "act": spec.act}
        elif spec.codebook:
            raise LowbitError(f"quant '{spec.name}' holds codebook weights, which no array multiplies", "give an integer spec such as w4g128a8, or mxfp4 / nvfp4")
        else:
            fmt = {"bits": spec.bits, "ternary": spec.ternary, "act": spec.act}
        if spec.group_size:
            fmt["group"] = spec.group_size
        out = {**fmt, **out}
    return out


@cli.command()
@click.argument("artifact", required=False, type=click.Path())
@click.option("--layer", default=None, help="with ARTIFACT: the compiled layer to run on the RTL (e.g. l0.q)")
@click.option("--design", type=DesignChoice(fp16=True), default=None, help="the array (required without ARTIFACT; with it, which accelerator target [first built])")
@click.option("--params", default=None, help="array parameters, e.g. M=2,N=64,K=4,quant=w2g128a8 (or bits=,act=,group=)")
@click.option("--simulator", type=click.Choice(["icarus", "verilator"]), default="icarus", show_default=True)
@click.option("--vectors", default=1000, show_default=True, type=click.IntRange(1, 1_000_000), help="random tiles to check")
@click.option("--waves", default=None, type=click.Path(), help="write a waveform (.fst; Verilator also .vcd)")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, SEED_MAX))
@click.option("--ids", default=None, help="with --layer: input token ids [the default prompt / first default sentence]")
@click.option("--rows", default=None, type=click.IntRange(1, 1 << 20), help="with --layer: use only the first ROWS tokens of the input")
def sim(artifact, layer, design, params, simulator, vectors, waves, seed, ids, rows):
    """Simulate a generated accelerator array against the golden model, bit for bit (--design), or run one
    compiled layer of ARTIFACT on the RTL and compare it with hwsim (ARTIFACT --layer NAME)."""
    if artifact is not None:
        from hwsim.designs._fp16 import FP16_DESIGNS

        if design in FP16_DESIGNS:
            raise LowbitError(f"design {design} runs alone (`lowbit sim --design {design}`), not as a compiled model's target", "pick one of the artifact's accelerator targets")
        if params or waves:
            raise LowbitError("--params and --waves apply to `lowbit sim --design` runs, not to a compiled layer", "drop them (the layer's array comes from the artifact)")
        _sim_layer(artifact, layer, design, simulator, ids, rows)
        return
    if layer is not None:
        raise LowbitError("--layer needs a compiled ARTIFACT", "run `lowbit sim OUT --layer NAME` with the -o folder of `lowbit compile --target lut-tc`")
    if design is None:
        raise LowbitError("lowbit sim needs --design (or an ARTIFACT with --layer)", "e.g. `lowbit sim --design lut-tc` or `lowbit sim OUT --layer l0.q`")
    import numpy as np

    from rtl.sim import make_config, run_sim, tile_slots
    from runtime.stimulus import quantizer_tiles

    from hwsim.designs._fp16 import FP16_DESIGNS

    p = _parse_params(params)
    if design in FP16_DESIGNS:  # (its own random and corner tiles: docs/hwsim/fp16_arrays.md)
        r = run_sim(design, p, simulator, vectors, waves, seed)
    else:
        cfg, run = make_config(design, p)
        tiles = quantizer_tiles(cfg, np.random.default_rng(seed), tile_slots(vectors), run["max_groups"])  # real tiles in the job mix
        r = run_sim(design, p, simulator, vectors, waves, seed, tiles=tiles)
    con = _console()
    con.print(r.summary())
    con.print(f"build {r.build_s:.1f} s, simulation {r.wall_s:.1f} s ({r.cycles_per_second:,.0f} cycles/s)")
    if not r.passed:
        sys.exit(1)


def _sim_layer(artifact, layer, design, simulator, ids, rows):
    import runtime
    from runtime.layer_check import check_layer

    if layer is None:
        raise LowbitError(f"no --layer given for artifact {artifact}", "name a compiled layer, e.g. `lowbit sim OUT --layer l0.q`")
    m = runtime.load(artifact)
    r = check_layer(m, layer, design, simulator, _parse_ids(ids) if ids else None, rows)
    con = _console()
    a = r["array"]
    con.print(
        f"layer {r['layer']} ({r['rows']} x {r['k']} -> {r['n']}) on {r['design']} {a['M']}x{a['N']} K={a['K']} "
        f"({'ternary' if a['ternary'] else 'e2m1' if a.get('weight_format') == 'e2m1' else 'w' + str(a['bits'])}{a['act']} g{a['group']}), {r['jobs']} jobs, {r['simulator']}"
    )
    con.print(f"values: RTL {'==' if r['bit_exact'] else '!='} hwsim bit for bit ({r['mismatches']} of {r['rows'] * r['n']} outputs differ)")
    con.print(
        f"cycles: RTL {r['rtl_cycles']:,}, hwsim {r['hwsim_cycles']:,} ({'equal' if r['cycles_equal'] else 'DIFFERENT'}; "
        f"hwsim with DRAM stalls {r['hwsim_cycles_with_dram']:,})"
    )
    con.print(f"build {r['build_s']:.1f} s, RTL simulation {r['rtl_wall_s']:.1f} s")
    if not (r["bit_exact"] and r["cycles_equal"]):
        sys.exit(1)


@cli.command()
@click.argument("artifact", type=click.Path())
def show(artifact):
    """Print an artifact's manifest summary and its graph."""
    from compiler.artifact import load_artifact

    a = load_artifact(artifact)
    mf = a.manifest
    con = _console()
    q = mf.get("quant")
    con.print(f"{a.path}: {mf['model']['name']} [{a.family}], lowbit {mf.get('lowbit_version', '?')}, format {mf['format_version']}")
    con.print(f"quant: {q.get('name', '?') + ' (' + q.get('method', '?') + ')' if q else 'float'}; targets: {', '.join(mf['targets'])}")
    for case, n in ((q or {}).get("summary") or {}).items():
        con.print(f"  {n:4d} x {case}")
    con.print(str(a.graph))


@cli.command("export")
@click.argument("artifact", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["gguf"]), default="gguf", show_default=True)
@click.option("-o", "--out", default=None, type=click.Path(), help="file to write [ARTIFACT.gguf beside the artifact]")
@click.option("--fallback", type=click.Choice(["error", "f16", "f32"]), default="error", show_default=True,
              help="layers no GGUF block type holds exactly (w3, w2, w8 asym, ...): refuse, or store them dequantized")
@click.option("--float-type", type=click.Choice(["f32", "f16"]), default="f32", show_default=True, help="float embedding / head matrices")
@click.option("--ternary-type", type=click.Choice(["TQ2_0", "TQ1_0"], case_sensitive=False), default="TQ2_0", show_default=True,
              help="ternary layers: TQ2_0 (2 bits per weight) or TQ1_0 (five trits per byte, 1.69)")
@click.option("--json", "as_json", is_flag=True, help="print the per-tensor report as JSON")
def export_cmd(artifact, fmt, out, fallback, float_type, ternary_type, as_json):
    """Write a compiled llama-family artifact as GGUF for llama.cpp (Q8_0 / Q5_0 / Q4_0 / Q5_1 / Q4_1 / TQ2_0 / TQ1_0, and Q2_K..Q6_K for two-level layers, from the codes as they are)."""
    import json

    from compiler.export.gguf import export_gguf

    r = export_gguf(artifact, out, fallback=fallback, float_type=float_type, ternary_type=ternary_type.upper())
    if as_json:
        click.echo(json.dumps(r.to_json(), indent=1))
        return
    con = _console()
    types = ", ".join(f"{t} {c}" for t, c in sorted(r.type_counts().items()))
    worst = max(r.tensors, key=lambda t: t.max_rel_change)
    con.print(f"wrote {r.path}: {len(r.tensors)} tensors ({types})")
    con.print(f"largest weight change from fp16 rounding of scales: {worst.max_rel_change:.3g} of the block's largest weight ({worst.name})")
    fell = [t.name for t in r.tensors if t.fallback]
    if fell:
        con.print(f"stored dequantized ({fallback}): {len(fell)} tensors, e.g. {fell[0]}")


def _designs(text: str | None) -> list[str]:
    from hwsim.designs import DESIGNS

    if text is None:
        return list(DESIGNS)
    ds = [d.strip() for d in text.split(",") if d.strip()]
    bad = [d for d in ds if d not in DESIGNS]
    if bad or not ds:
        raise LowbitError(f"--designs '{text}' names unknown designs {bad or '(none)'}", f"use a comma-separated list of {', '.join(DESIGNS)}")
    return ds


def _memory(dram_gbps, clock_ghz, arrays=1):
    from hwsim.memory import MemoryConfig

    try:
        return MemoryConfig(dram_gbps=dram_gbps, clock_ghz=clock_ghz, arrays=arrays)
    except ValueError as e:
        raise LowbitError(f"invalid memory parameters: {e}", "give positive --dram-gbps and --clock-ghz") from None


def _progress_cb(prog, tasks: dict):
    def cb(stage, done, total):
        if stage not in tasks:
            tasks[stage] = prog.add_task(stage, total=total)
        prog.update(tasks[stage], completed=done, total=total)

    return cb


@cli.command()
@click.argument("model")
@click.option("-o", "--out", required=True, type=click.Path(), help="report folder to write (report.md, report.html, PNGs, CSV/JSON)")
@click.option("--designs", default=None, help="comma-separated accelerator designs [all of them]")
@click.option("--quant", default="w4g128a8", show_default=True, help="weight/activation format for MODEL (an artifact keeps its own)")
@click.option("--prefill", default=128, show_default=True, type=click.IntRange(1, 65536), help="prefill tokens (M of the prefill layers)")
@click.option("--platforms", default="this-cpu,h100-sxm", show_default=True, help="CPU/GPU rooflines: this-cpu, h100-sxm, h200, rtx4090")
@click.option("--node", default="28nm", show_default=True, type=click.Choice(["45nm", "28nm", "22nm", "16nm", "7nm"]))
@click.option("--dram-gbps", default=64.0, show_default=True, type=Finite(max=100_000), help="accelerator DRAM bandwidth, GB/s (> 0)")
@click.option("--clock-ghz", default=1.0, show_default=True, type=Finite(max=10), help="accelerator clock, GHz (> 0)")
@click.option("--arrays", default=1, show_default=True, type=click.IntRange(1, 4096), help="arrays per design, sharing the DRAM")
@click.option("--no-sweep", is_flag=True, help="skip the design-space sweep (and its Pareto plot)")
@click.option("-j", "--jobs", default=None, type=click.IntRange(1, 256), help="sweep worker processes [CPU count]")
def report(model, out, designs, quant, prefill, platforms, node, dram_gbps, clock_ghz, arrays, no_sweep, jobs):
    """Cost-model report of MODEL (or a compiled artifact OUT) on the accelerator designs: Markdown, HTML, PNG plots, CSV/JSON."""
    import json

    from rich.progress import Progress

    from hwsim.cost.roofline import PLATFORMS
    from hwsim.report import build_report
    from runtime.shapes import model_linears

    ds = _designs(designs)
    plats = tuple(p.strip() for p in platforms.split(",") if p.strip())
    for p in plats:
        if p != "this-cpu" and p not in PLATFORMS:
            raise LowbitError(f"unknown platform '{p}'", f"use this-cpu or {', '.join(PLATFORMS)}")
    mem = _memory(dram_gbps, clock_ghz, arrays)
    ml = model_linears(model, quant)
    t0 = time.time()
    with Progress(transient=True, console=_console()) as prog:
        path = build_report(ml, ds, out, prefill=prefill, memory=mem, node=node, platforms=plats,
                            sweep=not no_sweep, jobs=jobs, progress=_progress_cb(prog, {}))
    con = _console()
    data = json.loads((path / "report.json").read_text())
    for d in ds:
        x = data["designs"][d]
        con.print(f"{d}: prefill {x['prefill_s'] * 1e3:.1f} ms, decode {x['decode_s'] * 1e3:.2f} ms/token, "
                  f"{x['decode_uj_per_token'] / 1e3:.1f} mJ/token, {arrays} x array {x['area']['array_mm2'] / arrays:.3f} mm^2 ({node})")
    for r in (data.get("blocks") or {}).get("rows", []):
        if r["phase"] == "prefill":
            con.print(f"{r['design']} one block, prefill {r['S']}: linears {r['linears_cycles']:,.0f} / attention matmuls {r['attn_matmul_cycles']:,} / "
                      f"vector unit {r['vector_cycles']:,} cycles; {r['linears_uj']:.1f} / {r['attn_matmul_uj']:.1f} / {r['vector_uj']:.1f} uJ")
    con.print(f"wrote {path / 'report.md'} and {path / 'report.html'} in {time.time() - t0:.1f} s")


@cli.command()
@click.argument("model", default="llama-1b")
@click.option("-o", "--out", required=True, type=click.Path(), help="folder for sweep.csv and pareto.png")
@click.option("--designs", default=None, help="comma-separated accelerator designs [all of them]")
@click.option("--shapes", default="2x64,4x64,2x128,8x32", show_default=True, help="array shapes MxN (K=4 per beat)")
@click.option("--bits", default="2,4", show_default=True, help="weight bits, and fp4 for E2M1 weights (mxfp4 / nvfp4 codes)")
@click.option("--acts", default="a8,a16", show_default=True, help="activation modes")
@click.option("--groups", default="64,128", show_default=True, help="group sizes")
@click.option("--prefill", default=128, show_default=True, type=click.IntRange(1, 65536))
@click.option("--node", default="28nm", show_default=True, type=click.Choice(["45nm", "28nm", "22nm", "16nm", "7nm"]))
@click.option("--dram-gbps", default=64.0, show_default=True, type=Finite(max=100_000), help="accelerator DRAM bandwidth, GB/s (> 0)")
@click.option("--clock-ghz", default=1.0, show_default=True, type=Finite(max=10), help="accelerator clock, GHz (> 0)")
@click.option("-j", "--jobs", default=None, type=click.IntRange(1, 256), help="worker processes; with --engine ray and no --address, the CPUs of the local Ray [CPU count]")
@click.option("--engine", default="local", show_default=True, type=click.Choice(["local", "ray"]), help="run the jobs in local processes or as Ray tasks")
@click.option("--address", default=None, help="with --engine ray: the Ray cluster's head, HOST:PORT (`ray start --head`) [a local Ray started here]")
@click.option("--synth-pareto", default=0, show_default=True, type=click.IntRange(0, 64), help="synthesize the N smallest Pareto points with yosys (synth.csv, synth/)")
@click.option("--sim-pareto", default=0, show_default=True, type=click.IntRange(0, 64), help="run `lowbit sim` on the N smallest Pareto points (sim.csv)")
@click.option("--vectors", default=200, show_default=True, type=click.IntRange(1, 1_000_000), help="with --sim-pareto: tiles per regression")
@click.option("--sim-layers", default=None, help="also run compiled layers on the RTL, as `lowbit sim ART --layer L` (layers.csv): ART:L1,L2 or ART for all")
@click.option("--no-cache", is_flag=True, help="run every job, and keep no results (default: cached in LOWBIT_CACHE_DIR/jobs)")
def sweep(model, out, designs, shapes, bits, acts, groups, prefill, node, dram_gbps, clock_ghz, jobs, engine, address,
          synth_pareto, sim_pareto, vectors, sim_layers, no_cache):
    """Design-space sweep (array shape x weight bits x activation mode x group size) on MODEL's linears: CSV + Pareto plot;
    optionally yosys and RTL runs of its Pareto points, on local processes or a Ray cluster."""
    from pathlib import Path

    from rich.progress import Progress

    from hwsim.report.engine import JobCache, make_engine
    from hwsim.report.sweep import MARKER, KIND, validate_grid
    from runtime import sweep as rsweep
    from runtime.shapes import model_linears

    grid = validate_grid(_designs(designs), shapes, bits, acts, groups)
    mem = _memory(dram_gbps, clock_ghz)
    ml = model_linears(model)
    layers = rsweep.parse_layers(sim_layers)
    if synth_pareto:
        from rtl.synth import check_yosys

        check_yosys()
    if sim_pareto or layers:
        from rtl.sim import check_simulator

        check_simulator("icarus")
    from compiler.fsutil import check_output_dir

    check_output_dir(Path(out), MARKER, KIND)  # before any job runs
    cache = None if no_cache else JobCache.default()
    if cache is not None:
        cache.check()
    t0 = time.time()
    with make_engine(engine, jobs, address) as eng, Progress(*_sweep_columns(), transient=True, console=_console()) as prog:
        res = rsweep.run(out, ml, grid, eng, cache, prefill=prefill, memory=mem, node=node, synth_pareto=synth_pareto,
                         sim_pareto=sim_pareto, vectors=vectors, layers=layers, on_status=_sweep_status(prog, {}))
        where = f"{eng.name}, {eng.workers} worker{'s' if eng.workers != 1 else ''}"
    con = _console()
    sm = res.summary
    good, fit, ho = sm["configurations"], sm["fit"], sm["fit"]["holdout"]
    con.print(f"{good} configurations ({sm['invalid']} invalid) in {time.time() - t0:.1f} s ({where}); Pareto front (area, prefill time):")
    for r in sm["front"]:
        con.print(f"  {r['design']} {r['M']}x{r['N']} w{r['bits']}{r['act']} g{r['group']}: {r['area_mm2']:.3f} mm^2, "
                  f"prefill {r['prefill_s'] * 1e3:.1f} ms, decode {r['decode_tokens_per_s']:.1f} tokens/s")
    con.print(f"area: {sm['from_yosys']} configurations from yosys reports, {good - sm['from_yosys']} from the component model "
              f"(max error {fit['max_abs_rel_err'] * 100:.1f}% on the {len(fit['errors'])} reports it was fitted on"
              + (f", {max(abs(e['rel_err']) for e in ho) * 100:.1f}% on {len(ho)} held-out reports" if ho else "") + "; area_fit.json)")
    names = {"hwsim": "hwsim points", "synth": "syntheses", "sim": "RTL regressions", "layer": "compiled-layer runs"}
    total = sum(c["jobs"] for c in res.counts.values())
    cached = sum(c["cached"] for c in res.counts.values())
    con.print("jobs: " + ", ".join(f"{c['jobs']} {names[k]} ({c['cached']} cached{', %d failed' % c['failed'] if c['failed'] else ''})"
                                   for k, c in res.counts.items())
              + (f"; {cached} of {total} from the cache" if cache is not None else "; no cache"))
    written = ["sweep.csv", "pareto.png"] + [f for f, k in (("synth.csv", "synth"), ("sim.csv", "sim"), ("layers.csv", "layer")) if k in res.counts]
    con.print(f"wrote {', '.join(str(Path(out) / f) for f in written)}")
    for label, err in res.failures:
        click.echo(f"failed: {label}: {err}", err=True)
    if res.regressions_failed:
        click.echo(f"{res.regressions_failed} RTL run(s) disagreed with hwsim (sim.csv, layers.csv)", err=True)
    if res.failures or res.regressions_failed:
        sys.exit(1)


def _sweep_columns():
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    return (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[running]} running, {task.fields[failed]} failed, {task.fields[cached]} cached"), TimeRemainingColumn())


def _sweep_status(prog, tasks: dict):
    def cb(stage, st):
        if stage not in tasks:
            tasks[stage] = prog.add_task(stage, total=st.total, running=0, failed=0, cached=0)
        prog.update(tasks[stage], completed=st.done, total=st.total, running=st.running, failed=st.failed, cached=st.cached)

    return cb


@cli.command()
@click.argument("artifact", type=click.Path())
@click.option("--backend", default="ref", show_default=True, help="ref, tvm-cpu or mlir-cpu")
@click.option("--threads", default=None, help="comma-separated thread counts, e.g. 1,2; a count other than this process's runs in a child process [every core]")
@click.option("--prompt", default=128, show_default=True, type=click.IntRange(1, 1 << 20), help="prefill: prompt tokens")
@click.option("--ctx", default=0, show_default=True, type=click.IntRange(0, 1 << 20), help="decode: KV cache positions before the first timed step")
@click.option("--tokens", default=32, show_default=True, type=click.IntRange(0, 1 << 20), help="decode: timed steps (0: prefill only)")
@click.option("--json", "json_path", default=None, type=click.Path(dir_okay=False), help="also write the figures as JSON")
@click.option("--ops", is_flag=True, help="time one decode step and the prefill op by op (ref: graph nodes; tvm-cpu: the VM's kernel calls)")
@click.option("--kv", default=None, help="causal LMs: store the KV cache in this format instead of the artifact's (a --kv spec of `lowbit compile`, e.g. "
              "int4-rot-w128; tvm-cpu and mlir-cpu build their library for it once, cached in ~/.cache/lowbit/kv)")
def bench(artifact, backend, threads, prompt, ctx, tokens, json_path, ops, kv):
    """Prefill and decode tokens/s of ARTIFACT on this machine, against its bandwidth roofline."""
    from runtime.bench import bench as run_bench
    from runtime.bench import check_json_path, parse_threads, print_result, write_json

    counts = parse_threads(threads)
    if json_path:
        check_json_path(json_path)  # before anything is measured
    result = run_bench(artifact, backend, counts, prompt, ctx, tokens, ops, kv)
    con = _console()
    print_result(con, result)
    if json_path:
        write_json(result, json_path)
        con.print(f"wrote {json_path}")


def _usage_line(e: click.UsageError, argv) -> str:
    """click's usage error as one line: the message and where to read the usage (no usage block)."""
    msg = " ".join(e.format_message().split()).rstrip(".")
    if e.ctx is not None:
        where = e.ctx.command_path
    else:  # raised by click's parser before the command's context exists: the command is the first word naming one
        args = list(sys.argv[1:] if argv is None else argv)
        where = next((f"lowbit {a}" for a in args if a in cli.commands), "lowbit")
    return f"error: {msg}; see {where} --help"


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    click.echo(f"warning: {' '.join(str(message).split())}", err=True)


def _interrupted(signum: int):
    click.echo("interrupted", err=True)
    sys.exit(128 + signum)


def main(argv=None):
    """Entry point: user errors -> one line on stderr, exit code 2; SIGINT / SIGTERM -> "interrupted", 130 / 143."""
    import signal
    import warnings

    from compiler.fsutil import Interrupted, install_signal_handlers, interrupt_received, restore_signal_handlers

    previous = install_signal_handlers()
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            cli.main(args=argv, prog_name="lowbit", standalone_mode=False)
    except LowbitError as e:
        click.echo(e.line(), err=True)
        sys.exit(2)
    except Interrupted as e:
        _interrupted(e.signum)
    except click.exceptions.Abort:  # a KeyboardInterrupt that reached click (no handler of ours installed)
        _interrupted(signal.SIGINT)
    except click.UsageError as e:
        click.echo(_usage_line(e, argv), err=True)
        sys.exit(2)
    except click.ClickException as e:
        click.echo(f"error: {' '.join(e.format_message().split())}", err=True)
        sys.exit(2 if e.exit_code in (1, 2) else e.exit_code)
    except KeyboardInterrupt:
        _interrupted(signal.SIGINT)
    except BrokenPipeError:
        sys.exit(1)
    except SystemExit:
        raise
    except BaseException:
        # a signal that a native library turned into its own error (TVM re-raises it as a RuntimeError)
        if interrupt_received() is not None:
            _interrupted(interrupt_received())
        raise
    finally:
        restore_signal_handlers(previous)  # (main() also runs in-process, from tests and scripts)


if __name__ == "__main__":
    main()
