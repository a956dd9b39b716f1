"""gemm-cuda (kernels_cuda.py): the tvm-cuda qlinear for prefill and decode in one PrimFunc.

Without a GPU: its TE definition meets the qlinear contract (run unscheduled on the CPU, M past the 64-row
tile padding), the scheduled CUDA function has two kernels picked on the host by M (a GEMV launch for
M <= GEMV_MAX_M, the tiled GEMM launch otherwise), every block is thread-bound, and nvcc compiles the
source for sm_80 and sm_90. With a GPU: the kernel against the reference at M on both sides of the switch."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tests.compiler.backends.tvm.common import tvm  # noqa: F401 (skips the module when TVM is missing)
from tests.compiler.backends.tvm.test_cuda import _gpu_present, nvcc_cubin  # noqa: E402
from tests.compiler.backends.tvm.test_kernels import build, weights  # noqa: E402

from tvm import relax, tirx  # noqa: E402

from compiler.backends.tvm import kernels  # noqa: E402
from compiler.backends.tvm import kernels_cuda  # noqa: E402
from compiler.backends.tvm import qlinear_te  # noqa: E402
from compiler.reference import QLinearWeights, qlinear, quantize_activations_a8  # noqa: E402

# (act, bits, group, k): A16 nibbles and bit planes, A8 with fp32-exact sums, A8 with int32 sums (W8 g4096), A32
# (float32 activations as given)
CASES = [("a16", 4, 128, 512), ("a16", 3, 64, 256), ("a8", 4, 128, 512), ("a8", 2, 32, 128), ("a8", 8, 4096, 8192), ("a32", 2, 32, 128)]


def _problem(act, bits, g, k, n=64, seed=5):
    rng = np.random.default_rng(seed + bits)
    codes, packed, zeros, layout = weights(rng, n, k, g, bits)
    scales = (rng.random((n, k // g)) * 0.02 + 0.001).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    w = QLinearWeights(packed, scales, zeros, {"n": n, "k": k, "group_size": g, "bits": bits, "layout": layout})
    shape = qlinear_te.QLinearShape(True, n, k, bits, g, act, layout, "cuda", bias=True)
    xdt = "int32" if act == "a8" else "float32"
    types = [(("S", k), xdt), (packed.shape, "uint8"), (scales.shape, "float32"), (zeros.shape, "uint8")]
    types += [(("S",), "float32")] if act == "a8" else []
    types += [((n,), "float32")]
    return rng, shape, types, (packed, scales, zeros), bias, w


def _args(act, x, ws, bias):
    if act == "a8":
        qa, sa = quantize_activations_a8(x)
        return [qa.astype(np.int32), *ws, sa, bias]
    return [x, *ws, bias]


def _check(got, want):
    # group sums in a different fp32 order inside a group (A16); A8 sums are exact integers
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("act,bits,g,k", CASES)
def test_gemm_definition_meets_the_contract(act, bits, g, k):
    """The TE computation both schedules share (padded transposed x, unpacked q - z, group sums, one scale
    per group), compiled for the CPU without a schedule."""
    rng, shape, types, ws, bias, w = _problem(act, bits, g, k)
    f = build(kernels_cuda.gemm_te(dataclasses.replace(shape, target="cpu")), types, "gemm")  # (no __int_as_float on the CPU)
    for m in (1, 3, 70):
        x = rng.standard_normal((m, k)).astype(np.float32)
        _check(f(*_args(act, x, ws, bias)).numpy(), qlinear(x, w, act, bias))


def test_rule_picks_gemm_cuda_where_rows_fill_tiles():
    kern, _ = kernels.choose_qlinear_kernel(True, 4096, 4096, 4, 128, "a16", "cuda", "nibble")
    assert kern.name == "gemm-cuda"
    kern, _ = kernels.choose_qlinear_kernel(True, 4096, 4096, 4, 128, "a16", "cpu", "nibble")
    assert kern.name != "gemm-cuda"
    kern, _ = kernels.choose_qlinear_kernel(True, 100, 4096, 4, 128, "a16", "cuda", "nibble")  # 100 rows: no whole tiles
    assert kern.name == "dequant-cuda-warp"


class _Lowered:  # what build.compile_lowered reads
    def __init__(self, mod):
        self.mod = mod


def _cuda_module(shape, types):
    """A Relax module calling the gemm-cuda kernel, scheduled as lower.py schedules it."""
    bb = relax.BlockBuilder()
    s = tirx.Var("S", "int64")
    params = [relax.Var(f"a{i}", relax.TensorType([s if d == "S" else d for d in sh], dt)) for i, (sh, dt) in enumerate(types)]
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(bb.emit_te(kernels_cuda.gemm_te(shape), *params, primfunc_name_hint="qlinear_gemm"))
        bb.emit_func_output(out)
    mod = bb.get()
    gv = mod.get_global_var("qlinear_gemm")
    mod[gv] = kernels.GEMM_CUDA.schedule(mod[gv]).with_attr("op_pattern", 8)
    return mod


@pytest.fixture(scope="module")
def cuda_a8_bias():
    """A8 W4g128 with bias, built for CUDA: (scheduled module, CUDA source, host LLVM IR)."""
    from compiler.backends.tvm.build import compile_lowered, cuda_source
    from compiler.backends.tvm.target import cuda_target

    _, shape, types, *_ = _problem("a8", 4, 128, 512)
    mod = _cuda_module(shape, types)
    ex = compile_lowered(_Lowered(mod), "cuda", cuda_target())
    mods, host = [ex.mod], ""
    while mods:  # the host code: the LLVM module among the executable's imports
        m = mods.pop()
        mods.extend(m.imports)
        host += m.inspect_source("ll") if m.kind == "llvm" else ""
    return mod, cuda_source(ex), host


def test_one_function_two_launches_chosen_on_the_host(cuda_a8_bias):
    from compiler.backends.tvm.build import unbound_blocks

    mod, src, host = cuda_a8_bias
    assert unbound_blocks(mod) == []
    kernels = [line for line in src.splitlines() if line.startswith('extern "C" __global__') and line.endswith("{")]
    # GEMV (writes the unscaled y), its A8-scale/bias epilogue, and the GEMM, which reads the codes (a1) and
    # writes the final output (its epilogue inlined)
    assert len(kernels) == 3, kernels
    gemm = [line for line in kernels if "__launch_bounds__(256)" in line and "a1_ptr" in line and "qlinear_out_ptr" in line]
    assert len(gemm) == 1
    body = src.split(gemm[0])[-1].split("\n}\n")[0]
    assert "__shared__" in body and "__syncthreads()" in body
    for name in ("qlinear_gemm_kernel", "qlinear_gemm_kernel_1", "qlinear_gemm_kernel_2"):
        assert f'c"{name}\\00"' in host  # the host code launches it
    assert f"icmp sgt i64 %S, {kernels_cuda.GEMV_MAX_M}" in host  # ... after comparing M


def test_exactly_one_launch_runs_for_every_m(cuda_a8_bias):
    """The host loops' trip counts (0 or 1) as functions of M: the GEMV for M <= GEMV_MAX_M, else the GEMM."""
    from tvm import sym

    mod = cuda_a8_bias[0]
    func = next(f for gv, f in mod.functions_items() if gv.name_hint == "qlinear_gemm")
    loops = list(func.body.block.body.seq)
    s_var = next(v for v in tirx.analysis.undefined_vars(loops[-1].extent) if v.name == "S")
    for m in (1, 2, 3, 16, 64, 300):
        ana = sym.Analyzer()
        ana.bind(s_var, tirx.const(m, "int64"))
        trips = [int(ana.simplify(lp.extent)) for lp in loops]
        assert trips == ([1, 0] if m <= kernels_cuda.GEMV_MAX_M else [0, 1]), (m, trips)


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_nvcc_compiles_the_gemm_source(cuda_a8_bias, arch, tmp_path):
    (tmp_path / "k.cu").write_text(cuda_a8_bias[1])
    nvcc_cubin(tmp_path / "k.cu", arch, tmp_path)


@pytest.mark.parametrize("act,bits,g,k,tile", [(*c, "64x64") for c in CASES] + [("a16", 4, 128, 512, "32x16"), ("a8", 4, 128, 512, "16x128")])
def test_generated_cuda_meets_the_contract_emulated_on_the_cpu(act, bits, g, k, tile, monkeypatch):
    """The CUDA text TVM generated, compiled as C++ and run with one CPU thread per CUDA thread
    (tests/compiler/backends/tvm/cuda_emulate.py): the GEMM launch at M = 3, 64, 70 (a partial row tile; the default tile and
    two of the LOWBIT_TVM_CUDA_GEMM_TILE choices) and the GEMV launch at M = 1, 2 (its separate epilogue
    kernel, sa and bias, done in numpy)."""
    from compiler.backends.tvm.build import compile_lowered, cuda_source
    from compiler.backends.tvm.target import cuda_target
    from tests.compiler.backends.tvm.cuda_emulate import EmulatedKernel

    monkeypatch.setenv("LOWBIT_TVM_CUDA_GEMM_TILE", tile)
    tm, tn, _ = kernels_cuda.config()
    n = 128
    rng, shape, types, ws, bias, w = _problem(act, bits, g, k, n=n)
    src = cuda_source(compile_lowered(_Lowered(_cuda_module(shape, types)), "cuda", cuda_target()))
    gemm = EmulatedKernel(src, "qlinear_gemm_kernel_2")
    for m in (3, 64, 70):
        x = rng.standard_normal((m, k)).astype(np.float32)
        out = np.full((m, n), np.nan, np.float32)
        gemm((n // tn, -(-m // tm)), (tn // kernels_cuda.PER_THREAD, tm // kernels_cuda.PER_THREAD), *_args(act, x, ws, bias), out, m)
        _check(out, qlinear(x, w, act, bias))
    if k // g < 8:  # the one-thread-per-output GEMV (the warp GEMV uses shuffles)
        gemv = EmulatedKernel(src, "qlinear_gemm_kernel")
        for m in (1, 2):
            x = rng.standard_normal((m, k)).astype(np.float32)
            out = np.full((m, n), np.nan, np.float32)
            args = _args(act, x, ws, bias)
            gemv((n // 128, m), (128, 1), *args[:4], out, m)
            if act == "a8":  # the epilogue kernel's arithmetic: y * sa (+ bias below)
                out = out * args[4][:, None]
            _check(out + bias, qlinear(x, w, act, bias))


@pytest.mark.skipif(not _gpu_present(), reason="no CUDA GPU on this machine (the tvm-cuda run is checked where one is)")
@pytest.mark.parametrize("act,bits,g,k", [*CASES[:3], CASES[-1]])
def test_gemm_cuda_meets_the_contract_on_a_gpu(act, bits, g, k):
    from compiler.backends.tvm.build import compile_lowered
    from compiler.backends.tvm.target import cuda_target

    rng, shape, types, ws, bias, w = _problem(act, bits, g, k, n=128)
    vm = relax.VirtualMachine(compile_lowered(_Lowered(_cuda_module(shape, types)), "cuda", cuda_target()), tvm.cuda(0))
    dev = tvm.cuda(0)
    for m in (1, 2, 3, 64, 130):
        x = rng.standard_normal((m, k)).astype(np.float32)
        got = vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(a), dev) for a in _args(act, x, ws, bias)]).numpy()
        _check(got, qlinear(x, w, act, bias))
