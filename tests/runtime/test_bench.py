"""`lowbit bench` end to end on tiny artifacts: the table, the JSON figures, the per-op breakdown and every user
error as one line. Speeds are never asserted, only that they are measured (positive, finite)."""

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import run_cli


@pytest.fixture(scope="module")
def arts(tmp_path_factory):
    from compiler.compile import compile_model

    root = tmp_path_factory.mktemp("bench")
    compile_model("llama-tiny", root / "llama", quant="w4g32", targets="ref,tvm-cpu", progress=False)
    compile_model("bert-tiny", root / "bert", quant="w4g128", targets="ref", progress=False)
    return root


@pytest.fixture(scope="module")
def here():
    """The thread count this process already runs with: measured in-process (no child process)."""
    from runtime.bench import process_threads

    return process_threads("tvm-cpu")


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_ref_table_and_json(arts, here, tmp_path, capsys):
    out = tmp_path / "r.json"
    code, so, se = run_cli(["bench", arts / "llama", "--threads", here, "--prompt", 8, "--ctx", 16, "--tokens", 3, "--json", out], capsys)
    assert code == 0, se
    header = next(line for line in so.splitlines() if "threads" in line)
    assert header.split("┃")[1:-1] and [c.strip() for c in header.split("┃")[1:-1]] == ["threads", "pp tok/s", "tg tok/s", "MB/step", "GB/s", "roofline", "share"]
    assert "prefill pp8, decode tg3 at ctx 16" in " ".join(so.split())
    r = json.loads(out.read_text())
    assert r["backend"] == "ref" and r["quant"] == "w4g32" and "cores" in r["machine"]
    (run,) = r["runs"]
    assert run["threads"] == here and run["prompt"] == 8 and run["ctx"] == 16 and run["tokens"] == 3
    for k in ("prefill_s", "prefill_tok_s", "decode_s", "decode_tok_s", "bandwidth_gbs", "step_bytes", "roofline_tok_s", "roofline_share"):
        assert _positive(run[k]), (k, run[k])
    assert run["decode_tok_s"] == pytest.approx(3 / run["decode_s"])
    assert run["roofline_share"] == pytest.approx(run["decode_tok_s"] / run["roofline_tok_s"])
    # bytes per step: every weight once + one embedding row + the KV cache at the middle of the run (ctx 16 + 1)
    kv = 2 * 4 * 17 * 4 * 32 * 4
    assert run["step_bytes"] > kv and run["step_float_bytes"] < run["step_bytes"]


@pytest.mark.parametrize("backend,kernel,fraction", [("ref", "qlinear", 0.5), ("tvm-cpu", "qlinear_", 0.2)])
def test_ops_breakdown(arts, here, tmp_path, capsys, backend, kernel, fraction):
    """The timed ops sum to at most the step and to at least `fraction` of it (the rest is the time between
    timed calls: the interpreter's bookkeeping, the VM's dispatch and the Python timing hook)."""
    out = tmp_path / "o.json"
    code, so, se = run_cli(["bench", arts / "llama", "--backend", backend, "--threads", here, "--prompt", 4, "--tokens", 2, "--ops", "--json", out], capsys)
    assert code == 0, se
    run = json.loads(out.read_text())["runs"][0]
    flat = " ".join(so.split())
    assert "one decode step at ctx 0" in flat and "the prefill of 4 tokens" in flat
    for key in ("ops", "prefill_ops"):  # a decode step, and the prefill
        o = run[key]
        names = [r["op"] for r in o["ops"]]
        assert any(n.startswith(kernel) for n in names) and names[-1] == "(between calls)"
        assert names[0] in so
        timed = sum(r["s"] for r in o["ops"][:-1])
        assert 0 < timed <= o["step_s"] * 1.0001
        assert timed >= fraction * o["step_s"], (key, timed, o["step_s"])
        assert sum(r["s"] for r in o["ops"]) == pytest.approx(o["step_s"], rel=1e-6)
        if backend == "ref":  # every node once: 4 layers x 7 qlinears
            assert {r["op"]: r["calls"] for r in o["ops"]}["qlinear"] == 28


def test_other_thread_count_runs_in_a_child(arts, here, tmp_path, capsys):
    other = 2 if here == 1 else 1
    out = tmp_path / "t.json"
    code, _so, se = run_cli(["bench", arts / "llama", "--backend", "tvm-cpu", "--threads", f"{here},{other}", "--prompt", 4, "--tokens", 2, "--json", out], capsys)
    assert code == 0, se
    runs = json.loads(out.read_text())["runs"]
    assert [r["threads"] for r in runs] == [here, other]
    assert all(_positive(r["decode_tok_s"]) and _positive(r["bandwidth_gbs"]) for r in runs)


def test_encoder_prefill_only(arts, here, capsys):
    code, so, se = run_cli(["bench", arts / "bert", "--threads", here, "--prompt", 8, "--tokens", 0], capsys)
    assert code == 0, se
    assert "prefill pp8;" in " ".join(so.split()) and "n/a" in so


@pytest.mark.parametrize(
    "args,words",
    [
        (["{empty}"], "manifest"),
        (["{bert}"], "encoder"),
        (["{llama}", "--ctx", "2040", "--tokens", "16"], "2056"),
        (["{llama}", "--prompt", "4096"], "context"),
        (["{llama}", "--threads", "0"], "--threads"),
        (["{llama}", "--threads", "1,x"], "'x'"),
        (["{llama}", "--backend", "hwsim:mixpe"], "CPU backends"),
        (["{llama}", "--backend", "mlir-cpu"], "no mlir-cpu build"),
        (["{llama}", "--json", "{empty}/no/such/r.json"], "does not exist"),
        (["{llama}", "--ops", "--tokens", "0"], "--ops"),
    ],
)
def test_errors_are_one_line(arts, tmp_path, capsys, args, words):
    (tmp_path / "empty").mkdir()
    paths = {"empty": tmp_path / "empty", "bert": arts / "bert", "llama": arts / "llama"}
    code, _so, se = run_cli(["bench", *[a.format(**paths) for a in args], "--prompt" if "--prompt" not in args else "--tokens", "4"], capsys)
    assert code == 2 and se.startswith("error: ") and se.count("\n") == 1, se
    assert words in se, se
    assert list((tmp_path / "empty").iterdir()) == []


# ---- benchmarks/llamacpp_compare.py: its arithmetic on fabricated measurements (llama.cpp never runs here)


def test_llamacpp_compare_rows():
    from benchmarks.llamacpp_compare import HEADER, compare_rows, table_rows

    key = {"model": "m", "format": "q4_0", "threads": 2}
    recs = [
        {**key, "engine": "llama.cpp", "test": "pp128", "tok_s": 100.0},
        {**key, "engine": "tvm-cpu", "test": "pp128", "tok_s": 50.0, "gbs": 10.0},
        {**key, "engine": "llama.cpp", "test": "tg64@d0", "tok_s": 20.0, "step_bytes": 1e8},
        {**key, "engine": "tvm-cpu", "test": "tg64@d0", "tok_s": 10.0, "step_bytes": 1.25e8, "gbs": 10.0},
        {**key, "engine": "mlir-cpu", "test": "tg64@d0", "tok_s": 30.0, "step_bytes": 1.25e8, "gbs": 12.0},
        {**key, "format": "q8_0", "engine": "tvm-cpu", "test": "tg64@d0", "tok_s": 5.0, "step_bytes": 2e8, "gbs": 10.0},  # no llama.cpp figure
    ]
    rows = {(r["format"], r["test"], r["backend"]): r for r in compare_rows(recs)}
    assert len(rows) == 4
    pp = rows["q4_0", "pp128", "tvm-cpu"]
    assert pp["ratio"] == 0.5 and "lowbit_share" not in pp
    # every roofline at 2 threads uses the best bandwidth measured at 2 threads: 12 GB/s (mlir-cpu's run)
    tg = rows["q4_0", "tg64@d0", "tvm-cpu"]
    assert tg["ratio"] == 0.5 and tg["gbs"] == 12.0
    assert tg["lowbit_roofline"] == pytest.approx(96.0) and tg["lowbit_share"] == pytest.approx(10 / 96)
    assert tg["llamacpp_roofline"] == pytest.approx(120.0) and tg["llamacpp_share"] == pytest.approx(20 / 120)
    ml = rows["q4_0", "tg64@d0", "mlir-cpu"]
    assert ml["ratio"] == 1.5 and ml["lowbit_share"] == pytest.approx(30 / 96)
    alone = rows["q8_0", "tg64@d0", "tvm-cpu"]
    assert alone["ratio"] is None and alone["llamacpp_share"] is None and alone["lowbit_share"] == pytest.approx(5 / 60)
    table = {(r[1], r[3], r[4]): r for r in table_rows(list(rows.values()))}
    assert all(len(r) == len(HEADER) for r in table.values())
    assert table["q4_0", "tg64@d0", "tvm-cpu"][5:12] == ["10.00", "20.00", "0.50", "10%", "17%", "96.0", "12.0"]
    assert table["q8_0", "tg64@d0", "tvm-cpu"][6:8] == ["-", "-"]


def test_gguf_step_bytes(arts, tmp_path):
    """llama.cpp's bytes per token from lowbit's own export: every tensor once, one embedding row, f16 KV cache."""
    import gguf

    from benchmarks.llamacpp_compare import gguf_step_bytes
    from compiler.export.gguf import export_gguf

    out = tmp_path / "t.gguf"
    export_gguf(arts / "llama", out)
    tensors = {t.name: int(t.n_bytes) for t in gguf.GGUFReader(str(out)).tensors}
    assert "output.weight" in tensors  # llama-tiny's head is not tied
    weights = sum(tensors.values()) - tensors["token_embd.weight"] + tensors["token_embd.weight"] // 512
    assert gguf_step_bytes(out, 0) == weights
    assert gguf_step_bytes(out, 10) - weights == 2 * 4 * 10 * 4 * 32 * 2  # K and V, 4 layers, 4 KV heads of 32, f16


@settings(max_examples=60, deadline=None)
@given(lowbit=st.floats(0.01, 1e4), llama=st.floats(0.01, 1e4), ours_b=st.floats(1e3, 1e10), theirs_b=st.floats(1e3, 1e10), gbs=st.floats(0.1, 1e3))
def test_llamacpp_compare_identities(lowbit, llama, ours_b, theirs_b, gbs):
    """ratio x llama.cpp = lowbit; share x roofline = tok/s; roofline x bytes = bandwidth, on both sides."""
    from benchmarks.llamacpp_compare import compare_rows

    key = {"model": "m", "format": "q4_0", "threads": 1, "test": "tg8@d0"}
    (r,) = compare_rows([{**key, "engine": "llama.cpp", "tok_s": llama, "step_bytes": theirs_b},
                         {**key, "engine": "tvm-cpu", "tok_s": lowbit, "step_bytes": ours_b, "gbs": gbs}])
    assert r["ratio"] * llama == pytest.approx(lowbit)
    assert r["lowbit_share"] * r["lowbit_roofline"] == pytest.approx(lowbit)
    assert r["llamacpp_share"] * r["llamacpp_roofline"] == pytest.approx(llama)
    assert r["lowbit_roofline"] * ours_b == pytest.approx(gbs * 1e9) and r["llamacpp_roofline"] * theirs_b == pytest.approx(gbs * 1e9)


@given(st.lists(st.integers(-3, 2000), min_size=1, max_size=5))
def test_parse_threads(counts):
    from compiler.errors import LowbitError
    from runtime.bench import MAX_THREADS, parse_threads

    text = ",".join(map(str, counts))
    if all(1 <= c <= MAX_THREADS for c in counts):
        assert parse_threads(text) == list(dict.fromkeys(counts))
    else:
        with pytest.raises(LowbitError, match="--threads"):
            parse_threads(text)


def test_inplace_kv_cache(here, tmp_path, capsys, monkeypatch):
    """A model whose KV cache is preallocated and written in place is measured through the backend's own
    cache (new_cache / step), at a context past the first rows."""
    import runtime
    from compiler import knobs
    from compiler.compile import compile_model

    kv = getattr(knobs, "KV_CACHE", None)  # LOWBIT_KV_CACHE selects the form at compile time
    if kv is None:
        pytest.skip("this tree has no in-place KV cache form")
    monkeypatch.setenv(kv.name, "inplace")
    compile_model("llama-tiny", tmp_path / "a", quant="w4g32", targets="ref", progress=False)
    assert runtime.load(tmp_path / "a").kv_inplace
    out = tmp_path / "i.json"
    code, _, se = run_cli(["bench", tmp_path / "a", "--threads", here, "--prompt", 4, "--ctx", 300, "--tokens", 2, "--ops", "--json", out], capsys)
    assert code == 0, se
    run = json.loads(out.read_text())["runs"][0]
    assert _positive(run["decode_tok_s"]) and {r["op"] for r in run["ops"]["ops"]} >= {"kv_write", "cache_attention", "qlinear"}
