"""Artifacts with mlir-cpu / mlir-cuda folders: compile through the driver and the CLI (with --dump-mlir),
reload in a new process without recompiling, `lowbit run --backend mlir-cpu --compare ref`, and the errors
a user can meet."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest

from tests.helpers import run_cli
from tests.compiler.backends.mlir.common import rt  # noqa: F401 (skips the module when IREE is missing)



@pytest.fixture(scope="module")
def llama_art(tmp_path_factory):
    from compiler.backends import BuildOptions
    from compiler.compile import compile_model

    out = tmp_path_factory.mktemp("mlir") / "llama-w4a8"
    compile_model("llama-tiny", out, quant="w4g128a8", targets="ref,mlir-cpu", progress=False, options=BuildOptions(dump_mlir=True))
    return out


def test_target_folder_layout(llama_art):
    mf = json.loads((llama_art / "manifest.json").read_text())
    assert set(mf["targets"]) == {"ref", "mlir-cpu"}
    assert mf["targets"]["mlir-cpu"]["vmfb"] == "mlir-cpu/model.vmfb"
    folder = llama_art / "mlir-cpu"
    info = json.loads((folder / "mlir.json").read_text())
    assert info["inputs"][:2] == ["input_ids", "positions"] and info["outputs"][0] == "logits"
    assert "--iree-llvmcpu-reassociate-fp-reductions=true" in info["iree"]["flags"]
    # the blocked qlinear weights are in params.safetensors, everything else comes from weights.safetensors
    from safetensors.numpy import load_file

    relaid = {p["key"] for p in info["params"] if p["source"] == "relayout"}
    assert set(load_file(str(folder / "params.safetensors"))) == relaid and len(relaid) == 3 * 4 * 7
    assert set(info["kernels"].values()) == {"blocked32-f32-a8exact"}  # A8 sums are exact in fp32 at g128
    # --dump-mlir: our module and IREE's twelve phases, each a parseable .mlir
    stages = sorted(p.name for p in (folder / "stages").glob("*.mlir"))
    assert len(stages) == 12 and any("dispatch-creation" in s for s in stages) and any(".vm." in s for s in stages)
    assert mf["targets"]["mlir-cpu"]["mlir"][0] == "mlir-cpu/model.mlir" and len(mf["targets"]["mlir-cpu"]["mlir"]) == 13
    from iree.compiler import ir

    with ir.Context():
        assert ir.Module.parse((folder / "model.mlir").read_text()).operation.verify()
    from compiler.knobs import compile_knobs_set

    if not compile_knobs_set("LOWBIT_MLIR_"):  # (none set when the fixture compiled): nothing to record
        assert "knobs" not in info and "knobs" not in mf["targets"]["mlir-cpu"]
    # the vmfb holds code, not weights
    assert (folder / "model.vmfb").stat().st_size < (llama_art / "weights.safetensors").stat().st_size
    assert not list(llama_art.parent.glob(".*tmp*"))


def test_artifact_without_the_target_names_the_fix(llama_art, capsys):
    code, out, err = run_cli(["run", llama_art, "--backend", "mlir-cuda"], capsys)
    assert code == 2
    assert "was not compiled for mlir-cuda" in err and "--target mlir-cuda" in err


def test_broken_target_folder_is_refused(llama_art, tmp_path):
    import runtime
    from compiler.errors import LowbitError

    bad = tmp_path / "bad"
    shutil.copytree(llama_art, bad)
    info_file = bad / "mlir-cpu" / "mlir.json"
    info = json.loads(info_file.read_text())
    info["outputs"] = info["outputs"][::-1]
    info_file.write_text(json.dumps(info))
    with pytest.raises(LowbitError, match="does not match"):
        runtime.load(bad).backend("mlir-cpu")
    info["outputs"] = info["outputs"][::-1]
    info_file.write_text(json.dumps(info))
    (bad / "mlir-cpu" / "params.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(LowbitError, match="unreadable"):
        runtime.load(bad).backend("mlir-cpu")
    (bad / "mlir-cpu" / "model.vmfb").unlink()
    with pytest.raises(LowbitError, match="no mlir-cpu/model.vmfb"):
        runtime.load(bad).backend("mlir-cpu")


def test_set_compile_knobs_are_recorded(tmp_path, monkeypatch):
    """A set compile knob changes the module, so mlir.json and the manifest's entry record it (and only the
    MLIR backend's knobs)."""
    from compiler import knobs
    from compiler.compile import compile_model

    for name in knobs.KNOBS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LOWBIT_MLIR_A8_INT32", "1")
    monkeypatch.setenv("LOWBIT_TVM_FAST_CPU", "0")
    monkeypatch.setenv("LOWBIT_MLIR_THREADS", "1")  # a run knob: not part of the artifact
    out = tmp_path / "knobs"
    compile_model("bert-tiny", out, quant="w4g128a8", targets="mlir-cpu", progress=False)
    info = json.loads((out / "mlir-cpu" / "mlir.json").read_text())
    mf = json.loads((out / "manifest.json").read_text())
    assert info["knobs"] == mf["targets"]["mlir-cpu"]["knobs"] == {"LOWBIT_MLIR_A8_INT32": "1"}
    assert set(info["kernels"].values()) == {"blocked32-i32"}  # the knob's effect: int32 A8 group sums


def test_failed_build_leaves_nothing(tmp_path, monkeypatch, capsys):
    """sm_90 is refused (IREE 3.13 cannot build it) with one line and exit code 2, and no output is left."""
    monkeypatch.setenv("LOWBIT_MLIR_CUDA_ARCH", "sm_90")
    out = tmp_path / "cuda90"
    code, o, err = run_cli(["compile", "bert-tiny", "-o", out, "--quant", "w4g128", "--target", "ref,mlir-cuda"], capsys)
    assert code == 2 and "sm_90" in err and "IREE 3.13" in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".*"))


def test_mlir_cuda_artifact_without_a_gpu_is_a_clear_error(tmp_path):
    import runtime
    from compiler.compile import compile_model
    from compiler.errors import LowbitError

    out = tmp_path / "cuda"
    compile_model("bert-tiny", out, quant="w4g128a8", targets="mlir-cuda", progress=False)
    info = json.loads((out / "mlir-cuda" / "mlir.json").read_text())
    assert info["cuda_arch"] == "sm_80" and (out / "mlir-cuda" / "model.vmfb").is_file()
    try:
        backend = runtime.load(out).backend("mlir-cuda")
    except LowbitError as e:
        assert "needs an NVIDIA GPU" in str(e)
        return
    # a machine with a GPU: the sm_80 build must then agree with ref
    m = runtime.load(out)
    ids = [1, 40, 50, 60, 2]
    a, b = m.embed(ids, "mlir-cuda"), m.embed(ids, "ref")
    assert backend is not None and np.abs(a - b).max() <= 2e-2 * np.abs(b).max()


def test_backend_outputs_equal_in_memory_model(llama_art):
    """The runtime backend (vmfb + weights from the artifact) computes exactly what the in-memory compiled
    module computes for the same graph."""
    import runtime
    from compiler.frontend.llama import empty_cache
    from tests.compiler.backends.mlir.common import InMemoryMLIR

    m = runtime.load(llama_art)
    feeds = {"input_ids": np.array([3, 4, 5], np.int64), "positions": np.arange(3, dtype=np.int64), **empty_cache(m.graph, 3)}
    a = m.run(feeds, "mlir-cpu")
    b = InMemoryMLIR(m.graph).run(feeds)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_without_iree_compile_and_run_say_how_to_install(llama_art, tmp_path, monkeypatch, capsys):
    """IREE missing (its modules made unimportable): `lowbit compile --target mlir-cpu` and `lowbit run
    --backend mlir-cpu` stop with one line naming the package, exit code 2, and no output left."""
    monkeypatch.setitem(sys.modules, "iree.compiler", None)
    monkeypatch.setitem(sys.modules, "iree.runtime", None)
    out = tmp_path / "noiree"
    code, o, err = run_cli(["compile", "bert-tiny", "-o", out, "--target", "ref,mlir-cpu"], capsys)
    assert code == 2 and "iree-base-compiler" in err and "pip install" in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".*"))
    code, o, err = run_cli(["run", llama_art, "--backend", "mlir-cpu", "--tokens", "2"], capsys)
    assert code == 2 and "iree-base-runtime" in err and "pip install" in err
