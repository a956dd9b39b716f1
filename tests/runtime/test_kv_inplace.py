"""The preallocated KV cache written in place (compiler.frontend.llama's "inplace" form, LOWBIT_KV_CACHE=inplace)
against the concat form: the same tokens and logits on ref, tvm-cpu and mlir-cpu over a prefill and 22 decode steps, the cache
kept in one buffer across steps, and the end of its capacity as a one-line error."""

import numpy as np
import pytest

import runtime
from compiler.compile import compile_model
from compiler.errors import LowbitError
from compiler.frontend import llama
from runtime.model import CompiledModel
from tests.helpers import run_cli

BACKENDS = ["ref", "tvm-cpu", "mlir-cpu"]
PROMPT = [1, 87, 107, 104, 35, 116, 120, 108, 102, 110, 35, 101, 117, 44, 9, 300, 12]
FORCED = [5, 77, 301, 12, 400, 33, 2, 88, 150, 9, 61, 250, 19, 480, 7, 3, 222, 64, 100, 41, 17, 333]  # 22 decode steps
TOL = 1e-4  # tvm/mlir against themselves in the other form: float32 reassociation only (masked rows weigh 0)


@pytest.fixture(scope="module")
def models(tmp_path_factory, monkeypatch_module):
    root = tmp_path_factory.mktemp("kv")
    out = {}
    for kv in llama.KV_FORMS:
        monkeypatch_module.setenv("LOWBIT_KV_CACHE", kv)
        # a32: with fp16 activations a 1e-7 difference of the two forms' attention kernels can move an fp16 rounding
        # (kv f32: the concat form has a float32 cache only)
        compile_model("llama-tiny", root / kv, "w4g32a32", targets="ref,tvm-cpu,mlir-cpu", progress=False, kv="f32")
        out[kv] = runtime.load(root / kv)
    monkeypatch_module.delenv("LOWBIT_KV_CACHE")
    assert out["inplace"].kv_inplace and not out["concat"].kv_inplace
    assert out["inplace"].graph.inputs["past_key.0"].shape[0] == "C"
    return out


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def steps(m, backend, capacity=64):
    """Logits of the prompt, then of each forced token, and the final cache."""
    b = m.backend(backend)
    logits, cache = m.prefill(PROMPT, backend, capacity) if m.kv_inplace else m.prefill(PROMPT, backend)
    out = [logits]
    for i, tok in enumerate(FORCED):
        feeds = {"input_ids": np.array([tok], np.int64), "positions": np.array([len(PROMPT) + i], np.int64)}
        logits, cache = b.step(feeds, cache)
        out.append(logits)
    return out, cache


@pytest.mark.parametrize("backend", BACKENDS)
def test_inplace_equals_concat(models, backend):
    want, _ = steps(models["concat"], backend)
    got, _ = steps(models["inplace"], backend)
    assert len(got) == 1 + len(FORCED)
    for i, (g, w) in enumerate(zip(got, want)):
        if backend == "ref":
            np.testing.assert_array_equal(g, w, err_msg=f"step {i}")  # same arithmetic: bit for bit
        else:
            assert np.abs(g - w).max() <= TOL * np.abs(w).max(), f"{backend} step {i}"
    a = models["concat"].generate(PROMPT, 24, backend=backend, stop_ids=())
    b = models["inplace"].generate(PROMPT, 24, backend=backend, stop_ids=())
    assert a.tokens == b.tokens and len(b.tokens) == 24


def host(backend, t):
    return t if backend == "ref" else t.numpy() if backend.startswith("tvm") else np.asarray(t.to_host())


@pytest.mark.parametrize("backend", BACKENDS)
def test_cache_is_written_in_place(models, backend):
    """The cache the step returns is the buffer it was given (ref: the same numpy array; tvm: the same
    tensor object and data pointer; mlir: IREE wrote the new row into the device array passed in)."""
    m = models["inplace"]
    b = m.backend(backend)
    _, cache = m.prefill(PROMPT, backend, 32)
    first = dict(cache)
    ptr = {k: v.data_ptr() for k, v in first.items()} if backend.startswith("tvm") else None
    for i, tok in enumerate(FORCED[:3]):
        _, cache = b.step({"input_ids": np.array([tok], np.int64), "positions": np.array([len(PROMPT) + i], np.int64)}, cache)
        for k, v in cache.items():
            if backend == "ref":
                assert v is first[k]
            elif backend.startswith("tvm"):
                assert v.same_as(first[k]) and v.data_ptr() == ptr[k]
    for k, v in first.items():
        rows = host(backend, v)
        assert rows.shape[0] == 32
        n = len(PROMPT) + 3
        assert np.all(np.abs(rows[:n]).max(axis=(1, 2)) > 0), k  # every fed position's row was written
        assert not rows[n:].any(), k  # untouched rows stay as allocated
        np.testing.assert_allclose(rows, host(backend, cache[k]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_capacity_end_is_one_line(models, backend):
    m = models["inplace"]
    b = m.backend(backend)
    _, cache = m.prefill(PROMPT, backend, len(PROMPT) + 1)
    _, cache = b.step({"input_ids": np.array([5], np.int64), "positions": np.array([len(PROMPT)], np.int64)}, cache)  # the last row
    with pytest.raises(LowbitError, match=r"position 18 is past the KV cache's 18 rows") as e:
        b.step({"input_ids": np.array([6], np.int64), "positions": np.array([len(PROMPT) + 1], np.int64)}, cache)
    assert "\n" not in str(e.value)
    with pytest.raises(LowbitError, match="past the KV cache's 4 rows"):  # run() on a too-small cache, before native code writes
        b.run({"input_ids": np.arange(3, 9), "positions": np.arange(6), **m._cache_feeds(4)})


def test_generation_runs_to_the_context_end(models):
    a = models["inplace"]
    m = CompiledModel(a.graph, a.family, None, None, "tiny-40", max_positions=40)
    assert m.cache_capacity(len(PROMPT) + 23) == 40 and a.cache_capacity(41) == 256 and a.cache_capacity(300) == 512
    g = m.generate(PROMPT, 23, stop_ids=())  # positions 0..38 fed: the cache's 40 rows hold them all
    assert len(g.tokens) == 23
    with pytest.raises(LowbitError, match="more than the model's context of 40 positions"):
        m.generate(PROMPT, 24, stop_ids=())


def test_cli_run_generates_the_same_text(models, capsys):
    ids = ",".join(map(str, PROMPT))
    outs = [run_cli(["run", models[kv].path, "--backend", "tvm-cpu", "--ids", ids, "--tokens", "20"], capsys) for kv in llama.KV_FORMS]
    assert [o[0] for o in outs] == [0, 0]
    text = [[line for line in o[1].splitlines() if "tokens/s" not in line] for o in outs]  # all but the timings
    assert len(text[0]) >= 2
    assert text[0] == text[1]
    code, _, err = run_cli(["run", models["inplace"].path, "--ids", ids, "--tokens", "2040"], capsys)
    assert code == 2 and err.count("\n") == 1 and "more than the model's context of 2048 positions" in err


def test_a_bad_form_is_one_line(monkeypatch):
    from compiler.frontend import load_model

    monkeypatch.setenv("LOWBIT_KV_CACHE", "ring")
    with pytest.raises(LowbitError, match="LOWBIT_KV_CACHE"):
        load_model("llama-tiny")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("form", llama.KV_FORMS)
def test_prefill_of_the_last_row_only(models, backend, form):
    """prefill(last=True) (a generation's, whose prompt logits are not compared) is the full prefill's last row bit for
    bit, leaves the same cache (the decode steps after it give the same logits), and generation keeps the same
    tokens; tvm-cpu and mlir-cpu (with the in-place cache) run their module's main_last (the LM head on that row only)."""
    m = models[form]
    full, cache_full = m.prefill(PROMPT, backend, 64) if m.kv_inplace else m.prefill(PROMPT, backend)
    last, cache_last = m.prefill(PROMPT, backend, 64, last=True) if m.kv_inplace else m.prefill(PROMPT, backend, last=True)
    assert full.shape == (len(PROMPT), m.graph.meta["hparams"]["vocab"]) and last.shape == (1, full.shape[1])
    if backend == "mlir-cpu" and m.kv_inplace:  # IREE compiles main_last's [1, K] head on its own (static M = 1 tiles)
        np.testing.assert_allclose(last, full[-1:], rtol=0, atol=1e-5 * np.abs(full[-1:]).max())
    else:
        assert np.array_equal(last, full[-1:])
    b = m.backend(backend)
    for i, tok in enumerate(FORCED[:3]):
        feeds = {"input_ids": np.array([tok], np.int64), "positions": np.array([len(PROMPT) + i], np.int64)}
        a, cache_full = b.step(feeds, cache_full)
        c, cache_last = b.step(feeds, cache_last)
        assert np.array_equal(a, c), i
    g_all = m.generate(PROMPT, 6, backend, stop_ids=())
    g_last = m.generate(PROMPT, 6, backend, stop_ids=(), prompt_logits=False)
    assert g_last.tokens == g_all.tokens and g_last.prompt_logits.shape == (1, full.shape[1])
    if backend == "tvm-cpu" or (backend == "mlir-cpu" and m.kv_inplace):
        assert b.main_last is not None and "main_last" in b.info["functions"]
