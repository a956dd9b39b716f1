"""LUT qlinear kernels for x86 (T-MAC / LUT Tensor Core style): bit-plane weights index per-row activation
tables with byte shuffles (vpshufb), for W4, W3, W2 and ternary, A16 and A8.

Why a table: with bit-planes q = sum_b 2^b q_b, the sum over a chunk of 4 features is
    sum_t a_t q_t = sum_b 2^b T[idx_b],   T[i] = sum_t bit_t(i) a_t   (16 entries per chunk of 4 activations)
so one table lookup replaces 4 multiply-adds per bit-plane, and a 64-byte vpshufb does 64 lookups at once.
At 1-2 bits this moves the kernel off the compute bound (a dequantize kernel spends several instructions per
code converting it to float) onto the memory bound.

Exact integer tables. vpshufb returns bytes, but a table entry is a sum of 4 activations, so each entry is
split into a low byte (unsigned) and a high byte (signed): T = 256 * Th + Tl. Two shuffles read both halves;
vpmaddubsw multiplies them by the plane weights 2^b and adds plane pairs into int16; the int16 sums are
widened to int32 before they can overflow. The group sum acc = sum_k a_k (q_k - z) is then exact:
- A8: a = qa, the contract's int8 codes; |T| <= 4 * 127, and acc equals the contract's int32 sum bit for bit.
- A16: a = rint(x16 / s_a[m, j]) with one scale per (row, weight group), s_a = max |x16| / 8191 over the group
  (13-bit block floating point: |T| <= 4 * 8191 < 2^15). This is the one place this kernel departs from the
  A16 contract's fp32 sums: the activation rounding error is <= s_a / 2 per element (2^-14 of the group's
  largest |x|), far inside the A16 tolerance the tests state (5e-3 of max |y|); the tests measure it.
(T-MAC quantizes tables to int8, about 1% error; the split keeps int16 precision for one more shuffle.)

Weight layout (made once at compile time by `relayout_lut`), for 64-row blocks split in two halves of 32 rows
and bit-plane pairs p (planes 2p, 2p+1; W3's fourth plane is all zeros):

    packed [N/64, K/g, g/8, 2, ceil(bits/2), 64] uint8: byte 2r + e of (block nb, group j, chunk pair cc, half h,
        pair p) holds in its low nibble the 4 bits of plane 2p+e of row nb*64 + h*32 + r at chunk 2cc of the
        group (features k = 4c .. 4c+3, bit t = feature 4c+t), and in its high nibble the same for chunk 2cc+1
    scales [N/64, K/g, 64] float32 (float16 where every value is an fp16 number), zeros [N/64, K/g, 64] uint8
        (scale-and-minimum groups: the minimums, in the scales' dtype)

So one 64-byte load feeds 4 shuffles (two chunks x low/high table) for 32 rows x 8 features x 2 planes, and
vpmaddubsw's byte pairs are exactly (plane 2p, plane 2p+1) of one row: its int16 lanes come out in row order.

Loop nest, per row m: tables for the row (vectorized over the 16 entries), then
    parallel nb:  for j:  acc32[64] = 0;  for spans of chunk pairs: acc16 lo/hi = 0, shuffles + vpmaddubsw + add,
                          acc32 += 256 * hi + lo;  y[64] += s[nb, j] * (s_a) * float(acc32 - z * sum_group(a))
                          (scale-and-minimum groups: y[64] += (s_a) * (s[nb, j] * float(acc32) + mn[nb, j] * float(sum_group(a))))
Tables are replicated over the four 128-bit lanes ([K/4, 64] bytes per half, 2 * 16 * K bytes per row: 128 KiB at
K = 4096, L2-resident).
"""

from __future__ import annotations

import numpy as np
from tvm import te, tirx

from compiler.backends.tvm.epilogue import scale_and_bias

BLOCK = 64  # output rows per tile (two halves of 32: one int16 zmm accumulator each)
A16_MAX = 8191  # 13-bit activation mantissas: a table entry (sum of 4) stays below 2^15


def lut_ok(bits: int, group: int) -> bool:
    """Bit widths and group sizes the LUT kernel takes: chunk pairs of 8 features, activations in vectors of 16."""
    # (int32 group sums: |acc| <= g * 8191 * 15 must stay below 2^31)
    return bits in (2, 3, 4) and group % 16 == 0 and group * A16_MAX * 15 < 2**31 and host_has_avx512bw()


def host_has_avx512bw() -> bool:
    from compiler.backends.tvm.target import host_has

    return host_has("avx512bw")


def pairs(bits: int) -> int:
    return (bits + 1) // 2


def span_pairs(bits: int, group: int) -> int:
    """Chunk pairs summed in int16 before widening: each chunk adds at most 255 * (2^bits - 1) per row."""
    ncc = group // 8
    limit = 32767 // (2 * 255 * ((1 << bits) - 1))
    return max(d for d in range(1, ncc + 1) if ncc % d == 0 and d <= limit)


def relayout_lut(packed, scales, zeros, shape):
    """Artifact storage -> the LUT layout of the module doc (numpy, at compile time)."""
    from compiler.quant.pack import unpack

    n, k, g, bits = shape.n, shape.k, shape.group, shape.bits
    nb, nj, pp = n // BLOCK, k // g, pairs(bits)
    codes = unpack(packed, bits, shape.layout, k).astype(np.uint8)  # [N, K]
    planes = np.zeros((2 * pp, n, k), np.uint8)
    for b in range(bits):
        planes[b] = (codes >> b) & 1
    # 4-bit index per (plane, row, chunk): bit t = plane bit of feature 4c + t
    p4 = planes.reshape(2 * pp, n, k // 4, 4)
    idx = (p4[..., 0] | (p4[..., 1] << 1) | (p4[..., 2] << 2) | (p4[..., 3] << 3)).astype(np.uint8)  # [P, N, K/4]
    # [pair, e, nb, half, r, j, cc, lo/hi chunk]
    idx = idx.reshape(pp, 2, nb, 2, 32, nj, g // 8, 2)
    byte = idx[..., 0] | (idx[..., 1] << 4)  # [pp, e, nb, h, r, j, cc]
    out = byte.transpose(2, 5, 6, 3, 0, 4, 1).reshape(nb, nj, g // 8, 2, pp, 64)  # byte index 2r + e
    pdt = "float16" if shape.f16_params else "float32"  # (kernels_cpu.param_dtype: fp16 where that is lossless)
    sc = np.ascontiguousarray(np.asarray(scales, np.float32).reshape(nb, BLOCK, nj).transpose(0, 2, 1).astype(pdt))
    zdt = pdt if shape.mins else np.uint8  # the minimums of scale-and-minimum groups in the scales' layout
    zz = np.ascontiguousarray(np.asarray(zeros, np.float32 if shape.mins else np.uint8).reshape(nb, BLOCK, nj).transpose(0, 2, 1).astype(zdt))
    return {"packed": np.ascontiguousarray(out), "scales": sc, "zeros": zz}


def lut_code_at(packed: te.Tensor, shape, n, k):
    """The code q[n, k] as an int32 expression on the LUT layout (a tied table's rows read from the head's copy):
    bit b from the nibble of plane 2p + e (p = b // 2, e = b % 2) of k's chunk, at bit k % 4."""
    g = shape.group
    c = (k % g) // 4  # the chunk of 4 features within the group
    code = tirx.const(0, "int32")
    for b in range(shape.bits):
        byte = packed[n // BLOCK, k // g, c // 2, (n % BLOCK) // 32, b // 2, (n % 32) * 2 + b % 2].astype("int32")
        nib = (byte >> ((c % 2) * 4).astype("int32")) & 15
        code = code | (((nib >> (k % 4).astype("int32")) & 1) << b)
    return code


def lut_reference(x: np.ndarray, codes: np.ndarray, scales: np.ndarray, zeros: np.ndarray, group: int, act: str, sa=None, mins=None) -> np.ndarray:
    """What the kernel computes, in numpy (float64 epilogue): A8 takes qa (int) and sa; A16 takes x (float).
    With `mins` (scale-and-minimum groups; `zeros` unused) each group adds mins * the sum of its integer activations."""
    m, k = x.shape
    nj = k // group
    if act == "a8":
        a = np.asarray(x, np.int64)
        asc = np.ones((m, nj))
    else:
        x16 = np.asarray(x, np.float32).astype(np.float16).astype(np.float32)
        amax = np.abs(x16.reshape(m, nj, group)).max(axis=2)
        asc = np.where(amax > 0, amax / np.float32(A16_MAX), np.float32(1)).astype(np.float32)
        inv = np.where(amax > 0, np.float32(A16_MAX) / np.where(amax > 0, amax, 1), np.float32(1)).astype(np.float32)
        a = np.rint(x16.reshape(m, nj, group) * inv[:, :, None]).astype(np.int64).reshape(m, k)
    q = codes.astype(np.int64).reshape(-1, nj, group)
    if mins is None:
        q = q - zeros.astype(np.int64)[:, :, None]
    acc = np.einsum("mjg,njg->mnj", a.reshape(m, nj, group), q)
    term = acc * scales[None].astype(np.float64)
    if mins is not None:
        term = term + a.reshape(m, nj, group).sum(axis=2)[:, None, :] * np.asarray(mins, np.float64)[None]
    y = (term * asc[:, None, :]).sum(axis=2)
    return y * (np.asarray(sa, np.float64)[:, None] if act == "a8" else 1.0)


def act_codes_macro():
    """TIR macro shared by lut-cpu and vnni-cpu: the integer activations of row m, group j (x [M, K] -> a [M, K]
    int32, the group's activation scale asc [M, NJ] and its code sum asum [M, NJ], for the zero point). A8: a = the
    contract's int8 codes (scale 1: sa is applied by the caller). A16: a = rint(x16 / s_a) with s_a = max |x16| / 8191,
    the 13-bit block floating point of the module doc. G must be a multiple of 16 (16-lane vectors)."""
    from tvm.script import tirx as T

    @T.macro
    def act_codes(x, a, asc, asum, m, j, G, a8):
        vx = T.alloc_buffer((16,), "float32")  # 16-lane partial max / sum (then 16 scalar steps)
        vs = T.alloc_buffer((16,), "int32")
        if a8:
            asc[m, j] = T.float32(1)
            for r in range(G // 16):
                a[m, T.Ramp(j * G + r * 16, 1, 16)] = x[m, T.Ramp(j * G + r * 16, 1, 16)]
        else:
            vx[T.Ramp(0, 1, 16)] = T.Broadcast(T.float32(0), 16)
            for r in range(G // 16):
                vx[T.Ramp(0, 1, 16)] = T.max(vx[T.Ramp(0, 1, 16)], T.fabs(T.Cast("float32x16", T.Cast("float16x16", x[m, T.Ramp(j * G + r * 16, 1, 16)]))))
            asc[m, j] = T.float32(0)
            for e in range(16):
                asc[m, j] = T.max(asc[m, j], vx[e])
            for r in range(G // 16):
                a[m, T.Ramp(j * G + r * 16, 1, 16)] = T.Cast("int32x16", T.nearbyint(
                    T.Cast("float32x16", T.Cast("float16x16", x[m, T.Ramp(j * G + r * 16, 1, 16)]))
                    * T.Broadcast(T.if_then_else(asc[m, j] > T.float32(0), T.float32(A16_MAX) / asc[m, j], T.float32(1)), 16)))
            asc[m, j] = T.if_then_else(asc[m, j] > T.float32(0), asc[m, j] / T.float32(A16_MAX), T.float32(1))
        vs[T.Ramp(0, 1, 16)] = T.Broadcast(0, 16)
        for r in range(G // 16):
            vs[T.Ramp(0, 1, 16)] = vs[T.Ramp(0, 1, 16)] + a[m, T.Ramp(j * G + r * 16, 1, 16)]
        asum[m, j] = 0
        for e in range(16):
            asum[m, j] = asum[m, j] + vs[e]

    return act_codes


def lut_te(shape):
    """A plain TE definition of the kernel's result (what it computes); `schedule_lut` swaps in the
    hand-vectorized TIR. Signature as the other kernels: A16 (x, packed, scales, zeros, [bias]),
    A8 (qa, packed, scales, zeros, sa, [bias])."""
    g, nj = shape.group, shape.k // shape.group

    def f(x, packed, scales, zeros, *rest):
        rest = list(rest)
        sa = rest.pop(0) if shape.act == "a8" else None
        bias = rest.pop(0) if shape.bias else None
        m = x.shape[0]
        kk = te.reduce_axis((0, g), name="kk")

        def code(n, k):
            c = (k % g) // 4
            byte = packed[n // BLOCK, k // g, c // 2, (n % BLOCK) // 32, 0, ((n % 32) * 2)].astype("int32")
            return (byte >> ((c % 2) * 4).astype("int32")) & 15  # (the plain form only reads plane 0: never run)

        acc = te.compute((m, shape.n, nj), lambda i, n, j: te.sum(x[i, j * g + kk].astype("float32") * code(n, j * g + kk).astype("float32"), axis=kk), name="acc")
        jj = te.reduce_axis((0, nj), name="j")
        y = te.compute(
            (m, shape.n),
            lambda i, n: te.sum(
                scales[n // BLOCK, jj, n % BLOCK].astype("float32") * acc[i, n, jj] - zeros[n // BLOCK, jj, n % BLOCK].astype("float32"), axis=jj
            ),
            name="qlinear",
        )
        attrs = {"lowbit_lut": f"{shape.n},{shape.k},{g},{shape.bits},{shape.act},{int(shape.bias)},{int(shape.mins)},{int(shape.f16_params)}"}
        return scale_and_bias(y, sa, bias, attrs)

    return f


def schedule_lut(func: tirx.PrimFunc) -> tirx.PrimFunc:
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    spec = str(sch.get(sch.get_sblock("qlinear_out")).annotations["lowbit_lut"]).split(",")
    n, k, g, bits = (int(v) for v in spec[:4])
    return lut_prim_func(n, k, g, bits, spec[4], bool(int(spec[5])), bool(int(spec[6])), bool(int(spec[7]))).with_attr("tirx.is_scheduled", True)


def lut_prim_func(N: int, K: int, G: int, bits: int, act: str, bias: bool, mins: bool = False, f16: bool = False):  # noqa: N803 - TIR shape names
    from tvm.script import tirx as T

    R, NB, NJ, CPG = BLOCK, N // BLOCK, K // G, G // 4
    PP, NCC = pairs(bits), G // 8
    SPAN = span_pairs(bits, G)
    NSPAN = NCC // SPAN
    NC = K // 4
    MT = 8  # rows per tile in phase 2
    a8 = act == "a8"
    LANES4 = list(range(64))  # four copies of a 16-byte table: one per 128-bit lane into the four 128-bit lanes (vbroadcasti32x4)
    PREFETCH = 8  # chunk pairs ahead (measured 4-64: 8 was as good as any; the stream prefetcher alone left bandwidth unused)
    xdtype = "int32" if a8 else "float32"
    pdt = "float16" if f16 else "float32"  # scales (and minimums)

    act_codes = act_codes_macro()

    def body(x, pk, sc, zz, sa, bv, y, M):
        # phase 1, rows in parallel: integer activations, their group sums and scales, and the tables
        a = T.alloc_buffer((M, K), "int32")
        asc = T.alloc_buffer((M, NJ), "float32")
        asum = T.alloc_buffer((M, NJ), "int32")
        tl = T.alloc_buffer((M, NC, 16), "uint8")  # 16 entries per chunk: 32 KiB per row for both halves at K = 4096
        th = T.alloc_buffer((M, NC, 16), "int8")
        for m in T.parallel(M):
            for j in range(NJ):
                act_codes(x, a, asc, asum, m, j, G, a8)
            for c in range(NC):
                tv = (
                    T.Broadcast(a[m, 4 * c], 16) * (T.Ramp(0, 1, 16) & 1)
                    + T.Broadcast(a[m, 4 * c + 1], 16) * (T.shift_right(T.Ramp(0, 1, 16), T.Broadcast(1, 16)) & 1)
                    + T.Broadcast(a[m, 4 * c + 2], 16) * (T.shift_right(T.Ramp(0, 1, 16), T.Broadcast(2, 16)) & 1)
                    + T.Broadcast(a[m, 4 * c + 3], 16) * (T.shift_right(T.Ramp(0, 1, 16), T.Broadcast(3, 16)) & 1)
                )
                tl[m, c, T.Ramp(0, 1, 16)] = T.Cast("uint8x16", tv & T.Broadcast(255, 16))
                th[m, c, T.Ramp(0, 1, 16)] = T.Cast("int8x16", T.shift_right(tv, T.Broadcast(8, 16)))
        # phase 2: tiles of MT rows (their tables, MT * 32 KiB at K = 4096, stay in L2), blocks of 64 outputs in
        # parallel inside a tile, the tile's rows inside a block (the block's weights stay in L1/L2 across them)
        for mt in range((M + MT - 1) // MT):
          for nb in T.parallel(NB):
            for mi in range(T.min(MT, M - mt * MT)):
                m = mt * MT + mi
                yacc = T.alloc_buffer((R,), "float32")
                acc = T.alloc_buffer((R,), "int32")
                lo = T.alloc_buffer((R,), "int16")
                hi = T.alloc_buffer((R,), "int16")
                yacc[T.Ramp(0, 1, R)] = T.Broadcast(T.float32(0), R)
                for j in range(NJ):
                    acc[T.Ramp(0, 1, R)] = T.Broadcast(T.int32(0), R)
                    for s in range(NSPAN):
                        lo[T.Ramp(0, 1, R)] = T.Broadcast(T.int16(0), R)
                        hi[T.Ramp(0, 1, R)] = T.Broadcast(T.int16(0), R)
                        for ci in range(SPAN):
                            c0 = j * CPG + 2 * (s * SPAN + ci)
                            T.evaluate(T.call_llvm_intrin("void", "llvm.prefetch.p0", T.address_of(pk[nb, j, s * SPAN + ci + PREFETCH, 0, 0, 0]), 0, 3, 1))
                            for h in T.unroll(2):
                                for p in T.unroll(PP):
                                    lo[T.Ramp(32 * h, 1, 32)] = lo[T.Ramp(32 * h, 1, 32)] + (
                                        T.call_llvm_pure_intrin("int16x32", "llvm.x86.avx512.pmaddubs.w.512",
                                                                T.call_llvm_pure_intrin("int8x64", "llvm.x86.avx512.pshuf.b.512", T.reinterpret("int8x64", T.Shuffle([tl[m, c0, T.Ramp(0, 1, 16)]] * 4, LANES4)), T.reinterpret("int8x64", pk[nb, j, s * SPAN + ci, h, p, T.Ramp(0, 1, 64)] & T.Broadcast(T.uint8(15), 64))), T.reinterpret("int8x64", T.Broadcast(T.shift_left(T.int16(513), T.Cast("int16", 2 * p)), 32)))
                                        + T.call_llvm_pure_intrin("int16x32", "llvm.x86.avx512.pmaddubs.w.512",
                                                                  T.call_llvm_pure_intrin("int8x64", "llvm.x86.avx512.pshuf.b.512", T.reinterpret("int8x64", T.Shuffle([tl[m, c0 + 1, T.Ramp(0, 1, 16)]] * 4, LANES4)), T.reinterpret("int8x64", T.shift_right(pk[nb, j, s * SPAN + ci, h, p, T.Ramp(0, 1, 64)], T.Broadcast(T.uint8(4), 64)) & T.Broadcast(T.uint8(15), 64))), T.reinterpret("int8x64", T.Broadcast(T.shift_left(T.int16(513), T.Cast("int16", 2 * p)), 32)))
                                    )
                                    hi[T.Ramp(32 * h, 1, 32)] = hi[T.Ramp(32 * h, 1, 32)] + (
                                        T.call_llvm_pure_intrin("int16x32", "llvm.x86.avx512.pmaddubs.w.512", T.reinterpret("int8x64", T.Broadcast(T.shift_left(T.int16(513), T.Cast("int16", 2 * p)), 32)),
                                                                T.call_llvm_pure_intrin("int8x64", "llvm.x86.avx512.pshuf.b.512", T.Shuffle([th[m, c0, T.Ramp(0, 1, 16)]] * 4, LANES4), T.reinterpret("int8x64", pk[nb, j, s * SPAN + ci, h, p, T.Ramp(0, 1, 64)] & T.Broadcast(T.uint8(15), 64))))
                                        + T.call_llvm_pure_intrin("int16x32", "llvm.x86.avx512.pmaddubs.w.512", T.reinterpret("int8x64", T.Broadcast(T.shift_left(T.int16(513), T.Cast("int16", 2 * p)), 32)),
                                                                  T.call_llvm_pure_intrin("int8x64", "llvm.x86.avx512.pshuf.b.512", T.Shuffle([th[m, c0 + 1, T.Ramp(0, 1, 16)]] * 4, LANES4), T.reinterpret("int8x64", T.shift_right(pk[nb, j, s * SPAN + ci, h, p, T.Ramp(0, 1, 64)], T.Broadcast(T.uint8(4), 64)) & T.Broadcast(T.uint8(15), 64))))
                                    )
                        acc[T.Ramp(0, 1, R)] = acc[T.Ramp(0, 1, R)] + T.Cast("int32x64", hi[T.Ramp(0, 1, R)]) * T.Broadcast(256, R) + T.Cast("int32x64", lo[T.Ramp(0, 1, R)])
                    if mins:  # the group's term s * acc + mn * sum(a), in units of the activation scale
                        yacc[T.Ramp(0, 1, R)] = yacc[T.Ramp(0, 1, R)] + T.Broadcast(asc[m, j], R) * (
                            T.Cast("float32x64", sc[nb, j, T.Ramp(0, 1, R)]) * T.Cast("float32x64", acc[T.Ramp(0, 1, R)])
                            + T.Cast("float32x64", zz[nb, j, T.Ramp(0, 1, R)]) * T.Broadcast(T.Cast("float32", asum[m, j]), R)
                        )
                    else:
                        yacc[T.Ramp(0, 1, R)] = yacc[T.Ramp(0, 1, R)] + T.Cast("float32x64", sc[nb, j, T.Ramp(0, 1, R)]) * T.Broadcast(
                            asc[m, j], R
                        ) * T.Cast(
                            "float32x64", acc[T.Ramp(0, 1, R)] - T.Cast("int32x64", zz[nb, j, T.Ramp(0, 1, R)]) * T.Broadcast(asum[m, j], R)
                        )
                if a8:
                    if bias:
                        y[m, T.Ramp(nb * R, 1, R)] = yacc[T.Ramp(0, 1, R)] * T.Broadcast(sa[m], R) + bv[T.Ramp(nb * R, 1, R)]
                    else:
                        y[m, T.Ramp(nb * R, 1, R)] = yacc[T.Ramp(0, 1, R)] * T.Broadcast(sa[m], R)
                else:
                    if bias:
                        y[m, T.Ramp(nb * R, 1, R)] = yacc[T.Ramp(0, 1, R)] + bv[T.Ramp(nb * R, 1, R)]
                    else:
                        y[m, T.Ramp(nb * R, 1, R)] = yacc[T.Ramp(0, 1, R)]

    return qlinear_signatures(T.macro(body), K, N, xdtype, T.Buffer((NB, NJ, NCC, 2, PP, 64), "uint8"), T.Buffer((NB, NJ, R), pdt),
                              T.Buffer((NB, NJ, R), pdt if mins else "uint8"), a8, bias)


def qlinear_signatures(mac, K: int, N: int, xdtype: str, PK, SC, ZZ, a8: bool, bias: bool):  # noqa: N803
    """The prim_func of one qlinear kernel body `mac` (a T.macro taking (x, pk, sc, zz, sa, bv, y, M)) with the
    signature the lowering calls: (x, packed, scales, zeros, [sa if A8], [bias if any], y), M symbolic. One of four
    variants, because TVMScript parses each prim_func's own parameter list (shared by lut-cpu and vnni-cpu)."""
    from tvm.script import tirx as T

    if a8 and bias:

        @T.prim_func(private=True)
        def kern(var_x: T.handle, pk: PK, sc: SC, zz: ZZ, var_sa: T.handle, bv: T.Buffer((N,), "float32"), var_y: T.handle):
            T.func_attr({"tirx.noalias": True})
            M = T.int64()
            x = T.match_buffer(var_x, (M, K), xdtype)
            sa = T.match_buffer(var_sa, (M,), "float32")
            y = T.match_buffer(var_y, (M, N), "float32")
            mac(x, pk, sc, zz, sa, bv, y, M)

    elif a8:

        @T.prim_func(private=True)
        def kern(var_x: T.handle, pk: PK, sc: SC, zz: ZZ, var_sa: T.handle, var_y: T.handle):
            T.func_attr({"tirx.noalias": True})
            M = T.int64()
            x = T.match_buffer(var_x, (M, K), xdtype)
            sa = T.match_buffer(var_sa, (M,), "float32")
            y = T.match_buffer(var_y, (M, N), "float32")
            mac(x, pk, sc, zz, sa, None, y, M)

    elif bias:

        @T.prim_func(private=True)
        def kern(var_x: T.handle, pk: PK, sc: SC, zz: ZZ, bv: T.Buffer((N,), "float32"), var_y: T.handle):
            T.func_attr({"tirx.noalias": True})
            M = T.int64()
            x = T.match_buffer(var_x, (M, K), xdtype)
            y = T.match_buffer(var_y, (M, N), "float32")
            mac(x, pk, sc, zz, None, bv, y, M)

    else:

        @T.prim_func(private=True)
        def kern(var_x: T.handle, pk: PK, sc: SC, zz: ZZ, var_y: T.handle):
            T.func_attr({"tirx.noalias": True})
            M = T.int64()
            x = T.match_buffer(var_x, (M, K), xdtype)
            y = T.match_buffer(var_y, (M, N), "float32")
            mac(x, pk, sc, zz, None, None, y, M)

    return kern
