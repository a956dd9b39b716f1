"""Calibration sequences for GPTQ: text through the model's tokenizer, or seeded random token ids for
models with no real vocabulary (presets).

The default text is a built-in passage plus the docstrings of a fixed list of Python standard-library
modules: several hundred KB of English that every installation has, so calibration works offline. GPTQ
needs many distinct tokens (its Hessian is K x K: with fewer distinct calibration rows than input features it
overfits the calibration text), which one short passage cannot give.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compiler.errors import LowbitError

BUILTIN_TEXT = Path(__file__).with_name("calib_text.txt")
STDLIB_MODULES = (
    "argparse", "asyncio.events", "calendar", "collections", "csv", "datetime", "decimal", "difflib",
    "email.message", "fractions", "functools", "heapq", "http.client", "inspect", "json", "logging", "os",
    "pathlib", "pickle", "queue", "random", "re", "sched", "shutil", "smtplib", "socket", "statistics",
    "string", "subprocess", "tarfile", "tempfile", "textwrap", "threading", "typing", "unittest.case",
    "urllib.parse", "uuid", "wave", "xml.dom.minidom", "zipfile",
)  # fmt: skip


def default_text() -> str:
    import ast
    import importlib.util

    parts = [BUILTIN_TEXT.read_text(encoding="utf-8")]
    for mod in STDLIB_MODULES:
        spec = importlib.util.find_spec(mod)
        if spec is None or not (spec.origin or "").endswith(".py"):
            continue
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 200:
                    parts.append(doc)
    return "\n\n".join(parts)


def text_sequences(tok, text: str, n: int, seqlen: int, rng) -> list[np.ndarray]:
    """n token sequences of at most seqlen tokens, each one encoded on its own from a random span of text, so
    each carries the tokenizer's special tokens ([CLS] ... [SEP], <bos>) where real inputs have them: models
    treat those positions very differently, and GPTQ only protects the directions its inputs exercise."""
    text = " ".join(text.split())
    if not text:
        raise LowbitError("the calibration text is empty", "pass a text file with some content via --calib")
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
        seqs.append(np.array(ids[:seqlen], np.int64))
    return seqs


def calibration_feeds(model, n_samples: int = 8, seqlen: int = 128, text_file: str | None = None, seed: int = 0) -> list[dict]:
    from compiler.frontend.llama import empty_cache
    from compiler.frontend.tokenizer import HFTokenizer

    hp = model.graph.meta["hparams"]
    if model.family == "bert":
        seqlen = min(seqlen, hp["max_positions"])
    rng = np.random.default_rng(seed)
    if text_file is not None:
        p = Path(text_file)
        if not p.is_file():
            raise LowbitError(f"calibration file {p} does not exist", "pass a UTF-8 text file with --calib")
        if not isinstance(model.tokenizer, HFTokenizer):
            raise LowbitError(f"model {model.name} has no tokenizer to read calibration text with", "drop --calib (random tokens are used)")
    if isinstance(model.tokenizer, HFTokenizer):
        text = Path(text_file).read_text(encoding="utf-8", errors="replace") if text_file else default_text()
        seqs = text_sequences(model.tokenizer, text, n_samples, seqlen, rng)
    else:
        seqs = [rng.integers(3, hp["vocab"], seqlen).astype(np.int64) for _ in range(n_samples)]
    feeds = []
    for s in seqs:
        f = {"input_ids": s, "positions": np.arange(len(s), dtype=np.int64)}
        if model.causal:
            f.update(empty_cache(model.graph))
        feeds.append(f)
    return feeds
