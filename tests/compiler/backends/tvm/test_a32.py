"""A32 (float32 activations as given: weight-only quantization) on tvm-cpu and tvm-cuda, and a tied quantized table
held once at run time.

A32: the rule table gives it only kernels that take float activations (blocked-cpu, dequant-cpu and the CUDA ones;
never vnni-cpu or lut-cpu, whose A16 is 13-bit activations); each such kernel equals compiler.reference.qlinear at
A32 within float32 reassociation (1e-5 of max |y|), and is much closer to it than to A16's answer (the activations are
not rounded); a tiny llama at w4g32a32 through tvm-cpu is within the float row of the agreement table (1e-4); the
CUDA build of A32 layers (plain and scale-and-minimum) is thread-bound and compiles with nvcc.

The table: a qembedding whose head's kernel re-lays the table out gathers its rows from that copy (blocked-cpu,
vnni-cpu and lut-cpu layouts, zero points and minimums: the rows equal the reference's), so the module's
parameters hold the table's bytes once."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tvm", reason="Apache TVM (apache-tvm) is not installed")

from compiler.backends.tvm import kernels, kernels_cpu, kernels_cuda, kernels_lut, qlinear_te
from compiler.quant.pack import pack, storage_layout
from compiler.quant.rtn import quantize_rtn, quantize_rtn_min
from compiler.quant.spec import parse_spec
from compiler.reference import QLinearWeights, qlinear
from tests.compiler.backends.tvm.test_kernels import build

needs_vnni = pytest.mark.skipif(not kernels_cpu.host_has_vnni(), reason="the host CPU has no AVX-512 VNNI (vpdpbusd)")
needs_bw = pytest.mark.skipif(not kernels_lut.host_has_avx512bw(), reason="the host CPU has no AVX-512BW (512-bit vpshufb)")

# float32 reassociation inside a group (and the zero point taken out of the sum: sum x q - z sum x)
A32_TOL = 1e-5


def _layer(n, k, g, bits, mins, seed=0):
    """Weights of one layer at w{bits}g{g} (zero points, asymmetric) or w{bits}g{g}-min, packed as stored."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((n, k)) * 0.05 + rng.standard_normal((n, 1)) * 0.03).astype(np.float32)
    qw = quantize_rtn_min(w, bits, g) if mins else quantize_rtn(w, parse_spec(f"w{bits}g{g}-asym"))
    layout = storage_layout(bits)
    packed = pack(qw.codes, bits, layout)
    offsets = qw.mins if mins else qw.zeros
    attrs = {"n": n, "k": k, "group_size": g, "bits": bits, "layout": layout, "mins": mins}
    return qw, packed, offsets, QLinearWeights(packed, qw.scales, offsets, attrs), layout


# kernel -> (relayout or None, te_func, schedule): the kernels the rules give A32 layers on the CPU
A32_KERNELS = {
    "dequant-cpu": (None, qlinear_te.qlinear_te, qlinear_te.schedule_cpu_simple),
    "blocked-cpu": (kernels_cpu.relayout_blocked, kernels_cpu.blocked_te, kernels_cpu.schedule_blocked),
    "gemm-cuda (definition)": (None, kernels_cuda.gemm_te, None),  # unscheduled, on the CPU
}


A32_CASES = [("blocked-cpu", bits, mins) for bits in (4, 2, 8) for mins in (False, True)]
A32_CASES += [("dequant-cpu", 4, False), ("dequant-cpu", 2, True), ("gemm-cuda (definition)", 8, False), ("gemm-cuda (definition)", 4, True)]


@pytest.mark.parametrize("name,bits,mins", A32_CASES)
def test_a32_kernels_meet_the_contract(name, bits, mins):
    n, k, g = 64, 128, 32
    qw, packed, offsets, ref, layout = _layer(n, k, g, bits, mins, seed=bits)
    shape = qlinear_te.QLinearShape(True, n, k, bits, g, "a32", layout, "cpu", True, False, mins)
    relayout, te_func, schedule = A32_KERNELS[name]
    r = relayout(packed, qw.scales, offsets, shape) if relayout else {"packed": packed, "scales": qw.scales, "zeros": offsets}
    b = np.random.default_rng(1).standard_normal(n).astype(np.float32)
    types = [(("S", k), "float32"), (r["packed"].shape, "uint8"), (r["scales"].shape, "float32"), (r["zeros"].shape, str(r["zeros"].dtype)), ((n,), "float32")]
    f = build(te_func(shape), types, "ql", schedule)
    rng = np.random.default_rng(7)
    for m in (1, 5):
        x = (rng.standard_normal((m, k)) * 3).astype(np.float32)
        got = f(x, r["packed"], r["scales"], r["zeros"], b).numpy()
        want, a16 = qlinear(x, ref, "a32", b), qlinear(x, ref, "a16", b)
        scale = np.abs(want).max()
        err = np.abs(got - want).max()
        assert err <= A32_TOL * scale, (name, m, err / scale)
        # the activations are not rounded: A16's answer is ~1e-4 away, at least 10x further than the kernel
        assert np.abs(got - a16).max() > 10 * err, (name, m)


def test_rules_give_a32_only_to_kernels_that_take_float_activations(monkeypatch):
    monkeypatch.setenv("LOWBIT_TVM_FAST_CPU", "1")
    float_act = {"blocked-cpu", "dequant-cpu", "gemm-cuda", "dequant-cuda-warp", "dequant-cuda"}
    for target in ("cpu", "cuda"):
        for bits in (8, 4, 3, 2):
            for n, k, g in ((1536, 576, 32), (576, 1536, 32), (100, 256, 64), (2048, 8192, 128)):
                for mins in (False, True):
                    shape = kernels.qlinear_shape(True, n, k, bits, g, "a32", target, storage_layout(bits), mins=mins)
                    found = {kern.name for kern in kernels.matching_kernels(shape)}
                    assert found <= float_act and found, (shape, found)
    # the W4 g32 layer that takes vnni-cpu / lut-cpu at A16 takes blocked-cpu at A32
    assert kernels.choose_qlinear_kernel(True, 1536, 576, 4, 32, "a32", "cpu", "nibble", mins=True)[0].name == "blocked-cpu"


@pytest.fixture(scope="module")
def llama_a32():
    from tests.compiler.backends.tvm.common import compiled, quantized_graph

    return quantized_graph("llama-tiny", "w4g32a32"), compiled("llama-tiny", "w4g32a32")


def test_tiny_llama_a32_matches_ref_within_the_float_row(llama_a32):
    from compiler.frontend.llama import empty_cache
    from compiler.reference import Interpreter
    from tests.helpers import COMPILER_TOL, IDS, check_close

    g, mod = llama_a32
    assert {n.attrs["act"] for n in g.nodes if n.op == "qlinear"} == {"a32"}
    assert set(mod.lowered.kernels.values()) <= {"blocked-cpu", "dequant-cpu"}
    feeds = {"input_ids": np.array(IDS, np.int64), "positions": np.arange(len(IDS), dtype=np.int64), **empty_cache(g, len(IDS))}
    errs = check_close(mod.run(feeds), Interpreter(g).run(feeds), COMPILER_TOL["float"], "tvm-cpu w4g32a32")
    print(f"tvm-cpu w4g32a32 llama-tiny: max error relative to max |output| {max(errs.values()):.2e}")


def _a32_table_graph(bits=4, mins=True):
    """ids -> qembedding of a table -> A32 layers -> the table's tied head (zero points or minimums)."""
    from compiler.ir import Graph, Node, TensorType
    from compiler.quant.apply import qembedding_node, qlinear_node

    rng = np.random.default_rng(9)
    v, k, n2 = 128, 128, 96  # N = 96: the CUDA GEMV paths; the head (V = 128): gemm-cuda
    g = Graph("a32-table")
    ids = g.add_input("ids", TensorType(("S",), "i64"))
    for name, shp in {"table": (v, k), "up": (n2, k), "down": (k, n2)}.items():
        g.add_const(name, rng.standard_normal(shp).astype(np.float32) * np.float32(0.1))

    def q(w, spec):
        return quantize_rtn_min(g.consts[w], bits, 32) if mins else quantize_rtn(g.consts[w], parse_spec(spec))

    spec = parse_spec(f"w{bits}g32a32")
    head = qlinear_node(g, Node("linear", ["h2", "table"], ["logits"], {}), q("table", f"w{bits}g32-asym"), spec)
    g.nodes.append(qembedding_node(Node("embedding", [ids, "table"], ["h0"], {}), head))
    for x, w, out in (("h0", "up", "h1"), ("h1", "down", "h2")):
        g.nodes.append(qlinear_node(g, Node("linear", [x, w], [out], {}), q(w, f"w{bits}g32-asym"), spec))
    g.nodes.append(head)
    for c in ("table", "up", "down"):
        del g.consts[c]
    g.infer_types()
    g.set_outputs(["h0", "logits"])
    g.verify()
    return g


@pytest.mark.parametrize("mins", [True, False], ids=["mins", "zeros"])
def test_cuda_a32_builds_thread_bound_and_nvcc_compiles_it(mins, tmp_path):
    """tvm-cuda at A32: every kernel thread-bound (build_target refuses one that is not), and nvcc compiles the
    generated source for sm_80 and sm_90 (build_target's fatbin) where nvcc is installed."""
    import shutil

    from compiler.backends.tvm.build import build_target

    info = build_target(_a32_table_graph(mins=mins), "tvm-cuda", tmp_path / "c", cuda_binary=shutil.which("nvcc") is not None)
    assert info["kernels"] == {"up.qweight": "dequant-cuda", "down.qweight": "gemm-cuda", "table.qweight": "gemm-cuda"}
    src = (tmp_path / "c" / "kernels.cu").read_text()
    assert "qembedding" in src and ("x_gsum" in src) == mins
    if shutil.which("nvcc"):
        assert info["cuda_binary"] == ["sm_80", "sm_90", "compute_80"]


# ----------------------------------------------------------------------------------------------------------
# a tied table held once: the qembedding reads the head kernel's re-laid-out copy

RELAID = {
    "blocked-cpu": (kernels.BLOCKED_CPU, "a16", ()),
    "vnni-cpu": (kernels.VNNI_CPU, "a8", needs_vnni),
    "lut-cpu": (kernels.LUT_CPU, "a16", needs_bw),
}


RELAID_BITS = {"blocked-cpu": (4, 2, 3, 8), "vnni-cpu": (4, 2, 8), "lut-cpu": (4, 2, 3)}  # the widths each kernel takes


@pytest.mark.parametrize("mins", [False, True], ids=["zeros", "mins"])
@pytest.mark.parametrize("name,bits", [pytest.param(k, b, marks=RELAID[k][2]) for k, bs in RELAID_BITS.items() for b in bs])
def test_qembedding_rows_from_a_relaid_copy(name, bits, mins):
    """Each re-laying kernel's code_at reads every code of its own layout back (fp16 scales and minimums where they
    are fp16 values): the rows equal the reference's, s (q - z) bit for bit, s q + m within one rounding (LLVM may
    fuse the multiply-add)."""
    from compiler.backends.tvm.lower import _qembedding_te, _schedule_qembedding

    kern, act, _ = RELAID[name]
    v, k, g = 128, 128, 32
    qw, packed, offsets, ref, layout = _layer(v, k, g, bits, mins, seed=bits + 10 * mins)
    f16 = mins  # (GGUF's Q4_1 d and m are fp16 values: the copy holds them in fp16)
    if f16:
        qw.scales, offsets = qw.scales.astype(np.float16).astype(np.float32), offsets.astype(np.float16).astype(np.float32)
        ref = QLinearWeights(packed, qw.scales, offsets, {"n": v, "k": k, "group_size": g, "bits": bits, "layout": layout, "mins": mins})
    shape = qlinear_te.QLinearShape(True, v, k, bits, g, act, layout, "cpu", False, False, mins, f16)
    r = kern.relayout(packed, qw.scales, offsets, shape)
    attrs = {"bits": bits, "group_size": g, "n": v, "k": k, "layout": layout, "mins": mins}
    types = [(("S",), "int64"), (r["packed"].shape, "uint8"), (r["scales"].shape, str(r["scales"].dtype)), (r["zeros"].shape, str(r["zeros"].dtype))]
    fn = build(lambda *t: _qembedding_te(*t, attrs, kern, shape), types, "qembedding", _schedule_qembedding("cpu"))
    ids = np.array([0, v - 1, 5, 5, 63, 64, 100], np.int64)
    got = fn(ids, r["packed"], r["scales"], r["zeros"]).numpy()
    want = ref.rows(ids)
    if mins:
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * np.abs(want).max())
    else:
        np.testing.assert_array_equal(got, want)


@pytest.fixture(scope="module")
def tied_table(tmp_path_factory):
    """The A32 table graph with minimums lowered for tvm-cpu (the head: blocked-cpu) and run in this process."""
    from tests.compiler.backends.tvm.common import InMemoryTVM

    g = _a32_table_graph(mins=True)
    return g, InMemoryTVM(g)


def test_the_module_holds_a_tied_table_once(tied_table):
    g, mod = tied_table
    arrays = {"weights": g.consts, "relayout": mod.lowered.relayout}
    params = {p["key"]: arrays[p["source"]][p["key"]] for p in mod.lowered.params}
    table = [k for k in params if k.startswith("table.")]
    assert sorted(table) == [f"table.{r}@blocked-cpu" for r in ("mins", "qweight", "scales")]  # the head's copy only
    assert len(mod.lowered.params) == len(params)  # no array passed twice
    raw = sum(g.consts[f"table.{r}"].nbytes for r in ("qweight", "scales", "mins"))
    total = sum(a.nbytes for a in params.values())
    others = sum(a.nbytes for k, a in g.consts.items() if not k.startswith("table."))  # every layer is re-laid out: same bytes
    assert sum(params[k].nbytes for k in table) == raw and total == raw + others  # the table's bytes once


def test_rows_and_head_from_the_one_copy_match_ref(tied_table):
    from compiler.reference import Interpreter
    from tests.helpers import COMPILER_TOL, check_close

    g, mod = tied_table
    for ids in (np.array([3], np.int64), np.array([0, 127, 9, 9, 64], np.int64)):
        got, want = mod.run({"ids": ids}), Interpreter(g).run({"ids": ids})
        np.testing.assert_allclose(got["h0"], want["h0"], rtol=0, atol=1e-6 * np.abs(want["h0"]).max())  # s q + m: one FMA or two roundings
        check_close({"logits": got["logits"]}, {"logits": want["logits"]}, COMPILER_TOL["float"], "a32 tied head")


def test_a16_head_on_vnni_or_lut_serves_the_rows_too(monkeypatch):
    """At A16 the head's W4 g32 kernel is vnni-cpu or lut-cpu (host permitting): the lowering passes that kernel's
    copy of the table, once, to both (lowering only, nothing compiled)."""
    from compiler.backends.tvm.lower import lower_graph

    monkeypatch.setenv("LOWBIT_TVM_FAST_CPU", "1")
    g = _a32_table_graph(mins=True)
    for n in g.nodes:
        if n.op == "qlinear":
            n.attrs["act"] = "a16"
    low = lower_graph(g, "cpu")
    kern = low.kernels["table.qweight"]
    table = sorted(p["key"] for p in low.params if p["key"].startswith("table."))
    assert table == [f"table.{r}@{kern}" for r in ("mins", "qweight", "scales")]
