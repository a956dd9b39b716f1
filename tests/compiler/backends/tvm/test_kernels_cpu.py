"""The fast CPU qlinear kernel (`blocked-cpu`, compiler/backends/tvm/kernels_cpu.py) against the numeric
contract: A8 group sums equal numpy's integer sums bit for bit (at the largest |q - z| and |qa|), A16 results
are within fp32 rounding of a float64 computation on fp16-rounded activations, for W4, W2 and ternary at
groups 128 and 64 and several (N, K); and the whole lowered path (rule table, relayout into
params.safetensors, Relax VM) gives the reference's answer at M = 1 (decode) and M > 1 (prefill)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.compiler.backends.tvm.common import tvm  # noqa: F401 (skips the module when TVM is missing)

from tvm import te  # noqa: E402

from compiler.backends.tvm import kernels  # noqa: E402
from compiler.backends.tvm import kernels_cpu  # noqa: E402
from compiler.backends.tvm import kernels_lut  # noqa: E402
from compiler.backends.tvm import qlinear_te  # noqa: E402
from compiler.reference import QLinearWeights, qlinear, quantize_activations_a8  # noqa: E402
from tests.compiler.backends.tvm.test_kernels import build, weights  # noqa: E402


def _ternary_weights(rng, n, k, g):
    from compiler.quant.pack import pack, storage_layout

    codes = rng.integers(0, 3, (n, k), dtype=np.uint8)
    zeros = np.ones((n, k // g), np.uint8)
    return codes, pack(codes, 2, storage_layout(2)), zeros, storage_layout(2)


def _case(rng, kind, n, k, g, extreme=False):
    if kind == "ternary":
        return 2, True, *_ternary_weights(rng, n, k, g)
    bits = {"w4": 4, "w2": 2, "w3": 3, "w8": 8}[kind]
    return bits, False, *weights(rng, n, k, g, bits, extreme)


@pytest.mark.parametrize(
    "kind,n,k,g,extreme",
    [("w4", 64, 256, 128, True), ("w4", 128, 512, 64, False), ("w2", 192, 256, 128, True), ("w2", 64, 384, 64, False), ("ternary", 128, 256, 128, False),
     ("ternary", 64, 256, 64, False), ("w8", 64, 256, 128, True), ("w3", 64, 192, 64, False)],
)
def test_a8_group_sums_are_exact_integers(kind, n, k, g, extreme):
    rng = np.random.default_rng(n + k + g)
    bits, tern, codes, packed, zeros, layout = _case(rng, kind, n, k, g, extreme)
    m = 3
    qa = (np.where(rng.random((m, k)) < 0.5, -127, 127) if extreme else rng.integers(-127, 128, (m, k))).astype(np.int32)
    if extreme:
        qa[0] = 127  # with weight row 0 (q - z = 2^bits - 1): |acc| = g * 127 * (2^bits - 1), the rule's bound
    shape = qlinear_te.QLinearShape(True, n, k, bits, g, "a8", layout, "cpu", False, tern)
    assert kernels_cpu.a8_fp32_exact(bits, g)
    r = kernels_cpu.relayout_blocked(packed, np.ones((n, k // g), np.float32), zeros, shape)

    def sums(x, p, z):
        acc = kernels_cpu.blocked_group_sums(x, p, z, shape)
        return te.compute(acc.shape, lambda *i: acc(*i).astype("int32"), name="acc_int")

    f = build(sums, [(("S", k), "int32"), (r["packed"].shape, "uint8"), (r["zeros"].shape, "uint8")], "sums")
    got = f(qa, r["packed"], r["zeros"]).numpy().astype(np.int64)  # [m, N/64, K/g, 64]
    got = got.transpose(0, 1, 3, 2).reshape(m, n, k // g)
    w = codes.astype(np.int64) - np.repeat(zeros.astype(np.int64), g, axis=1)
    want = np.einsum("mjg,njg->mnj", qa.astype(np.int64).reshape(m, k // g, g), w.reshape(n, k // g, g))
    np.testing.assert_array_equal(got, want)
    if extreme:
        assert np.abs(want).max() == g * 127 * ((1 << bits) - 1)


A16_KERNEL = "lut-cpu" if kernels_lut.host_has_avx512bw() else "blocked-cpu"  # the A16 W3 kernel on this host
A16_W4_KERNEL = "vnni-cpu" if kernels_cpu.host_has_vnni() else A16_KERNEL  # W4, W2 and ternary
W8_KERNEL = "vnni-cpu" if kernels_cpu.host_has_vnni() else "blocked-cpu"  # the W8 (A16 up to g1024, A8) kernel on this host


@pytest.fixture
def fast_rules(monkeypatch):
    """The rule table with the fast CPU rules at its head (the default unless LOWBIT_TVM_FAST_CPU=0)."""
    monkeypatch.setenv("LOWBIT_TVM_FAST_CPU", "1")


def test_fast_rules_can_be_removed_and_enable_puts_them_first(monkeypatch):
    monkeypatch.setenv("LOWBIT_TVM_FAST_CPU", "0")  # the table is built when asked for: the knob counts at any time
    assert kernels.choose_qlinear_kernel(True, 4096, 4096, 4, 128, "a16", "cpu", "nibble")[0].name == "dequant-cpu"
    monkeypatch.setenv("LOWBIT_TVM_FAST_CPU", "1")
    table = kernels.rules()
    assert table[: len(kernels.FAST_CPU_RULES)] == kernels.FAST_CPU_RULES and table.count(kernels.FAST_CPU_RULES[0]) == 1
    assert kernels.choose_qlinear_kernel(True, 4096, 4096, 4, 128, "a16", "cpu", "nibble")[0].name == A16_W4_KERNEL
    assert kernels.choose_qlinear_kernel(True, 4096, 4096, 2, 128, "a16", "cpu", "dense")[0].name == A16_W4_KERNEL
    assert kernels.choose_qlinear_kernel(True, 4096, 4096, 3, 128, "a16", "cpu", "planes")[0].name == A16_KERNEL
    assert kernels.choose_qlinear_kernel(True, 4096, 4096, 8, 128, "a16", "cpu", "dense")[0].name == W8_KERNEL
    assert kernels.choose_qlinear_kernel(True, 4096, 4096, 8, 2048, "a16", "cpu", "dense")[0].name == "blocked-cpu"  # int32 bound


def test_rule_table_takes_its_knobs_as_arguments(monkeypatch):
    monkeypatch.setenv("LOWBIT_TVM_FAST_CPU", "0")
    monkeypatch.setenv("LOWBIT_TVM_DISABLE_KERNELS", "blocked-cpu")
    assert kernels.rules() == kernels.BASE_RULES  # the knobs: no fast rules (and no blocked-cpu rule among the rest)
    table = kernels.rules(fast_cpu=True, disabled=())  # arguments win over the knobs
    assert table == [*kernels.FAST_CPU_RULES, *kernels.BASE_RULES]
    assert {r.kernel.name for r in kernels.rules(fast_cpu=True, disabled=["lut-cpu", "vnni-cpu"])} == {r.kernel.name for r in table} - {"lut-cpu", "vnni-cpu"}
    assert kernels.choose_qlinear_kernel(True, 4096, 4096, 8, 128, "a16", "cpu", "dense", table=table)[0].name == W8_KERNEL
    assert kernels.choose_qlinear_kernel(True, 4096, 4096, 8, 128, "a16", "cpu", "dense")[0].name == "dequant-cpu"


def test_a8_rule_only_claims_groups_whose_fp32_sums_are_exact(fast_rules):
    assert kernels_cpu.a8_fp32_exact(4, 4096) and not kernels_cpu.a8_fp32_exact(4, 11008) and not kernels_cpu.a8_fp32_exact(8, 1024)
    vnni = kernels_cpu.host_has_vnni()
    assert kernels.choose_qlinear_kernel(True, 4096, 4096, 4, 128, "a8", "cpu", "nibble")[0].name == ("vnni-cpu" if vnni else "blocked-cpu")
    assert kernels.choose_qlinear_kernel(True, 4096, 11008, 4, 11008, "a8", "cpu", "nibble")[0].name == ("vnni-cpu" if vnni else A16_KERNEL.replace("blocked-cpu", "dequant-cpu"))
    assert kernels.choose_qlinear_kernel(True, 4096, 4096, 8, 1024, "a8", "cpu", "dense")[0].name == ("vnni-cpu" if vnni else "dequant-cpu")
    assert kernels.choose_qlinear_kernel(True, 4096, 11008, 4, 11008, "a16", "cpu", "nibble")[0].name == A16_W4_KERNEL
    assert kernels.choose_qlinear_kernel(True, 100, 256, 4, 128, "a16", "cpu", "nibble")[0].name == "dequant-cpu"  # N % 64
    assert kernels.choose_qlinear_kernel(True, 4096, 4096, 4, 128, "a16", "cuda", "nibble")[0].name != "blocked-cpu"


@pytest.mark.parametrize("kind,act,n,k,g", [("w4", "a16", 128, 512, 128), ("w2", "a16", 64, 256, 64), ("ternary", "a16", 192, 384, 128), ("w4", "a8", 64, 256, 64),
                                            ("w2", "a8", 128, 256, 128), ("ternary", "a8", 64, 512, 64), ("w3", "a16", 64, 128, 64), ("w8", "a8", 64, 256, 128)])
def test_scheduled_kernel_meets_the_contract(kind, act, n, k, g):
    rng = np.random.default_rng(5)
    bits, tern, codes, packed, zeros, layout = _case(rng, kind, n, k, g)
    scales = (rng.random((n, k // g)) * 0.02 + 0.001).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    shape = qlinear_te.QLinearShape(True, n, k, bits, g, act, layout, "cpu", True, tern)
    r = kernels_cpu.relayout_blocked(packed, scales, zeros, shape)
    wq = codes.astype(np.float64) - np.repeat(zeros.astype(np.float64), g, axis=1)  # [n, k]
    w = QLinearWeights(packed, scales, zeros, {"n": n, "k": k, "group_size": g, "bits": bits, "layout": layout})
    for m in (1, 6):
        x = (rng.standard_normal((m, k)) * 2).astype(np.float32)
        if act == "a8":
            qa, sa = quantize_activations_a8(x)
            types = [(("S", k), "int32"), (r["packed"].shape, "uint8"), (r["scales"].shape, "float32"), (r["zeros"].shape, "uint8"), (("S",), "float32"), ((n,), "float32")]
            f = build(kernels_cpu.blocked_te(shape), types, "ql", kernels_cpu.schedule_blocked)
            got = f(qa.astype(np.int32), r["packed"], r["scales"], r["zeros"], sa, bias).numpy()
            # exact integer group sums, then the fp32 epilogue: only the order of fp32 epilogue roundings may differ
            want = qlinear(x, w, act, bias)
            np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6 * np.abs(want).max())
        else:
            types = [(("S", k), "float32"), (r["packed"].shape, "uint8"), (r["scales"].shape, "float32"), (r["zeros"].shape, "uint8"), ((n,), "float32")]
            f = build(kernels_cpu.blocked_te(shape), types, "ql", kernels_cpu.schedule_blocked)
            got = f(x, r["packed"], r["scales"], r["zeros"], bias).numpy()
            x16 = x.astype(np.float16).astype(np.float64)
            acc = np.einsum("mjg,njg->mnj", x16.reshape(m, k // g, g), wq.reshape(n, k // g, g))
            want = (acc * scales.astype(np.float64)[None]).sum(-1) + bias
            # fp32 rounding bound: a few ulps of the sum of magnitudes
            mag = np.einsum("mjg,njg->mnj", np.abs(x16).reshape(m, k // g, g), np.abs(wq).reshape(n, k // g, g))
            bound = 4 * k * 2.0**-24 * (mag * scales[None]).sum(-1) + 1e-6 * np.abs(bias)
            assert np.all(np.abs(got - want) <= bound), np.abs(got - want).max()


def _one_layer(n, k, spec_text, bias, seed=0):
    from compiler.ir import Graph, TensorType
    from compiler.quant.apply import qlinear_node
    from compiler.quant.rtn import quantize_rtn
    from compiler.quant.spec import parse_spec

    spec = parse_spec(spec_text)
    rng = np.random.default_rng(seed)
    g = Graph("one")
    x = g.add_input("x", TensorType(("S", k)))
    g.add_const("w", rng.standard_normal((n, k), dtype=np.float32) * np.float32(0.05))
    ins = [x, "w"]
    if bias:
        g.add_const("b", rng.standard_normal(n, dtype=np.float32))
        ins.append("b")
    g.add_node("linear", ins, "y")
    qw = quantize_rtn(g.consts["w"], spec, name="w")
    g.nodes[0] = qlinear_node(g, g.nodes[0], qw, spec)
    del g.consts["w"]
    g.set_outputs(["y"])
    g.verify()
    return g


@pytest.mark.parametrize("spec,n,k,bias", [("w4g128", 256, 512, True), ("w2g64a8", 128, 384, False), ("ternaryg128a8", 192, 256, True), ("w4g64a8-asym", 64, 256, True),
                                           ("w2g128-asym", 128, 256, False)])
def test_whole_lowered_path_decode_and_prefill(spec, n, k, bias, tmp_path, fast_rules):
    from safetensors.numpy import load_file
    from tvm.runtime.vm import VirtualMachine

    from compiler.backends.tvm.build import build_target
    from compiler.reference import Interpreter

    g = _one_layer(n, k, spec, bias)
    info = build_target(g, "tvm-cpu", tmp_path / "t")
    info = json.loads((tmp_path / "t" / "tvm.json").read_text())
    a8_kernel = "vnni-cpu" if kernels_cpu.host_has_vnni() else "blocked-cpu"
    kernel = a8_kernel if "a8" in spec else (A16_W4_KERNEL if spec.startswith(("w4", "w2", "ternary")) else A16_KERNEL)
    if spec.startswith("ternary") and "a8" in spec and kernels_cpu.host_has_vnni() and kernels_cpu.host_has_vbmi():
        kernel = "vnni-trit-cpu"  # five trits per byte (tests/compiler/backends/tvm/test_kernels_trit.py)
    assert set(info["kernels"].values()) == {kernel}
    arrays = dict(g.consts)
    arrays.update(load_file(str(tmp_path / "t" / "params.safetensors")))
    vm = VirtualMachine(tvm.runtime.load_module(str(tmp_path / "t" / "model.so")), tvm.cpu(0))
    params = [tvm.runtime.tensor(arrays[p["key"]]) for p in info["params"]]
    rng = np.random.default_rng(2)
    for m in (1, 5, 17):
        x = rng.standard_normal((m, k)).astype(np.float32)
        out = vm["main"](tvm.runtime.tensor(x), *params)
        got = (out[0] if not hasattr(out, "numpy") else out).numpy()
        want = Interpreter(g).run({"x": x})["y"]
        # lut-cpu and vnni-cpu at A16 round activations to 13 bits per group (their kernel tests check the bound)
        tol = (5e-4 if kernel in ("lut-cpu", "vnni-cpu") and "a8" not in spec else 1e-5) * np.abs(want).max()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=tol, err_msg=f"{spec} M={m}")


needs_vnni = pytest.mark.skipif(not kernels_cpu.host_has_vnni(), reason="the host CPU has no AVX-512 VNNI (vpdpbusd)")


@needs_vnni
@pytest.mark.parametrize("kind,n,k,g", [("w4", 64, 128, 128), ("w2", 32, 64, 64), ("ternary", 48, 128, 128), ("w4", 16, 64, 64), ("w2", 16, 128, 128),
                                        ("w8", 32, 256, 256), ("w8", 16, 32, 32)])
def test_vnni_group_sums_are_exact_int32(kind, n, k, g):
    """One group per row (K = g), scales 1, sa 1: y is float(acc) for the exact int32 acc (|acc| < 2^24 here),
    at the largest |q - z| and |qa|."""
    rng = np.random.default_rng(n * k)
    bits, tern, codes, packed, zeros, layout = _case(rng, kind, n, k, g, extreme=kind != "ternary")
    m = 4
    qa = np.where(rng.random((m, k)) < 0.5, -127, 127).astype(np.int32)
    qa[0] = 127
    qa[1] = rng.integers(-127, 128, k)
    shape = qlinear_te.QLinearShape(True, n, k, bits, g, "a8", layout, "cpu", False, tern)
    r = kernels_cpu.relayout_vnni(packed, np.ones((n, 1), np.float32), zeros, shape)
    types = [(("S", k), "int32"), (r["packed"].shape, "uint8"), (r["scales"].shape, "float32"), (r["zeros"].shape, "uint8"), (("S",), "float32")]
    f = build(kernels_cpu.vnni_te(shape), types, "ql", kernels_cpu.schedule_vnni)
    got = f(qa, r["packed"], r["scales"], r["zeros"], np.ones(m, np.float32)).numpy()
    want = qa.astype(np.int64) @ (codes.astype(np.int64) - np.repeat(zeros.astype(np.int64), g, axis=1)).T
    np.testing.assert_array_equal(got.astype(np.int64), want)
    assert np.array_equal(got, want.astype(np.float32))
    if kind != "ternary":
        assert np.abs(want).max() == g * 127 * ((1 << bits) - 1)


@needs_vnni
@pytest.mark.parametrize("kind,n,k,g,bias", [("w4", 128, 512, 128, True), ("w2", 64, 256, 64, False), ("ternary", 96, 384, 128, True), ("w4", 32, 256, 64, False),
                                             ("w8", 64, 256, 32, True)])
def test_vnni_kernel_meets_the_contract(kind, n, k, g, bias):
    rng = np.random.default_rng(9)
    bits, tern, codes, packed, zeros, layout = _case(rng, kind, n, k, g)
    scales = (rng.random((n, k // g)) * 0.02 + 0.001).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    shape = qlinear_te.QLinearShape(True, n, k, bits, g, "a8", layout, "cpu", bias, tern)
    r = kernels_cpu.relayout_vnni(packed, scales, zeros, shape)
    w = QLinearWeights(packed, scales, zeros, {"n": n, "k": k, "group_size": g, "bits": bits, "layout": layout})
    types = [(("S", k), "int32"), (r["packed"].shape, "uint8"), (r["scales"].shape, "float32"), (r["zeros"].shape, "uint8"), (("S",), "float32")] + ([((n,), "float32")] if bias else [])
    f = build(kernels_cpu.vnni_te(shape), types, "ql", kernels_cpu.schedule_vnni)
    ref = build(kernels_cpu.vnni_te(shape), types, "ql_plain")  # the plain TE definition of the same layout
    for m in (1, 7):
        x = (rng.standard_normal((m, k)) * 2).astype(np.float32)
        qa, sa = quantize_activations_a8(x)
        args = [qa.astype(np.int32), r["packed"], r["scales"], r["zeros"], sa] + ([b] if bias else [])
        got = f(*args).numpy()
        want = qlinear(x, w, "a8", b if bias else None)
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6 * np.abs(want).max())
        np.testing.assert_allclose(got, ref(*args).numpy(), rtol=2e-6, atol=2e-6 * np.abs(want).max())


def _vnni_call(n, k, g, bits, act, mins, f16):
    """vnni_prim_func built alone; a function of (x, packed, scales, zeros[, sa]) -> y."""
    from tvm import tirx  # noqa: F401

    f = kernels_cpu.vnni_prim_func(n, k, g, bits, False, act, mins, f16)
    from compiler.backends.tvm.target import cpu_target

    lib = tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target=cpu_target())

    def call(*args):
        dev = tvm.cpu()
        y = tvm.runtime.tensor(np.zeros((args[0].shape[0], n), np.float32), dev)
        lib["main"](*[tvm.runtime.tensor(np.ascontiguousarray(a), dev) for a in args], y)
        return y.numpy()

    return call


@needs_vnni
@pytest.mark.parametrize("bits,act,mins,f16", [(4, "a16", True, True), (4, "a16", False, False), (4, "a8", False, False), (2, "a8", True, False), (2, "a16", False, False),
                                               (8, "a16", False, True), (8, "a8", True, False)])
def test_vnni_prefill_row_blocks_give_each_row_its_own_bits(bits, act, mins, f16):
    """A prefill walks VNNI_PREFILL_ROWS rows per pass over a weight block (then the rest one by one): every row of
    an M-row call equals that row computed alone, bit for bit, for M across whole blocks and remainders."""
    n, k, g = 48, 256, 64
    per = 8 // bits
    rng = np.random.default_rng(bits * 10 + int(mins))
    pdt = np.float16 if f16 else np.float32
    pk = rng.integers(0, 256, (n // 16, k // (4 * per), 64)).astype(np.uint8)
    sc = (rng.random((n // 16, k // g, 16)) * 0.01 + 0.001).astype(pdt)
    zz = (rng.standard_normal((n // 16, k // g, 16)) * 0.01).astype(pdt) if mins else rng.integers(0, 1 << bits, (n // 16, k // g, 16)).astype(np.uint8)
    call = _vnni_call(n, k, g, bits, act, mins, f16)
    mr = kernels_cpu.VNNI_PREFILL_ROWS[bits]
    for m in (mr - 1, mr, mr + 1, 3 * mr + 2):
        x = (rng.standard_normal((m, k)) * 3).astype(np.float32) if act == "a16" else rng.integers(-127, 128, (m, k)).astype(np.int32)
        extra = [rng.random(m).astype(np.float32) + 0.5] if act == "a8" else []
        y = call(x, pk, sc, zz, *extra)
        for i in range(m):
            alone = call(x[i:i + 1], pk, sc, zz, *[e[i:i + 1] for e in extra])
            assert np.array_equal(y[i:i + 1], alone), (m, i)


def test_blocked_e4m3_decode_is_the_shared_table_for_every_code():
    """blocked-cpu reads fp8 / mxfp8 codes through their fp16 bit pattern: every one of the 256 codes gives the
    format's table entry bit for bit (the two NaN codes included: +-448, as the table holds them)."""
    from compiler.quant.floatfmt import table

    c = te.placeholder((256,), "uint8", name="c")
    v = te.compute((256,), lambda i: kernels_cpu.e4m3_value(c[i]), name="v")
    f = tvm.compile(te.create_prim_func([c, v]), target="llvm")
    out = tvm.runtime.tensor(np.zeros(256, np.float32))
    f(tvm.runtime.tensor(np.arange(256, dtype=np.uint8)), out)
    np.testing.assert_array_equal(out.numpy(), table("fp8")[0])
    np.testing.assert_array_equal(np.signbit(out.numpy()), np.signbit(table("fp8")[0]))  # -0 at 0x80


@pytest.mark.parametrize("spec", ["fp8", "mxfp8a8", "fp8g64a32"])
def test_e4m3_codebook_layers_take_blocked_cpu_and_meet_the_contract(spec, tmp_path, fast_rules):
    """The E4M3 formats take blocked-cpu (codes decoded in register); the other codebook formats keep the
    dequantize kernel. fp32 sums of table values, as the contract's (1e-5 of the output's range)."""
    from compiler.reference import Interpreter
    from tests.compiler.backends.tvm.common import InMemoryTVM

    g = _one_layer(128, 256, spec, True)
    packed = g.consts["w.qweight"]  # 8-bit dense storage: the codes; the two NaN codes (which the table reads as +-448)
    packed[3, :7], packed[70, 5:9] = 0x7F, 0xFF  # are never encoded, but a kernel must still read them as the table does
    m = InMemoryTVM(g)
    assert set(m.lowered.kernels.values()) == {"blocked-cpu"}
    for rows in (1, 9):
        x = np.random.default_rng(rows).standard_normal((rows, 256)).astype(np.float32)
        got, want = m.run({"x": x})["y"], Interpreter(g).run({"x": x})["y"]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    # a per-row codebook (SqueezeLLM's: a table per row) keeps the dequantize kernel
    assert kernels.matching_kernels(kernels.qlinear_shape(True, 128, 256, 4, 32, "a16", "cpu", "dense", codebook=True, fp=""))[0].name == "dequant-cpu"


@pytest.mark.parametrize("spec, avx512", [("nf4", True), ("nf4a8", True), ("nf4a32", True), ("nf4", False), ("nf4a8", False)])
def test_nf4_layers_take_blocked_cpu_and_meet_the_contract(spec, avx512, fast_rules, monkeypatch):
    """nf4 takes blocked-cpu: on AVX-512 hosts a hand-written body that looks codes up with vpermps in the 16-entry
    table, elsewhere the 16 NF4 values by a select tree on the code's bits; fp32 sums of table values as the
    contract's (1e-5 of the output's range). A table that is not NF4's is refused when re-laid out."""
    from compiler.errors import LowbitError
    from compiler.reference import Interpreter
    from tests.compiler.backends.tvm.common import InMemoryTVM

    if avx512 and not kernels_cpu.host_has_avx512bw():
        pytest.skip("the host CPU has no AVX-512")
    monkeypatch.setattr(kernels_cpu, "host_has_avx512bw", lambda: avx512)
    g = _one_layer(128, 256, spec, True)
    m = InMemoryTVM(g)
    assert set(m.lowered.kernels.values()) == {"blocked-cpu"}
    for rows in (1, 9):
        x = np.random.default_rng(rows).standard_normal((rows, 256)).astype(np.float32)
        got, want = m.run({"x": x})["y"], Interpreter(g).run({"x": x})["y"]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())
    shape = kernels.qlinear_shape(True, 128, 256, 4, 64, "a16", "cpu", "nibble", codebook=True, fp="nf4")
    table = g.consts["w.table"].copy()
    table[0, 3] += 1e-3
    with pytest.raises(LowbitError, match="not the 16 NF4 values"):
        kernels_cpu.relayout_blocked(g.consts["w.qweight"], g.consts["w.scales"], table, shape)


def test_blocked_e2m1_decode_is_the_shared_table_for_every_code():
    """blocked-cpu reads mxfp4 / nvfp4 codes through an fp16 bit pattern: the 16 codes give the E2M1 table entries
    times 2^-14 bit for bit (-0 at code 8)."""
    from compiler.quant.floatfmt import table

    c = te.placeholder((16,), "int32", name="c")
    v = te.compute((16,), lambda i: kernels_cpu.e2m1_scaled(c[i]) * kernels_cpu.E2M1_SCALE, name="v")
    f = tvm.compile(te.create_prim_func([c, v]), target="llvm")
    out = tvm.runtime.tensor(np.zeros(16, np.float32))
    f(tvm.runtime.tensor(np.arange(16, dtype=np.int32)), out)
    np.testing.assert_array_equal(out.numpy(), table("mxfp4")[0])
    np.testing.assert_array_equal(np.signbit(out.numpy()), np.signbit(table("mxfp4")[0]))


@pytest.mark.parametrize("spec, off", [("mxfp4", ""), ("nvfp4a8", ""), ("mxfp4a8", ""), ("nvfp4", ""), ("mxfp4a32", ""),
                                       ("mxfp4", "vnni-cpu"), ("nvfp4a8", "vnni-cpu")])
def test_e2m1_codebook_layers_take_the_fast_kernels_and_meet_the_contract(spec, off, fast_rules, monkeypatch):
    """mxfp4 / nvfp4 at A8 and A16 take vnni-cpu on VNNI hosts (each code looked up by vpshufb as the byte 2 v + 12,
    scale s / 2, zero point 12: exact int32 group sums), else (and at A32) blocked-cpu (E2M1 decoded in register,
    fp32 sums of the table values, as the contract's). A8: exact products and sums, so equal but for the float
    epilogue's order (1e-6); A16 on vnni-cpu: 13-bit activations per group (5e-4, as W4's); fp32 sums 1e-5."""
    from compiler.reference import Interpreter
    from tests.compiler.backends.tvm.common import InMemoryTVM

    monkeypatch.setenv("LOWBIT_TVM_DISABLE_KERNELS", off)
    g = _one_layer(128, 256, spec, True)
    m = InMemoryTVM(g)
    vnni = kernels_cpu.host_has_vnni() and off != "vnni-cpu" and not spec.endswith("a32")
    assert set(m.lowered.kernels.values()) == {"vnni-cpu" if vnni else "blocked-cpu"}
    for rows in (1, 9):
        x = np.random.default_rng(rows).standard_normal((rows, 256)).astype(np.float32)
        got, want = m.run({"x": x})["y"], Interpreter(g).run({"x": x})["y"]
        tol = 1e-6 if "a8" in spec else 5e-4 if vnni else 1e-5
        np.testing.assert_allclose(got, want, rtol=0, atol=tol * np.abs(want).max())
