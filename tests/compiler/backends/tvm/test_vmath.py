"""The float ops tvm-cpu computes with its own arithmetic against compiler/reference.py: vmath.exp (a polynomial
LLVM vectorizes), SiLU built on it, and RoPE with its cos/sin tables as stages of their own."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.compiler.backends.tvm.common import InMemoryTVM, tvm  # noqa: F401 (skips the module when TVM is missing)

from compiler import reference  # noqa: E402
from compiler.ir import Graph, TensorType  # noqa: E402


@pytest.fixture(scope="module")
def exp_kernel():
    from tvm import te

    from compiler.backends.tvm import vmath
    from compiler.backends.tvm.target import cpu_target

    x = te.placeholder((te.var("n"),), "float32", name="x")
    y = te.compute(x.shape, lambda i: vmath.exp(x[i]), name="y")
    lib = tvm.compile(te.create_prim_func([x, y]), target=cpu_target())

    def call(v):
        out = tvm.runtime.tensor(np.zeros_like(v))
        lib(tvm.runtime.tensor(v), out)
        return out.numpy()

    return call


def test_exp_is_within_two_ulp_over_its_range_and_clamps_outside(exp_kernel):
    x = np.concatenate([np.linspace(-87, 88, 200_001, dtype=np.float32), np.float32([0, -0.0, 1e-30, -1e-30])])
    got = exp_kernel(x)
    want = np.exp(x.astype(np.float64))
    ulp = np.abs(got.astype(np.float64) - want) / np.spacing(want.astype(np.float32)).astype(np.float64)
    assert ulp.max() <= 2.0, float(ulp.max())
    edge = exp_kernel(np.float32([-np.inf, -1000, np.inf, 1000]))  # clamped to [-87, 88]: finite, never 0
    np.testing.assert_allclose(edge, [np.exp(-87.0), np.exp(-87.0), np.exp(88.0), np.exp(88.0)], rtol=3e-7)


@pytest.fixture(scope="module")
def silu_mul():
    g = Graph("silu_mul")
    g.add_input("x", TensorType(("S", 64)))
    g.add_input("u", TensorType(("S", 64)))
    g.add_node("silu", ["x"], "h")
    g.add_node("mul", ["h", "u"], "y")
    g.set_outputs(["y"])
    return InMemoryTVM(g)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-300, 300, width=32, allow_subnormal=False), min_size=64, max_size=64), st.integers(1, 3))
def test_silu_times_up_matches_the_reference(silu_mul, xs, s):
    """Within 1e-6 of the reference relative to each value (plus 1e-30 absolute, where exp saturates)."""
    x = np.tile(np.float32(xs), (s, 1))
    u = np.linspace(-2, 2, 64 * s, dtype=np.float32).reshape(s, 64)
    got = silu_mul.run({"x": x, "u": u})["y"]
    with np.errstate(over="ignore"):  # (the reference's exp(-x) overflows to inf below -88: silu -> -0)
        want = reference.KERNELS["silu"]([x], {}, None)[0] * u
    assert np.all(np.abs(got - want) <= 1e-6 * np.abs(want) + 1e-30), float(np.max(np.abs(got - want)))


@pytest.mark.parametrize("s", [1, 7, 130])
def test_rope_matches_the_reference(s):
    g = Graph("rope")
    g.add_input("x", TensorType(("S", 3, 64)))
    g.add_input("positions", TensorType(("S",), "i64"))
    g.add_node("rope", ["x", "positions"], "y", theta=100000.0)
    g.set_outputs(["y"])
    m = InMemoryTVM(g)
    rng = np.random.default_rng(s)
    x = rng.standard_normal((s, 3, 64)).astype(np.float32)
    pos = rng.integers(0, 8192, s).astype(np.int64)
    got = m.run({"x": x, "positions": pos})["y"]
    want = reference.KERNELS["rope"]([x, pos], {"theta": 100000.0}, None)[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * np.abs(x).max())


@pytest.mark.parametrize("s", [1, 2, 37])
def test_rmsnorm_matches_the_reference(s):
    """norm_cpu's kernel (rows of whole 16-lane vectors): float32 reassociation of the sum of squares only."""
    g = Graph("rmsnorm")
    g.add_input("x", TensorType(("S", 96)))
    g.add_const("w", np.linspace(-2, 2, 96, dtype=np.float32))
    g.add_node("rmsnorm", ["x", "w"], "y", eps=1e-5)
    g.set_outputs(["y"])
    m = InMemoryTVM(g)
    rng = np.random.default_rng(s)
    x = (rng.standard_normal((s, 96)) * np.float32(10) ** rng.integers(-3, 3, (s, 1))).astype(np.float32)
    got = m.run({"x": x})["y"]
    want = reference.KERNELS["rmsnorm"]([x, g.consts["w"]], {"eps": 1e-5}, None)[0]
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-30)
    assert any(p.startswith("rmsnorm_cpu") for p in (gv.name_hint for gv in m.lowered.mod.functions))


@pytest.fixture(scope="module")
def lane_kernels():
    """lane_sum and lane_max of each row of x [R, n] for n = 1..32, as the decode attention walk uses them."""
    from tvm import tirx

    from compiler.backends.tvm import vmath
    from compiler.backends.tvm.target import cpu_target

    libs = {}
    for n in (1, 2, 4, 8, 16, 32):
        x = tirx.decl_buffer((4 * n,), "float32", name="x")
        o = tirx.decl_buffer((8,), "float32", name="o")
        body = []
        for r in range(4):
            v = x[r * n] if n == 1 else x[tirx.Ramp(r * n, 1, n)]
            body += [tirx.BufferStore(o, vmath.lane_sum(v, n), [r]), tirx.BufferStore(o, vmath.lane_max(v, n), [4 + r])]
        f = tirx.PrimFunc([x, o], tirx.SeqStmt(body)).with_attr("global_symbol", "main")
        libs[n] = tvm.compile(tvm.IRModule({"main": f}), target=cpu_target())["main"]
    return libs


@settings(max_examples=30, deadline=None)
@given(n=st.sampled_from([1, 2, 4, 8, 16, 32]), seed=st.integers(0, 2**31 - 1))
def test_lane_sum_and_max_reduce_every_lane(lane_kernels, n, seed):
    x = np.random.default_rng(seed).standard_normal((4, n)).astype(np.float32) * 100
    out = tvm.runtime.tensor(np.zeros(8, np.float32))
    lane_kernels[n](tvm.runtime.tensor(x.reshape(-1)), out)
    got = out.numpy()
    np.testing.assert_allclose(got[:4], x.sum(1), rtol=1e-6, atol=1e-4)  # (a tree order, not numpy's)
    np.testing.assert_array_equal(got[4:], x.max(1))
