"""runtime.backends.arena: the huge-page arena that holds tvm-cpu's weights and KV cache. Every view equals its
array, starts on a 64-byte boundary, does not overlap another, and is writable (the KV cache is written in place)."""

import numpy as np
from hypothesis import given, settings, strategies as st

from runtime.backends.arena import ALIGN, Arena

DTYPES = [np.float32, np.float16, np.int8, np.uint8, np.int64]


@st.composite
def arrays(draw):
    out = []
    for _ in range(draw(st.integers(1, 6))):
        shape = tuple(draw(st.lists(st.integers(0, 9), min_size=0, max_size=3)))
        dt = draw(st.sampled_from(DTYPES))
        out.append(np.random.default_rng(len(out)).integers(-100, 100, shape).astype(dt))
    return out


@settings(max_examples=60, deadline=None)
@given(arrays())
def test_views_equal_aligned_disjoint(arrs):
    a = Arena(arrs)
    base = np.frombuffer(a.buffer, np.uint8).ctypes.data
    spans = []
    for src, v in zip(arrs, a.views):
        assert v.dtype == src.dtype and v.shape == src.shape
        np.testing.assert_array_equal(v, src)
        off = v.ctypes.data - base
        assert off % ALIGN == 0
        spans.append((off, off + v.nbytes))
    spans.sort()
    assert all(e <= s for (_, e), (s, _) in zip(spans, spans[1:]))


def test_views_are_writable_and_independent_of_the_source():
    src = np.arange(12, dtype=np.float32).reshape(3, 4)
    a = Arena([src, src])
    a.views[0][1, 2] = -1.0
    assert src[1, 2] == 6.0 and a.views[1][1, 2] == 6.0 and a.views[0][1, 2] == -1.0

