import re
from pathlib import Path

from compiler.quant.calib import BUILTIN_TEXT, CORPUS_TEXTS, default_text

ALICE = Path(__file__).resolve().parents[3] / "runtime" / "data" / "alice.txt"


def _shingles(text: str, n: int = 8) -> set[str]:
    words = re.findall(r"[a-z']+", text.lower())
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def test_calibration_texts_are_disjoint_from_the_evaluation_text():
    # Calibrating on the text perplexity is measured on would flatter GPTQ: no 8-word run may be shared.
    evaluation = _shingles(ALICE.read_text(encoding="utf-8"))
    for p in (BUILTIN_TEXT, *CORPUS_TEXTS):
        own = _shingles(p.read_text(encoding="utf-8"))
        assert len(own) > 400 and not own & evaluation, p.name


def test_default_text_is_every_calibration_file():
    text = default_text()
    assert len(text) > 500_000
    for p in (BUILTIN_TEXT, *CORPUS_TEXTS):
        assert p.read_text(encoding="utf-8")[:200] in text
    assert (Path(BUILTIN_TEXT).parent / "README.md").read_text().count("calib_") >= 3
