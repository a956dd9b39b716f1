"""tvm-cpu's `hadamard` kernel (compiler/backends/tvm/hadamard.py): the reference's butterfly, bit for bit, on the
serial (a decode step's few rows) and the parallel path."""

import functools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

tvm = pytest.importorskip("tvm", reason="Apache TVM (apache-tvm) is not installed")

from compiler.backends.tvm.hadamard import PARALLEL_ROWS, hadamard_prim_func, scale_of  # noqa: E402
from compiler.reference import hadamard  # noqa: E402


@functools.cache
def kernel(width: int, size: int):
    from compiler.backends.tvm.target import cpu_target

    return tvm.compile(tvm.IRModule({"main": hadamard_prim_func(width, size).with_attr("global_symbol", "main")}), target=cpu_target())["main"]


@settings(max_examples=25, deadline=None)
@given(case=st.sampled_from([(64, 64), (128, 128), (96, 32), (1536, 512), (16, 2)]), rows=st.sampled_from([1, 3, 9, PARALLEL_ROWS, 200]),
       seed=st.integers(0, 2**31 - 1), mag=st.sampled_from([1e-30, 1.0, 1e30]))
def test_bit_for_bit_the_reference(case, rows, seed, mag):
    width, size = case
    x = (np.random.default_rng(seed).standard_normal((rows, width)) * mag).astype(np.float32)
    y = tvm.runtime.tensor(np.full_like(x, np.nan))
    kernel(width, size)(tvm.runtime.tensor(x), tvm.runtime.tensor(scale_of(size)), y)
    np.testing.assert_array_equal(y.numpy(), hadamard(x, size))
