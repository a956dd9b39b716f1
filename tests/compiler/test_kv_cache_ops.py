"""kv_write and cache_attention (compiler/reference.py): in place, bounded, and `attention` over the
cache's first rows bit for bit; their types (compiler/ir.py)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.errors import LowbitError
from compiler.ir import Graph, IRError, TensorType
from compiler.reference import KERNELS


@settings(max_examples=40, deadline=None)
@given(past=st.integers(0, 12), s=st.integers(1, 6), spare=st.integers(0, 9), hk=st.sampled_from([1, 2]), rep=st.sampled_from([1, 3]), seed=st.integers(0, 2**16))
def test_cache_attention_is_attention_over_the_written_rows(past, s, spare, hk, rep, seed):
    rng = np.random.default_rng(seed)
    d, c = 4, past + s + spare
    k_all, v_all = (rng.standard_normal((past + s, hk, d), dtype=np.float32) for _ in range(2))
    q = rng.standard_normal((s, hk * rep, d), dtype=np.float32)
    kc = np.full((c, hk, d), np.nan, np.float32)  # rows past the last position must never be read
    vc = kc.copy()
    kc[:past], vc[:past] = k_all[:past], v_all[:past]
    pos = np.arange(past, past + s, dtype=np.int64)
    kw = KERNELS["kv_write"]([kc, k_all[past:], pos], {}, None)[0]
    vw = KERNELS["kv_write"]([vc, v_all[past:], pos], {}, None)[0]
    assert kw is kc and vw is vc  # written in place
    np.testing.assert_array_equal(kc[: past + s], k_all)
    got = KERNELS["cache_attention"]([q, kc, vc, pos], {"scale": 0.5}, None)[0]
    want = KERNELS["attention"]([q, k_all, v_all], {"causal": True, "scale": 0.5}, None)[0]
    np.testing.assert_array_equal(got, want)


def test_cache_attention_with_positions_not_ending_the_cache():
    """Positions need not be contiguous: query i sees rows 0..pos[i] (a masked prefix of the cache)."""
    rng = np.random.default_rng(1)
    kc, vc = (rng.standard_normal((10, 1, 4), dtype=np.float32) for _ in range(2))
    q = rng.standard_normal((2, 2, 4), dtype=np.float32)
    pos = np.array([3, 7])
    got = KERNELS["cache_attention"]([q, kc, vc, pos], {"scale": 0.5}, None)[0]
    for i, p in enumerate(pos):
        one = KERNELS["attention"]([q[i : i + 1], kc[: p + 1], vc[: p + 1]], {"causal": True, "scale": 0.5}, None)[0]
        np.testing.assert_allclose(got[i], one[0], rtol=1e-6)


def test_kv_write_past_the_cache_is_one_line():
    cache = np.zeros((4, 1, 2), np.float32)
    with pytest.raises(LowbitError, match="position 4 is past the KV cache's 4 rows") as e:
        KERNELS["kv_write"]([cache, np.ones((2, 1, 2), np.float32), np.array([3, 4])], {}, None)
    assert "\n" not in str(e.value)


def test_types():
    g = Graph("t")
    c = g.add_input("c", TensorType(("C", 2, 4)))
    x = g.add_input("x", TensorType(("S", 2, 4)))
    p = g.add_input("p", TensorType(("S",), "i64"))
    q = g.add_input("q", TensorType(("S", 6, 4)))
    w = g.add_node("kv_write", [c, x, p], "w")[0]
    g.add_node("cache_attention", [q, w, w, p], "o", scale=0.5)
    assert g.types["w"].shape == ("C", 2, 4) and g.types["o"].shape == ("S", 6, 4)
    bad = g.add_input("bad", TensorType(("S", 3, 4)))
    with pytest.raises(IRError, match="do not fit"):
        g.add_node("kv_write", [c, bad, p], "w2")
