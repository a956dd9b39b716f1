"""tvm-cuda without a GPU: whole models lower to CUDA (every kernel gets thread bindings, or TVM's CUDA
codegen refuses), the CUDA source lands in the artifact, and nvcc compiles it to cubin for sm_80 and sm_90."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.compiler.backends.tvm.common import quantized_graph, tvm  # noqa: F401 (skips the module when TVM is missing)

NVCC = shutil.which("nvcc")


@pytest.fixture(scope="module")
def cuda_folder(tmp_path_factory):
    from compiler.backends.tvm.build import build_target

    out = tmp_path_factory.mktemp("cuda") / "tvm-cuda"
    info = build_target(quantized_graph("llama-tiny", "w4g128a8"), "tvm-cuda", out)
    assert info["cuda_arch"] == "sm_80"
    return out


def nvcc_cubin(src, arch, tmp_path):
    if NVCC is None:
        pytest.skip("nvcc is not on PATH (install the CUDA toolkit to check the generated CUDA source)")
    r = subprocess.run([NVCC, f"-arch={arch}", "-cubin", "-o", str(tmp_path / f"{arch}.cubin"), str(src)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / f"{arch}.cubin").stat().st_size > 0


def test_cuda_folder_has_a_fatbin_for_both_archs(cuda_folder):
    import json

    info = json.loads((cuda_folder / "tvm.json").read_text())
    if NVCC is None:
        assert info["cuda_binary"] == []
        pytest.skip("nvcc is not on PATH: no precompiled fatbin (the runtime compiles the source on load)")
    assert info["cuda_binary"] == ["sm_80", "sm_90", "compute_80"]
    assert (cuda_folder / "kernels.fatbin").stat().st_size > 0


def test_a_kernel_without_thread_bindings_is_refused(monkeypatch, tmp_path):
    """An unbound block in a CUDA kernel compiles, then runs on the host against device memory and crashes
    the process on a GPU machine: the build must refuse it."""
    from compiler.backends.tvm import kernels
    from compiler.backends.tvm.build import build_target

    cpu_sched = kernels.DEQUANT_CPU  # the CPU fallback schedule: parallel loops, no GPU thread bindings
    monkeypatch.setattr(kernels, "rules", lambda **kw: [kernels.Rule(lambda s: True, cpu_sched)])
    with pytest.raises(Exception, match="without thread bindings"):
        build_target(quantized_graph("bert-tiny", "w4g128"), "tvm-cuda", tmp_path / "x", cuda_binary=False)


def test_cuda_source_has_our_kernels(cuda_folder):
    src = (cuda_folder / "kernels.cu").read_text()
    assert "__global__" in src
    for name in ("qlinear_gemm_cuda_n256_k256_w4g128a8", "act_quant_a8", "rope", "softmax"):
        assert name in src, name
    assert (cuda_folder / "model.so").is_file()


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_nvcc_compiles_llama_cuda_source(cuda_folder, arch, tmp_path):
    nvcc_cubin(cuda_folder / "kernels.cu", arch, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("model,spec", [("bert-tiny", "none"), ("bitnet-tiny", "ternary"), ("llama-tiny", "w3g64")])
def test_nvcc_compiles_other_models(model, spec, tmp_path):
    from compiler.backends.tvm.build import build_target

    build_target(quantized_graph(model, spec), "tvm-cuda", tmp_path / "tvm-cuda")
    nvcc_cubin(tmp_path / "tvm-cuda" / "kernels.cu", "sm_90", tmp_path)


def _gpu_present() -> bool:
    try:
        from runtime.backends.tvm import _load_cuda_runtime

        _load_cuda_runtime()
        return bool(tvm.cuda(0).exist)
    except Exception:  # noqa: BLE001 - no driver library, no device
        return False


@pytest.mark.skipif(not _gpu_present(), reason="no CUDA GPU on this machine (the tvm-cuda run is checked where one is)")
@pytest.mark.parametrize("model,spec", [("llama-tiny", "w4g32a8"), ("bert-tiny", "w2g32")])
def test_tvm_cuda_matches_ref_on_a_gpu(model, spec, tmp_path):
    """On a GPU machine: the artifact's tvm-cuda library against ref (tolerances of tests/runtime/backends/test_agreement.py)."""
    import numpy as np

    import runtime
    from compiler.compile import compile_model
    from runtime.compare import cosine

    out = tmp_path / "art"
    compile_model(model, out, quant=spec, targets="ref,tvm-cuda", progress=False)
    m = runtime.load(out)
    ids = [1, 87, 107, 104, 35, 116, 120, 108]
    if m.causal:
        gt, gr = m.generate(ids, 6, "tvm-cuda"), m.generate(ids, 6, "ref")
        a, b = gt.prompt_logits, gr.prompt_logits
        assert gt.tokens == gr.tokens
    else:
        a, b = m.embed(ids, "tvm-cuda"), m.embed(ids, "ref")
    assert np.abs(a - b).max() <= 2e-2 * np.abs(b).max()
    assert cosine(a, b) >= 0.999
