"""The qlinear kernels alone: A8 group sums are exact int32 (compared with numpy integers, including sums
beyond float32's exact range), the int8 activation quantization equals the reference bit for bit (half-way
cases included), the A16 kernel meets the contract, and the rule table answers for every shape."""

from __future__ import annotations

import numpy as np
import pytest

from tests.compiler.backends.tvm.common import tvm  # noqa: F401 (skips the module when TVM is missing)

from tvm import relax, te, tirx  # noqa: E402

from compiler.backends.tvm import kernels  # noqa: E402
from compiler.backends.tvm import qlinear_te  # noqa: E402
from compiler.backends.tvm.target import cpu_target  # noqa: E402
from compiler.quant.pack import pack, storage_layout, unpack  # noqa: E402
from compiler.reference import QLinearWeights, qlinear, quantize_activations_a8  # noqa: E402


def build(fn, arg_types, name, schedule=None):
    """Compile `fn` (a TE function) over Relax parameters of arg_types [(shape, dtype)]; S is symbolic."""
    bb = relax.BlockBuilder()
    s = tirx.Var("S", "int64")
    params = [relax.Var(f"a{i}", relax.TensorType([s if d == "S" else d for d in shape], dt)) for i, (shape, dt) in enumerate(arg_types)]
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(bb.emit_te(fn, *params, primfunc_name_hint=name))
        bb.emit_func_output(out)
    mod = bb.get()
    if schedule is not None:
        gv = mod.get_global_var(name)
        mod[gv] = schedule(mod[gv])
    ex = tvm.compile(mod, cpu_target())
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return lambda *arrays: vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(a)) for a in arrays])


def weights(rng, n, k, g, bits, extreme=False):
    layout = storage_layout(bits)
    if extreme:  # codes at the ends of the range, zero points at the other end: the largest |q - z|
        codes = np.where(rng.random((n, k)) < 0.5, 0, (1 << bits) - 1).astype(np.uint8)
        zeros = np.where(rng.random((n, k // g)) < 0.5, 0, (1 << bits) - 1).astype(np.uint8)
        codes[0], zeros[0] = (1 << bits) - 1, 0  # row 0: q - z = 2^bits - 1 everywhere
    else:
        codes = rng.integers(0, 1 << bits, (n, k), dtype=np.uint8)
        zeros = rng.integers(0, 1 << bits, (n, k // g), dtype=np.uint8)
    return codes, pack(codes, bits, layout), zeros, layout


@pytest.mark.parametrize(
    "bits,g,k,extreme",
    [(8, 64, 256, False), (4, 128, 256, False), (3, 32, 128, False), (2, 64, 192, False), (8, 4096, 8192, True), (4, 128, 256, True)],
)
def test_a8_group_sums_are_exact_int32(bits, g, k, extreme):
    rng = np.random.default_rng(bits * 1000 + g)
    n, m = 24, 5
    codes, packed, zeros, layout = weights(rng, n, k, g, bits, extreme)
    qa = (np.where(rng.random((m, k)) < 0.5, -127, 127) if extreme else rng.integers(-127, 128, (m, k))).astype(np.int32)
    qa[0] = 127 if extreme else qa[0]  # with weight row 0: |acc| = g * 127 * (2^bits - 1)
    shape = qlinear_te.QLinearShape(True, n, k, bits, g, "a8", layout, "cpu")
    f = build(lambda x, p, z: qlinear_te.qlinear_group_sums(x, p, z, shape), [(("S", k), "int32"), (packed.shape, "uint8"), (zeros.shape, "uint8")], "sums")
    got = f(qa, packed, zeros).numpy()
    w = codes.astype(np.int64) - np.repeat(zeros.astype(np.int64), g, axis=1)  # [n, k]
    want = np.einsum("mjg,njg->mnj", qa.astype(np.int64).reshape(m, k // g, g), w.reshape(n, k // g, g))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got.astype(np.int64), want)
    if extreme and g >= 4096:
        assert np.abs(want).max() > 1 << 24  # beyond what a float32 accumulator holds exactly


def test_unpacking_matches_every_storage_layout():
    rng = np.random.default_rng(3)
    for bits in (8, 4, 3, 2):
        codes, packed, zeros, layout = weights(rng, 8, 64, 32, bits)
        f = build(lambda p: te.compute((8, 64), lambda n, kk: qlinear_te.code_at(p, bits, layout, n, kk), name="codes"), [(packed.shape, "uint8")], "unpack")
        np.testing.assert_array_equal(f(packed).numpy(), unpack(packed, bits, layout, 64).astype(np.int32), err_msg=f"{bits}-bit {layout}")


def test_act_quant_a8_matches_reference_bit_for_bit():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((6, 96)).astype(np.float32) * 3
    x[1] = 0.0  # an all-zero row: sa = 1
    # half-way points: max |x| = 127 gives sa = 1, so x = k + 0.5 must round half to even like np.rint
    x[2, :] = np.arange(96) - 47.5
    x[2, 0] = 127.0
    x[3, :8] = [-0.5, 0.5, 1.5, 2.5, -1.5, -2.5, 126.5, -127.0]
    f = build(qlinear_te.act_quant_a8, [(("S", 96), "float32")], "aq", qlinear_te.schedule_act_quant("cpu"))
    qa, sa = (t.numpy() for t in f(x))
    qr, sr = quantize_activations_a8(x)
    np.testing.assert_array_equal(sa, sr)
    np.testing.assert_array_equal(qa, qr.astype(np.int32))


@pytest.mark.parametrize("act,bits", [("a16", 4), ("a16", 3), ("a8", 2), ("a8", 8)])
def test_scheduled_qlinear_kernel_meets_the_contract(act, bits):
    rng = np.random.default_rng(11)
    n, k, g = 40, 256, 64
    codes, packed, zeros, layout = weights(rng, n, k, g, bits)
    scales = (rng.random((n, k // g)) * 0.02 + 0.001).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    kern, shape = kernels.choose_qlinear_kernel(True, n, k, bits, g, act, "cpu", layout, bias=True)
    w = QLinearWeights(packed, scales, zeros, {"n": n, "k": k, "group_size": g, "bits": bits, "layout": layout})
    for m in (1, 9):
        x = rng.standard_normal((m, k)).astype(np.float32)
        want = qlinear(x, w, act, bias)
        if act == "a8":
            qa, sa = quantize_activations_a8(x)
            types = [(("S", k), "int32"), (packed.shape, "uint8"), (scales.shape, "float32"), (zeros.shape, "uint8"), (("S",), "float32"), ((n,), "float32")]
            f = build(kern.te_func(shape), types, "ql", kern.schedule)
            got = f(qa.astype(np.int32), packed, scales, zeros, sa, bias).numpy()
        else:
            types = [(("S", k), "float32"), (packed.shape, "uint8"), (scales.shape, "float32"), (zeros.shape, "uint8"), ((n,), "float32")]
            f = build(kern.te_func(shape), types, "ql", kern.schedule)
            got = f(x, packed, scales, zeros, bias).numpy()
        # same per-group order as the reference; only fp32 summation order inside a group differs (A16)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_rule_table_covers_every_spec_and_target():
    for target in ("cpu", "cuda"):
        for bits in (8, 4, 3, 2):
            for act in ("a16", "a8", "a32"):
                kern, shape = kernels.choose_qlinear_kernel(True, 2048, 8192, bits, 128, act, target, storage_layout(bits))
                assert kern.schedule is not None and shape.target == target
    with pytest.raises(KeyError):
        kernels.choose_qlinear_kernel(True, 8, 8, 4, 8, "a16", "metal")
