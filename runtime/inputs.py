"""Default inputs: the prompt a causal LM runs on and the sentences an encoder embeds when the user gives
none (`lowbit run`, `lowbit sim OUT --layer`), and the feeds of one sequence."""

from __future__ import annotations

from pathlib import Path

import numpy as np

EVAL_SENTENCES = Path(__file__).resolve().parent / "data" / "sentences.txt"  # `lowbit eval` of encoders

DEFAULT_PROMPT = "The quick brown fox jumps over the lazy dog."
DEFAULT_SENTENCES = (
    "A man is playing a guitar on the stage.",
    "Someone performs music with a guitar in front of an audience.",
    "The stock market fell sharply after the announcement.",
    "Low-bit weights make matrix multiplication cheaper.",
    "Quantized models trade a little accuracy for speed.",
)


def default_texts(model) -> list[str]:
    """The default prompt of a causal LM, or the default sentences of an encoder."""
    return [DEFAULT_PROMPT] if model.causal else list(DEFAULT_SENTENCES)


def eval_sentences(path: str | Path | None = None) -> list[str]:
    """The sentences an encoder is evaluated on: one a line (blank lines skipped), the shipped set by default."""
    from compiler.errors import LowbitError

    p = Path(path) if path is not None else EVAL_SENTENCES
    try:
        lines = [s.strip() for s in p.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise LowbitError(f"--text {p} cannot be read as UTF-8 text ({e})", "pass a UTF-8 file with one sentence a line") from None
    if not any(lines):
        raise LowbitError(f"--text {p} has no sentences", "pass a file with one sentence a line")
    return [s for s in lines if s]


def sequence_feeds(model, ids: list[int] | None = None, rows: int | None = None) -> dict:
    """Feeds of one sequence: `ids`, or the model's first default text (ids 1..8 without a tokenizer), cut to
    `rows` tokens; a causal LM gets an empty KV cache."""
    if ids is None:
        ids = model.encode(default_texts(model)[0]) if model.tokenizer is not None else list(range(1, 9))
    if rows:
        ids = ids[:rows]
    model.check_ids(ids)
    feeds = {"input_ids": np.asarray(ids, np.int64), "positions": np.arange(len(ids), dtype=np.int64)}
    if model.causal:
        feeds.update(model._cache_feeds(len(ids)))
    return feeds
