"""The measured kernel search (compiler/backends/tvm/tune.py): it times every matching fast CPU kernel once
per shape, keeps the fastest, caches the times (a second choice measures nothing), and a tuned compile still
matches ref."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.compiler.backends.tvm.common import tvm  # noqa: F401 (skips the module when TVM is missing)

from compiler.backends.tvm import kernels  # noqa: E402
from compiler.backends.tvm import kernels_lut  # noqa: E402
from compiler.backends.tvm import tune  # noqa: E402
from compiler.backends.tvm.lower import choose_kernel  # noqa: E402

pytestmark = pytest.mark.skipif(not kernels_lut.host_has_avx512bw(), reason="needs two fast CPU kernels for one shape (AVX-512BW)")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LOWBIT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tune, "ROTATE_BYTES", 4 << 20)  # small shapes in a test: rotation only needs to run
    monkeypatch.setenv("LOWBIT_TVM_FAST_CPU", "1")
    return tmp_path / "tvm-kernels.json"


def choose_tuned(*shape_args, log=None):
    """(kernel, shape) as the lowering chooses them with tuning on."""
    shape = kernels.qlinear_shape(*shape_args)
    return choose_kernel(shape, tune=True, log=log), shape


def test_search_measures_once_then_uses_the_cache(cache, monkeypatch):
    log: dict = {}
    kern, shape = choose_tuned(True, 256, 512, 4, 128, "a16", "cpu", "nibble", log=log)
    (key, entry), = log.items()
    times = entry["measured_ms"]
    from compiler.backends.tvm import kernels_cpu

    assert set(times) == {"lut-cpu", "blocked-cpu"} | ({"vnni-cpu"} if kernels_cpu.host_has_vnni() else set()) and all(t > 0 for t in times.values())
    assert kern.name == min(times, key=times.get)
    assert json.loads(cache.read_text())[key] == times
    calls = []
    monkeypatch.setattr(tune, "measure_all", lambda cands, shape: calls.append(cands) or {k.name: 1.0 for k in cands})
    log2: dict = {}
    again, _ = choose_tuned(True, 256, 512, 4, 128, "a16", "cpu", "nibble", log=log2)
    assert again is kern and not calls and log2[key] == {"cached_ms": times}
    # the cache decides: make the other kernel the faster one
    cached = json.loads(cache.read_text())
    other = next(n for n in times if n != kern.name)
    cached[key] = {n: (1.0 if n == other else 9.0) for n in times}
    cache.write_text(json.dumps(cached))
    assert choose_tuned(True, 256, 512, 4, 128, "a16", "cpu", "nibble")[0].name == other
    # a different shape is a different key; one matching fast kernel (A32: blocked-cpu alone) needs no search
    assert choose_tuned(True, 256, 512, 4, 128, "a32", "cpu", "nibble", log=(log3 := {}))[0].name == "blocked-cpu" and not log3


def test_tuned_compile_matches_ref(cache, tmp_path):
    from tvm.runtime.vm import VirtualMachine
    from safetensors.numpy import load_file

    from compiler.backends.tvm.build import build_target
    from compiler.reference import Interpreter
    from tests.compiler.backends.tvm.test_kernels_cpu import _one_layer

    g = _one_layer(128, 256, "w2g64a8", True)
    info = build_target(g, "tvm-cpu", tmp_path / "t", tune=True)
    assert len(info["kernel_search"]) == 1
    (entry,) = info["kernel_search"].values()
    assert {"lut-cpu", "blocked-cpu"} <= set(entry["measured_ms"])  # (and vnni-cpu on VNNI hosts): every A8 kernel is exact
    assert set(info["kernels"].values()) == {min(entry["measured_ms"], key=entry["measured_ms"].get)}
    arrays = dict(g.consts)
    arrays.update(load_file(str(tmp_path / "t" / "params.safetensors")))
    vm = VirtualMachine(tvm.runtime.load_module(str(tmp_path / "t" / "model.so")), tvm.cpu(0))
    params = [tvm.runtime.tensor(arrays[p["key"]]) for p in info["params"]]
    x = np.random.default_rng(3).standard_normal((3, 256)).astype(np.float32)
    out = vm["main"](tvm.runtime.tensor(x), *params)
    got = (out[0] if not hasattr(out, "numpy") else out).numpy()
    want = Interpreter(g).run({"x": x})["y"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())  # A8: exact sums either kernel
