"""Quantization quality on a real model: lowbit's quantizers next to llama.cpp's, on the same text and context.

Rows (smollm2-135m by default; the "float" model is the GGUF's weights dequantized, which every row starts from):
- lowbit: `lowbit eval` figures of compiled artifacts (float, keep, RTN and GPTQ at w8 / w4 g32 g64 sym asym /
  w3 / w2 / ternary): perplexity under both protocols (gptq: every position; llamacpp: the second half of each
  window), KL-divergence from the float model and the same-top-token rate.
- llama.cpp: llama-quantize (--allow-requantize) of the float model exported by lowbit as an F32 GGUF, to Q8_0,
  Q4_0, Q4_1, Q4_K_M, Q3_K_M, Q2_K, TQ2_0, and Q4_0 / Q4_K_M / Q3_K_M / Q2_K again with llama-imatrix's importance
  matrix of lowbit's calibration text; then llama-perplexity (its own protocol, = lowbit's llamacpp) with
  --kl-divergence against the F32 GGUF's logits.
- export check: lowbit's eval of an artifact (llamacpp protocol) against llama-perplexity of its GGUF export.
Bits per weight are of the block linears as GGUF would store them (fp16 scales), so the two tools' rows compare.

The llama.cpp tools come from benchmarks/llamacpp.py (built once into ~/.cache/lowbit, ~30 min on two cores).

Usage: python -m benchmarks.quality [--quick | --best | --rotate | --fp8 | --mx] [--model smollm2-135m] [--ctx 512] [--max-windows 8] [--text FILE]
       [--work DIR] [--json FILE] [--no-llamacpp] [--no-build]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks.common import machine

# (label, quant spec, method[+imatrix][+awq][+bpwB]); "none" is the float model, "keep" the checkpoint's own quantization
TWO_LEVEL = ("w4g32k-min", "w3g32k-min", "w3g16k-min", "w2g16k-min", "w2g16k4-min")
FULL_CONFIGS = [
    ("float", "none", "rtn"), ("keep", "keep", "rtn"),
    *[(f"{q} {m.upper()}", q, m) for m in ("rtn", "gptq") for q in ("w8g32", "w4g32", "w4g64", "w4g32-asym", "w4g64-asym", "w4g32-min", "w3g32", "w3g32-min", "w2g32", "w2g32-min", "ternary")],
    *[(f"{q} {m.upper()} imatrix", q, f"{m}+imatrix") for m in ("rtn", "gptq") for q in ("w4g32", "w3g32-min", "w2g32-min", *TWO_LEVEL)],
    *[(f"auto --bpw {b} GPTQ imatrix", "auto", f"gptq+imatrix+bpw{b}") for b in (4.5, 3.5, 2.75)],
]
QUICK_CONFIGS = [("float", "none", "rtn"), ("keep", "keep", "rtn"), ("w4g32 RTN", "w4g32", "rtn"), ("w4g32 GPTQ", "w4g32", "gptq")]
# lowbit's best method at each width (docs/results.md), for the one-run comparison with llama.cpp's best
BEST_CONFIGS = [
    ("float", "none", "rtn"), ("keep", "keep", "rtn"), ("w8g32 RTN", "w8g32", "rtn"),
    ("w4g32 GPTQ imatrix", "w4g32", "gptq+imatrix"), ("w4g32k-min GPTQ imatrix", "w4g32k-min", "gptq+imatrix"),
    ("w3g32k-min GPTQ imatrix", "w3g32k-min", "gptq+imatrix"), ("w3g16k-min GPTQ imatrix", "w3g16k-min", "gptq+imatrix"),
    ("w2g16k-min GPTQ imatrix", "w2g16k-min", "gptq+imatrix"), ("w2g16k-min-sp0.5 GPTQ imatrix", "w2g16k-min-sp0.5", "gptq+imatrix"),
    ("auto --bpw 2.75 GPTQ imatrix", "auto", "gptq+imatrix+bpw2.75"), ("ternary GPTQ", "ternary", "gptq"),
    # at the bits llama.cpp's own mixes take on this model (Q2_K 4.23, Q3_K_M 4.63: K = 576 falls back to wider types)
    ("auto --bpw 4.23 GPTQ imatrix", "auto", "gptq+imatrix+bpw4.23"), ("auto --bpw 4.63 GPTQ imatrix", "auto", "gptq+imatrix+bpw4.63"),
]
# number formats at 4 bits and 8-bit activations, each with and without --rotate hadamard (QuaRot's rotation)
ROTATE_CONFIGS = [
    ("float", "none", "rtn"),
    *[(f"{q} {m.upper()}{' rotate' if r else ''}", q, m + ("+rotate" if r else ""))
      for q, m in (("w4g32", "rtn"), ("mxfp4", "rtn"), ("nvfp4", "rtn"), ("nf4", "rtn"), ("w4g32a8", "rtn"), ("w8pca8", "rtn"), ("w4g32", "gptq"))
      for r in (False, True)],
]
# 8-bit weights and activations: int8 against FP8 E4M3 (per-token dynamic activations; per-channel and 128 x 128 block
# weight scales), each with and without --rotate hadamard
FP8_CONFIGS = [
    ("float", "none", "rtn"),
    *[(f"{q} RTN{' rotate' if r else ''}", q, "rtn" + ("+rotate" if r else ""))
      for q in ("w8pca8", "w8pcafp8", "fp8afp8", "fp8bafp8", "fp8") for r in (False, True)],
]
# OCP MX activations (amx8 = MXINT8, amxfp4 = MXFP4, blocks of 32) against per-token int8 and fp16, on 4-bit weights
MX_CONFIGS = [
    ("float", "none", "rtn"),
    *[(f"{q} RTN", q, "rtn") for q in ("mxfp4", "mxfp4amxfp4", "mxfp4amx8", "mxfp4a8", "nvfp4amxfp4", "w4g32", "w4g32amx8", "w4g32a8", "w8pcamxfp4")],
]
LLAMACPP_FULL = ["Q8_0", "Q4_0", "Q4_1", "Q4_K_M", "Q3_K_M", "Q2_K", "TQ2_0"]
# "-pure": llama-quantize --pure, every tensor in that type (Q2_K alone mixes in Q3_K / Q4_K tensors: 4.23 bpw on SmolLM2)
LLAMACPP_BEST = ["Q8_0", "Q4_0", "Q4_K_M", "Q3_K_M", "Q2_K", "Q2_K-pure", "TQ2_0"]
IMATRIX_TYPES = ["Q4_0", "Q4_K_M", "Q3_K_M", "Q2_K", "Q2_K-pure"]  # also quantized with llama-imatrix's importance matrix of the calibration text
LLAMACPP_QUICK = ["Q8_0", "Q4_0"]
# artifacts whose GGUF export llama-perplexity is run on (exact block types)
EXPORT_FULL = ["keep", "w4g32 RTN", "w4g32-asym RTN", "w8g32 RTN", "w4g32 GPTQ"]
EXPORT_QUICK = ["keep", "w4g32 RTN"]


@dataclass
class Row:
    system: str  # "lowbit" | "llama.cpp"
    label: str
    bpw: float | None = None
    ppl_gptq: float | None = None
    ppl_llamacpp: float | None = None
    kl: float | None = None
    same_top: float | None = None
    seconds: float | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)


class CachedReference:
    """The float model's logits, computed once per window and shared by every row and both protocols."""

    def __init__(self, model):
        self.model = model
        self.cache: dict[tuple, np.ndarray] = {}

    def prefill(self, ids, backend="ref"):
        key = tuple(ids)
        if key not in self.cache:
            self.cache[key] = self.model.prefill(list(ids), backend)[0]
        return self.cache[key], None


# ---- lowbit ------------------------------------------------------------------------------------------------

def linear_bpw(artifact: Path) -> float | None:
    """Bits per weight of the block linears stored with fp16 scales (and fp16 minimums / offsets where asymmetric),
    GGUF's accounting (compiler.quant.bpw): w4g32 = 4.5 (Q4_0), w4g32-asym = 5.0 (Q4_1), w8g32 = 8.5 (Q8_0). None
    for a float model."""
    from compiler.artifact import load_artifact
    from compiler.quant.bpw import graph_bpw

    return graph_bpw(load_artifact(artifact).graph)


def compile_rows(model: str, configs, work: Path, calib_samples: int | None):
    """label -> (artifact, compile seconds) for the configs that compile; label -> reason for those that do not."""
    from compiler.compile import compile_model
    from compiler.errors import LowbitError

    done, failed = {}, {}
    for label, quant, how in configs:
        method, *flags = how.split("+")
        bpw = next((float(f[3:]) for f in flags if f.startswith("bpw")), None)
        out = work / "lowbit" / re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
        t = time.perf_counter()
        if not (out / "manifest.json").is_file():
            try:
                compile_model(model, out, quant=quant, method=method, targets="ref", progress=False, calib_samples=calib_samples,
                              imatrix="imatrix" in flags, awq="awq" in flags, bpw=bpw, rotate="hadamard" if "rotate" in flags else None)
            except LowbitError as e:
                failed[label] = e.what
                print(f"  {label}: {e}", file=sys.stderr)
                continue
        done[label] = (out, time.perf_counter() - t)
        print(f"  compiled {label} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return done, failed


def eval_rows(arts: dict, text: str, ctx: int, max_windows: int, reference: CachedReference) -> list[Row]:
    import runtime
    from runtime.eval import evaluate_lm

    rows = []
    key = f"{ctx}-{max_windows or 0}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
    for label, (path, compile_s) in arts.items():
        m = runtime.load(path)
        cached = path / f".quality-eval-{key}.json"  # an artifact's figures, reused by a later run with the same text and windows
        if cached.is_file():
            r = json.loads(cached.read_text())
        else:
            r = {p: evaluate_lm(m, "ref", text, ctx, p, max_windows, reference=reference) for p in ("gptq", "llamacpp")}
            cached.write_text(json.dumps(r))
        # KL and same-top over the llamacpp protocol's positions: the ones llama-perplexity --kl-divergence scores
        g, lc = r["gptq"], r["llamacpp"]
        secs = g["seconds"]["total"] + lc["seconds"]["total"]  # of the evaluation itself, also when read back from the cache
        rows.append(Row("lowbit", label, linear_bpw(path), g["perplexity"], lc["perplexity"], lc["kl"]["mean"], lc["same_top"], secs,
                        extra={"compile_s": compile_s, "scored": g["scored"], "kl_gptq": g["kl"]["mean"], "same_top_gptq": g["same_top"], "windows": g["windows"]}))
        print(f"  evaluated {label}: ppl {rows[-1].ppl_gptq:.4f} / {rows[-1].ppl_llamacpp:.4f}", file=sys.stderr)
    return rows


# ---- llama.cpp ---------------------------------------------------------------------------------------------

def gguf_linear_bpw(path: Path) -> float:
    import gguf

    r = gguf.GGUFReader(str(path))
    bits = elems = 0
    for t in r.tensors:
        if t.name.startswith("blk.") and len(t.shape) == 2:
            bits += int(t.n_bytes) * 8
            elems += int(t.n_elements)
    return bits / elems


_PPL = re.compile(r"Final estimate: PPL = ([0-9.]+)")
_KLD = re.compile(r"Mean\s+KLD:\s+(-?[0-9.]+)")
_TOP = re.compile(r"Same top p:\s+([0-9.]+)")


def llama_perplexity(tools, model: Path, text_file: Path, ctx: int, chunks: int, threads: int, kld_base: Path | None = None,
                     write_base: bool = False) -> dict:
    cmd = [str(tools["llama-perplexity"]), "-m", str(model), "-f", str(text_file), "-c", str(ctx), "--chunks", str(chunks), "-t", str(threads),
           "-b", str(ctx), "-ctk", "f32", "-ctv", "f32"]
    if kld_base is not None:
        cmd += ["--kl-divergence-base", str(kld_base)] + ([] if write_base else ["--kl-divergence"])
    t = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    out = p.stdout
    if p.returncode != 0:
        raise RuntimeError(f"llama-perplexity failed on {model.name} (exit {p.returncode}):\n{out[-2000:]}")
    res = {"seconds": time.perf_counter() - t, "log": out}
    m = _PPL.search(out)
    res["ppl"] = float(m.group(1)) if m else None
    if m is None:  # with --kl-divergence the PPL is in the statistics block
        m2 = re.search(r"Mean PPL\(Q\)\s*:\s*([0-9.]+)", out)
        res["ppl"] = float(m2.group(1)) if m2 else None
    if res["ppl"] is None:  # exit 0 but no figure: say what it printed last
        print(f"  llama-perplexity on {model.name} printed no perplexity; its last lines:\n    " + "\n    ".join(out.strip().splitlines()[-5:]), file=sys.stderr)
    k = _KLD.search(out)
    s = _TOP.search(out)
    res["kl"] = float(k.group(1)) if k else None
    res["same_top"] = float(s.group(1)) / 100 if s else None
    return res


def llama_imatrix(tools, float_gguf: Path, work: Path, threads: int, seqlen: int = 128, chunks: int = 16) -> Path | None:
    """llama-imatrix of the float GGUF on lowbit's default calibration text (compiler.quant.calib: the text lowbit's
    --imatrix and GPTQ read, disjoint from the evaluation text), chunks x seqlen tokens as lowbit's 16 x 128."""
    from compiler.quant.calib import default_text

    out = work / "llamacpp" / "imatrix.gguf"
    if out.is_file():
        return out
    calib = work / "llamacpp" / "calib.txt"
    calib.write_text(default_text(), encoding="utf-8")
    p = subprocess.run([str(tools["llama-imatrix"]), "-m", str(float_gguf), "-f", str(calib), "-o", str(out), "-c", str(seqlen),
                        "--chunks", str(chunks), "-t", str(threads)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    if p.returncode != 0 or not out.is_file():
        print(f"  llama-imatrix failed (exit {p.returncode}): {p.stdout.strip().splitlines()[-1:] }", file=sys.stderr)
        return None
    return out


def llamacpp_rows(tools, float_gguf: Path, types, work: Path, text_file: Path, ctx: int, chunks: int, threads: int, imatrix_types=()):
    base = work / "llamacpp" / "f32.kld"
    base.parent.mkdir(parents=True, exist_ok=True)
    ref = llama_perplexity(tools, float_gguf, text_file, ctx, chunks, threads, base, write_base=True)
    rows = [Row("llama.cpp", "F32", 32.0, None, ref["ppl"], 0.0, 1.0, ref["seconds"], note="float GGUF (lowbit export)")]
    imat = llama_imatrix(tools, float_gguf, work, threads) if imatrix_types and "llama-imatrix" in tools else None
    jobs = [(qt, None) for qt in types] + ([(qt, imat) for qt in imatrix_types] if imat is not None else [])
    for qt, im in jobs:
        label = qt if im is None else f"{qt} imatrix"
        q = work / "llamacpp" / f"{label.replace(' ', '-')}.gguf"
        if not q.is_file():
            base, pure = (qt[: -len("-pure")], ["--pure"]) if qt.endswith("-pure") else (qt, [])
            cmd = [str(tools["llama-quantize"]), "--allow-requantize", *pure, *(["--imatrix", str(im)] if im is not None else []), str(float_gguf), str(q), base, str(threads)]
            p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
            if p.returncode != 0:
                q.unlink(missing_ok=True)
                rows.append(Row("llama.cpp", label, note=f"llama-quantize failed: {p.stdout.strip().splitlines()[-1] if p.stdout.strip() else p.returncode}"))
                continue
        r = llama_perplexity(tools, q, text_file, ctx, chunks, threads, base)
        rows.append(Row("llama.cpp", label, gguf_linear_bpw(q), None, r["ppl"], r["kl"], r["same_top"], r["seconds"],
                        note="importance matrix of lowbit's calibration text (16 x 128 tokens)" if im is not None else ""))
        print(f"  llama.cpp {label}: ppl {r['ppl']}", file=sys.stderr)
    return rows, ref


def export_checks(tools, arts: dict, labels, lowbit_rows: list[Row], work: Path, text_file: Path, ctx: int, chunks: int, threads: int):
    from compiler.errors import LowbitError
    from compiler.export.gguf import export_gguf

    by = {r.label: r for r in lowbit_rows}
    out = []
    for label in labels:
        if label not in arts:
            continue
        g = work / "export" / (arts[label][0].name + ".gguf")
        g.parent.mkdir(parents=True, exist_ok=True)
        try:
            rep = export_gguf(arts[label][0], g)
        except LowbitError as e:
            out.append({"label": label, "note": e.what})
            continue
        r = llama_perplexity(tools, g, text_file, ctx, chunks, threads)
        ours = by[label].ppl_llamacpp
        out.append({"label": label, "lowbit": ours, "llama_cpp": r["ppl"], "diff": (r["ppl"] - ours) / ours if r["ppl"] and ours else None,
                    "types": rep.type_counts(), "max_rel_change": rep.max_rel_change})
        print(f"  export {label}: lowbit {ours:.4f}, llama-perplexity {r['ppl']}", file=sys.stderr)
    return out


# ---- report ------------------------------------------------------------------------------------------------

def _f(v, fmt):
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def markdown(rows: list[Row], checks: list[dict], meta: dict) -> str:
    lines = [f"Machine: {meta['machine']}", "",
             (f"Model {meta['model']}, text {meta['text']} ({meta['tokens']:,} tokens), ctx {meta['ctx']}, {meta['windows']} windows "
              f"(gptq protocol: {meta['scored_gptq']:,} scored tokens; llamacpp: second half of each window). KL and same-top: against "
              "the float model over the llamacpp protocol's positions, for both tools."), "",
             "| system | quant | bpw (linears) | PPL gptq | PPL llama.cpp | KL | same top | seconds | note |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.system} | {r.label} | {_f(r.bpw, '.3f')} | {_f(r.ppl_gptq, '.4f')} | {_f(r.ppl_llamacpp, '.4f')} | {_f(r.kl, '.3g')} | "
                     f"{_f(r.same_top, '.4f')} | {_f(r.seconds, '.0f')} | {r.note} |")
    if checks:
        lines += ["", "Exported GGUF in llama.cpp (llamacpp protocol, same windows):", "",
                  "| artifact | GGUF types | fp16 scale change | lowbit PPL | llama-perplexity PPL | difference |", "|---|---|---|---|---|---|"]
        for c in checks:
            if "note" in c:
                lines.append(f"| {c['label']} | {c['note']} | | | | |")
                continue
            types = ", ".join(f"{k} {v}" for k, v in sorted(c["types"].items()))
            lines.append(f"| {c['label']} | {types} | {c['max_rel_change']:.2g} | {_f(c['lowbit'], '.4f')} | {_f(c['llama_cpp'], '.4f')} | "
                         f"{_f(None if c['diff'] is None else 100 * c['diff'], '+.2f')}% |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a reduced set: float, keep, w4g32 RTN/GPTQ; Q8_0, Q4_0; two export checks")
    ap.add_argument("--best", action="store_true", help="lowbit's best method per width against llama.cpp's quantizers with and without an imatrix")
    ap.add_argument("--rotate", action="store_true", help="the 4-bit formats and 8-bit activations with and without --rotate hadamard (lowbit rows only)")
    ap.add_argument("--fp8", action="store_true", help="W8A8 int8 against FP8 (afp8 activations, fp8 / fp8b weights), with and without rotation (lowbit rows only)")
    ap.add_argument("--mx", action="store_true", help="OCP MX activations (amx8, amxfp4) against a8 and a16 on 4-bit weights (lowbit rows only)")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--max-windows", type=int, default=8, help="windows of ctx tokens per evaluation (0: the whole text)")
    ap.add_argument("--text", default=None, help="UTF-8 text [runtime/data/alice.txt, lowbit eval's default]")
    ap.add_argument("--work", default=str(Path.home() / ".cache" / "lowbit" / "quality"), help="artifacts and GGUF files (reused when present)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calib-samples", type=int, default=None)
    ap.add_argument("--no-llamacpp", action="store_true", help="lowbit rows only")
    ap.add_argument("--no-build", action="store_true", help="use llama.cpp only if already built (else lowbit rows only)")
    ap.add_argument("--json", default=None, help="also write the rows as JSON")
    args = ap.parse_args(argv)

    import runtime
    from compiler.errors import LowbitError
    from runtime.eval import read_text
    from runtime.model import float_model

    text, text_path = read_text(args.text)
    work = Path(args.work) / args.model
    work.mkdir(parents=True, exist_ok=True)
    configs = QUICK_CONFIGS if args.quick else BEST_CONFIGS if args.best else ROTATE_CONFIGS if args.rotate else FP8_CONFIGS if args.fp8 else MX_CONFIGS if args.mx else FULL_CONFIGS
    args.no_llamacpp = args.no_llamacpp or args.rotate or args.fp8 or args.mx
    print(f"machine: {machine()}", file=sys.stderr)
    arts, failed = compile_rows(args.model, configs, work, args.calib_samples)
    fl = runtime.load(arts["float"][0])
    reference = CachedReference(float_model(fl.artifact))
    max_windows = args.max_windows or None
    rows = eval_rows(arts, text, args.ctx, max_windows, reference)
    rows += [Row("lowbit", label, note=f"not compiled: {why}") for label, why in failed.items()]
    n_tokens = len(fl.encode(text))
    windows = min(n_tokens // args.ctx, max_windows or 10**9)
    meta = {"machine": machine(), "model": args.model, "text": text_path.name, "tokens": n_tokens, "ctx": args.ctx, "windows": windows,
            "scored_gptq": rows[0].extra["scored"]}
    checks = []
    if not args.no_llamacpp:
        from benchmarks.llamacpp import ensure_tools
        from compiler.export.gguf import export_gguf

        try:
            tools = ensure_tools(build_if_missing=not args.no_build)
        except LowbitError as e:
            print(f"llama.cpp rows skipped: {e}", file=sys.stderr)
            tools = None
        if tools is not None:
            text_file = work / "eval.txt"
            text_file.write_text(text, encoding="utf-8")
            float_gguf = work / "llamacpp" / "f32.gguf"
            float_gguf.parent.mkdir(parents=True, exist_ok=True)
            export_gguf(arts["float"][0], float_gguf)
            types = LLAMACPP_QUICK if args.quick else LLAMACPP_BEST if args.best else LLAMACPP_FULL
            lrows, _ = llamacpp_rows(tools, float_gguf, types, work, text_file, args.ctx, windows, args.threads, () if args.quick else IMATRIX_TYPES)
            rows += lrows
            checks = export_checks(tools, arts, EXPORT_QUICK if args.quick or args.best else EXPORT_FULL, rows, work, text_file, args.ctx, windows, args.threads)
            # the float rows of both tools are the same model, so their llamacpp perplexities should agree
            checks.insert(0, {"label": "float (F32 export)", "lowbit": rows[0].ppl_llamacpp, "llama_cpp": lrows[0].ppl_llamacpp,
                              "diff": (lrows[0].ppl_llamacpp - rows[0].ppl_llamacpp) / rows[0].ppl_llamacpp if lrows[0].ppl_llamacpp else None,
                              "types": {"F32": "all"}, "max_rel_change": 0.0})
    md = markdown(rows, checks, meta)
    print(md)
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": [r.__dict__ for r in rows], "export_checks": checks}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
