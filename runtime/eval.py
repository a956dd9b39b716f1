"""Measured quality of a compiled model (`lowbit eval`).

Causal LMs: perplexity over a text, KL-divergence of the backend's next-token distribution from the float
model's and the rate at which both put the same token on top. The text is tokenized once (with BOS where the
tokenizer adds one) and cut into non-overlapping windows of ctx tokens; each window is one prefill call with
an empty KV cache. Two protocols choose the scored positions:

- gptq (GPTQ's `llama_eval`, the figure quantization papers quote): every position of a window but the first
  predicts the next token; the windows are plain slices of the token stream.
- llamacpp (llama.cpp's llama-perplexity, tools/perplexity/perplexity.cpp `perplexity()`): only the second
  half is scored: logits at positions ctx/2 .. ctx-2 predict tokens ctx/2+1 .. ctx-1 (ctx - ctx/2 - 1 per
  window), and where the tokenizer adds BOS, the first token of every window is replaced by BOS.
  (llama-perplexity refuses a text of fewer than 2 ctx tokens; here one window is enough.)

NLL, KL and argmax are computed in float64 from the backends' float32 logits; every mean is over all scored
positions. KL is KL(P_float || P_backend) = sum_v p_float(v) (log p_float(v) - log p_backend(v)), as llama.cpp's
--kl-divergence reports it. Encoders: cosine of each sentence embedding to the float model's, on a shipped set
of sentences (runtime/data/sentences.txt)."""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compiler.errors import LowbitError

DATA = Path(__file__).resolve().parent / "data"
DEFAULT_TEXT = DATA / "alice.txt"
PROTOCOLS = ("gptq", "llamacpp")
DEFAULT_CTX = 512


@dataclass
class Window:
    index: int
    start: int  # offset of the window's first token in the tokenized text
    ids: list[int]  # what the model reads (llamacpp: first token replaced by BOS)
    first: int  # first logit row scored; rows first .. len(ids)-2 predict ids[first+1:]

    @property
    def scored(self) -> int:
        return len(self.ids) - 1 - self.first


def windows(ids: list[int], ctx: int, protocol: str, bos_id: int | None = None) -> list[Window]:
    """The windows of a tokenized text under a protocol (module docstring); a tail shorter than ctx is dropped."""
    if protocol not in PROTOCOLS:
        raise LowbitError(f"unknown protocol '{protocol}'", f"use one of {', '.join(PROTOCOLS)}")
    out = []
    for i in range(len(ids) // ctx):
        w = list(ids[i * ctx : (i + 1) * ctx])
        first = 0
        if protocol == "llamacpp":
            first = ctx // 2
            if bos_id is not None:
                w[0] = bos_id
        out.append(Window(i, i * ctx, w, first))
    return out


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def window_nll(logits: np.ndarray, w: Window) -> np.ndarray:
    """Negative log-likelihood of every scored token of window w, from its logits [len(w.ids), V]."""
    rows = log_softmax(logits[w.first : len(w.ids) - 1])
    targets = np.asarray(w.ids[w.first + 1 :], np.int64)
    return -rows[np.arange(targets.size), targets]


def kl_and_top(test: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: KL(softmax(ref) || softmax(test)) in float64, and whether both argmaxes agree."""
    lt, lr = log_softmax(test), log_softmax(ref)
    kl = (np.exp(lr) * (lr - lt)).sum(axis=-1)
    return np.maximum(kl, 0.0), np.argmax(test, -1) == np.argmax(ref, -1)  # KL >= 0; rounding can dip below


def read_text(path: str | Path | None) -> tuple[str, Path]:
    p = Path(path) if path is not None else DEFAULT_TEXT
    try:
        return p.read_text(encoding="utf-8"), p
    except UnicodeDecodeError:
        raise LowbitError(f"--text {p} is not UTF-8 text", "pass a UTF-8 text file") from None
    except OSError as e:
        raise LowbitError(f"--text {p} cannot be read ({e.strerror})", "pass a readable text file") from None


def float_reference(model) -> tuple[object | None, str | None]:
    """The float model an artifact was compiled from (on ref), or None and the reason it is not available."""
    from runtime.model import float_model

    if model.artifact is None:
        return None, "the model is not a compiled artifact"
    try:
        return float_model(model.artifact), None
    except LowbitError as e:
        return None, e.what


def bos_for_windows(tokenizer) -> int | None:
    """The id llama.cpp's protocol puts first in every window: BOS where the tokenizer adds one."""
    if tokenizer is None or not getattr(tokenizer, "add_bos", False):
        return None
    bos = getattr(tokenizer, "bos_id", None)
    if bos is None:
        e = tokenizer.encode("")
        bos = e[0] if e else None
    return bos


def evaluate_lm(model, backend: str, text: str, ctx: int, protocol: str = "gptq", max_windows: int | None = None,
                reference=None, progress=None, text_path: Path | None = None) -> dict:
    """Perplexity of `model` on `backend` over `text`; with `reference` (a float CompiledModel run on ref, or a
    function returning one or None, called once the inputs are checked) also KL and same-top-token.
    progress(done, total) is called after each window."""
    if not model.causal:
        raise LowbitError(f"model {model.name} is an encoder; perplexity needs a causal LM", "drop --ctx / --protocol / --max-windows")
    limit = model.max_positions or model.graph.meta["hparams"].get("max_positions")
    if limit and ctx > limit:
        raise LowbitError(f"--ctx {ctx} is larger than the model's context of {limit} tokens", f"pass --ctx {limit} or less")
    model.backend(backend)  # an unknown backend fails before the text is tokenized
    ids = model.encode(text)
    ws = windows(ids, ctx, protocol, bos_for_windows(model.tokenizer))
    where = f"--text {text_path}" if text_path else "the text"
    if not ws:
        raise LowbitError(f"{where} has {len(ids)} tokens, fewer than one window of --ctx {ctx}", "pass a longer text or a smaller --ctx")
    if ws[0].scored < 1:
        raise LowbitError(f"--ctx {ctx} scores no position under protocol {protocol}", "pass a larger --ctx")
    if max_windows:
        ws = ws[:max_windows]
    if callable(reference):
        reference = reference()
    per, nll_all, kl_all, top_all, ref_nll_all = [], [], [], [], []
    t_model = t_ref = 0.0
    t0 = time.perf_counter()
    for k, w in enumerate(ws):
        t = time.perf_counter()
        logits, _ = model.prefill(w.ids, backend)
        t_model += time.perf_counter() - t
        nll = window_nll(logits, w)
        nll_all.append(nll)
        row = {"index": w.index, "start": w.start, "scored": w.scored, "nll": float(nll.mean()), "perplexity": math.exp(nll.mean())}
        if reference is not None:
            t = time.perf_counter()
            ref_logits, _ = reference.prefill(w.ids, "ref")
            t_ref += time.perf_counter() - t
            sl = slice(w.first, len(w.ids) - 1)
            kl, top = kl_and_top(logits[sl], ref_logits[sl])
            ref_nll = window_nll(ref_logits, w)
            kl_all.append(kl)
            top_all.append(top)
            ref_nll_all.append(ref_nll)
            row.update(kl=float(kl.mean()), same_top=float(top.mean()), float_perplexity=math.exp(ref_nll.mean()))
        per.append(row)
        if progress is not None:
            progress(k + 1, len(ws))
    nll = np.concatenate(nll_all)
    out = {
        "kind": "causal",
        "model": model.name,
        "artifact": str(model.path) if model.path else None,
        "quant": _quant_name(model),
        "backend": backend,
        "protocol": protocol,
        "ctx": ctx,
        "kv": model.graph.meta.get("kv_format", "f32") if model.graph.meta.get("kv") == "inplace" else None,
        "text": {"path": str(text_path) if text_path else None, "sha256": hashlib.sha256(text.encode()).hexdigest(), "chars": len(text), "tokens": len(ids)},
        "windows": len(ws),
        "scored": int(nll.size),
        "nll": float(nll.mean()),
        "perplexity": math.exp(nll.mean()),
        "float_perplexity": None,
        "kl": None,
        "same_top": None,
        "seconds": {"backend": t_model, "float": t_ref, "total": time.perf_counter() - t0},
        "per_window": per,
    }
    if reference is not None:
        kl, top, ref_nll = np.concatenate(kl_all), np.concatenate(top_all), np.concatenate(ref_nll_all)
        out["float_perplexity"] = math.exp(ref_nll.mean())
        out["kl"] = {"mean": float(kl.mean()), "median": float(np.median(kl)), "p99": float(np.percentile(kl, 99)), "max": float(kl.max())}
        out["same_top"] = float(top.mean())
    return out


def evaluate_encoder(model, backend: str, sentences: list[str], reference, progress=None) -> dict:
    """Cosine of each sentence embedding on `backend` to the float model's (`reference`, on ref)."""
    from runtime.compare import cosine

    if model.causal:
        raise LowbitError(f"model {model.name} is a causal LM", "evaluate it with perplexity (drop the encoder options)")
    model.backend(backend)
    t0 = time.perf_counter()
    per = []
    for k, s in enumerate(sentences):
        ids = model.encode(s)
        per.append({"sentence": s, "tokens": len(ids), "cosine": cosine(model.embed(ids, backend), reference.embed(ids, "ref"))})
        if progress is not None:
            progress(k + 1, len(sentences))
    cos = [p["cosine"] for p in per]
    return {
        "kind": "encoder",
        "model": model.name,
        "artifact": str(model.path) if model.path else None,
        "quant": _quant_name(model),
        "backend": backend,
        "sentences": len(per),
        "cosine_mean": float(np.mean(cos)),
        "cosine_min": float(np.min(cos)),
        "seconds": {"total": time.perf_counter() - t0},
        "per_sentence": per,
    }


def _quant_name(model) -> str:
    q = model.artifact.quant if model.artifact is not None else None
    return f"{q['name']} ({q['method']})" if q else "float"


def result_table(r: dict):
    """The summary of an evaluate_lm / evaluate_encoder result as a rich Table."""
    from rich.table import Table

    t = Table("metric", "value", title=f"{r['model']} [{r['quant']}] on {r['backend']}")
    if r["kind"] == "encoder":
        t.add_row("sentences", str(r["sentences"]))
        t.add_row("cosine to float, mean", f"{r['cosine_mean']:.6f}")
        t.add_row("cosine to float, min", f"{r['cosine_min']:.6f}")
        return t
    t.add_row("protocol", f"{r['protocol']}, ctx {r['ctx']}" + (f", KV cache {r['kv']}" if r.get("kv") else ""))
    t.add_row("windows / scored tokens", f"{r['windows']} / {r['scored']:,} (text: {r['text']['tokens']:,} tokens)")
    t.add_row("perplexity", f"{r['perplexity']:.4f}")
    if r["kl"] is not None:
        t.add_row("float perplexity", f"{r['float_perplexity']:.4f}")
        t.add_row("KL divergence from float, mean", f"{r['kl']['mean']:.6f}")
        t.add_row("KL divergence, median / p99 / max", f"{r['kl']['median']:.6f} / {r['kl']['p99']:.6f} / {r['kl']['max']:.6f}")
        t.add_row("same top token", f"{r['same_top']:.4f}")
    t.add_row("time", f"{r['seconds']['total']:.1f} s (backend {r['seconds']['backend']:.1f} s, float {r['seconds']['float']:.1f} s)")
    return t
