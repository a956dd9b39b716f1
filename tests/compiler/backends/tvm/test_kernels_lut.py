"""The LUT CPU qlinear kernel (`lut-cpu`, compiler/backends/tvm/kernels_lut.py): the bit-plane layout holds
the codes it was given (hypothesis), A8 group sums are the contract's exact int32 sums at the extremes, A16
stays inside the error bound its 13-bit activations imply, the kernel equals its numpy model at M = 1 and
M > 1, and the rule table picks it for A16 W4/W3/W2/ternary."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.compiler.backends.tvm.common import tvm  # noqa: F401 (skips the module when TVM is missing)

from compiler.backends.tvm import kernels  # noqa: E402
from compiler.backends.tvm import kernels_lut  # noqa: E402
from compiler.backends.tvm import qlinear_te  # noqa: E402
from compiler.reference import QLinearWeights, qlinear, quantize_activations_a8  # noqa: E402
from tests.compiler.backends.tvm.test_kernels import build, weights  # noqa: E402
from tests.compiler.backends.tvm.test_kernels_cpu import _case  # noqa: E402

needs_bw = pytest.mark.skipif(not kernels_lut.host_has_avx512bw(), reason="the host CPU has no AVX-512BW (512-bit vpshufb)")


def decode_layout(packed: np.ndarray, n: int, k: int, g: int, bits: int) -> np.ndarray:
    """Inverse of relayout_lut's code layout (numpy): [N/64, K/g, g/8, 2, pairs, 64] -> codes [N, K]."""
    nb, nj, pp = n // 64, k // g, kernels_lut.pairs(bits)
    byte = packed.reshape(nb, nj, g // 8, 2, pp, 32, 2)  # [nb, j, cc, h, p, r, e]
    idx = np.stack([byte & 15, byte >> 4], axis=-1)  # [..., lo/hi chunk]
    bitv = (idx[..., None] >> np.arange(4)) & 1  # [nb, j, cc, h, p, r, e, c2, t]
    # plane 2p+e of row (nb, h, r) at feature j*g + (2cc + c2)*4 + t
    planes = bitv.transpose(4, 6, 0, 3, 5, 1, 2, 7, 8).reshape(2 * pp, n, k)
    return sum(planes[b].astype(np.int64) << b for b in range(2 * pp)).astype(np.uint8)


@given(bits=st.sampled_from([2, 3, 4]), nb=st.integers(1, 3), nj=st.integers(1, 3), g=st.sampled_from([16, 32, 64, 128]), seed=st.integers(0, 2**16))
def test_relayout_holds_the_codes(bits, nb, nj, g, seed):
    rng = np.random.default_rng(seed)
    n, k = 64 * nb, g * nj
    codes, packed, zeros, layout = weights(rng, n, k, g, bits)
    shape = qlinear_te.QLinearShape(True, n, k, bits, g, "a16", layout, "cpu")
    r = kernels_lut.relayout_lut(packed, np.ones((n, nj), np.float32), zeros, shape)
    assert r["packed"].shape == (nb, nj, g // 8, 2, kernels_lut.pairs(bits), 64)
    np.testing.assert_array_equal(decode_layout(r["packed"], n, k, g, bits), codes)
    np.testing.assert_array_equal(r["zeros"].transpose(0, 2, 1).reshape(n, nj), zeros)


def test_int16_spans_cannot_overflow():
    for bits in (2, 3, 4):
        for g in (8, 32, 64, 128, 256, 4096):
            span = kernels_lut.span_pairs(bits, g)
            assert (g // 8) % span == 0 and 2 * span * 255 * ((1 << bits) - 1) <= 32767
    assert kernels_lut.span_pairs(2, 128) == 16 and kernels_lut.span_pairs(4, 128) == 4  # W2 g128: one widening per group


def _kernel(shape, r, bias):
    n, k = shape.n, shape.k
    xt = (("S", k), "int32" if shape.act == "a8" else "float32")
    types = [xt, (r["packed"].shape, "uint8"), (r["scales"].shape, "float32"), (r["zeros"].shape, "uint8")]
    types += [(("S",), "float32")] if shape.act == "a8" else []
    types += [((n,), "float32")] if bias else []
    return build(kernels_lut.lut_te(shape), types, "ql", kernels_lut.schedule_lut)


@needs_bw
@pytest.mark.parametrize("kind,n,k,g", [("w4", 64, 128, 128), ("w2", 128, 64, 64), ("ternary", 64, 128, 128), ("w3", 64, 128, 128), ("w2", 64, 16, 16)])
def test_a8_group_sums_are_exact_int32(kind, n, k, g):
    """One group per row (K = g), scales 1, sa 1: y is float(acc) of the exact int32 acc, at |qa| = 127 and
    the largest |q - z| (|acc| = g * 127 * (2^b - 1) on row 0)."""
    rng = np.random.default_rng(n * k + g)
    bits, tern, codes, packed, zeros, layout = _case(rng, kind, n, k, g, extreme=kind != "ternary")
    m = 4
    qa = np.where(rng.random((m, k)) < 0.5, -127, 127).astype(np.int32)
    qa[0] = 127
    qa[1] = rng.integers(-127, 128, k)
    shape = qlinear_te.QLinearShape(True, n, k, bits, g, "a8", layout, "cpu", False, tern)
    r = kernels_lut.relayout_lut(packed, np.ones((n, 1), np.float32), zeros, shape)
    got = _kernel(shape, r, False)(qa, r["packed"], r["scales"], r["zeros"], np.ones(m, np.float32)).numpy()
    want = qa.astype(np.int64) @ (codes.astype(np.int64) - np.repeat(zeros.astype(np.int64), g, axis=1)).T
    np.testing.assert_array_equal(got.astype(np.int64), want)
    if kind != "ternary":
        assert np.abs(want).max() == g * 127 * ((1 << bits) - 1)


@needs_bw
@pytest.mark.parametrize("kind,act,n,k,g,bias", [("w4", "a16", 128, 512, 128, True), ("w2", "a16", 64, 256, 64, False), ("ternary", "a16", 192, 384, 128, True),
                                                 ("w3", "a16", 64, 256, 32, False), ("w2", "a8", 128, 512, 128, True), ("w4", "a8", 64, 256, 64, False)])
def test_kernel_meets_the_contract(kind, act, n, k, g, bias):
    rng = np.random.default_rng(11)
    bits, tern, codes, packed, zeros, layout = _case(rng, kind, n, k, g)
    scales = (rng.random((n, k // g)) * 0.02 + 0.001).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32) if bias else None
    shape = qlinear_te.QLinearShape(True, n, k, bits, g, act, layout, "cpu", bias, tern)
    r = kernels_lut.relayout_lut(packed, scales, zeros, shape)
    f = _kernel(shape, r, bias)
    w = QLinearWeights(packed, scales, zeros, {"n": n, "k": k, "group_size": g, "bits": bits, "layout": layout})
    wq = np.abs(codes.astype(np.float64) - np.repeat(zeros.astype(np.float64), g, axis=1))
    for m in (1, 6):
        x = (rng.standard_normal((m, k)) * 2).astype(np.float32)
        x[0, :g] = 0  # an all-zero activation group (its scale falls back to 1)
        extra = [b] if bias else []
        want = qlinear(x, w, act, b)  # the contract (ref backend)
        if act == "a8":
            qa, sa = quantize_activations_a8(x)
            got = f(qa.astype(np.int32), r["packed"], r["scales"], r["zeros"], sa, *extra).numpy()
            np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6 * np.abs(want).max())  # exact sums; fp32 epilogue order only
            continue
        got = f(x, r["packed"], r["scales"], r["zeros"], *extra).numpy()
        model = kernels_lut.lut_reference(x, codes, scales, zeros, g, act) + (b if bias else 0)
        np.testing.assert_allclose(got, model, rtol=1e-5, atol=1e-5 * np.abs(model).max())  # the kernel is its model
        # against the contract: activation rounding <= s_a / 2 = amax_group / (2 * 8191) per element
        x16 = np.abs(x.astype(np.float16).astype(np.float64)).reshape(m, k // g, g)
        half_step = x16.max(axis=2) / (2 * kernels_lut.A16_MAX)  # [m, j]
        bound = np.einsum("mj,nj,njg->mn", half_step, scales.astype(np.float64), wq.reshape(n, k // g, g))
        bound += 1e-5 * np.abs(want).max()  # fp32 sums
        assert np.all(np.abs(got - want) <= bound), float(np.abs(got - want).max())


@needs_bw
def test_rules_pick_lut_for_a16_low_bits(monkeypatch):
    monkeypatch.setenv("LOWBIT_TVM_FAST_CPU", "1")
    from compiler.backends.tvm import kernels_cpu

    vnni = "vnni-cpu" if kernels_cpu.host_has_vnni() else "lut-cpu"
    assert kernels.choose_qlinear_kernel(True, 4096, 4096, 3, 128, "a16", "cpu", "planes")[0].name == "lut-cpu"
    # W4/W2/ternary A16: vpdpbusd on 13-bit activations (two int8 parts) streams at the bandwidth; lookups are compute-bound
    assert kernels.choose_qlinear_kernel(True, 4096, 4096, 4, 128, "a16", "cpu", "nibble")[0].name == vnni
    assert kernels.choose_qlinear_kernel(True, 4096, 4096, 2, 128, "a16", "cpu", "dense")[0].name == vnni
    assert kernels.choose_qlinear_kernel(True, 4096, 4096, 2, 128, "a16", "cpu", "dense", ternary=True)[0].name == vnni
    assert kernels.choose_qlinear_kernel(True, 4096, 4096, 8, 128, "a16", "cpu", "dense")[0].name == ("vnni-cpu" if kernels_cpu.host_has_vnni() else "blocked-cpu")  # W8: no tables
    assert kernels.choose_qlinear_kernel(True, 4096, 4096, 4, 8, "a16", "cpu", "nibble")[0].name == "blocked-cpu"  # g % 16
    monkeypatch.setenv("LOWBIT_TVM_DISABLE_KERNELS", "lut-cpu,vnni-cpu")
    assert kernels.choose_qlinear_kernel(True, 4096, 4096, 2, 128, "a16", "cpu", "dense")[0].name == "blocked-cpu"
    monkeypatch.setenv("LOWBIT_TVM_DISABLE_KERNELS", "vnni-cpu")
    assert kernels.choose_qlinear_kernel(True, 4096, 4096, 2, 128, "a16", "cpu", "dense")[0].name == "lut-cpu"


@needs_bw
def test_a8_prefers_vnni_then_lut(monkeypatch):
    from compiler.backends.tvm import kernels_cpu

    monkeypatch.setenv("LOWBIT_TVM_FAST_CPU", "1")
    want = "vnni-cpu" if kernels_cpu.host_has_vnni() else "lut-cpu"
    assert kernels.choose_qlinear_kernel(True, 4096, 4096, 2, 128, "a8", "cpu", "dense")[0].name == want
    assert kernels.choose_qlinear_kernel(True, 4096, 4096, 3, 128, "a8", "cpu", "planes")[0].name == "lut-cpu"  # no W3 VNNI layout
    monkeypatch.setenv("LOWBIT_TVM_DISABLE_KERNELS", "vnni-cpu")
    assert kernels.choose_qlinear_kernel(True, 4096, 4096, 4, 128, "a8", "cpu", "nibble")[0].name == "lut-cpu"


@needs_bw
@pytest.mark.parametrize("kind,n,k,g,bias", [("w4", 64, 512, 128, True), ("w4", 32, 256, 64, False), ("w2", 48, 256, 128, False), ("ternary", 16, 384, 128, True)])
def test_vnni_a16_is_the_same_13_bit_model(kind, n, k, g, bias):
    """vnni-cpu at A16 uses the 13-bit block-floating-point activations of lut-cpu, split into int8 parts
    (a = 64 ah + al) for vpdpbusd: its result is lut_reference's, and within the contract bound."""
    from compiler.backends.tvm import kernels_cpu

    if not kernels_cpu.host_has_vnni():
        pytest.skip("the host CPU has no AVX-512 VNNI (vpdpbusd)")
    rng = np.random.default_rng(21)
    bits, tern, codes, packed, zeros, layout = _case(rng, kind, n, k, g)
    scales = (rng.random((n, k // g)) * 0.02 + 0.001).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32) if bias else None
    shape = qlinear_te.QLinearShape(True, n, k, bits, g, "a16", layout, "cpu", bias, tern)
    r = kernels_cpu.relayout_vnni(packed, scales, zeros, shape)
    types = [(("S", k), "float32"), (r["packed"].shape, "uint8"), (r["scales"].shape, "float32"), (r["zeros"].shape, "uint8")] + ([((n,), "float32")] if bias else [])
    f = build(kernels_cpu.vnni_te(shape), types, "ql", kernels_cpu.schedule_vnni)
    for m in (1, 5):
        x = (rng.standard_normal((m, k)) * 4).astype(np.float32)
        x[0, g:2 * g] = 0 if k >= 2 * g else x[0, g:2 * g]
        x[-1, :16] = 1e4  # |a| reaches 8191: both int8 parts at their extremes
        got = f(x, r["packed"], r["scales"], r["zeros"], *([b] if bias else [])).numpy()
        model = kernels_lut.lut_reference(x, codes, scales, zeros, g, "a16") + (b if bias else 0)
        np.testing.assert_allclose(got, model, rtol=1e-5, atol=1e-5 * np.abs(model).max())
