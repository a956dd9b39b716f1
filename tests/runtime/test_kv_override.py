"""A KV cache format given at run time (`lowbit run|eval|bench ART --kv SPEC`, runtime.load(path, kv=)): the artifact's
graph gets the other cache (compiler.passes.kv_quant.float_cache_graph undoes the compiled one exactly), ref reads it at
once, tvm-cpu and mlir-cpu build their library for it once into LOWBIT_CACHE_DIR/kv/."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import runtime
from compiler.compile import compile_model
from compiler.passes.kv_quant import float_cache_graph, kv_quant_graph
from tests.helpers import COMPILER_TOL, IDS, run_cli


def _sig(g):
    return [(n.op, n.inputs, n.outputs, n.attrs) for n in g.nodes], list(g.inputs.items()), g.outputs, g.meta


@settings(max_examples=25, deadline=None)
@given(fmt=st.sampled_from(["f32", "fp16", "fp8", "int8", "int4"]), rot=st.booleans(), window=st.sampled_from([0, 8, 32]), kc=st.booleans())
def test_the_compiled_cache_is_undone_exactly(llama_tiny, fmt, rot, window, kc):
    quantized = fmt not in ("f32", "fp16")
    spec = fmt + ("-rot" if rot else "") + ("-kc" if kc and fmt == "int4" and window >= 32 else "") + (f"-w{window}" if window and quantized else "")
    g = kv_quant_graph(llama_tiny.graph, spec)
    back = float_cache_graph(g)
    assert _sig(back) == _sig(llama_tiny.graph), spec
    assert _sig(kv_quant_graph(back, spec)) == _sig(g)


@pytest.fixture(scope="module")
def fp16_artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("kvo") / "a"
    compile_model("llama-tiny", out, "w4g32", targets="ref,tvm-cpu,mlir-cpu", progress=False)
    return out


def test_ref_reads_the_override_as_if_compiled_so(fp16_artifact, tmp_path):
    direct = tmp_path / "int4"
    compile_model("llama-tiny", direct, "w4g32", targets="ref", progress=False, kv="int4-rot-w8")
    a, b = runtime.load(fp16_artifact, kv="int4-rot-w8"), runtime.load(direct)
    assert a.graph.meta["kv_format"] == "int4-rot-w8" and a.kv_override == "int4-rot-w8"
    assert runtime.load(fp16_artifact, kv="fp16").kv_override is None  # the artifact's own format: nothing to do
    la, _ = a.prefill(IDS, "ref", 32)
    lb, _ = b.prefill(IDS, "ref", 32)
    np.testing.assert_array_equal(la, lb)


@pytest.mark.parametrize("backend", ["tvm-cpu", "mlir-cpu"])
def test_compiled_backends_build_once_and_agree_with_ref(fp16_artifact, tmp_path, monkeypatch, capsys, backend):
    monkeypatch.setenv("LOWBIT_CACHE_DIR", str(tmp_path / "cache"))
    m = runtime.load(fp16_artifact, kv="int8")
    got, _ = m.prefill(IDS, backend, 32)
    assert "building" in capsys.readouterr().err
    want, _ = m.prefill(IDS, "ref", 32)
    assert np.abs(got - want).max() <= COMPILER_TOL["a16"] * np.abs(want).max()
    built = list((tmp_path / "cache" / "kv").iterdir())
    assert len(built) == 1 and (built[0] / backend).is_dir()
    again = runtime.load(fp16_artifact, kv="int8")
    np.testing.assert_array_equal(again.prefill(IDS, backend, 32)[0], got)  # the cached build, loaded
    assert "building" not in capsys.readouterr().err and list((tmp_path / "cache" / "kv").iterdir()) == built


def test_cli_and_refusals(fp16_artifact, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LOWBIT_CACHE_DIR", str(tmp_path / "cache"))
    code, out, _ = run_cli(["eval", fp16_artifact, "--kv", "int4-rot-w8", "--ctx", "16", "--max-windows", "1", "--no-kl", "--text", _text(tmp_path)], capsys)
    assert code == 0 and "KV cache int4-rot-w8" in out
    code, out, _ = run_cli(["eval", fp16_artifact, "--ctx", "16", "--max-windows", "1", "--no-kl", "--text", _text(tmp_path)], capsys)
    assert code == 0 and "KV cache fp16" in out
    for args, words in ((["run", fp16_artifact, "--ids", "1,2,3", "--kv", "int9"], ["unknown KV cache format 'int9'"]),
                        (["run", fp16_artifact, "--ids", "1,2,3", "--kv", "int2"], ["head_dim 32"]),
                        (["run", fp16_artifact, "--ids", "1,2,3", "--kv", "int4", "--backend", "tvm-cuda"], ["tvm-cuda", "float KV cache"])):
        code, _, err = run_cli(args, capsys)
        assert code != 0 and all(w in err for w in words) and len(err.strip().splitlines()) == 1, err
    enc = tmp_path / "enc"
    compile_model("bert-tiny", enc, "w4g32", targets="ref", progress=False)
    code, _, err = run_cli(["run", enc, "--kv", "int4"], capsys)
    assert code != 0 and "no in-place KV cache" in err and len(err.strip().splitlines()) == 1


def _text(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("the quick brown fox jumps over the lazy dog. " * 20)
    return p
