"""kernels_cpu.float_linear_prim_func (the float GEMV / GEMM of tvm-cpu) against float64 numpy: every row count
(decode M = 1, a prefill), N with a tail past the 4-row blocks, with and without bias; within 1e-5 of the
largest output (float32 reassociation; measured ~3e-7)."""

import functools

import numpy as np
import pytest

tvm = pytest.importorskip("tvm", reason="Apache TVM (apache-tvm) is not installed")


@functools.cache
def kernel(n, k, bias):
    from compiler.backends.tvm.kernels_cpu import float_linear_prim_func
    from compiler.backends.tvm.target import cpu_target

    f = float_linear_prim_func(n, k, bias).with_attr("global_symbol", "main")
    return tvm.compile(tvm.IRModule({"main": f}), target=cpu_target())["main"]


@pytest.mark.parametrize("n,k", [(64, 16), (1003, 576), (6, 48)])
@pytest.mark.parametrize("m", [1, 3, 17])
@pytest.mark.parametrize("bias", [False, True])
def test_float_linear(n, k, m, bias):
    rng = np.random.default_rng(n + m)
    x = rng.standard_normal((m, k), dtype=np.float32)
    w = rng.standard_normal((n, k), dtype=np.float32)
    b = rng.standard_normal(n, dtype=np.float32)
    y = tvm.runtime.tensor(np.full((m, n), np.nan, np.float32))
    args = [x, w, b] if bias else [x, w]
    kernel(n, k, bias)(*(tvm.runtime.tensor(a) for a in args), y)
    want = x.astype(np.float64) @ w.T.astype(np.float64) + (b if bias else 0)
    assert np.abs(y.numpy() - want).max() <= 1e-5 * np.abs(want).max()
