"""Fast CPU qlinear kernels: tile-blocked weights, dequantization in registers, vectorized over 64 outputs.

Layout (made once at compile time by `relayout_blocked`): the codes of 64 consecutive output rows are
interleaved so one 64-byte load holds the same byte position of 64 rows:

    packed [N/64, K/g, g/per, 64] uint8   (per = 8 / bits codes per byte; byte t of a group holds codes
                                          k = t*per .. t*per + per - 1, lowest k in the lowest bits)
    scales [N/64, K/g, 64] float32,  zeros [N/64, K/g, 64] uint8

Loop nest (any M: rows are a serial loop inside each parallel block of 64 outputs, so one block's weights,
K*64*bits/8 bytes, stay in L2 while the rows of a prefill reuse them):

    parallel nb in N/64:  for m:  for j in K/g:  acc[64] = 0
                                     for t in g/per:  for c in per (unrolled):  acc[:] += x[m, k] * (q[:] - z[:])
                                     y[m, nb, :] += s[nb, j, :] * acc[:]          (one dequantization per group)

Scale-and-minimum groups (shape.mins): `zeros` holds the minimums in the same [N/64, K/g, 64] layout and dtype
as the scales (float32, or float16 where every value is an fp16 number: `param_dtype`); the group's activation
sum (already formed for the zero point) serves them: y[m, nb, :] += s * acc + mn * sum_group(x).

The group sum acc is fp32 in every activation mode:
- A16: x is rounded to fp16 first (the contract), the sum is fp32 (the contract's A16 accumulator).
- A32: the same with x as given (float32).
- A8: x is the int8 code qa (an int32 tensor), converted to fp32. Every partial sum is an integer of magnitude
  <= g * 127 * (2^bits - 1); while that bound is below 2^24 every fp32 addition is exact, so acc equals the
  contract's int32 sum bit for bit (the rule only claims such groups: g < 66059 at 2 bits, < 8808 at 4 bits).
"""

from __future__ import annotations

import numpy as np
from tvm import te, tirx

from compiler.backends.tvm.epilogue import scale_and_bias
from compiler.backends.tvm.kernels_lut import A16_MAX, act_codes_macro, host_has_avx512bw, qlinear_signatures

BLOCK = 64  # output rows per vector tile (4 zmm registers of fp32 accumulators)


def a8_fp32_exact(bits: int, group: int) -> bool:
    """fp32 group sums of int8 x (q - z) are exact integers when every partial sum is below 2^24."""
    return group * 127 * ((1 << bits) - 1) < (1 << 24)


def param_dtype(shape) -> str:
    """The dtype of the re-laid-out scales (and minimums): float16 where the layer's values are fp16 numbers
    (shape.f16_params: e.g. GGUF's Q4_1 d and m), which is lossless and reads fewer bytes per group; else float32."""
    return "float16" if shape.f16_params else "float32"


def blocked_scales(scales, shape, rows: int) -> np.ndarray:
    """scales [N, J] -> [N/rows, J, rows] in param_dtype."""
    s = np.asarray(scales, np.float32).reshape(shape.n // rows, rows, shape.k // shape.group).transpose(0, 2, 1)
    return np.ascontiguousarray(s.astype(param_dtype(shape)))


def blocked_offsets(offsets, shape, rows: int) -> np.ndarray:
    """The zero points (uint8) or, for scale-and-minimum groups, the minimums (param_dtype) [N, J] -> [N/rows, J, rows],
    the layout of the scales."""
    if shape.mins:
        return blocked_scales(offsets, shape, rows)
    return np.ascontiguousarray(np.asarray(offsets, np.uint8).reshape(shape.n // rows, rows, shape.k // shape.group).transpose(0, 2, 1))


def relayout_blocked(packed, scales, zeros, shape):
    """Artifact storage -> the blocked layout of the module doc (numpy, at compile time)."""
    from compiler.quant.pack import unpack

    n, k, g, bits = shape.n, shape.k, shape.group, shape.bits
    per = 8 // bits
    nj = k // g
    codes = unpack(packed, bits, shape.layout, k).astype(np.uint8)  # [N, K]
    c = codes.reshape(n // BLOCK, BLOCK, nj, g // per, per)  # [nb, ni, j, t, c]
    byte = np.zeros(c.shape[:-1], np.uint8)
    for i in range(per):
        byte |= (c[..., i] << (i * bits)).astype(np.uint8)
    blocked = np.ascontiguousarray(byte.transpose(0, 2, 3, 1))  # [nb, j, t, ni]
    if shape.codebook and bits == 8:  # E4M3 codes: the kernel decodes them itself (the shared table stays as it is, unread)
        # the NaN codes, which the table reads as +-448, become the codes of +-448 (0x7e, 0xfe)
        blocked = np.where((blocked & 0x7F) == 0x7F, blocked - 1, blocked).astype(np.uint8)
    if shape.fp == "nf4":  # the kernel holds the NF4 values as constants (nf4_value): the table must be them
        from compiler.errors import LowbitError
        from compiler.quant.floatfmt import NF4

        if not np.array_equal(np.asarray(zeros, np.float32).reshape(-1), NF4):
            raise LowbitError("an nf4 layer's table is not the 16 NF4 values", "recompile the artifact: its codebook table was changed")
    offsets = np.ascontiguousarray(zeros, np.float32) if shape.codebook else blocked_offsets(zeros, shape, BLOCK)
    return {"packed": blocked, "scales": blocked_scales(scales, shape, BLOCK), "zeros": offsets}


def e4m3_scaled(code):
    """The value / 256 of an E4M3 code (a uint8 expression, not a NaN code) as float32: the code sign-extended to 16
    bits and shifted left by 7 puts its exponent and mantissa into an fp16's fields and its sign into the sign bit
    (the mask clears the copy of the sign at bit 14); fp16's exponent bias is 8 more than E4M3's, so the fp16 is the
    value / 256, subnormals included. Two integer operations and a convert per vector; the caller multiplies by 256."""
    h = (tirx.reinterpret("int8", code).astype("int16") << tirx.const(7, "int16")) & tirx.const(-16512, "int16")  # 0xbf80
    return tirx.reinterpret("float16", h).astype("float32")


E2M1_SCALE = 16384.0  # e2m1_scaled is the value / 2^14


def e2m1_scaled(q):
    """The value / 2^14 of an E2M1 code (an int32 expression in 0..15: sign, 2 exponent bits of bias 1, 1 mantissa
    bit) as float32: the sign to bit 15 and the exponent and mantissa to bits 11..9 of an fp16, whose exponent bias
    is 14 more than E2M1's, so the fp16 is the value / 2^14 (E2M1's subnormal 0.5 is fp16's subnormal 2^-15). Two
    masks, two shifts and an or per vector, then a convert; the caller multiplies by 2^14."""
    h = ((q & tirx.const(8, "int32")) << tirx.const(12, "int32")) | ((q & tirx.const(7, "int32")) << tirx.const(9, "int32"))
    return tirx.reinterpret("float16", h.astype("uint16")).astype("float32")


def nf4_value(q):
    """The NF4 value of a code (int32 expression 0..15) as float32: a 4-level select tree on its bits, which LLVM
    turns into masked blends (15 per vector) instead of a gather from the table."""
    from compiler.quant.floatfmt import NF4

    level = [tirx.const(float(v), "float32") for v in NF4]
    for b in range(4):
        bit = ((q >> b) & 1) == 1
        level = [tirx.Select(bit, level[2 * i + 1], level[2 * i]) for i in range(len(level) // 2)]
    return level[0]


def e4m3_value(code):
    """The float32 value of an E4M3 code (uint8): e4m3_scaled * 256, the NaN codes clamped to +-448 (as the table)."""
    v = e4m3_scaled(code) * tirx.const(256.0, "float32")
    return tirx.max(tirx.min(v, tirx.const(448.0, "float32")), tirx.const(-448.0, "float32"))


def blocked_code_at(packed: te.Tensor, shape, n, k):
    """The code q[n, k] as an int32 expression on the blocked layout (a tied table's rows read from the head's copy)."""
    g, bits = shape.group, shape.bits
    per = 8 // bits
    byte = packed[n // BLOCK, k // g, (k % g) // per, n % BLOCK].astype("int32")
    return byte if per == 1 else (byte >> ((k % per) * bits).astype("int32")) & ((1 << bits) - 1)


def blocked_group_sums(x: te.Tensor, packed: te.Tensor, zeros: te.Tensor, shape, name: str = "acc", with_xs: bool = False):
    """acc[m, nb, j, ni] (fp32) over the blocked layout; A8: x is qa (int32) and the sums are exact integers.
    Scale-and-minimum groups: acc is the sum against q (`zeros` unread); with_xs also returns the activation
    group sums xs[m, j] (fp32) that the minimums multiply."""
    m = x.shape[0]
    g, bits = shape.group, shape.bits
    per = 8 // bits
    mask = (1 << bits) - 1
    t = te.reduce_axis((0, g // per), name="t")  # byte t of the group holds codes t*per .. t*per + per - 1

    if shape.act == "a8":
        xf = te.compute(x.shape, lambda i, k: x[i, k].astype("float32"), name="x_f32")
    elif shape.act == "a32":  # float32 activations as given
        xf = x
    else:  # A16: activations rounded to fp16 once per call, not once per tile
        xf = te.compute(x.shape, lambda i, k: x[i, k].astype("float16").astype("float32"), name="x_f32")

    def body(i, nb, j, ni):
        # the per codes of one byte, with constant shifts (int32 lanes: a shift by a loop-dependent amount
        # is widened to int64 by TVM's index-type promotion)
        if shape.codebook and bits == 8:  # E4M3 (per = 1): the value / 256; acc below multiplies by 256 once per group
            return te.sum(xf[i, j * g + t] * e4m3_scaled(packed[nb, j, t, ni]), axis=t)
        byte = packed[nb, j, t, ni].astype("int32")
        terms = None
        for c in range(per):
            q = (byte >> tirx.const(c * bits, "int32")) & tirx.const(mask, "int32") if per > 1 else byte
            if not shape.codebook:
                w = q.astype("float32")
            elif shape.fp == "nf4":  # the 16 NF4 values by a select tree on the code's bits (blends, no gather)
                w = nf4_value(q)
            else:  # E2M1: the value / 2^14
                w = e2m1_scaled(q)
            term = xf[i, j * g + t * per + c] * w
            terms = term if terms is None else terms + term
        return te.sum(terms, axis=t)

    # sum x * (q - z) = sum x * q - z * sum x: the zero point leaves the inner loop (one multiply per group).
    # A8: both sums are integers below 2^24 (the rule's bound), so the difference is the exact int32 sum.
    accq = te.compute((m, shape.n // BLOCK, shape.k // g, BLOCK), body, name="acc_q")
    r = te.reduce_axis((0, g), name="r")
    xs = te.compute((m, shape.k // g), lambda i, j: te.sum(xf[i, j * g + r], axis=r), name="x_gsum")
    if shape.codebook and shape.fp == "nf4":  # table values as they are
        acc = te.compute(accq.shape, lambda i, nb, j, ni: accq[i, nb, j, ni], name=name)
    elif shape.codebook:  # E4M3: sum x v = 256 sum x (v / 256), E2M1: 2^14 sum x (v / 2^14), exact (a power of two)
        unit = tirx.const(256.0 if bits == 8 else E2M1_SCALE, "float32")
        acc = te.compute(accq.shape, lambda i, nb, j, ni: accq[i, nb, j, ni] * unit, name=name)
    elif shape.mins:
        acc = te.compute(accq.shape, lambda i, nb, j, ni: accq[i, nb, j, ni], name=name)
    else:
        acc = te.compute(accq.shape, lambda i, nb, j, ni: accq[i, nb, j, ni] - zeros[nb, j, ni].astype("float32") * xs[i, j], name=name)
    return (acc, xs) if with_xs else acc


def blocked_te(shape):
    """TE function with qlinear_te's signature: (x|qa, packed, scales, zeros, [sa], [bias]) -> y [M, N]."""

    def f(x, packed, scales, zeros, *rest):
        rest = list(rest)
        sa = rest.pop(0) if shape.act == "a8" else None
        bias = rest.pop(0) if shape.bias else None
        acc, xs = blocked_group_sums(x, packed, zeros, shape, with_xs=True)
        m = x.shape[0]
        j = te.reduce_axis((0, shape.k // shape.group), name="j")

        def yv(i, n):
            v = scales[n // BLOCK, j, n % BLOCK].astype("float32") * acc[i, n // BLOCK, j, n % BLOCK]
            if shape.mins:  # zeros holds the minimums
                v = v + zeros[n // BLOCK, j, n % BLOCK].astype("float32") * xs[i, j]
            return te.sum(v, axis=j)

        y = te.compute((m, shape.n), yv, name="qlinear")
        if shape.fp == "nf4" and host_has_avx512bw():  # schedule_blocked swaps in nf4_prim_func
            spec = f"{shape.n},{shape.k},{shape.group},{int(shape.bias)},{shape.act},{int(shape.f16_params)}"
            return scale_and_bias(y, sa, bias, {"lowbit_nf4": spec})
        return scale_and_bias(y, sa, bias)

    return f


def schedule_blocked(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """parallel over 64-row blocks, rows serial inside, group sum vectorized over the 64 rows."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    try:
        spec = str(sch.get(sch.get_sblock("qlinear_out")).annotations["lowbit_nf4"]).split(",")
    except Exception:  # noqa: BLE001 - not an nf4 layer (or no epilogue block)
        spec = None
    if spec is not None:
        n, k, g, bias = (int(v) for v in spec[:4])
        return nf4_prim_func(n, k, g, bool(bias), spec[4], bool(int(spec[5]))).with_attr("tirx.is_scheduled", True)
    sch.compute_inline(sch.get_sblock("acc"))  # acc = acc_q - z * x_gsum, formed where y consumes it
    acc = sch.get_sblock("acc_q")
    y = sch.get_sblock("qlinear")
    i, n, j = sch.get_loops(y)
    nb, ni = sch.split(n, factors=[None, BLOCK])
    sch.reorder(nb, i, j, ni)
    sch.compute_at(acc, j)
    try:
        out = sch.get_sblock("qlinear_out")
    except Exception:  # noqa: BLE001 - no epilogue (A16 without bias)
        out = None
    if out is not None:  # scale by sa and add the bias right after the block's 64 outputs of row i
        sch.reverse_compute_at(out, i)
        sch.vectorize(sch.get_loops(out)[-1])
    loops = sch.get_loops(acc)
    a_ni, a_kk = loops[-2], loops[-1]
    sch.reorder(a_kk, a_ni)
    ko, ki = sch.split(a_kk, factors=[None, 2])  # two bytes per step: independent FMA chains
    sch.unroll(ki)
    sch.vectorize(a_ni)
    sch.vectorize(ni)
    sch.parallel(nb)
    init = sch.decompose_reduction(acc, ko)
    sch.vectorize(sch.get_loops(init)[-1])
    init = sch.decompose_reduction(y, j)
    sch.vectorize(sch.get_loops(init)[-1])
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)


def nf4_prim_func(N: int, K: int, G: int, bias: bool, act: str, f16: bool):  # noqa: N803 - TIR names
    """blocked-cpu's NF4 body on AVX-512: per 64-row block and row of x, each byte of codes gives two 16-lane index
    vectors and vpermps looks them up in the 16-entry table (one instruction per 16 codes), FMA'd with the two
    activations; one scale per group after the group's fp32 sum, as the contract orders it."""
    from tvm.script import tirx as T

    R = BLOCK
    NB, NJ, T2 = N // R, K // G, G // 2
    pdt = "float16" if f16 else "float32"
    a8, a16 = act == "a8", act == "a16"

    @T.macro
    def body(x, pk, sc, zz, sa, bv, y, M):
        for nb in T.parallel(NB):
            tv = T.alloc_buffer((16,), "float32")
            tv[T.Ramp(0, 1, 16)] = zz[0, T.Ramp(0, 1, 16)]
            for m in range(M):
                yacc = T.alloc_buffer((R,), "float32")
                gacc = T.alloc_buffer((R,), "float32")
                yacc[T.Ramp(0, 1, R)] = T.Broadcast(T.float32(0), R)
                for j in range(NJ):
                    gacc[T.Ramp(0, 1, R)] = T.Broadcast(T.float32(0), R)
                    for t in range(T2):
                        xl = T.alloc_buffer((2,), "float32")
                        for h in T.unroll(2):
                            if a8:
                                xl[h] = T.Cast("float32", x[m, j * G + 2 * t + h])
                            elif a16:
                                xl[h] = T.Cast("float32", T.Cast("float16", x[m, j * G + 2 * t + h]))
                            else:
                                xl[h] = x[m, j * G + 2 * t + h]
                        for c in T.unroll(4):
                            b = T.Cast("int32x16", pk[nb, j, t, T.Ramp(c * 16, 1, 16)])
                            gacc[T.Ramp(c * 16, 1, 16)] = (
                                gacc[T.Ramp(c * 16, 1, 16)]
                                + T.call_llvm_pure_intrin("float32x16", "llvm.x86.avx512.permvar.sf.512", tv[T.Ramp(0, 1, 16)], b & T.Broadcast(15, 16)) * T.Broadcast(xl[0], 16)
                                + T.call_llvm_pure_intrin("float32x16", "llvm.x86.avx512.permvar.sf.512", tv[T.Ramp(0, 1, 16)], T.shift_right(b, T.Broadcast(4, 16))) * T.Broadcast(xl[1], 16)
                            )
                    yacc[T.Ramp(0, 1, R)] = yacc[T.Ramp(0, 1, R)] + T.Cast("float32x64", sc[nb, j, T.Ramp(0, 1, R)]) * gacc[T.Ramp(0, 1, R)]
                if a8:
                    yacc[T.Ramp(0, 1, R)] = yacc[T.Ramp(0, 1, R)] * T.Broadcast(sa[m], R)
                if bias:
                    y[m, T.Ramp(nb * R, 1, R)] = yacc[T.Ramp(0, 1, R)] + bv[T.Ramp(nb * R, 1, R)]
                else:
                    y[m, T.Ramp(nb * R, 1, R)] = yacc[T.Ramp(0, 1, R)]

    return qlinear_signatures(body, K, N, "int32" if a8 else "float32", T.Buffer((NB, NJ, T2, R), "uint8"), T.Buffer((NB, NJ, R), pdt),
                              T.Buffer((1, 16), "float32"), a8, bias)


# ----------------------------------------------------------------------------------------------------------
# A8 with AVX-512 VNNI: integer dot products of 4 codes x 4 int8 activations per int32 lane (vpdpbusd)
#
# Layout: packed [N/16, K/(4*per), 64] uint8; a 64-byte chunk c covers 16 rows x 4*per consecutive k: byte
# r*4 + e holds, in bit field h (bits h*b .. h*b + b - 1), the code of row r at k = c*4*per + h*4 + e. One
# load, a shift and a mask give 64 codes (16 rows x 4 k) as unsigned bytes; vpdpbusd multiplies them with
# the 4 activations of that k range (int8, broadcast) and adds the 4 products into each row's int32 lane:
# the group sum is an exact int32 (no float on the way), the zero point enters once per group
# (acc - z * sum qa), then y += s * float(acc), as the contract orders it. Scale-and-minimum groups: the
# minimums ([N/16, K/g, 16], the scales' layout and dtype) take the zero points' place, y += s * float(acc) +
# mn * float(sum qa).

VNNI_ROWS = 16
VNNI_PREFILL_ROWS = {8: 8, 4: 4, 2: 2}  # rows of a prefill per pass over a weight block (at most 16 int32 accumulators)


E2M1_ZERO = 12  # E2M1 codes in vnni-cpu: the unsigned bytes 2 v + 12 in 0..24 (a vpshufb table lookup), zero point 12


def e2m1_twice(q):
    """2 v of an E2M1 code (int32 expression 0..15) as an int32: 0, 1, 2, 3, 4, 6, 8, 12 and their negatives."""
    e, m = (q >> 1) & 3, q & 1
    mag = tirx.Select(e == 0, m, (m + 2) << tirx.max(e - 1, 0))
    return tirx.Select(q >= 8, -mag, mag)


def vnni_ok(bits: int, group: int) -> bool:
    """Bit widths and groups the VNNI kernel takes (a group is whole 64-byte chunks), on a host with VNNI."""
    return bits in (2, 4, 8) and group % 16 == 0 and host_has_vnni()  # (16-lane activation prep; whole 64-byte chunks)


def vnni_a16_exact(bits: int, group: int) -> bool:
    """A16's group sum 64 sum(q ah) + sum(q al) of 13-bit activations (|a| <= 8191) stays an exact int32."""
    return group * A16_MAX * ((1 << bits) - 1) < 2**31


def host_has_vnni() -> bool:
    from compiler.backends.tvm.target import host_has

    return host_has("avx512vnni")


def relayout_vnni(packed, scales, zeros, shape):
    from compiler.quant.pack import unpack

    n, k, bits = shape.n, shape.k, shape.bits
    per = 8 // bits
    codes = unpack(packed, bits, shape.layout, k).astype(np.uint8)  # [N, K]
    c = codes.reshape(n // VNNI_ROWS, VNNI_ROWS, k // (4 * per), per, 4)  # [nb, r, chunk, h, e]
    byte = np.zeros((n // VNNI_ROWS, VNNI_ROWS, k // (4 * per), 4), np.uint8)
    for h in range(per):
        byte |= (c[:, :, :, h, :] << (h * bits)).astype(np.uint8)
    blocked = np.ascontiguousarray(byte.transpose(0, 2, 1, 3).reshape(n // VNNI_ROWS, k // (4 * per), 64))
    if shape.codebook:  # E2M1: the kernel maps each code to 2 v + 12 (vpshufb), so the scale is s / 2 (exact) and z = 12
        scales = np.asarray(scales, np.float32) / np.float32(2)
        zeros = np.full(scales.shape, E2M1_ZERO, np.uint8)
    return {"packed": blocked, "scales": blocked_scales(scales, shape, VNNI_ROWS), "zeros": blocked_offsets(zeros, shape, VNNI_ROWS)}


def vnni_code_at(packed: te.Tensor, shape, n, k):
    """The code q[n, k] as an int32 expression on the VNNI layout (a tied table's rows read from the head's copy)."""
    per = 8 // shape.bits
    byte = packed[n // VNNI_ROWS, k // (4 * per), (n % VNNI_ROWS) * 4 + k % 4].astype("int32")
    return (byte >> (((k % (4 * per)) // 4) * shape.bits).astype("int32")) & ((1 << shape.bits) - 1)


# Ternary weights at 1.6 bits: vnni-cpu's layout with five trits to a byte (3^5 = 243 <= 256). A group of G codes
# (G % 16 == 0) of a 16-row block is A chunks of 64 bytes whose byte (r, e) holds the codes k = 20 c + 4 h + e, h =
# 0..4, as sum q_h 3^h, then B chunks of vnni-cpu's 2-bit bytes (k = 20 A + 16 c + 4 h + e at bits 2 h); A = 4
# floor(G / 80) makes 20 A + 16 B = G with the fewest chunks: 1.6 bits per weight at G = 4096 or 576, 1.625 at 256,
# 1.75 at 128. The kernel turns field h of 64 bytes into 64 trits with two vpermi2b (VBMI) over a 256-entry
# table of trit h, selected on the byte's top bit: three instructions, where a 2-bit field takes a shift and a mask.
TRIT_FIELDS = 5


def trit_chunks(group: int) -> tuple[int, int]:
    """(A, B): a group's 64-byte chunks of five trits per byte and of four 2-bit codes per byte (20 A + 16 B = G)."""
    a = 4 * (group // 80)
    return a, (group - 20 * a) // 16


def trit_ok(shape) -> bool:
    """Ternary layers vnni-trit-cpu takes: vnni-cpu's, on a host with AVX-512 VBMI (vpermi2b), and a group that
    holds at least one chunk of trits."""
    return shape.ternary and shape.bits == 2 and vnni_ok(2, shape.group) and trit_chunks(shape.group)[0] > 0 and host_has_vbmi()


def host_has_vbmi() -> bool:
    from compiler.backends.tvm.target import host_has

    return host_has("avx512vbmi")


def pack_trit_chunks(codes: np.ndarray, group: int, rows: int = VNNI_ROWS) -> np.ndarray:
    """Ternary codes (uint8 [N, K], values 0..2, the stored q + 1) -> uint8 [N/rows, K/G * (A + B), 4 * rows]."""
    n, k = codes.shape
    a, b = trit_chunks(group)
    c = codes.astype(np.uint16).reshape(n, k // group, group)
    tri = c[:, :, : 20 * a].reshape(n, k // group, a, TRIT_FIELDS, 4)
    tri = sum(tri[:, :, :, h, :] * 3**h for h in range(TRIT_FIELDS))
    two = c[:, :, 20 * a :].reshape(n, k // group, b, 4, 4)
    two = sum(two[:, :, :, h, :] << (2 * h) for h in range(4))
    byte = np.concatenate([tri, two], axis=2).astype(np.uint8)  # [N, J, A + B, 4]
    byte = byte.reshape(n // rows, rows, k // group * (a + b), 4).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(byte.reshape(n // rows, k // group * (a + b), 4 * rows))


def unpack_trit_chunks(packed: np.ndarray, n: int, k: int, group: int, rows: int = VNNI_ROWS) -> np.ndarray:
    """Inverse of pack_trit_chunks: codes uint8 [N, K]."""
    a, b = trit_chunks(group)
    byte = packed.reshape(n // rows, k // group * (a + b), rows, 4).transpose(0, 2, 1, 3).reshape(n, k // group, a + b, 4).astype(np.int32)
    tri = np.stack([(byte[:, :, :a] // 3**h) % 3 for h in range(TRIT_FIELDS)], axis=3).reshape(n, k // group, 20 * a)
    two = np.stack([(byte[:, :, a:] >> (2 * h)) & 3 for h in range(4)], axis=3).reshape(n, k // group, 16 * b)
    return np.concatenate([tri, two], axis=2).reshape(n, k).astype(np.uint8)


def relayout_trit(packed, scales, zeros, shape):
    from compiler.quant.pack import unpack

    codes = unpack(packed, 2, shape.layout, shape.k)
    return {"packed": pack_trit_chunks(codes, shape.group), "scales": blocked_scales(scales, shape, VNNI_ROWS),
            "zeros": blocked_offsets(zeros, shape, VNNI_ROWS)}


def trit_code_at(packed: te.Tensor, shape, n, k):
    """The code q[n, k] as an int32 expression on the trit layout."""
    a, b = trit_chunks(shape.group)
    j, o = k // shape.group, k % shape.group
    lane = (n % VNNI_ROWS) * 4 + o % 4
    tri = packed[n // VNNI_ROWS, j * (a + b) + o // 20, lane].astype("int32")
    pow3 = tirx.Select((o % 20) // 4 == 0, 1, tirx.Select((o % 20) // 4 == 1, 3, tirx.Select((o % 20) // 4 == 2, 9, tirx.Select((o % 20) // 4 == 3, 27, 81))))
    o2 = o - 20 * a
    two = packed[n // VNNI_ROWS, j * (a + b) + a + o2 // 16, lane].astype("int32")
    return tirx.if_then_else(o < 20 * a, (tri // pow3) % 3, (two >> (((o2 % 16) // 4) * 2).astype("int32")) & 3)


def vnni_te(shape, trits: bool = False):
    """A plain TE definition over the VNNI layout (what the kernel computes; trits: the five-trit layout);
    `schedule_vnni` replaces its body with the hand-vectorized TIR. The output block carries the shape for the schedule."""
    per = 8 // shape.bits
    mask = (1 << shape.bits) - 1
    g, nj = shape.group, shape.k // shape.group

    def f(qa, packed, scales, zeros, *rest):
        rest = list(rest)
        sa = rest.pop(0) if shape.act == "a8" else None
        bias = rest.pop(0) if shape.bias else None
        m = qa.shape[0]
        kk = te.reduce_axis((0, g), name="kk")

        def acc_body(i, n, j):
            k = j * g + kk
            ch = k // (4 * per)
            h = (k % (4 * per)) // 4
            e = k % 4
            if trits:
                q = trit_code_at(packed, shape, n, k)
            else:
                byte = packed[n // VNNI_ROWS, ch, (n % VNNI_ROWS) * 4 + e].astype("int32")
                q = (byte >> (h * shape.bits).astype("int32")) & mask
            if shape.codebook:  # E2M1: the byte the kernel's table lookup gives
                q = e2m1_twice(q) + E2M1_ZERO
            if not shape.mins:
                q = q - zeros[n // VNNI_ROWS, j, n % VNNI_ROWS].astype("int32")
            return te.sum(qa[i, k].astype("float32") * q.astype("float32"), axis=kk)

        acc = te.compute((m, shape.n, nj), acc_body, name="acc")
        rr = te.reduce_axis((0, g), name="rr")
        xs = te.compute((m, nj), lambda i, jj: te.sum(qa[i, jj * g + rr].astype("float32"), axis=rr), name="x_gsum")
        j = te.reduce_axis((0, nj), name="j")

        def yv(i, n):
            v = scales[n // VNNI_ROWS, j, n % VNNI_ROWS].astype("float32") * acc[i, n, j].astype("float32")
            if shape.mins:
                v = v + zeros[n // VNNI_ROWS, j, n % VNNI_ROWS].astype("float32") * xs[i, j]
            return te.sum(v, axis=j)

        y = te.compute((m, shape.n), yv, name="qlinear")
        spec = f"{shape.n},{shape.k},{g},{shape.bits},{int(shape.bias)},{shape.act},{int(shape.mins)},{int(shape.f16_params)},{int(shape.codebook)},{int(trits)}"
        return scale_and_bias(y, sa, bias, {"lowbit_vnni": spec})

    return f


def schedule_vnni(func: tirx.PrimFunc) -> tirx.PrimFunc:
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    spec = str(sch.get(sch.get_sblock("qlinear_out")).annotations["lowbit_vnni"]).split(",")
    n, k, g, bits, bias = (int(v) for v in spec[:5])
    flags = [bool(int(v)) for v in spec[6:10]]
    return vnni_prim_func(n, k, g, bits, bool(bias), spec[5], *flags).with_attr("tirx.is_scheduled", True)


def trit_te(shape):
    return vnni_te(shape, trits=True)


def vnni_prim_func(N: int, K: int, G: int, bits: int, bias: bool, act: str = "a8", mins: bool = False, f16: bool = False, e2m1: bool = False,  # noqa: N803 - TIR names
                   trits: bool = False):
    from tvm.script import tirx as T

    per = 8 // bits
    R = VNNI_ROWS
    NB, NJ = N // R, K // G
    TA, TB = trit_chunks(G) if trits else (0, 0)  # the five-trit layout: chunks of trits, then of 2-bit codes, per group
    CPG = TA + TB if trits else G // (4 * per)  # chunks per group
    NC = NJ * CPG
    F = TRIT_FIELDS if trits else per  # accumulators per row: one per field of a byte
    MASK = sum(((1 << bits) - 1) << (8 * i) for i in range(4))
    MASK = MASK - (1 << 32) if MASK >= 1 << 31 else MASK

    # software prefetch distance in 64-byte chunks: 8 KB ahead. One core needs about bandwidth x DRAM latency in
    # flight; 1 KB ahead left 4096x14336 A8 GEMVs at 0.64-0.76 of the read bandwidth, 8 KB reaches 0.93-0.97 (Zen 5)
    PF = 128
    MR = VNNI_PREFILL_ROWS[bits]

    a16 = act == "a16"
    pdt = "float16" if f16 else "float32"  # scales (and minimums): param_dtype
    m16, m8 = a16 and mins, mins and not a16  # (plain bools: TVMScript evaluates `if` on them when parsing)
    act_codes = act_codes_macro()

    @T.macro
    def group_end(sc, zz, xs, asc, yacc, acc, ach, nb, j, m, yo, ao):
        # one row's group: the bit fields' sums, then the zero point (or minimum) and one scale, the contract's order
        for h in T.unroll(1, F):
            acc[T.Ramp(ao, 1, R)] = acc[T.Ramp(ao, 1, R)] + acc[T.Ramp(ao + h * R, 1, R)]
            if a16:
                ach[T.Ramp(ao, 1, R)] = ach[T.Ramp(ao, 1, R)] + ach[T.Ramp(ao + h * R, 1, R)]
        if m16:  # the group's term s * acc + mn * sum(a), in units of the activation scale
            yacc[T.Ramp(yo, 1, R)] = yacc[T.Ramp(yo, 1, R)] + T.Broadcast(asc[m, j], R) * (
                T.Cast("float32x16", sc[nb, j, T.Ramp(0, 1, R)])
                * T.Cast("float32x16", ach[T.Ramp(ao, 1, R)] * T.Broadcast(64, R) + acc[T.Ramp(ao, 1, R)])
                + T.Cast("float32x16", zz[nb, j, T.Ramp(0, 1, R)]) * T.Broadcast(T.Cast("float32", xs[m, j]), R)
            )
        elif m8:
            yacc[T.Ramp(yo, 1, R)] = (
                yacc[T.Ramp(yo, 1, R)]
                + T.Cast("float32x16", sc[nb, j, T.Ramp(0, 1, R)]) * T.Cast("float32x16", acc[T.Ramp(ao, 1, R)])
                + T.Cast("float32x16", zz[nb, j, T.Ramp(0, 1, R)]) * T.Broadcast(T.Cast("float32", xs[m, j]), R)
            )
        elif a16:  # exact: acc = 64 * sum(q * ah) + sum(q * al), then the zero point and one scale per group
            yacc[T.Ramp(yo, 1, R)] = yacc[T.Ramp(yo, 1, R)] + T.Cast("float32x16", sc[nb, j, T.Ramp(0, 1, R)]) * T.Broadcast(
                asc[m, j], R
            ) * T.Cast(
                "float32x16", ach[T.Ramp(ao, 1, R)] * T.Broadcast(64, R) + acc[T.Ramp(ao, 1, R)] - T.Cast("int32x16", zz[nb, j, T.Ramp(0, 1, R)]) * T.Broadcast(xs[m, j], R)
            )
        else:
            yacc[T.Ramp(yo, 1, R)] = yacc[T.Ramp(yo, 1, R)] + T.Cast("float32x16", sc[nb, j, T.Ramp(0, 1, R)]) * T.Cast(
                "float32x16", acc[T.Ramp(ao, 1, R)] - T.Cast("int32x16", zz[nb, j, T.Ramp(0, 1, R)]) * T.Broadcast(xs[m, j], R)
            )

    @T.macro
    def rows(pk, sc, zz, sa, bv, y, xw, xh, xs, asc, tbl, tbl5, nb, m0, nr):
        # nr rows from m0 against one block of 16 outputs. Small default-scope buffers are stack allocas that LLVM
        # keeps in registers ("local" ones cost a TVMBackendAllocWorkspace call per use).
        yacc = T.alloc_buffer((nr * R,), "float32")
        acc = T.alloc_buffer((nr * F * R,), "int32")  # one accumulator per row and bit field: independent chains
        ach = T.alloc_buffer((nr * F * R,), "int32")  # A16: the same for the high parts
        for r in T.unroll(nr):
            yacc[T.Ramp(r * R, 1, R)] = T.Broadcast(T.float32(0), R)
        for j in range(NJ):
            # the scales and zero points (or minimums) of this group two blocks on: their own streams, which the codes'
            # prefetch does not cover (a 576-wide layer's block is 4.6 KB of codes and 1.4 KB of them)
            T.evaluate(T.call_llvm_intrin("void", "llvm.prefetch.p0", T.address_of(sc[nb + 2, j, 0]), 0, 3, 1))
            T.evaluate(T.call_llvm_intrin("void", "llvm.prefetch.p0", T.address_of(zz[nb + 2, j, 0]), 0, 3, 1))
            for r in T.unroll(nr):
                for h in T.unroll(F):
                    acc[T.Ramp((r * F + h) * R, 1, R)] = T.Broadcast(T.int32(0), R)
                    if a16:
                        ach[T.Ramp((r * F + h) * R, 1, R)] = T.Broadcast(T.int32(0), R)
            if trits:
                for c in range(TA):  # trits 0..3 of each byte as 2-bit fields by one table lookup, trit 4 by two compares
                    T.evaluate(T.call_llvm_intrin("void", "llvm.prefetch.p0", T.address_of(pk[nb, j * CPG + c + PF, 0]), 0, 3, 1))
                    pv = T.alloc_buffer((64,), "int8")
                    pv[T.Ramp(0, 1, 64)] = T.Select(
                        T.reinterpret("int8x64", pk[nb, j * CPG + c, T.Ramp(0, 1, 64)]) < T.Broadcast(T.int8(0), 64),
                        T.call_llvm_pure_intrin("int8x64", "llvm.x86.avx512.vpermi2var.qi.512", tbl5[T.Ramp(128, 1, 64)],
                                                T.reinterpret("int8x64", pk[nb, j * CPG + c, T.Ramp(0, 1, 64)]), tbl5[T.Ramp(192, 1, 64)]),
                        T.call_llvm_pure_intrin("int8x64", "llvm.x86.avx512.vpermi2var.qi.512", tbl5[T.Ramp(0, 1, 64)],
                                                T.reinterpret("int8x64", pk[nb, j * CPG + c, T.Ramp(0, 1, 64)]), tbl5[T.Ramp(64, 1, 64)]))
                    for h in T.unroll(TRIT_FIELDS):
                        wv = T.alloc_buffer((64,), "int8")
                        if h < 4:
                            wv[T.Ramp(0, 1, 64)] = T.reinterpret(
                                "int8x64", T.shift_right(T.reinterpret("int32x16", pv[T.Ramp(0, 1, 64)]), T.Broadcast(T.Cast("int32", 2 * h), R)) & T.Broadcast(T.int32(MASK), R))
                        else:
                            wv[T.Ramp(0, 1, 64)] = T.Select(pk[nb, j * CPG + c, T.Ramp(0, 1, 64)] >= T.Broadcast(T.uint8(81), 64), T.Broadcast(T.int8(1), 64), T.Broadcast(T.int8(0), 64)) + T.Select(
                                pk[nb, j * CPG + c, T.Ramp(0, 1, 64)] >= T.Broadcast(T.uint8(162), 64), T.Broadcast(T.int8(1), 64), T.Broadcast(T.int8(0), 64))
                        for r in T.unroll(nr):
                            acc[T.Ramp((r * F + h) * R, 1, R)] = T.call_llvm_pure_intrin(
                                "int32x16", "llvm.x86.avx512.vpdpbusd.512", acc[T.Ramp((r * F + h) * R, 1, R)], wv[T.Ramp(0, 1, 64)],
                                T.reinterpret("int8x64", T.Broadcast(xw[m0 + r, j * (G // 4) + c * TRIT_FIELDS + h], R)))
                            if a16:
                                ach[T.Ramp((r * F + h) * R, 1, R)] = T.call_llvm_pure_intrin(
                                    "int32x16", "llvm.x86.avx512.vpdpbusd.512", ach[T.Ramp((r * F + h) * R, 1, R)], wv[T.Ramp(0, 1, 64)],
                                    T.reinterpret("int8x64", T.Broadcast(xh[m0 + r, j * (G // 4) + c * TRIT_FIELDS + h], R)))
            for c in range(TA, CPG):
                T.evaluate(T.call_llvm_intrin("void", "llvm.prefetch.p0", T.address_of(pk[nb, j * CPG + c + PF, 0]), 0, 3, 1))
                for h in T.unroll(per):
                    wv = T.alloc_buffer((64,), "int8")  # the 64 weight bytes of bit field h (E2M1: looked up)
                    if e2m1:
                        wv[T.Ramp(0, 1, 64)] = T.call_llvm_pure_intrin(
                            "int8x64", "llvm.x86.avx512.pshuf.b.512", tbl[T.Ramp(0, 1, 64)],
                            T.reinterpret("int8x64", T.shift_right(T.reinterpret("int32x16", pk[nb, j * CPG + c, T.Ramp(0, 1, 64)]), T.Broadcast(T.Cast("int32", h * bits), R)) & T.Broadcast(T.int32(MASK), R)))
                    else:
                        wv[T.Ramp(0, 1, 64)] = T.reinterpret(
                            "int8x64", T.shift_right(T.reinterpret("int32x16", pk[nb, j * CPG + c, T.Ramp(0, 1, 64)]), T.Broadcast(T.Cast("int32", h * bits), R)) & T.Broadcast(T.int32(MASK), R))
                    for r in T.unroll(nr):
                        acc[T.Ramp((r * F + h) * R, 1, R)] = T.call_llvm_pure_intrin(
                            "int32x16", "llvm.x86.avx512.vpdpbusd.512", acc[T.Ramp((r * F + h) * R, 1, R)],
                            wv[T.Ramp(0, 1, 64)],
                            T.reinterpret("int8x64", T.Broadcast(xw[m0 + r, j * (G // 4) + TA * TRIT_FIELDS + (c - TA) * per + h], R)),
                        )
                        if a16:
                            ach[T.Ramp((r * F + h) * R, 1, R)] = T.call_llvm_pure_intrin(
                                "int32x16", "llvm.x86.avx512.vpdpbusd.512", ach[T.Ramp((r * F + h) * R, 1, R)],
                                wv[T.Ramp(0, 1, 64)],
                                T.reinterpret("int8x64", T.Broadcast(xh[m0 + r, j * (G // 4) + TA * TRIT_FIELDS + (c - TA) * per + h], R)),
                            )
            for r in T.unroll(nr):
                group_end(sc, zz, xs, asc, yacc, acc, ach, nb, j, m0 + r, r * R, r * F * R)
        for r in T.unroll(nr):
            if a16:
                if bias:
                    y[m0 + r, T.Ramp(nb * R, 1, R)] = yacc[T.Ramp(r * R, 1, R)] + bv[T.Ramp(nb * R, 1, R)]
                else:
                    y[m0 + r, T.Ramp(nb * R, 1, R)] = yacc[T.Ramp(r * R, 1, R)]
            elif bias:
                y[m0 + r, T.Ramp(nb * R, 1, R)] = yacc[T.Ramp(r * R, 1, R)] * T.Broadcast(sa[m0 + r], R) + bv[T.Ramp(nb * R, 1, R)]
            else:
                y[m0 + r, T.Ramp(nb * R, 1, R)] = yacc[T.Ramp(r * R, 1, R)] * T.Broadcast(sa[m0 + r], R)

    @T.macro
    def body(qa, pk, sc, zz, sa, bv, y, M):
        # phase 1, rows in parallel: integer activations packed 4 per word, their group sums (and A16 scales)
        xw = T.alloc_buffer((M, K // 4), "int32")  # 4 int8 activations per word (A16: their low 6 bits)
        xh = T.alloc_buffer((M, K // 4), "int32")  # A16: the high parts (a >> 6)
        xs = T.alloc_buffer((M, NJ), "int32")
        asc = T.alloc_buffer((M, NJ), "float32")
        av = T.alloc_buffer((M, K), "int32")
        tbl = T.alloc_buffer((64,), "int8")  # E2M1: 2 v + 12 per code, once per 128-bit lane (vpshufb looks up per lane)
        if e2m1:
            for i in range(64):  # the byte of code i % 16 (vnni_te's e2m1_twice, the same expression)
                tbl[i] = T.Cast("int8", e2m1_twice(i % 16) + E2M1_ZERO)
        tbl5 = T.alloc_buffer((256,), "int8")  # trits: entry b holds trits 0..3 of byte b as 2-bit fields
        if trits:
            for b in range(256):
                tbl5[b] = T.Cast("int8", T.if_then_else(b < 243, T.truncmod(b, 3) | (T.truncmod(T.truncdiv(b, 3), 3) << 2) | (T.truncmod(T.truncdiv(b, 9), 3) << 4)
                                                          | (T.truncmod(T.truncdiv(b, 27), 3) << 6), 0))
        for m in T.parallel(M):
            for j in range(NJ):  # (the same integer activations as lut-cpu; A8: the contract's codes)
                act_codes(qa, av, asc, xs, m, j, G, not a16)
            for w in range(K // 4):
                if a16:
                    xw[m, w] = (av[m, 4 * w] & 63) | ((av[m, 4 * w + 1] & 63) << 8) | ((av[m, 4 * w + 2] & 63) << 16) | ((av[m, 4 * w + 3] & 63) << 24)
                    xh[m, w] = (((av[m, 4 * w] >> 6) & 255) | (((av[m, 4 * w + 1] >> 6) & 255) << 8) | (((av[m, 4 * w + 2] >> 6) & 255) << 16)
                                | (((av[m, 4 * w + 3] >> 6) & 255) << 24))
                else:
                    xw[m, w] = (av[m, 4 * w] & 255) | ((av[m, 4 * w + 1] & 255) << 8) | ((av[m, 4 * w + 2] & 255) << 16) | ((av[m, 4 * w + 3] & 255) << 24)
        # phase 2: blocks of 16 outputs in parallel, the rows of a prefill inside (the block's weights stay in L1/L2),
        # VNNI_PREFILL_ROWS rows at a time so each unpacked weight vector feeds that many vpdpbusd chains
        for nb in T.parallel(NB):
            for mb in range(M // MR):
                rows(pk, sc, zz, sa, bv, y, xw, xh, xs, asc, tbl, tbl5, nb, mb * MR, MR)
            for mt in range(M % MR):
                rows(pk, sc, zz, sa, bv, y, xw, xh, xs, asc, tbl, tbl5, nb, M // MR * MR + mt, 1)

    return qlinear_signatures(body, K, N, "float32" if a16 else "int32", T.Buffer((NB, NC, 64), "uint8"), T.Buffer((NB, NJ, R), pdt),
                              T.Buffer((NB, NJ, R), pdt if mins else "uint8"), not a16, bias)


# ----------------------------------------------------------------------------------------------------------
# Float linear (layers left in fp32, e.g. an LM head tied to the embeddings: smollm2-135m's 113 MB head is the
# largest read of its decode step). Parallel over blocks of FLOAT_ROWS output rows; each block walks K in
# 16-lane chunks, one x chunk feeding FLOAT_ROWS FMA chains (x read once per block, each weight row read once
# per call and streamed contiguously); the rows of a prefill loop inside the block, whose rows stay in L1.
# The per-row partial vectors are summed as a tree of vector adds. Two things made the first version run at
# a fifth of the bandwidth: "local"-scope buffers, which TVM 0.27 serves with TVMBackendAllocWorkspace calls
# (twice per output row), and a fully unrolled K loop, whose weight loads LLVM hoisted out of the row loop
# into stack spills; here small buffers are "global" (stack allocas) and the K loop stays a loop. LLVM still
# unrolls a short K loop (576 / 16 = 36 steps) and hoists it out of the row loop, so a decode (M = 1) takes its
# own path, one row per iteration and no row loop: 49152 x 576 went from 8.7-9.4 ms to 4.4 ms at 1 thread
# (25.6 GB/s, the bandwidth measured in the same process) on the 2-core EPYC VM.

FLOAT_LANES = 16  # features per step (two ymm / one zmm)
FLOAT_ROWS = 4  # output rows per block: independent FMA chains sharing one x chunk


def float_linear_ok(k: int) -> bool:
    return k % FLOAT_LANES == 0


def float_linear_prim_func(N: int, K: int, bias: bool):  # noqa: N803 - TIR shape names
    from tvm.script import tirx as T

    L, R = FLOAT_LANES, FLOAT_ROWS
    NB, TAIL = N // R, N % R
    KC = K // L

    @T.macro
    def rows(x, w, bv, y, M, n0, nr):
        # nr (a Python int) output rows from n0, every row m of x
        for m in range(M):
            acc = T.alloc_buffer((nr * L,), "float32")
            for r in T.unroll(nr):
                acc[T.Ramp(r * L, 1, L)] = T.Broadcast(T.float32(0), L)
            for c in range(KC):
                for r in T.unroll(nr):
                    acc[T.Ramp(r * L, 1, L)] = acc[T.Ramp(r * L, 1, L)] + x[m, T.Ramp(c * L, 1, L)] * w[n0 + r, T.Ramp(c * L, 1, L)]
            red = T.alloc_buffer((L,), "float32")
            for r in T.unroll(nr):
                red[T.Ramp(0, 1, 8)] = acc[T.Ramp(r * L, 1, 8)] + acc[T.Ramp(r * L + 8, 1, 8)]
                red[T.Ramp(0, 1, 4)] = red[T.Ramp(0, 1, 4)] + red[T.Ramp(4, 1, 4)]
                red[T.Ramp(0, 1, 2)] = red[T.Ramp(0, 1, 2)] + red[T.Ramp(2, 1, 2)]
                if bias:
                    y[m, n0 + r] = red[0] + red[1] + bv[n0 + r]
                else:
                    y[m, n0 + r] = red[0] + red[1]

    @T.macro
    def body(x, w, bv, y, M):
        if M == 1:  # decode: one row per task and no row loop whose invariant weight loads LLVM could hoist
            for n in T.parallel(N):
                rows(x, w, bv, y, 1, n, 1)
        else:
            for nb in T.parallel(NB):
                rows(x, w, bv, y, M, nb * R, R)
            for t in range(TAIL):
                rows(x, w, bv, y, M, NB * R + t, 1)

    if bias:

        @T.prim_func(private=True)
        def kern(var_x: T.handle, w: T.Buffer((N, K), "float32"), bv: T.Buffer((N,), "float32"), var_y: T.handle):
            T.func_attr({"tirx.noalias": True})
            M = T.int64()
            x = T.match_buffer(var_x, (M, K), "float32")
            y = T.match_buffer(var_y, (M, N), "float32")
            body(x, w, bv, y, M)

        return kern

    @T.prim_func(private=True)
    def kern_nb(var_x: T.handle, w: T.Buffer((N, K), "float32"), var_y: T.handle):
        T.func_attr({"tirx.noalias": True})
        M = T.int64()
        x = T.match_buffer(var_x, (M, K), "float32")
        y = T.match_buffer(var_y, (M, N), "float32")
        body(x, w, None, y, M)

    return kern_nb


def schedule_float_linear(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """Replace the plain TE linear (qlinear_te.linear_te) with `float_linear_prim_func` for the same shapes."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    n, k = (int(v) for v in str(sch.get(sch.get_sblock("linear")).annotations["lowbit_linear"]).split(","))
    return float_linear_prim_func(n, k, len(func.params) == 4).with_attr("tirx.is_scheduled", True)
