"""`lowbit eval`: perplexity under both protocols against a numpy computation written here from the
protocols' definitions, KL and same-top-token against the float model, the JSON, encoders, errors, and the
shipped evaluation text."""

import json
import math
import re
import shutil

import numpy as np
import pytest

import runtime
from runtime import eval as ev
from tests.helpers import run_cli

CTX = 32
TEXT = ev.DEFAULT_TEXT.read_text()[:100]  # 101 byte tokens with BOS: 3 windows of 32 (gptq and llamacpp alike)


@pytest.fixture(scope="module")
def arts(tmp_path_factory):
    from compiler.compile import compile_model

    d = tmp_path_factory.mktemp("eval")
    (d / "text.txt").write_text(TEXT)
    for name, spec in (("float", "none"), ("w4", "w4g64")):
        # --kv f32 for the float artifact: exactly the float model's graph (the default fp16 cache rounds K and V)
        compile_model("llama-tiny", d / name, spec, progress=False, kv="f32" if name == "float" else None)
    return d


def independent_nll(logits_of, ids, ctx, protocol, bos):
    """NLL per scored token, written from the protocols' definitions: gptq scores targets 1..ctx-1 of each
    window; llama.cpp replaces the first token with BOS and scores targets ctx/2+1 .. ctx-1."""
    out = []
    for s in range(0, len(ids) - ctx + 1, ctx):
        w = list(ids[s : s + ctx])
        lo = 1
        if protocol == "llamacpp":
            w[0] = bos
            lo = ctx // 2 + 1
        z = logits_of[tuple(w)].astype(np.float64)
        for t in range(lo, ctx):
            row = z[t - 1]
            m = row.max()
            out.append(m + math.log(math.fsum(np.exp(row - m))) - row[w[t]])
    return np.array(out)


@pytest.mark.parametrize("protocol", ["gptq", "llamacpp"])
def test_perplexity_matches_numpy(arts, protocol):
    m = runtime.load(arts / "w4")
    seen = {}  # the backend's logits of every window it ran, by the window's ids
    prefill = m.prefill
    m.prefill = lambda w, b="ref": (seen.setdefault(tuple(w), prefill(w, b)[0]), None)
    r = ev.evaluate_lm(m, "ref", TEXT, CTX, protocol)
    ids = m.encode(TEXT)
    assert ids[0] == 1  # the byte tokenizer adds BOS once, at the start of the text
    nll = independent_nll(seen, ids, CTX, protocol, bos=1)
    per_window = CTX - 1 if protocol == "gptq" else CTX - CTX // 2 - 1
    assert r["windows"] == len(ids) // CTX == 3 and r["scored"] == nll.size == 3 * per_window
    # float64 throughout: the two differ only in summation order (~1e-15 relative)
    assert r["nll"] == pytest.approx(nll.mean(), rel=1e-12)
    assert r["perplexity"] == pytest.approx(math.exp(nll.mean()), rel=1e-12)
    assert [w["nll"] for w in r["per_window"]] == pytest.approx(nll.reshape(3, per_window).mean(1).tolist(), rel=1e-12)


def test_kl_and_same_top_against_the_float_model(arts):
    f = runtime.load(arts / "float")
    ref, why = ev.float_reference(f)
    assert why is None
    r = ev.evaluate_lm(f, "ref", TEXT, CTX, "gptq", max_windows=1, reference=ref)
    assert r["kl"]["mean"] == 0.0 and r["kl"]["max"] == 0.0 and r["same_top"] == 1.0  # the same graph: identical logits
    assert r["float_perplexity"] == r["perplexity"]

    q = runtime.load(arts / "w4")
    ref, _ = ev.float_reference(q)
    r = ev.evaluate_lm(q, "ref", TEXT, CTX, "llamacpp", max_windows=1, reference=ref)
    assert r["windows"] == 1 and r["kl"]["mean"] > 1e-4 and r["same_top"] < 1.0  # W4 RTN moves the distributions
    # KL(P_float || P_w4) over the scored rows of window 0, from the two models' logits, computed here
    w = ev.windows(q.encode(TEXT), CTX, "llamacpp", 1)[0]
    a, b = (x.prefill(w.ids)[0][w.first : CTX - 1].astype(np.float64) for x in (q, ref))
    lp = a - a.max(1, keepdims=True) - np.log(np.exp(a - a.max(1, keepdims=True)).sum(1, keepdims=True))
    lf = b - b.max(1, keepdims=True) - np.log(np.exp(b - b.max(1, keepdims=True)).sum(1, keepdims=True))
    kl0 = float((np.exp(lf) * (lf - lp)).sum(1).mean())
    assert r["per_window"][0]["kl"] == pytest.approx(kl0, rel=1e-9)
    assert r["per_window"][0]["same_top"] == pytest.approx(float((a.argmax(1) == b.argmax(1)).mean()))


def test_cli_table_and_json(arts, capsys, tmp_path):
    out = tmp_path / "r.json"
    args = ["eval", arts / "w4", "--text", arts / "text.txt", "--ctx", CTX, "--protocol", "llamacpp", "--max-windows", 2, "--json", out]
    code, so, se = run_cli(args, capsys)
    assert code == 0, se
    r = json.loads(out.read_text())
    for key, typ in (("perplexity", float), ("nll", float), ("float_perplexity", float), ("same_top", float), ("windows", int), ("scored", int), ("ctx", int)):
        assert isinstance(r[key], typ), key
    assert r["kind"] == "causal" and r["protocol"] == "llamacpp" and r["backend"] == "ref" and r["quant"] == "w4g64 (rtn)"
    assert set(r["kl"]) == {"mean", "median", "p99", "max"}
    assert r["text"]["tokens"] == len(TEXT) + 1 and len(r["text"]["sha256"]) == 64
    assert len(r["per_window"]) == r["windows"] == 2
    assert sum(w["scored"] for w in r["per_window"]) == r["scored"] == 2 * (CTX - CTX // 2 - 1)
    assert [w["start"] for w in r["per_window"]] == [0, CTX]
    assert set(r["per_window"][0]) == {"index", "start", "scored", "nll", "perplexity", "kl", "same_top", "float_perplexity"}
    shown = float(re.search(r"perplexity\s*│\s*([0-9.]+)", so).group(1))
    assert shown == pytest.approx(r["perplexity"], abs=1e-4)
    assert "KL divergence from float, mean" in so and "same top token" in so


def test_without_a_float_source_perplexity_only(arts, tmp_path, capsys):
    art = tmp_path / "a"
    shutil.copytree(arts / "w4", art)
    mf = json.loads((art / "manifest.json").read_text())
    mf["model"]["source"] = {"kind": "hf", "path": str(tmp_path / "deleted-model")}  # compiled from a folder that is gone
    (art / "manifest.json").write_text(json.dumps(mf))
    code, so, se = run_cli(["eval", art, "--text", arts / "text.txt", "--ctx", CTX, "--max-windows", 1, "--json", tmp_path / "r.json"], capsys)
    assert code == 0, se
    assert "no float model to compare with" in so and "is gone" in so
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["kl"] is None and r["same_top"] is None and math.isfinite(r["perplexity"])


@pytest.mark.parametrize(
    "extra,msg",
    [
        (["--backend", "nope"], "unknown backend 'nope'"),
        (["--ctx", "4096"], "larger than the model's context of 2048"),
        (["--ctx", "512"], "fewer than one window of --ctx 512"),
        (["--json", "/nonexistent-folder/r.json"], "does not exist"),
    ],
)
def test_errors_are_one_line(arts, capsys, extra, msg):
    code, _, se = run_cli(["eval", arts / "w4", "--text", arts / "text.txt", *extra], capsys)
    assert code == 2 and msg in se and len(se.strip().splitlines()) == 1


def test_encoder_cosine(tmp_path, capsys):
    from runtime.inputs import eval_sentences

    assert len(eval_sentences()) == 40
    few = tmp_path / "s.txt"
    few.write_text("\n".join(eval_sentences()[:4]) + "\n\n")
    for name, spec in (("f", "none"), ("q", "w4g128")):
        assert run_cli(["compile", "bert-tiny", "-o", tmp_path / name, "--quant", spec], capsys)[0] == 0
    code, so, se = run_cli(["eval", tmp_path / "f", "--text", few, "--json", tmp_path / "f.json"], capsys)
    assert code == 0, se
    r = json.loads((tmp_path / "f.json").read_text())
    assert r["kind"] == "encoder" and r["sentences"] == len(r["per_sentence"]) == 4
    assert r["cosine_min"] == pytest.approx(1.0, abs=1e-12)  # the float artifact is the float model
    code, so, se = run_cli(["eval", tmp_path / "q", "--text", few, "--json", tmp_path / "q.json"], capsys)
    assert code == 0, se
    r = json.loads((tmp_path / "q.json").read_text())
    # W4 RTN on bert-tiny: test_cli's compare test holds it to >= 0.999 on one sentence; below 1 since it is quantized
    assert 0.99 < r["cosine_min"] <= r["cosine_mean"] < 1.0
    assert "cosine to float, mean" in so
    code, _, se = run_cli(["eval", tmp_path / "q", "--ctx", 64], capsys)
    assert code == 2 and "apply to causal LMs" in se


def test_shipped_text_is_large_prose_disjoint_from_calibration():
    from compiler.quant.calib import BUILTIN_TEXT

    text = ev.DEFAULT_TEXT.read_text(encoding="utf-8")
    words = text.split()
    assert len(words) >= 15000 and len(text.encode()) < 150_000
    assert (ev.DATA / "README.md").read_text().count("public domain") >= 1

    def grams(ws, n=8):
        return {tuple(w.lower() for w in ws[i : i + n]) for i in range(len(ws) - n + 1)}

    assert not grams(words) & grams(BUILTIN_TEXT.read_text().split())
