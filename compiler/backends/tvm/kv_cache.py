"""The in-place KV-cache write of the `kv_write` op on CPUs: a TIR kernel that stores the S new rows at
rows positions[0..S) of the preallocated [C, H, D] cache it is given. Relax calls it with
`call_tir_inplace` (the result is the cache argument itself), so a decode step writes S * H * D floats and
neither copies nor allocates the cache."""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T


def kv_write_inplace(heads: int, head_dim: int, dtype: str = "float32") -> tirx.PrimFunc:
    """dtype float16 (--kv fp16): the rows are rounded to fp16 (to nearest even, as numpy's astype) as they are stored."""

    @T.prim_func(private=True)
    def kv_write(var_cache: T.handle, var_new: T.handle, var_pos: T.handle):
        T.func_attr({"tirx.noalias": True})
        c, s = T.int64(), T.int64()
        cache = T.match_buffer(var_cache, (c, heads, head_dim), dtype)
        new = T.match_buffer(var_new, (s, heads, head_dim), "float32")
        pos = T.match_buffer(var_pos, (s,), "int64")
        for i, h, d in T.grid(s, heads, head_dim):
            cache[pos[i], h, d] = T.Cast(dtype, new[i, h, d])

    return kv_write.with_attr("op_pattern", 8)  # opaque: FuseOps must not merge an in-place write into its producer


def code2(new, scales, pos, i, h, b, e, k):
    """The 2-bit code of element b * 64 + e + 16 k: clamp(rint(x / s + 1.5), 0, 3), s its group's fp16 scale (1 if 0)."""
    x = new[i, h, b * 64 + e + 16 * k]
    sc = T.Cast("float32", scales[pos[i], h, (b * 64 + e + 16 * k) // 32])
    sf = T.Select(sc > T.float32(0), sc, T.float32(1))
    return T.Cast("int32", T.max(T.min(T.nearbyint(x / sf + T.float32(1.5)), T.float32(3)), T.float32(0)))


def e4m3_code(y):
    """The E4M3 code (int32) of float32 y, |y| <= 448, rounded to nearest even as the reference's e4m3_encode: with
    e = max(exponent of |y|, -6), m = rint(|y| 2^(3 - e)) (exact scaling by a power of two, then one rounding) is the
    significand in steps of 2^(e - 3), 8..16 for normals, 0..8 below 2^-6, and ((e + 7) << 3) + m - 8 is the code in both
    ranges (m = 16 carries into the exponent, m = 8 at e = -6 is the smallest normal)."""
    a = T.abs(y)
    e = T.max(T.shift_right(T.reinterpret("int32", a), 23) - 127, -6)
    m = T.Cast("int32", T.nearbyint(a * T.reinterpret("float32", T.shift_left(130 - e, 23))))
    return T.bitwise_or(T.shift_left(e + 7, 3) + m - 8, T.Select(y < T.float32(0), 128, 0))


def kv_write_q_inplace(heads: int, head_dim: int, bits: int, group: int, code: str = "int") -> tirx.PrimFunc:
    """kv_write_q (compiler.passes.kv_quant): the S new rows quantized into rows positions[0..S) of the codes and
    fp16 scales it is given, in place (call_tir_inplace on both), by the reference's arithmetic: the group's max
    |x| / qmax rounded to fp16, codes rint(x / s) clamped (round half to even, as numpy's rint); code e4m3 (fp8):
    e4m3_code(clamp(x / s, -448, 448)), s the group's max |x| / 448."""
    qmax = 448.0 if code == "e4m3" else 127.0 if bits == 8 else 7.0
    ng = head_dim // group

    @T.macro
    def group_scale(new, scales, pos, amax, i, h, gi, div):
        # s = fp16(max |x| over group gi of row i / div), stored at the row's position
        amax[0] = T.float32(0)
        for e in range(group):
            amax[0] = T.max(amax[0], T.abs(new[i, h, gi * group + e]))
        scales[pos[i], h, gi] = T.Cast("float16", amax[0] / T.float32(div))

    if bits == 2:  # four levels (q - 1.5) s, packed per 64 values: byte e holds elements e + 16 k at bits 2 k

        @T.prim_func(private=True)
        def kv_write_q2(var_codes: T.handle, var_scales: T.handle, var_new: T.handle, var_pos: T.handle):
            T.func_attr({"tirx.noalias": True})
            c, s = T.int64(), T.int64()
            codes = T.match_buffer(var_codes, (c, heads, head_dim // 4), "uint8")
            scales = T.match_buffer(var_scales, (c, heads, ng), "float16")
            new = T.match_buffer(var_new, (s, heads, head_dim), "float32")
            pos = T.match_buffer(var_pos, (s,), "int64")
            amax = T.alloc_buffer((1,), "float32")
            for i, h in T.grid(s, heads):
                for gi in range(ng):
                    group_scale(new, scales, pos, amax, i, h, gi, 1.5)
                for b, e in T.grid(head_dim // 64, 16):
                    codes[pos[i], h, b * 16 + e] = T.Cast("uint8", T.bitwise_or(T.bitwise_or(
                        code2(new, scales, pos, i, h, b, e, 0), T.shift_left(code2(new, scales, pos, i, h, b, e, 1), 2)), T.bitwise_or(
                        T.shift_left(code2(new, scales, pos, i, h, b, e, 2), 4), T.shift_left(code2(new, scales, pos, i, h, b, e, 3), 6))))

        return kv_write_q2.with_attr("op_pattern", 8)

    if code == "e4m3":

        @T.prim_func(private=True)
        def kv_write_fp8(var_codes: T.handle, var_scales: T.handle, var_new: T.handle, var_pos: T.handle):
            T.func_attr({"tirx.noalias": True})
            c, s = T.int64(), T.int64()
            codes = T.match_buffer(var_codes, (c, heads, head_dim), "uint8")
            scales = T.match_buffer(var_scales, (c, heads, ng), "float16")
            new = T.match_buffer(var_new, (s, heads, head_dim), "float32")
            pos = T.match_buffer(var_pos, (s,), "int64")
            amax = T.alloc_buffer((1,), "float32")
            sf = T.alloc_buffer((1,), "float32")
            for i, h, gi in T.grid(s, heads, ng):
                group_scale(new, scales, pos, amax, i, h, gi, qmax)
                sf[0] = T.Select(T.Cast("float32", scales[pos[i], h, gi]) > T.float32(0), T.Cast("float32", scales[pos[i], h, gi]), T.float32(1))
                for e in range(group):
                    codes[pos[i], h, gi * group + e] = T.Cast("uint8", e4m3_code(
                        T.max(T.min(new[i, h, gi * group + e] / sf[0], T.float32(qmax)), T.float32(-qmax))))

        return kv_write_fp8.with_attr("op_pattern", 8)

    if bits == 8:

        @T.prim_func(private=True)
        def kv_write_q8(var_codes: T.handle, var_scales: T.handle, var_new: T.handle, var_pos: T.handle):
            T.func_attr({"tirx.noalias": True})
            c, s = T.int64(), T.int64()
            codes = T.match_buffer(var_codes, (c, heads, head_dim), "int8")
            scales = T.match_buffer(var_scales, (c, heads, ng), "float16")
            new = T.match_buffer(var_new, (s, heads, head_dim), "float32")
            pos = T.match_buffer(var_pos, (s,), "int64")
            amax = T.alloc_buffer((1,), "float32")
            for i, h, gi in T.grid(s, heads, ng):
                group_scale(new, scales, pos, amax, i, h, gi, qmax)
                for e in range(group):
                    codes[pos[i], h, gi * group + e] = T.Cast("int8", T.max(T.min(T.nearbyint(new[i, h, gi * group + e] / T.Select(
                        T.Cast("float32", scales[pos[i], h, gi]) > T.float32(0), T.Cast("float32", scales[pos[i], h, gi]), T.float32(1))),
                        T.float32(qmax)), T.float32(-qmax)))

        return kv_write_q8.with_attr("op_pattern", 8)

    @T.prim_func(private=True)
    def kv_write_q4(var_codes: T.handle, var_scales: T.handle, var_new: T.handle, var_pos: T.handle):
        T.func_attr({"tirx.noalias": True})
        c, s = T.int64(), T.int64()
        codes = T.match_buffer(var_codes, (c, heads, head_dim // 2), "uint8")
        scales = T.match_buffer(var_scales, (c, heads, ng), "float16")
        new = T.match_buffer(var_new, (s, heads, head_dim), "float32")
        pos = T.match_buffer(var_pos, (s,), "int64")
        amax = T.alloc_buffer((1,), "float32")
        sf = T.alloc_buffer((1,), "float32")
        for i, h, gi in T.grid(s, heads, ng):
            group_scale(new, scales, pos, amax, i, h, gi, qmax)
            sf[0] = T.Select(T.Cast("float32", scales[pos[i], h, gi]) > T.float32(0), T.Cast("float32", scales[pos[i], h, gi]), T.float32(1))
            for e in range(group // 2):  # q4_0 order: byte e holds elements e (low nibble) and e + 16 (high)
                codes[pos[i], h, (gi * group) // 2 + e] = T.Cast("uint8", T.bitwise_or(
                    T.Cast("int32", T.max(T.min(T.nearbyint(new[i, h, gi * group + e] / sf[0]), T.float32(qmax)), T.float32(-qmax))) + 8,
                    T.shift_left(T.Cast("int32", T.max(T.min(T.nearbyint(new[i, h, gi * group + group // 2 + e] / sf[0]), T.float32(qmax)), T.float32(-qmax))) + 8, 4)))

    return kv_write_q4.with_attr("op_pattern", 8)


def kv_write_kc_inplace(heads: int, head_dim: int, bits: int, group: int, window: int) -> tirx.PrimFunc:
    """kv_write_kc (--kv ...-kc, keys per channel; compiler.reference's contract): every token group of 32 rows that the
    step's rows touch is gathered in float (ring rows before positions[0], the step's rows after it), its scale
    fp16((max - min) / qmax) and minimum fp16(min) per channel stored in its parameter row, and its rows' codes
    clamp(rint((x - m) / s), 0, qmax) packed as the cache's (int4 nibbles per group of `group`, int2 per 64), in place."""
    from compiler.kvformat import TOKEN_GROUP as TG

    qmax = float(2**bits - 1)
    d = head_dim

    def u(xs, params, g, t, h, e):  # the unsigned code of element e of the group's row t
        sc = T.Cast("float32", params[g, h, e])
        sf = T.Select(sc > T.float32(0), sc, T.float32(1))
        v = T.nearbyint((xs[t, h, e] - T.Cast("float32", params[g, h, d + e])) / sf)
        return T.Cast("int32", T.max(T.min(v, T.float32(qmax)), T.float32(0)))

    @T.prim_func(private=True)
    def kv_write_kc(var_codes: T.handle, var_params: T.handle, var_ring: T.handle, var_new: T.handle, var_pos: T.handle):
        T.func_attr({"tirx.noalias": True})
        c, gr, s = T.int64(), T.int64(), T.int64()
        codes = T.match_buffer(var_codes, (c, heads, d * bits // 8), "uint8")
        params = T.match_buffer(var_params, (gr, heads, 2 * d), "float16")
        ring = T.match_buffer(var_ring, (window, heads, d), "float32")
        new = T.match_buffer(var_new, (s, heads, d), "float32")
        pos = T.match_buffer(var_pos, (s,), "int64")
        xs = T.alloc_buffer((TG, heads, d), "float32")
        mn = T.alloc_buffer((1,), "float32")
        mx = T.alloc_buffer((1,), "float32")
        if s > 0:
            p0 = T.Bind(pos[0])
            pl = T.Bind(pos[s - 1])
            for gi in range(pl // TG - p0 // TG + 1):
                g = T.Bind(p0 // TG + gi)
                nr = T.Bind(T.min(g * TG + TG, pl + 1) - g * TG)  # the group's rows so far
                for t, h, e in T.grid(nr, heads, d):
                    xs[t, h, e] = T.Select(g * TG + t >= p0, new[T.max(g * TG + t - p0, T.int64(0)), h, e], ring[T.floormod(g * TG + t, window), h, e])
                for h, e in T.grid(heads, d):
                    mn[0] = xs[0, h, e]
                    mx[0] = xs[0, h, e]
                    for t in range(1, nr):
                        mn[0] = T.min(mn[0], xs[t, h, e])
                        mx[0] = T.max(mx[0], xs[t, h, e])
                    params[g, h, e] = T.Cast("float16", (mx[0] - mn[0]) / T.float32(qmax))
                    params[g, h, d + e] = T.Cast("float16", mn[0])
                if bits == 4:  # byte b of each group holds elements b (low nibble) and b + group / 2
                    for t, h, b, e in T.grid(nr, heads, d // group, group // 2):
                        codes[g * TG + t, h, b * (group // 2) + e] = T.Cast("uint8", T.bitwise_or(
                            u(xs, params, g, t, h, b * group + e), T.shift_left(u(xs, params, g, t, h, b * group + group // 2 + e), 4)))
                else:  # byte e of each 64 values holds elements e + 16 k at bits 2 k
                    for t, h, b, e in T.grid(nr, heads, d // 64, 16):
                        codes[g * TG + t, h, b * 16 + e] = T.Cast("uint8", T.bitwise_or(
                            T.bitwise_or(u(xs, params, g, t, h, b * 64 + e), T.shift_left(u(xs, params, g, t, h, b * 64 + 16 + e), 2)),
                            T.bitwise_or(T.shift_left(u(xs, params, g, t, h, b * 64 + 32 + e), 4), T.shift_left(u(xs, params, g, t, h, b * 64 + 48 + e), 6))))

    return kv_write_kc.with_attr("op_pattern", 8)
