"""The in-place KV-cache write of the `kv_write` op on CPUs: a TIR kernel that stores the S new rows at
rows positions[0..S) of the preallocated [C, H, D] cache it is given. Relax calls it with
`call_tir_inplace` (the result is the cache argument itself), so a decode step writes S * H * D floats and
neither copies nor allocates the cache."""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T


def kv_write_inplace(heads: int, head_dim: int) -> tirx.PrimFunc:
    @T.prim_func(private=True)
    def kv_write(var_cache: T.handle, var_new: T.handle, var_pos: T.handle):
        T.func_attr({"tirx.noalias": True})
        c, s = T.int64(), T.int64()
        cache = T.match_buffer(var_cache, (c, heads, head_dim), "float32")
        new = T.match_buffer(var_new, (s, heads, head_dim), "float32")
        pos = T.match_buffer(var_pos, (s,), "int64")
        for i, h, d in T.grid(s, heads, head_dim):
            cache[pos[i], h, d] = new[i, h, d]

    return kv_write.with_attr("op_pattern", 8)  # opaque: FuseOps must not merge an in-place write into its producer
