"""Scale-and-minimum groups (qlinear attr mins: w = s q + m with a float minimum per group) on every TVM path,
and the qembedding op: each kernel that takes minimums (dequant-cpu, blocked-cpu, vnni-cpu, lut-cpu, and the
CUDA gemm-cuda definition on the CPU plus its generated CUDA emulated on the CPU) against
compiler.reference.qlinear on Q4_1-style weights (quantize_rtn_min) at A16 and A8; the rule table never picks a
kernel without minimum support for such a layer; scales and minimums that are fp16 values stay fp16 in the
re-laid-out copies; tuning times such shapes on synthesized minimums; a tiny llama whose layers and tied head
have minimums, with the embedding a qembedding of the head's own constants, through tvm-cpu against ref; a
small table graph exported and reloaded, and built for tvm-cuda (every kernel thread-bound)."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.compiler.backends.tvm.common import tvm  # noqa: F401 (skips the module when TVM is missing)

from compiler.backends.tvm import kernels  # noqa: E402
from compiler.backends.tvm import kernels_cpu  # noqa: E402
from compiler.backends.tvm import kernels_cuda  # noqa: E402
from compiler.backends.tvm import kernels_lut  # noqa: E402
from compiler.backends.tvm import qlinear_te  # noqa: E402
from compiler.quant.pack import pack, storage_layout  # noqa: E402
from compiler.quant.rtn import quantize_rtn_min  # noqa: E402
from compiler.reference import QLinearWeights, qlinear, quantize_activations_a8  # noqa: E402
from tests.compiler.backends.tvm.test_kernels import build  # noqa: E402

needs_vnni = pytest.mark.skipif(not kernels_cpu.host_has_vnni(), reason="the host CPU has no AVX-512 VNNI (vpdpbusd)")
needs_bw = pytest.mark.skipif(not kernels_lut.host_has_avx512bw(), reason="the host CPU has no AVX-512BW (512-bit vpshufb)")


def _min_weights(n, k, g, bits, seed=0, f16=False):
    """Q4_1-style weights: per-group float minimum and scale (RTN-min) of an offset Gaussian, so minimums are
    neither multiples of the scale nor all of one sign; f16: scales and minimums rounded to fp16 (as GGUF stores them)."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((n, k)) * 0.05 + rng.standard_normal((n, 1)) * 0.03).astype(np.float32)
    qw = _f16(quantize_rtn_min(w, bits, g)) if f16 else quantize_rtn_min(w, bits, g)
    layout = storage_layout(bits)
    packed = pack(qw.codes, bits, layout)
    ref = QLinearWeights(packed, qw.scales, qw.mins, {"n": n, "k": k, "group_size": g, "bits": bits, "layout": layout, "mins": True})
    return qw, packed, layout, ref


def _f16(qw):
    qw.scales = qw.scales.astype(np.float16).astype(np.float32)
    qw.mins = qw.mins.astype(np.float16).astype(np.float32)
    return qw


# kernel -> (relayout or None, te_func, schedule); each takes minimums in place of the zero points
KERNELS = {
    "dequant-cpu": (None, qlinear_te.qlinear_te, qlinear_te.schedule_cpu_simple),
    "blocked-cpu": (kernels_cpu.relayout_blocked, kernels_cpu.blocked_te, kernels_cpu.schedule_blocked),
    "vnni-cpu": (kernels_cpu.relayout_vnni, kernels_cpu.vnni_te, kernels_cpu.schedule_vnni),
    "lut-cpu": (kernels_lut.relayout_lut, kernels_lut.lut_te, kernels_lut.schedule_lut),
    "gemm-cuda (definition)": (None, kernels_cuda.gemm_te, None),  # unscheduled, for the CPU (target "cpu": no __int_as_float)
}
NEEDS = {"vnni-cpu": needs_vnni, "lut-cpu": needs_bw}
BLOCK_FP = ("vnni-cpu", "lut-cpu")  # A16 through 13-bit block-floating-point activations


def _run_kernel(name, act, bits=4, g=32, n=128, k=256, bias=True, f16=False):
    qw, packed, layout, ref = _min_weights(n, k, g, bits, seed=bits + g, f16=f16)
    shape = qlinear_te.QLinearShape(True, n, k, bits, g, act, layout, "cpu", bias, False, True, f16)
    relayout, te_func, schedule = KERNELS[name]
    r = relayout(packed, qw.scales, qw.mins, shape) if relayout else {"packed": packed, "scales": qw.scales, "zeros": qw.mins}
    pdt = np.float16 if f16 and relayout else np.float32  # a re-laid-out copy of fp16 values holds them in fp16
    assert r["zeros"].dtype == r["scales"].dtype == pdt and r["zeros"].shape == r["scales"].shape  # minimums in the scales' layout
    b = np.random.default_rng(1).standard_normal(n).astype(np.float32)
    pname = pdt.__name__
    types = [(("S", k), "int32" if act == "a8" else "float32"), (r["packed"].shape, "uint8"), (r["scales"].shape, pname), (r["zeros"].shape, pname)]
    types += [(("S",), "float32")] if act == "a8" else []
    types += [((n,), "float32")] if bias else []
    f = build(te_func(shape), types, "ql", schedule)
    rng = np.random.default_rng(7)
    for m in (1, 6):
        x = (rng.standard_normal((m, k)) * 2).astype(np.float32)
        x[0, :g] = 0  # an all-zero activation group: xs = 0 and (13-bit kernels) its scale falls back to 1
        want = qlinear(x, ref, act, b if bias else None)
        extra = [b] if bias else []
        if act == "a8":
            qa, sa = quantize_activations_a8(x)
            got = f(qa.astype(np.int32), r["packed"], r["scales"], r["zeros"], sa, *extra).numpy()
            # exact integer group sums (acc and xs) as the reference forms them; only the fp32 epilogue's order differs
            np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6 * np.abs(want).max(), err_msg=f"{name} M={m}")
            continue
        got = f(x, r["packed"], r["scales"], r["zeros"], *extra).numpy()
        if name not in BLOCK_FP:  # fp32 group sums of the fp16 activations: the reference's, in another order inside a group
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max(), err_msg=f"{name} M={m}")
            continue
        model = kernels_lut.lut_reference(x, qw.codes, qw.scales, None, g, "a16", mins=qw.mins) + (b if bias else 0)
        np.testing.assert_allclose(got, model, rtol=1e-5, atol=1e-5 * np.abs(model).max())  # the kernel is its model
        # against the contract: each activation is off by <= s_a / 2 = amax_group / (2 * 8191), and it multiplies the
        # dequantized weight s q + m (the minimum's term uses the same rounded activations)
        x16 = np.abs(x.astype(np.float16).astype(np.float64)).reshape(m, k // g, g)
        half_step = x16.max(axis=2) / (2 * kernels_lut.A16_MAX)
        wd = np.abs(qw.dequantize().astype(np.float64)).reshape(n, k // g, g).sum(axis=2)
        bound = half_step @ wd.T + 1e-5 * np.abs(want).max()
        assert np.all(np.abs(got - want) <= bound), float(np.abs(got - want).max())


@settings(max_examples=25, deadline=None)
@given(
    kernel=st.sampled_from(["blocked-cpu", "vnni-cpu", "lut-cpu"]),
    nb=st.integers(1, 2),
    nj=st.integers(1, 3),
    f16=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_relayout_carries_minimums_in_the_scales_layout(kernel, nb, nj, f16, seed):
    """Every re-laid-out kernel puts mins[n, j] where it puts scales[n, j] (numpy only: no TVM build), in fp16 exactly
    when asked for fp16 parameters."""
    n, g = 64 * nb, 32
    qw, packed, layout, _ = _min_weights(n, g * nj, g, 4, seed=seed, f16=f16)
    shape = qlinear_te.QLinearShape(True, n, g * nj, 4, g, "a16", layout, "cpu", False, False, True, f16)
    r = KERNELS[kernel][0](packed, qw.scales, qw.mins, shape)
    rows = r["scales"].shape[-1]
    back = {role: r[role].astype(np.float32).transpose(0, 2, 1).reshape(n, nj) for role in ("scales", "zeros")}
    assert r["zeros"].dtype == (np.float16 if f16 else np.float32) and rows in (16, 64)
    np.testing.assert_array_equal(back["scales"], qw.scales)
    np.testing.assert_array_equal(back["zeros"], qw.mins)


@pytest.mark.parametrize("act", ["a16", "a8"])
@pytest.mark.parametrize("name", [pytest.param(k, marks=NEEDS.get(k, ())) for k in KERNELS])
def test_kernel_with_minimums_meets_the_contract(name, act):
    if name.startswith("gemm-cuda"):  # the TE computation both CUDA schedules share (tile padding past M = 6)
        _run_kernel(name, act, n=64, k=128)
    else:
        _run_kernel(name, act, bias=act == "a8")


@needs_bw
def test_lut_w2_with_minimums():
    """Two bit-planes (one pair) with minimums: the table path at another width than W4."""
    _run_kernel("lut-cpu", "a16", bits=2, g=64, n=64, k=256, bias=False)


@pytest.mark.parametrize(
    "name,act", [pytest.param("vnni-cpu", "a16", marks=needs_vnni), pytest.param("lut-cpu", "a8", marks=needs_bw), ("blocked-cpu", "a16")]
)
def test_fp16_scales_and_minimums_are_kept_in_fp16(name, act):
    """GGUF-style fp16 d and m: the re-laid-out copy holds them in fp16 (fewer bytes per group), same results."""
    _run_kernel(name, act, f16=True, bias=act == "a8")


def test_rules_never_pick_a_kernel_without_minimums(monkeypatch):
    monkeypatch.setenv("LOWBIT_TVM_FAST_CPU", "1")
    toy = kernels.QLinearKernel("toy-cpu", qlinear_te.qlinear_te, qlinear_te.schedule_cpu_simple)  # mins=False (the default)
    table = [kernels.Rule(lambda s: True, toy), *kernels.rules()]
    assert kernels.choose_qlinear_kernel(True, 1536, 576, 4, 32, "a16", "cpu", "nibble", table=table)[0] is toy
    kern, shape = kernels.choose_qlinear_kernel(True, 1536, 576, 4, 32, "a16", "cpu", "nibble", table=table, mins=True)
    assert shape.mins and kern is not toy and kern.mins
    want = "vnni-cpu" if kernels_cpu.host_has_vnni() else ("lut-cpu" if kernels_lut.host_has_avx512bw() else "blocked-cpu")
    assert kern.name == want  # the same kernel as for the layer with zero points
    for target, layer in (("cuda", (1536, 576)), ("cuda", (100, 576)), ("cpu", (100, 576))):
        kern, _ = kernels.choose_qlinear_kernel(True, *layer, 4, 32, "a8", target, "nibble", mins=True)
        assert kern.mins, (target, layer)
    assert all(r.kernel.mins for r in kernels.rules())  # every kernel of the table takes them today


def test_tuning_times_shapes_with_minimums(tmp_path, monkeypatch):
    from compiler.backends.tvm import tune

    monkeypatch.setenv("LOWBIT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tune, "ROTATE_BYTES", 1 << 20)
    zp = kernels.qlinear_shape(True, 128, 256, 4, 32, "a16", "cpu", "nibble")
    mn = dataclasses.replace(zp, mins=True)
    assert tune.cache_key(zp) != tune.cache_key(mn)  # measured separately
    run = tune._runner(kernels.BLOCKED_CPU, mn)  # compiles the kernel for float minimums and times it on them
    assert run() > 0


@pytest.fixture(scope="module")
def cuda_gemm_a8_mins():
    """gemm-cuda A8 W4g32 with minimums and bias, built for CUDA (source only, no GPU needed)."""
    from compiler.backends.tvm.build import compile_lowered, cuda_source, unbound_blocks
    from compiler.backends.tvm.target import cuda_target
    from tests.compiler.backends.tvm.test_cuda_gemm import _cuda_module, _Lowered

    n, k, g = 128, 256, 32
    qw, packed, layout, ref = _min_weights(n, k, g, 4, seed=3)
    shape = qlinear_te.QLinearShape(True, n, k, 4, g, "a8", layout, "cuda", True, False, True)
    types = [(("S", k), "int32"), (packed.shape, "uint8"), (qw.scales.shape, "float32"), (qw.mins.shape, "float32"), (("S",), "float32")]
    types += [((n,), "float32")]
    mod = _cuda_module(shape, types)
    assert unbound_blocks(mod) == []  # the activation group sums too run on threads
    return cuda_source(compile_lowered(_Lowered(mod), "cuda", cuda_target())), qw, packed, ref


def test_generated_cuda_gemm_with_minimums_emulated_on_the_cpu(cuda_gemm_a8_mins):
    """The GEMM launch of the generated CUDA, run on the CPU (tests/compiler/backends/tvm/cuda_emulate.py) at M = 3
    and 70 (a partial row tile), fed the activation group sums its preceding kernel forms (that kernel's
    computation is the definition tested above)."""
    from tests.compiler.backends.tvm.cuda_emulate import EmulatedKernel, kernel_text

    src, qw, packed, ref = cuda_gemm_a8_mins
    names = [re.search(r"\) (\w+)\(", ln).group(1) for ln in src.splitlines() if ln.startswith('extern "C" __global__') and ln.endswith("{")]
    gemm = [nm for nm in names if "__shared__" in kernel_text(src, nm)[0]]
    assert len(gemm) == 1 and any("x_gsum" in kernel_text(src, nm)[0] and "__shared__" not in kernel_text(src, nm)[0] for nm in names)
    kern = EmulatedKernel(src, gemm[0])
    tm, tn, _ = kernels_cuda.config()
    n, k, g = 128, 256, 32
    rng = np.random.default_rng(4)
    b = rng.standard_normal(n).astype(np.float32)
    for m in (3, 70):
        x = rng.standard_normal((m, k)).astype(np.float32)
        qa, sa = quantize_activations_a8(x)
        qa = np.ascontiguousarray(qa.astype(np.int32))
        feeds = {"a0_ptr": qa, "a1_ptr": packed, "a2_ptr": qw.scales, "a3_ptr": qw.mins, "a4_ptr": sa, "a5_ptr": b,
                 "x_gsum_ptr": np.ascontiguousarray(qa.reshape(m, k // g, g).sum(axis=2).astype(np.int32)), "S": m}
        out = np.full((m, n), np.nan, np.float32)
        args = [out if nm.startswith("qlinear") else feeds[nm] for _, nm in kern.params]
        kern((n // tn, -(-m // tm)), (tn // kernels_cuda.PER_THREAD, tm // kernels_cuda.PER_THREAD), *args)
        want = qlinear(x, ref, "a8", b)
        np.testing.assert_allclose(out, want, rtol=2e-6, atol=2e-6 * np.abs(want).max())  # exact integer sums, fp32 epilogue


# ----------------------------------------------------------------------------------------------------------
# a whole model: minimum layers, a tied head with minimums, the embedding as a qembedding of the head's constants


def _tied_min_llama():
    """A 2-layer llama with tied embeddings (the LM head reads the embedding table), every linear and the head
    RTN-min quantized at W4 g32 (block 0 A16 with fp16 scales and minimums, block 1 A8 with float32 ones, the head
    A16 fp16), the embedding a qembedding of the head's constants."""
    from compiler.frontend.llama import build_llama
    from compiler.frontend.presets import PRESETS, Preset, preset_weights
    from compiler.ir import Node
    from compiler.quant.apply import qlinear_node
    from compiler.quant.spec import parse_spec

    cfg = {**PRESETS["llama-tiny"].config, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
           "num_key_value_heads": 2, "head_dim": 32, "vocab_size": 256, "tie_word_embeddings": True}
    p = Preset("llama-tied-2l", "llama", cfg, "a small tied llama for this test")
    g = build_llama(cfg, preset_weights(p), p.name)
    table = "model.embed_tokens.weight"
    for i, node in enumerate(g.nodes):
        if node.op != "linear":
            continue
        spec = parse_spec("w4g32a8" if node.attrs.get("block") == 1 else "w4g32")
        qw = quantize_rtn_min(g.consts[node.inputs[1]], 4, 32)
        g.nodes[i] = qlinear_node(g, node, _f16(qw) if node.attrs.get("block") != 1 else qw, spec)  # block 0 and the head: GGUF-like fp16
    head = next(nd for nd in g.nodes if "logits" in nd.outputs)
    e = next(i for i, nd in enumerate(g.nodes) if nd.op == "embedding")
    attrs = {key: head.attrs[key] for key in ("bits", "group_size", "n", "k", "layout", "ternary", "mins")}
    g.nodes[e] = Node("qembedding", [g.nodes[e].inputs[0], *head.inputs[1:4]], list(g.nodes[e].outputs), attrs)
    for c in [c for c in g.consts if c not in {i for nd in g.nodes for i in nd.inputs}]:
        del g.consts[c]
    g.infer_types()
    g.verify()
    assert table not in g.consts and head.inputs[1] == "model.embed_tokens.qweight" and head.inputs[3].endswith(".mins")  # stored once, quantized
    return g


@pytest.fixture(scope="module")
def tied_llama():
    from tests.compiler.backends.tvm.common import InMemoryTVM

    g = _tied_min_llama()
    return g, InMemoryTVM(g)


def test_tiny_llama_with_minimums_and_a_qembedding_table_matches_ref(tied_llama):
    from compiler.frontend.llama import empty_cache
    from compiler.reference import Interpreter
    from tests.helpers import COMPILER_TOL, IDS, check_close

    g, mod = tied_llama
    assert set(mod.lowered.kernels.values()) <= {r.kernel.name for r in kernels.rules() if r.kernel.mins}
    head = next(nd for nd in g.nodes if "logits" in nd.outputs)
    emb = next(nd for nd in g.nodes if nd.op == "qembedding")
    assert emb.inputs[1:4] == head.inputs[1:4]
    relaid = {key.split("@")[0]: a.dtype for key, a in mod.lowered.relayout.items()}
    # fp16 values kept in fp16 (gate and up run stacked, lower.py _stack_siblings: their arrays are named after gate's)
    assert relaid["model.embed_tokens.mins"] == relaid["model.layers.0.mlp.gate_proj.scales+1"] == np.float16
    assert relaid["model.layers.1.mlp.gate_proj.mins+1"] == np.float32
    ids = np.array(IDS, np.int64)
    feeds = {"input_ids": ids, "positions": np.arange(len(ids), dtype=np.int64), **empty_cache(g, len(ids))}
    want = Interpreter(g).run(feeds)
    got = mod.run(feeds)
    # the A8 block's int8 activations flip roundings on the A16 blocks' 13-bit-activation differences (vnni-cpu,
    # lut-cpu): the tvm-* A8 row of the agreement table
    check_close(got, want, COMPILER_TOL["a8"], "tvm-cpu mins llama")
    assert (got["logits"].argmax(-1) == want["logits"].argmax(-1)).mean() >= 0.9


def test_qembedding_rows_are_the_dequantized_table():
    """The converter alone, zero points and minimums: one output row per id (repeats included)."""
    from compiler.backends.tvm.lower import _qembedding_te, _schedule_qembedding
    from compiler.quant.rtn import quantize_rtn
    from compiler.quant.spec import parse_spec

    v, k = 64, 96
    w = np.random.default_rng(5).standard_normal((v, k)).astype(np.float32)
    ids = np.array([0, 63, 5, 5, 17], np.int64)
    for qw in (quantize_rtn_min(w, 4, 32), quantize_rtn(w, parse_spec("w3g32-asym"))):
        layout = storage_layout(qw.bits)
        packed = pack(qw.codes, qw.bits, layout)
        offsets = qw.mins if qw.has_mins else qw.zeros
        attrs = {"bits": qw.bits, "group_size": 32, "n": v, "k": k, "layout": layout, "mins": qw.has_mins}
        types = [(("S",), "int64"), (packed.shape, "uint8"), (qw.scales.shape, "float32"), (offsets.shape, str(offsets.dtype))]
        f = build(lambda *t, attrs=attrs: _qembedding_te(*t, attrs), types, "qembedding", _schedule_qembedding("cpu"))
        got = f(ids, packed, qw.scales, offsets).numpy()
        np.testing.assert_allclose(got, qw.dequantize()[ids], rtol=1e-6, atol=1e-6 * np.abs(w).max())


def _table_graph(v=64, k=256, n2=96):
    """ids -> qembedding of a W4 g32 table with fp16 scales and minimums -> minimum layers to N = n2 (A16), n2 -> n2
    (A16), back to k (A8) -> the table's tied head: logits [S, V]. The graph's constants hold the table once."""
    from compiler.ir import Graph, Node, TensorType
    from compiler.quant.apply import qlinear_node
    from compiler.quant.spec import parse_spec

    rng = np.random.default_rng(8)
    g = Graph("table")
    ids = g.add_input("ids", TensorType(("S",), "i64"))
    weights = {"table": (v, k), "up": (n2, k), "side": (n2, n2), "down": (k, n2)}  # [N, K] each
    for name, shp in weights.items():
        g.add_const(name, rng.standard_normal(shp).astype(np.float32) * np.float32(0.1))
    head = qlinear_node(g, Node("linear", ["h2", "table"], ["logits"], {}), _f16(quantize_rtn_min(g.consts["table"], 4, 32)), parse_spec("w4g32"))
    attrs = {key: head.attrs[key] for key in ("bits", "group_size", "n", "k", "layout", "ternary", "mins")}
    g.nodes.append(Node("qembedding", [ids, *head.inputs[1:4]], ["h0"], attrs))
    for x, w, out, spec in (("h0", "up", "h1", "w4g32"), ("h1", "side", "h1b", "w4g32"), ("h1b", "down", "h2", "w4g32a8")):
        g.nodes.append(qlinear_node(g, Node("linear", [x, w], [out], {}), quantize_rtn_min(g.consts[w], 4, 32), parse_spec(spec)))
    g.nodes.append(head)
    for c in weights:
        del g.consts[c]
    g.infer_types()
    g.set_outputs(["logits"])
    g.verify()
    return g


def test_zero_point_layer_with_fp16_scales_keeps_them_in_fp16(monkeypatch):
    """fp16 scales (GGUF's Q4_0 / Q8_0 d) with zero points: the fast kernel's copy holds them in fp16, same answer."""
    from compiler.reference import Interpreter
    from tests.compiler.backends.tvm.common import InMemoryTVM
    from tests.compiler.backends.tvm.test_kernels_cpu import _one_layer

    monkeypatch.setenv("LOWBIT_TVM_FAST_CPU", "1")
    g = _one_layer(64, 128, "w4g32a8", True)
    sc = next(c for c in g.consts if c.endswith(".scales"))
    g.consts[sc] = g.consts[sc].astype(np.float16).astype(np.float32)
    mod = InMemoryTVM(g)
    (kern,) = mod.lowered.kernels.values()
    assert mod.lowered.relayout[f"{sc}@{kern}"].dtype == np.float16
    x = np.random.default_rng(2).standard_normal((3, 128)).astype(np.float32)
    want = Interpreter(g).run({"x": x})["y"]
    np.testing.assert_allclose(mod.run({"x": x})["y"], want, rtol=2e-6, atol=2e-6 * np.abs(want).max())  # A8: exact sums


def test_exported_artifact_with_minimums_and_a_table_reloads(tmp_path):
    """build_target writes model.so and params.safetensors (fp16 scales and minimums of the re-laid-out copies);
    loaded back without the compiler's objects, it gives ref's answer at decode and prefill."""
    import json

    from safetensors.numpy import load_file
    from tvm.runtime.vm import VirtualMachine

    from compiler.backends.tvm.build import build_target
    from compiler.reference import Interpreter

    g = _table_graph()
    build_target(g, "tvm-cpu", tmp_path / "t")
    info = json.loads((tmp_path / "t" / "tvm.json").read_text())
    arrays = dict(g.consts)
    relaid = load_file(str(tmp_path / "t" / "params.safetensors"))
    assert any(k.startswith("table.mins@") and a.dtype == np.float16 for k, a in relaid.items())
    arrays.update(relaid)
    vm = VirtualMachine(tvm.runtime.load_module(str(tmp_path / "t" / "model.so")), tvm.cpu(0))
    params = [tvm.runtime.tensor(arrays[p["key"]]) for p in info["params"]]
    for ids in (np.array([5], np.int64), np.array([0, 63, 7, 7, 30], np.int64)):
        out = vm["main"](tvm.runtime.tensor(ids), *params)
        got = (out[0] if not hasattr(out, "numpy") else out).numpy()
        want = Interpreter(g).run({"ids": ids})["logits"]
        # an A8 layer behind A16 ones (13-bit activations): the tvm-* A8 row of the agreement table
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-2 * np.abs(want).max())


def test_cuda_lowering_with_minimums_and_a_table_builds(tmp_path):
    """tvm-cuda: the qembedding, gemm-cuda (N % 64 == 0), dequant-cuda-warp (N = 96, 8 groups a row) and dequant-cuda
    (N = 96, 3 groups) with minimums, every kernel thread-bound (build_target refuses one that is not), the CUDA source
    in the folder."""
    from compiler.backends.tvm.build import build_target

    info = build_target(_table_graph(), "tvm-cuda", tmp_path / "c", cuda_binary=False)
    want = {"up.qweight": "dequant-cuda-warp", "side.qweight": "dequant-cuda", "down.qweight": "gemm-cuda", "table.qweight": "gemm-cuda"}
    assert info["kernels"] == want
    src = (tmp_path / "c" / "kernels.cu").read_text()
    assert "qembedding" in src and "x_gsum" in src
