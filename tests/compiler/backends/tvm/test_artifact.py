"""Artifacts with tvm-cpu / tvm-cuda folders: compile through the driver and the CLI, reload in a new process
without recompiling, `lowbit run --backend tvm-cpu --compare ref`, and the errors a user can meet."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.compiler.backends.tvm.common import tvm  # noqa: F401 (skips the module when TVM is missing)



@pytest.fixture(scope="module")
def llama_art(tmp_path_factory):
    from compiler.compile import compile_model

    out = tmp_path_factory.mktemp("tvm") / "llama-w4a8"
    compile_model("llama-tiny", out, quant="w4g128a8", targets="ref,tvm-cpu", progress=False)
    return out


def runtime_graph(art):
    from compiler.artifact import load_artifact

    return load_artifact(art).graph


def test_target_folder_layout(llama_art):
    mf = json.loads((llama_art / "manifest.json").read_text())
    assert set(mf["targets"]) == {"ref", "tvm-cpu"}
    assert mf["targets"]["tvm-cpu"]["library"] == "tvm-cpu/model.so"
    info = json.loads((llama_art / "tvm-cpu" / "tvm.json").read_text())
    assert info["inputs"][:2] == ["input_ids", "positions"] and info["outputs"][0] == "logits"
    # weights stay in weights.safetensors unless a kernel re-lays them out (then only those, in params.safetensors)
    relaid = [p["key"] for p in info["params"] if p["source"] == "relayout"]
    assert all(p["source"] in ("weights", "relayout") for p in info["params"])
    if relaid:
        from safetensors.numpy import load_file

        assert set(load_file(str(llama_art / "tvm-cpu" / "params.safetensors"))) == set(relaid)
    # every layer's kernel is the one the rule table picks for its shape
    from compiler.backends.tvm import kernels

    g = runtime_graph(llama_art)
    want = {n.outputs[0]: kernels.choose_qlinear_kernel(True, n.attrs["n"], n.attrs["k"], n.attrs["bits"], n.attrs["group_size"], n.attrs["act"], "cpu", n.attrs["layout"], len(n.inputs) == 5, bool(n.attrs.get("ternary")))[0].name for n in g.nodes if n.op == "qlinear"}
    assert set(info["kernels"].values()) == set(want.values())
    from compiler.knobs import compile_knobs_set

    if not compile_knobs_set("LOWBIT_TVM_"):  # (none set when the fixture compiled): nothing to record
        assert "knobs" not in info and "knobs" not in mf["targets"]["tvm-cpu"]
    # the library holds code, not weights: far smaller than the weights it is run with
    assert (llama_art / "tvm-cpu" / "model.so").stat().st_size < (llama_art / "weights.safetensors").stat().st_size
    assert not list(llama_art.parent.glob(".*tmp*"))


def test_mismatched_target_folder_is_refused(llama_art, tmp_path):
    import runtime
    from compiler.errors import LowbitError

    bad = tmp_path / "bad"
    shutil.copytree(llama_art, bad)
    info_file = bad / "tvm-cpu" / "tvm.json"
    info = json.loads(info_file.read_text())
    info["outputs"] = info["outputs"][::-1]
    info_file.write_text(json.dumps(info))
    with pytest.raises(LowbitError, match="does not match"):
        runtime.load(bad).backend("tvm-cpu")
    info["outputs"] = info["outputs"][::-1]
    info["host"]["features"].append("+an-instruction-set-this-cpu-lacks")
    info_file.write_text(json.dumps(info))
    with pytest.raises(LowbitError, match="lacks features"):
        runtime.load(bad).backend("tvm-cpu")
    (bad / "tvm-cpu" / "tvm.json").unlink()
    with pytest.raises(LowbitError, match="not compiled for tvm-cpu"):
        runtime.load(bad).backend("tvm-cpu")


def test_tvm_cuda_without_a_gpu_is_a_clear_error(tmp_path):
    import runtime
    from compiler.errors import LowbitError

    if tvm.cuda(0).exist:
        pytest.skip("this machine has a CUDA GPU")
    from compiler.compile import compile_model

    out = tmp_path / "cuda"
    compile_model("bert-tiny", out, quant="w4g128a8", targets="tvm-cuda", progress=False)
    assert (out / "tvm-cuda" / "kernels.cu").is_file() and (out / "tvm-cuda" / "model.so").is_file()
    with pytest.raises(LowbitError, match="needs an NVIDIA GPU"):
        runtime.load(out).backend("tvm-cuda")


def test_set_compile_knobs_are_recorded(tmp_path, monkeypatch):
    """A set compile knob changes the library, so tvm.json and the manifest's entry record it (and only the
    TVM backend's knobs: another backend's are not part of this target)."""
    from compiler import knobs
    from compiler.compile import compile_model

    for name in knobs.KNOBS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LOWBIT_TVM_FAST_CPU", "0")
    monkeypatch.setenv("LOWBIT_MLIR_A8_INT32", "1")
    out = tmp_path / "knobs"
    compile_model("bert-tiny", out, quant="w4g128", targets="tvm-cpu", progress=False)
    info = json.loads((out / "tvm-cpu" / "tvm.json").read_text())
    mf = json.loads((out / "manifest.json").read_text())
    assert info["knobs"] == mf["targets"]["tvm-cpu"]["knobs"] == {"LOWBIT_TVM_FAST_CPU": "0"}
    assert set(info["kernels"].values()) == {"dequant-cpu"}  # the knob's effect: every layer on the fallback


def test_unknown_target_is_still_rejected():
    from compiler.backends import parse_targets
    from compiler.errors import LowbitError

    assert [t.name for t in parse_targets("ref,tvm-cpu,tvm-cuda")] == ["ref", "tvm-cpu", "tvm-cuda"]
    with pytest.raises(LowbitError, match="tvm-metal"):
        parse_targets("tvm-metal")


def test_backend_outputs_equal_in_memory_model(llama_art):
    """The runtime backend (exported library, weights from the artifact) computes what the in-memory
    compiled module computes for the same graph."""
    import runtime
    from compiler.frontend.llama import empty_cache
    from tests.compiler.backends.tvm.common import InMemoryTVM

    m = runtime.load(llama_art)
    feeds = {"input_ids": np.array([3, 4, 5], np.int64), "positions": np.arange(3, dtype=np.int64), **empty_cache(m.graph, 3)}
    a = m.run(feeds, "tvm-cpu")
    b = InMemoryTVM(m.graph).run(feeds)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_a_kernel_with_relaid_out_weights_plugs_in_by_rule(monkeypatch, tmp_path):
    """The extension point for faster kernels: a rule whose kernel wants its own weight layout. Here a toy
    kernel reads codes unpacked to one byte each; the arrays land in tvm-cpu/params.safetensors and the
    runtime feeds them, with the results unchanged."""
    import dataclasses

    import runtime
    from compiler.backends.tvm import kernels, qlinear_te
    from compiler.compile import compile_model
    from compiler.quant.pack import unpack

    def relayout(packed, scales, zeros, shape):
        return {"packed": unpack(packed, shape.bits, shape.layout, shape.k), "scales": scales, "zeros": zeros}

    bytewise = kernels.QLinearKernel(
        "bytewise-cpu", lambda shape: qlinear_te.qlinear_te(dataclasses.replace(shape, bits=8, layout="dense")), qlinear_te.schedule_cpu_simple, relayout
    )
    table = kernels.rules
    monkeypatch.setattr(kernels, "rules", lambda **kw: [kernels.Rule(lambda s: s.target == "cpu" and s.bits == 4, bytewise), *table(**kw)])
    out = tmp_path / "relaid"
    compile_model("bert-tiny", out, quant="w4g64", targets="ref,tvm-cpu", progress=False)
    info = json.loads((out / "tvm-cpu" / "tvm.json").read_text())
    assert set(info["kernels"].values()) == {"bytewise-cpu"}
    assert {p["source"] for p in info["params"] if "qweight" in p["key"]} == {"relayout"}
    assert (out / "tvm-cpu" / "params.safetensors").is_file()
    m = runtime.load(out)
    ids = [1, 40, 50, 60, 2]
    a, b = m.embed(ids, "tvm-cpu"), m.embed(ids, "ref")
    assert np.abs(a - b).max() <= 5e-3 * np.abs(b).max()
