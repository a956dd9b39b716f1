"""vnni-trit-cpu (compiler/backends/tvm/kernels_cpu.py): ternary weights at five trits per byte. The packing
round-trips for every group shape and reads <= 1.7 bits per weight where a group holds 256 or more codes; the
layout's code_at reads back every code; the kernel's sums are vnni-cpu's bit for bit (A8 and A16, decode and
prefill row blocks), so the A8 contract holds exactly; the rule table and the whole lowered path pick it for
ternary layers on VNNI + VBMI hosts."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.compiler.backends.tvm.common import tvm  # noqa: F401 (skips the module when TVM is missing)

from tvm import te  # noqa: E402

from compiler.backends.tvm import kernels, kernels_cpu  # noqa: E402
from compiler.backends.tvm.qlinear_te import QLinearShape  # noqa: E402
from compiler.quant.pack import pack  # noqa: E402
from compiler.reference import QLinearWeights, qlinear, quantize_activations_a8  # noqa: E402

needs_trit = pytest.mark.skipif(not (kernels_cpu.host_has_vnni() and kernels_cpu.host_has_vbmi()),
                                reason="the host CPU has no AVX-512 VNNI + VBMI (vpdpbusd, vpermi2b)")
groups = st.integers(1, 64).map(lambda i: 16 * i)


@given(groups)
def test_trit_chunks_tile_the_group_with_the_fewest_chunks(g):
    a, b = kernels_cpu.trit_chunks(g)
    assert a >= 0 and b >= 0 and 20 * a + 16 * b == g
    best = min(a2 + (g - 20 * a2) // 16 for a2 in range(g // 20 + 1) if (g - 20 * a2) % 16 == 0)
    assert a + b == best


@pytest.mark.parametrize("g,bpw", [(256, 1.625), (576, 1.6111), (1536, 1.6042), (4096, 1.6016), (128, 1.75), (64, 2.0)])
def test_bits_per_weight(g, bpw):
    a, b = kernels_cpu.trit_chunks(g)
    assert round(64 * 8 * (a + b) / (16 * g), 4) == bpw


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), groups, st.integers(1, 3), st.integers(0, 2**32 - 1))
def test_pack_round_trips(nb, g, nj, seed):
    rng = np.random.default_rng(seed)
    n, k = 16 * nb, g * nj
    codes = rng.integers(0, 3, (n, k), dtype=np.uint8)
    pk = kernels_cpu.pack_trit_chunks(codes, g)
    a, b = kernels_cpu.trit_chunks(g)
    assert pk.shape == (nb, nj * (a + b), 64) and pk.dtype == np.uint8
    assert int(pk[:, :, :].max(initial=0)) <= 242
    np.testing.assert_array_equal(kernels_cpu.unpack_trit_chunks(pk, n, k, g), codes)


def test_pack_places_trits_as_the_layout_says():
    # row 0, codes k = 4 h (h = 0..4) of the first chunk are the five trits of byte 0: q_h 3^h
    codes = np.ones((16, 256), np.uint8)
    codes[0, [0, 4, 8, 12, 16]] = [2, 0, 1, 2, 0]
    pk = kernels_cpu.pack_trit_chunks(codes, 256)
    assert pk[0, 0, 0] == 2 + 0 * 3 + 1 * 9 + 2 * 27 + 0 * 81
    assert pk[0, 0, 1] == sum(3**h for h in range(5))  # all ones
    # the last 16 codes of the group are a 2-bit chunk: row 0, codes 240 + 4 h at bits 2 h
    codes[0, [240, 244, 248, 252]] = [2, 0, 1, 2]
    assert kernels_cpu.pack_trit_chunks(codes, 256)[0, 12, 0] == 2 | 0 << 2 | 1 << 4 | 2 << 6


def test_code_at_reads_every_code():
    rng = np.random.default_rng(3)
    n, k, g = 32, 512, 256
    codes = rng.integers(0, 3, (n, k), dtype=np.uint8)
    shape = QLinearShape(True, n, k, 2, g, "a8", "dense", "cpu", False, True)
    pk = kernels_cpu.pack_trit_chunks(codes, g)
    p = te.placeholder(pk.shape, "uint8", name="pk")
    out = te.compute((n, k), lambda i, j: kernels_cpu.trit_code_at(p, shape, i, j), name="q")
    f = tvm.compile(te.create_prim_func([p, out]), target="llvm")
    got = tvm.runtime.tensor(np.zeros((n, k), np.int32))
    f(tvm.runtime.tensor(pk), got)
    np.testing.assert_array_equal(got.numpy(), codes)


def _lib(f):
    from compiler.backends.tvm.target import cpu_target

    return tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target=cpu_target())


def _run(lib, x, r, extra, n):
    y = tvm.runtime.tensor(np.zeros((x.shape[0], n), np.float32))
    lib["main"](*[tvm.runtime.tensor(np.ascontiguousarray(v)) for v in [x, r["packed"], r["scales"], r["zeros"], *extra]], y)
    return y.numpy()


@needs_trit
@pytest.mark.parametrize("n,k,g", [(32, 576, 576), (64, 512, 128), (16, 768, 256), (48, 320, 80)])
@pytest.mark.parametrize("act", ["a8", "a16"])
def test_kernel_equals_vnni_cpu_bit_for_bit(n, k, g, act):
    rng = np.random.default_rng(n + k)
    codes = rng.integers(0, 3, (n, k), dtype=np.uint8)
    codes[0] = 2  # a row at the largest |q - z|
    packed = pack(codes, 2, "dense")
    scales = (rng.random((n, k // g)) * 0.02 + 0.001).astype(np.float32)
    zeros = np.ones((n, k // g), np.uint8)
    shape = QLinearShape(True, n, k, 2, g, act, "dense", "cpu", False, True)
    trit = _lib(kernels_cpu.vnni_prim_func(n, k, g, 2, False, act, trits=True))
    vnni = _lib(kernels_cpu.vnni_prim_func(n, k, g, 2, False, act))
    rt, rv = kernels_cpu.relayout_trit(packed, scales, zeros, shape), kernels_cpu.relayout_vnni(packed, scales, zeros, shape)
    w = QLinearWeights(packed, scales, zeros, {"n": n, "k": k, "group_size": g, "bits": 2, "layout": "dense", "ternary": True})
    for m in (1, 2, 5):  # decode, one prefill row block (2 rows at W2), and a remainder
        xf = (rng.standard_normal((m, k)) * 2).astype(np.float32)
        if act == "a8":
            qa, sa = quantize_activations_a8(xf)
            x, extra = qa.astype(np.int32), [sa]
        else:
            x, extra = xf, []
        got = _run(trit, x, rt, extra, n)
        np.testing.assert_array_equal(got, _run(vnni, x, rv, extra, n))
        if act == "a8":
            want = qlinear(xf, w, "a8")
            np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6 * np.abs(want).max())


@needs_trit
def test_rules_pick_the_trit_kernel_for_ternary_only(monkeypatch):
    monkeypatch.setenv("LOWBIT_TVM_FAST_CPU", "1")
    pick = lambda *a, **kw: kernels.choose_qlinear_kernel(True, 4096, 4096, *a, **kw)[0].name  # noqa: E731
    assert pick(2, 4096, "a8", "cpu", "dense", ternary=True) == "vnni-trit-cpu"
    assert pick(2, 128, "a8", "cpu", "dense", ternary=True) == "vnni-trit-cpu"
    assert pick(2, 4096, "a16", "cpu", "dense", ternary=True) == "vnni-cpu"  # first; the trit kernel a --tune candidate
    shape = kernels.qlinear_shape(True, 4096, 4096, 2, 4096, "a16", "cpu", "dense", ternary=True)
    assert [k.name for k in kernels.matching_kernels(shape)][:2] == ["vnni-cpu", "vnni-trit-cpu"]
    assert pick(2, 64, "a16", "cpu", "dense", ternary=True) == "vnni-cpu"  # no chunk of trits in a group of 64
    assert pick(2, 4096, "a8", "cpu", "dense") == "vnni-cpu"  # W2: four levels
    assert pick(2, 4096, "a32", "cpu", "dense", ternary=True) == "blocked-cpu"
    monkeypatch.setenv("LOWBIT_TVM_DISABLE_KERNELS", "vnni-trit-cpu")
    assert pick(2, 4096, "a8", "cpu", "dense", ternary=True) == "vnni-cpu"


@needs_trit
@pytest.mark.parametrize("spec,n,k,bias", [("ternarya8", 128, 576, True), ("ternaryg128a8", 64, 256, False), ("ternarya8", 64, 320, True)])
def test_whole_lowered_path_decode_and_prefill(spec, n, k, bias, tmp_path, monkeypatch):
    from safetensors.numpy import load_file
    from tvm.runtime.vm import VirtualMachine

    from compiler.backends.tvm.build import build_target
    from compiler.reference import Interpreter
    from tests.compiler.backends.tvm.test_kernels_cpu import _one_layer

    monkeypatch.setenv("LOWBIT_TVM_FAST_CPU", "1")
    g = _one_layer(n, k, spec, bias)
    build_target(g, "tvm-cpu", tmp_path / "t")
    info = json.loads((tmp_path / "t" / "tvm.json").read_text())
    assert set(info["kernels"].values()) == {"vnni-trit-cpu"}
    arrays = dict(g.consts)
    arrays.update(load_file(str(tmp_path / "t" / "params.safetensors")))
    vm = VirtualMachine(tvm.runtime.load_module(str(tmp_path / "t" / "model.so")), tvm.cpu(0))
    params = [tvm.runtime.tensor(arrays[p["key"]]) for p in info["params"]]
    rng = np.random.default_rng(4)
    for m in (1, 6):
        x = rng.standard_normal((m, k)).astype(np.float32)
        out = vm["main"](tvm.runtime.tensor(x), *params)
        got = (out[0] if not hasattr(out, "numpy") else out).numpy()
        want = Interpreter(g).run({"x": x})["y"]
        tol = 2e-6 * np.abs(want).max()  # A8: the contract's integer sums, then the float epilogue's order
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=tol, err_msg=f"{spec} M={m}")
