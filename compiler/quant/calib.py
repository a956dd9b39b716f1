"""Calibration sequences for GPTQ: text through the model's tokenizer, or seeded random token ids for
models with no real vocabulary (presets).

The default text is a short built-in passage (calib_text.txt) and two public-domain English texts shipped
beside it (README.md there names their source and licence): about 540 KB of prose and dialogue, none of it
shared with the evaluation text (runtime/data/alice.txt; tests/compiler/quant/test_calib.py checks). GPTQ
needs many distinct tokens of ordinary text: its Hessian is K x K, and with few distinct calibration rows, or
rows unlike the text the model will read, it overfits the calibration data. Measured on SmolLM2-135M w4g32
(16 x 128 tokens, 4 windows of 512 tokens of alice.txt): calibrating on the built-in passage plus Python
standard-library docstrings gave perplexity 42.4 (worse than RTN's 34.2), these texts 34.0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compiler.errors import LowbitError

BUILTIN_TEXT = Path(__file__).with_name("calib_text.txt")
CORPUS_TEXTS = (Path(__file__).with_name("calib_lcet10.txt"), Path(__file__).with_name("calib_asyoulik.txt"))


def default_text() -> str:
    return "\n\n".join(p.read_text(encoding="utf-8") for p in (BUILTIN_TEXT, *CORPUS_TEXTS))


def text_sequences(tok, text: str, n: int, seqlen: int, rng, where: str = "") -> list[np.ndarray]:
    """n token sequences of at most seqlen tokens, each one encoded on its own from a random span of text, so
    each carries the tokenizer's special tokens ([CLS] ... [SEP], <bos>) where real inputs have them: models
    treat those positions very differently, and GPTQ only protects the directions its inputs exercise."""
    text = " ".join(text.split())
    if not text:
        raise LowbitError(f"the calibration text{f' {where}' if where else ''} is empty", "pass a text file with some content via --calib")
    seqs = []
    for _ in range(n):
        chars = seqlen * 4
        start = int(rng.integers(0, max(1, len(text) - chars)))
        start = text.find(" ", start) + 1 if text.find(" ", start) >= 0 else 0
        while True:
            ids = tok.encode(text[start : start + chars])
            if len(ids) <= seqlen or chars <= 16:
                break
            chars = int(chars * seqlen / len(ids) * 0.95)
        if not ids:
            raise LowbitError(f"the calibration text{f' {where}' if where else ''} encodes to no tokens", "pass ordinary text via --calib")
        seqs.append(np.array(ids[:seqlen], np.int64))
    return seqs


def read_calib_text(path) -> str:
    """The --calib file as text: one line naming it when it is missing, a folder, unreadable or not UTF-8."""
    from compiler.frontend.validate import read_text

    p = Path(path)
    if not p.exists():
        raise LowbitError(f"calibration file {p} does not exist", "pass a UTF-8 text file with --calib")
    return read_text(p, "pass a UTF-8 text file with --calib")


def calibration_memory(hp: dict, n_samples: int, seqlen: int) -> int:
    """An upper bound of the bytes GPTQ's block-by-block runs hold (compiler.quant.apply: every sample keeps each
    block's float32 values: about 10 hidden-wide and 4 intermediate-wide rows per token, and the attention scores,
    heads x seqlen per token). smollm2-135m at the default 16 x 128: 1.48 GB resident for the whole compile, against
    this bound's 3.0 GiB."""
    h, i, heads, layers = (int(hp.get(k) or 0) for k in ("hidden", "inter", "heads", "layers"))
    return 4 * n_samples * seqlen * max(layers, 1) * (10 * h + 4 * i + heads * seqlen)


def check_calibration_memory(hp: dict, n_samples: int, seqlen: int) -> None:
    import os

    need = calibration_memory(hp, n_samples, seqlen)
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return
    if need > 0.75 * have:
        raise LowbitError(
            f"GPTQ calibration with {n_samples} samples of {seqlen} tokens needs up to {need / 2**30:.1f} GiB, more than 3/4 of "
            f"this machine's {have / 2**30:.1f} GiB",
            "pass fewer --calib-samples or a smaller --calib-seqlen")


def calibration_feeds(model, n_samples: int = 8, seqlen: int = 128, text_file: str | None = None, seed: int = 0) -> list[dict]:
    from compiler.frontend.llama import empty_cache
    from compiler.frontend.tokenizer import HFTokenizer

    hp = model.graph.meta["hparams"]
    if model.family == "bert":
        seqlen = min(seqlen, hp["max_positions"])
    check_calibration_memory(hp, n_samples, seqlen)
    rng = np.random.default_rng(seed)
    text = None
    if text_file is not None:
        text = read_calib_text(text_file)
        if not isinstance(model.tokenizer, HFTokenizer):
            raise LowbitError(f"model {model.name} has no tokenizer to read calibration text with", "drop --calib (random tokens are used)")
    if isinstance(model.tokenizer, HFTokenizer):
        seqs = text_sequences(model.tokenizer, default_text() if text is None else text, n_samples, seqlen, rng, "" if text is None else str(text_file))
    else:
        seqs = [rng.integers(3, hp["vocab"], seqlen).astype(np.int64) for _ in range(n_samples)]
    feeds = []
    for s in seqs:
        f = {"input_ids": s, "positions": np.arange(len(s), dtype=np.int64)}
        if model.causal:
            f.update(empty_cache(model.graph, len(s)))
        feeds.append(f)
    return feeds
