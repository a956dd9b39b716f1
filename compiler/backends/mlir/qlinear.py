"""The qlinear (mpGEMM) kernel in the contract's order, y = x W^T (+ bias), codes q [N, K] packed along K,
group size g, J = K / g groups:

1. activations: A16 rounds x to fp16 and back (fp16 values, fp32 arithmetic: `round_f16`); A32 takes x as
   given (float32: `float_activations`); A8 quantizes per
   token (sa = max|x| / 127, qa = clamp(roundeven(x / sa), -127, 127) as i8: `quantize_a8`), once per
   activation tensor.
2. group sums acc[m, n, j] = sum_k x[m, k] (q[n, k] - z[n, j]) in ONE linalg.generic over the bytes: its
   region unpacks every code of a byte (shift and mask on i32; bit-plane layouts combine one bit from each
   plane), subtracts the zero point and multiply-adds the activation. `qlinear_blocked` (the fast form)
   reads weights re-laid out with 32 rows interleaved byte by byte and vectorizes over those rows;
   `qlinear` (fallback) reads the stored layout. A8 sums are exact: int32, or fp32 where every partial sum
   is an integer below 2^24.
3. dequantization after the group sum, a second generic: y[m, n] = sum_j s[n, j] acc[m, n, j], then
   y * sa[m] (A8) and + bias in one elementwise epilogue (`_epilogue`, shared by both forms).

Scale-and-minimum groups (attrs["mins"], w = s q + m): the codes are summed without a zero point, the
activations' group sums xs[m, j] (of qa for A8, exact; of the fp16 values for A16, of x for A32) are one more reduction,
and step 3 becomes y[m, n] = sum_j (s[n, j] acc[m, n, j] + mins[n, j] xs[m, j]). `qembedding_rows` reads
rows of such a table (or a zero-point one) from either layout and dequantizes them.

The dequantize-then-matmul form (unpack to a float weight tensor, then linalg.matmul) is what IREE would
otherwise see; it never fuses the unpacking into the contraction, and it changes the numeric order.
"""

from __future__ import annotations

import numpy as np

from compiler.backends.mlir.builder import Builder
from compiler.knobs import MLIR_A8_INT32
from compiler.quant.spec import CODED_ACTS, MX_ACTS

# ----------------------------------------------------------------------------------------------------------
# activations


def round_f16(B: Builder, x, shape):
    """x rounded to fp16 and back (the A16 activations)."""
    from iree.compiler.dialects import arith

    return B.elementwise([x], shape, B.f32, lambda v: arith.extf(B.f32, arith.truncf(B.f16, v)))


def float_activations(B: Builder, x, shape, act: str):
    """The float activations a qlinear sums: rounded to fp16 and back (A16), or x itself (A32)."""
    return x if act == "a32" else round_f16(B, x, shape)


def token_scale(B: Builder, x, m, k, top: float):
    """sa f32 [M] = max |x[m]| / top per row (1 for an all-zero row): A8's (top 127) and AFP8's (448) scale."""
    from iree.compiler.dialects import arith, math as mm

    amax = B.reduce_last(x, (m, k), 0.0, arith.maximumf, pre=lambda v: mm.absf(v))
    return B.elementwise(
        [amax],
        (m,),
        B.f32,
        lambda a: arith.select(arith.cmpf(arith.CmpFPredicate.OGT, a, B.cf(0.0)), arith.divf(a, B.cf(top)), B.cf(1.0)),
    )


def quantize_a8(B: Builder, x, m, k):
    """Per-token int8 (the reference's quantize_activations_a8): (qa i8 [M, K], sa f32 [M])."""
    from iree.compiler.dialects import arith, math as mm

    sa = token_scale(B, x, m, k, 127.0)

    def q(v, s):
        r = mm.roundeven(arith.divf(v, s))
        r = arith.minimumf(arith.maximumf(r, B.cf(-127.0)), B.cf(127.0))
        return arith.fptosi(B.i8, r)

    qa = B.elementwise([x, sa], (m, k), B.i8, q, [B.identity_map(2), B.bcast_last(2)])
    return qa, sa


def quantize_fp8(B: Builder, x, m, k):
    """Per-token FP8 E4M3 (the reference's quantize_activations_fp8): (xa f32 [M, K] holding E4M3 values, sa f32
    [M]); the step 2^(max(e, -6) - 3) is built from the exponent bits of |x / sa| (saturated at 448), the
    rounding is roundeven(v / step) * step."""
    from iree.compiler.dialects import arith, math as mm

    sa = token_scale(B, x, m, k, 448.0)

    def q(v, s):
        y = arith.divf(v, s)
        a = arith.minimumf(mm.absf(y), B.cf(448.0))
        e = arith.subi(arith.andi(arith.shrui(arith.bitcast(B.i32, a), B.ci(23)), B.ci(255)), B.ci(127))
        e = arith.maxsi(e, B.ci(-6))
        step = arith.bitcast(B.f32, arith.shli(arith.addi(e, B.ci(127 - 3)), B.ci(23)))
        r = arith.mulf(mm.roundeven(arith.divf(a, step)), step)
        return arith.select(arith.cmpf(arith.CmpFPredicate.OLT, y, B.cf(0.0)), arith.negf(r), r)

    xa = B.elementwise([x, sa], (m, k), B.f32, q, [B.identity_map(2), B.bcast_last(2)])
    return xa, sa


def quantize_mx(B: Builder, x, m, k, act: str, block: int = 32):
    """OCP MX activations (compiler.quant.floatfmt.mx_activations): f32 [M, K] of element * X, X = 2^(floor(log2
    amax) - emax) per row and block of 32 from amax's exponent bits; MXINT8 rint(64 v) clamped to -128..127, MXFP4
    the E2M1 rounding as quantize_fp8's with one mantissa bit (step 2^(max(e, 0) - 1), saturating at 6)."""
    from iree.compiler.dialects import arith, math as mm

    emax = {"amxfp4": 2, "amx8": 0}[act]
    nb = k // block
    x3 = B.reshape(x, (m, k), (m, nb, block))
    amax = B.reduce_last(x3, (m, nb, block), 0.0, arith.maximumf, pre=lambda v: mm.absf(v))

    def scale(a):
        biased = arith.andi(arith.shrui(arith.bitcast(B.i32, a), B.ci(23)), B.ci(255))
        e = arith.select(arith.cmpi(arith.CmpIPredicate.eq, biased, B.ci(0)), B.ci(-127), arith.subi(biased, B.ci(127)))
        e = arith.select(arith.cmpf(arith.CmpFPredicate.OGT, a, B.cf(0.0)), e, B.ci(0))
        e = arith.maxsi(arith.minsi(arith.subi(e, B.ci(emax)), B.ci(127)), B.ci(-127))
        normal = arith.bitcast(B.f32, arith.shli(arith.addi(e, B.ci(127)), B.ci(23)))
        return arith.select(arith.cmpi(arith.CmpIPredicate.sge, e, B.ci(-126)), normal, arith.bitcast(B.f32, B.ci(1 << 22)))

    sc = B.elementwise([amax], (m, nb), B.f32, scale)

    def q(v, s):
        y = arith.divf(v, s)
        if act == "amx8":
            r = arith.minimumf(arith.maximumf(mm.roundeven(arith.mulf(y, B.cf(64.0))), B.cf(-128.0)), B.cf(127.0))
            return arith.mulf(arith.mulf(r, B.cf(1.0 / 64)), s)
        a = arith.minimumf(mm.absf(y), B.cf(6.0))
        ee = arith.maxsi(arith.subi(arith.andi(arith.shrui(arith.bitcast(B.i32, a), B.ci(23)), B.ci(255)), B.ci(127)), B.ci(0))
        step = arith.bitcast(B.f32, arith.shli(arith.addi(ee, B.ci(127 - 1)), B.ci(23)))
        r = arith.mulf(mm.roundeven(arith.divf(a, step)), step)
        r = arith.select(arith.cmpf(arith.CmpFPredicate.OLT, y, B.cf(0.0)), arith.negf(r), r)
        return arith.mulf(r, s)

    xa = B.elementwise([x3, sc], (m, nb, block), B.f32, q, [B.identity_map(3), B.bcast_last(3)])
    return B.reshape(xa, (m, nb, block), (m, k))


def activations(B: Builder, x, m, k, act: str):
    """What a qlinear of act mode `act` reads, as (x, sa): (qa i8, sa) for A8, (E4M3 values, sa) for AFP8, (MX
    values with their scales, None) for AMX8 / AMXFP4, (the float activations, None) for A16 / A32."""
    if act == "a8":
        return quantize_a8(B, x, m, k)
    if act == "afp8":
        return quantize_fp8(B, x, m, k)
    if act in MX_ACTS:
        return quantize_mx(B, x, m, k, act), None
    return float_activations(B, x, (m, k), act), None


def kernel_attrs(a: dict) -> dict:
    """The attributes the qlinear forms read: AFP8 and MX activations are summed in fp32, as A32 (AFP8's sa in the
    epilogue)."""
    return {**a, "act": "a32"} if a["act"] in CODED_ACTS else a


# ----------------------------------------------------------------------------------------------------------
# the end both forms share


def _dequant(B: Builder, a8: bool, mins: bool = False, acc_out: bool = True):
    """Region body of the per-group dequantization: o + s * acc (acc converted from int32 for A8); with
    minimums o + (s * acc + m * xs), the group's term formed first and added to the accumulator once.
    acc_out=False: the term alone (per-channel groups, one group: no accumulator)."""
    from iree.compiler.dialects import arith

    def body(av, s, *rest):
        af = arith.sitofp(B.f32, av) if a8 else av
        t = arith.mulf(af, s)
        if mins:
            t = arith.addf(t, arith.mulf(rest[0], rest[1]))
        return arith.addf(rest[-1], t) if acc_out else t

    return body


def _group_xsum(B: Builder, x, m, k, g, mj_shape):
    """xs [*mj_shape] = the sum of each group's activations, in fp32 (int8 activations converted first:
    |sum| <= 127 g, exact): the term the minimums multiply."""
    from iree.compiler.dialects import arith

    xg = B.reshape(x, (m, k), (*mj_shape, g))
    is_int = isinstance(B.ir.RankedTensorType(x.type).element_type, B.ir.IntegerType)
    return B.reduce_last(xg, (*mj_shape, g), 0.0, arith.addf, pre=(lambda v: arith.sitofp(B.f32, v)) if is_int else None)


def _epilogue(B: Builder, y, sa, bias, m, n):
    """y [M, N] times the A8 token scale sa[m] and plus bias[n], in one elementwise op (y itself without either)."""
    from iree.compiler.dialects import arith

    if sa is None and bias is None:
        return y
    ins, maps = [y], ["(m, n) -> (m, n)"]
    if sa is not None:
        ins.append(sa)
        maps.append("(m, n) -> (m)")
    if bias is not None:
        ins.append(bias)
        maps.append("(m, n) -> (n)")

    def epi(v, *rest):
        rest = list(rest)
        if sa is not None:
            v = arith.mulf(v, rest.pop(0))
        if bias is not None:
            v = arith.addf(v, rest.pop(0))
        return v

    return B.elementwise(ins, (m, n), B.f32, epi, maps)


# ----------------------------------------------------------------------------------------------------------
# qlinear on the stored layout


def code_layout(attrs) -> tuple[int, int]:
    """(codes per byte, planes): dense/nibble bytes hold 8/bits codes; 'planes' hold one bit of 8 codes
    in each of `bits` planes."""
    if attrs["layout"] == "planes":
        return 8, attrs["bits"]
    return 8 // attrs["bits"], 1


def qlinear(B: Builder, xin, m, packed, scales, zeros, bias, a):
    """The fallback qlinear on the stored layout (N not a multiple of the blocked kernel's lanes): the
    "groupsum" form, correct but slow (IREE vectorizes it poorly; see README.md). xin = (x f32 [M, K]
    already rounded to fp16 values (A16) or as given (A32), None) for A16 / A32 or (qa i8 [M, K], sa f32 [M]) for A8. Returns
    (y f32 [M, N], form name)."""
    bits, g, n, k = a["bits"], a["group_size"], a["n"], a["k"]
    a8 = a["act"] == "a8"
    per, planes = code_layout(a)
    if g % per or k % g:
        raise NotImplementedError(f"qlinear K={k}, group {g}: the group must hold whole bytes of {per} codes")
    j, tb = k // g, g // per  # groups, bytes per group
    x, sa = xin
    xv = B.reshape(x, (m, k), (m, j, tb, per))
    if a["layout"] == "planes":
        wins = [B.reshape(packed, (bits, n, k // 8), (bits, n, j, tb))] * bits
    else:
        wins = [B.reshape(packed, (n, k // per), (n, j, tb))]
    cb = bool(a.get("codebook"))  # zeros holds the table [N, 2^bits]; the sums are fp32 (also at A8)
    acc_t = B.i32 if a8 and not cb else B.f32
    acc0 = B.fill(0, (m, n, j), acc_t) if a8 and not cb else B.fill(0.0, (m, n, j), acc_t)
    mins = bool(a.get("mins"))
    acc = _groupsum_inner(B, xv, wins, None if mins or cb else zeros, acc0, a, per, planes, zeros if cb else None)
    y0 = B.fill(0.0, (m, n), B.f32)
    ins, maps = [acc, scales], ["(m, n, j) -> (m, n, j)", "(m, n, j) -> (n, j)"]
    if mins:  # zeros holds the minimums [N, J]
        ins += [zeros, _group_xsum(B, x, m, k, g, (m, j))]
        maps += ["(m, n, j) -> (n, j)", "(m, n, j) -> (m, j)"]
    y = B.generic(ins, [y0], [*maps, "(m, n, j) -> (m, n)"], "ppr", _dequant(B, a8 and not cb, mins))[0]
    return _epilogue(B, y, sa, bias, m, n), f"groupsum-{'i32' if a8 and not cb else 'f32'}{'-mins' if mins else ''}{'-codebook' if cb else ''}"


def _groupsum_inner(B, xv, wins, zeros, acc0, a, per, planes, table=None):
    """Group sums with the code within the byte as the innermost loop: dims (m, n, j, t, i), t the byte in
    the group and i the code in the byte, so activations x[m, j, t, i] are read contiguously along K and each
    byte is broadcast over its codes; the shift is bits * i (linalg.index). zeros None: no zero point
    (scale-and-minimum groups)."""
    from iree.compiler.dialects import arith

    a8 = a["act"] == "a8"
    bits = a["bits"]
    mask = (1 << bits) - 1
    if planes == 1:
        wmaps = ["(m, n, j, t, i) -> (n, j, t)"]
    else:
        wmaps = [f"(m, n, j, t, i) -> ({p}, n, j, t)" for p in range(planes)]

    def body(x, *rest):
        ws, z, o = (rest[:-2], rest[-2], rest[-1]) if zeros is not None else (rest[:-1], None, rest[-1])
        i = arith.index_cast(B.i32, B.index_in_region(4))
        if planes == 1:
            w = arith.extui(B.i32, ws[0])
            code = w if per == 1 else arith.andi(arith.shrui(w, arith.muli(i, B.ci(bits))), B.ci(mask))
        else:
            code = None
            for p, wb in enumerate(ws):
                bit = arith.andi(arith.shrui(arith.extui(B.i32, wb), i), B.ci(1))
                bit = arith.shli(bit, B.ci(p)) if p else bit
                code = bit if code is None else arith.ori(code, bit)
        if table is not None:  # codebook: the row's table entry (linalg.index 1 is n)
            from iree.compiler.dialects import tensor

            shared = B.ir.RankedTensorType(table.type).shape[0] == 1  # one table for every row (the 4-bit float formats)
            wv = tensor.extract(table, [B.cindex(0) if shared else B.index_in_region(1), arith.index_cast(B.index, code)])
            return arith.addf(o, arith.mulf(arith.sitofp(B.f32, x) if a8 else x, wv))
        wz = code if z is None else arith.subi(code, arith.extui(B.i32, z))
        if a8:
            return arith.addi(o, arith.muli(arith.extsi(B.i32, x), wz))
        return arith.addf(o, arith.mulf(x, arith.sitofp(B.f32, wz)))

    zmaps, zins = (["(m, n, j, t, i) -> (n, j)"], [zeros]) if zeros is not None else ([], [])
    maps = ["(m, n, j, t, i) -> (m, j, t, i)", *wmaps, *zmaps, "(m, n, j, t, i) -> (m, n, j)"]
    return B.generic([xv, *wins, *zins], [acc0], maps, "ppprr", body)[0]


# ----------------------------------------------------------------------------------------------------------
# blocked qlinear: L output rows interleaved byte by byte, so one vector holds the same byte of L rows


def relayout_blocked(packed, scales, zeros, attrs, lanes: int):
    """Stored layout -> blocked: codes [N, KB] -> [N/L, J, C, L] (planes [P, N, K/8] -> [P, N/L, J, C, L]),
    scales/zeros [N, J] -> [N/L, J, L]; C bytes per group, L = lanes rows."""
    n, k, g = attrs["n"], attrs["k"], attrs["group_size"]
    per, planes = code_layout(attrs)
    j, c = k // g, g // per
    if attrs["layout"] == "planes":
        w = packed.reshape(planes, n // lanes, lanes, j, c).transpose(0, 1, 3, 4, 2)
    else:
        w = packed.reshape(n // lanes, lanes, j, c).transpose(0, 2, 3, 1)
    sz = [a.reshape(n // lanes, lanes, j).transpose(0, 2, 1) for a in (scales, zeros)]
    return np.ascontiguousarray(w), np.ascontiguousarray(sz[0]), np.ascontiguousarray(sz[1])


def blocked_shapes(attrs, lanes: int):
    n, k, g = attrs["n"], attrs["k"], attrs["group_size"]
    per, planes = code_layout(attrs)
    j, c = k // g, g // per
    w = (planes, n // lanes, j, c, lanes) if attrs["layout"] == "planes" else (n // lanes, j, c, lanes)
    return w, (n // lanes, j, lanes), (n // lanes, j, lanes)


def qlinear_blocked(B: Builder, xin, m, packed, scales, zeros, bias, a, lanes: int):
    """qlinear on blocked weights (relayout_blocked, codes [Nb, J, C, L], scales/zeros [Nb, J, L]).

    Group sums acc[m, b, j, l] = sum over the C bytes c of group j of every code of byte (b, j, c, l) times
    its activation, for L rows at once: dims (m, b, j, l, c) = (parallel x4, reduction), the row lane l is
    the vector dimension and each activation a broadcast scalar, so no horizontal reductions are needed.
    Then y[m, b, l] = sum_j s[b, j, l] acc[m, b, j, l] (the contract's order), * sa[m] (A8), + bias.
    Unit dims (J = 1 per-channel, Nb = 1) are dropped from the ops, so that the explicit tile configuration
    matches the loops IREE sees.

    A8 where every partial sum fits float32 exactly (g * 127 * qmax < 2^24, the reference's own test):
    the int8 activations and the codes are multiplied in fp32 (integers, so every product and partial sum
    is exact: the same numbers as int32 sums, without AVX-512's slow vpmulld), and the zero point is
    applied once per group: acc = sum qa q - z sum qa, both exact.

    Scale-and-minimum groups (a["mins"]; `zeros` holds the minimums, f32): acc = sum x q with no zero point,
    and the dequantization adds mins[n, j] xs[m, j], xs the group's activation sum."""
    from iree.compiler.dialects import arith

    from compiler.reference import int_sum_fits_f32

    bits, g, n, k = a["bits"], a["group_size"], a["n"], a["k"]
    a8 = a["act"] == "a8"
    per, planes = code_layout(a)
    j, c = k // g, g // per
    nb = n // lanes
    x, sa = xin
    mins = bool(a.get("mins"))
    a8f = a8 and per > 1 and int_sum_fits_f32(g, 127, (1 << bits) - 1) and not MLIR_A8_INT32.get()
    if a8f:
        x = B.elementwise([x], (m, k), B.f32, lambda v: arith.sitofp(B.f32, v))
        a8 = False  # fp32 arithmetic from here on; the zero point is applied after the group sum
    size = {"m": m, "b": nb, "j": j, "l": lanes, "c": c}
    keep = [d for d in ("m", "b", "j", "l", "c") if not (d in ("b", "j") and size[d] == 1)]

    def shape_of(names):
        return tuple(size[d] for d in names if d in keep)

    def amap(dims, names):
        return f"({', '.join(dims)}) -> ({', '.join(d for d in names if d in keep)})"

    xv = B.reshape(x, (m, k), (*shape_of("mjc"), per))
    xs = [B.slice_last(xv, (*shape_of("mjc"), per), i) for i in range(per)]
    wfull = (nb, j, c, lanes)
    if a["layout"] == "planes":
        wins = [B.reshape(B.slice_first(packed, (planes, *wfull), p), wfull, shape_of("bjcl")) for p in range(planes)]
    else:
        wins = [B.reshape(packed, wfull, shape_of("bjcl"))]
    zs = B.reshape(zeros, (nb, j, lanes), shape_of("bjl"))
    ss = B.reshape(scales, (nb, j, lanes), shape_of("bjl"))
    acc_t = B.i32 if a8 else B.f32
    acc0 = B.fill(0, shape_of("mbjl"), acc_t) if a8 else B.fill(0.0, shape_of("mbjl"), acc_t)
    mask = (1 << bits) - 1

    def body(*args):
        xa = args[:per]
        ws = args[per : per + len(wins)]
        z, o = (None, args[-1]) if mins else (args[-2], args[-1])
        zi = None if mins or a8f else arith.extui(B.i32, z)
        wi = [arith.extui(B.i32, w) for w in ws]
        total = None
        for i in range(per):
            if planes == 1:
                code = wi[0] if per == 1 else (arith.andi(wi[0], B.ci(mask)) if i == 0 else arith.andi(arith.shrui(wi[0], B.ci(bits * i)), B.ci(mask)))
            else:
                code = None
                for p in range(planes):
                    bit = arith.andi(arith.shrui(wi[p], B.ci(i)), B.ci(1)) if i else arith.andi(wi[p], B.ci(1))
                    bit = arith.shli(bit, B.ci(p)) if p else bit
                    code = bit if code is None else arith.ori(code, bit)
            w = code if zi is None else arith.subi(code, zi)
            if a8:
                term = arith.muli(arith.extsi(B.i32, xa[i]), w)
                total = term if total is None else arith.addi(total, term)
            else:
                term = arith.mulf(xa[i], arith.sitofp(B.f32, w))
                total = term if total is None else arith.addf(total, term)
        return arith.addi(o, total) if a8 else arith.addf(o, total)

    dims = keep  # (m, b?, j?, l, c)
    zin, zmap = ([], []) if mins else ([zs], [amap(dims, "bjl")])
    maps = [amap(dims, "mjc")] * per + [amap(dims, "bjcl")] * len(wins) + zmap + [amap(dims, "mbjl")]
    iters = "p" * (len(dims) - 1) + "r"
    rb = max(1, min(nb, ROWS_PER_WORKGROUP // lanes))
    tiles = {"m": (1, 1, 0), "b": (rb, 1, 0), "j": (0, 1, 0), "l": (0, lanes, 0), "c": (0, 0, 1)}
    cfg = [[tiles[d][t] for d in dims] for t in range(3)]
    acc = B.generic([*xs, *wins, *zin], [acc0], maps, iters, body, _cpu_tiles(B, *cfg))[0]

    xsum = _group_xsum(B, x, m, k, g, shape_of("mj")) if a8f or mins else None
    if a8f and not mins:  # acc - z * (sum of the group's activations), exact integers in fp32
        ek = [d for d in "mbjl" if d in keep]
        acc = B.elementwise(
            [acc, zs, xsum],
            shape_of("mbjl"),
            B.f32,
            lambda av, z, sx: arith.subf(av, arith.mulf(arith.uitofp(B.f32, z), sx)),
            [amap(ek, "mbjl"), amap(ek, "bjl"), amap(ek, "mj")],
        )

    dins = [acc, ss] + ([zs, xsum] if mins else [])
    if j > 1:
        ddims = [d for d in ("m", "b", "l", "j") if d in keep]
        y0 = B.fill(0.0, shape_of("mbl"), B.f32)
        dcfg = [[tiles[d][t] if d != "j" else (0, 0, 1)[t] for d in ddims] for t in range(3)]
        dmaps = [amap(ddims, "mbjl"), amap(ddims, "bjl")] + ([amap(ddims, "bjl"), amap(ddims, "mj")] if mins else [])
        y = B.generic(dins, [y0], [*dmaps, amap(ddims, "mbl")], "p" * (len(ddims) - 1) + "r", _dequant(B, a8, mins), _cpu_tiles(B, *dcfg))[0]
    else:
        ek = [d for d in "mbl" if d in keep]
        emaps = [amap(ek, "mbl"), amap(ek, "bl")] + ([amap(ek, "bl"), amap(ek, "m")] if mins else [])
        y = B.elementwise(dins, shape_of("mbl"), B.f32, _dequant(B, a8, mins, acc_out=False), emaps)
    y = B.reshape(y, shape_of("mbl"), (m, n))
    form = f"blocked{lanes}-{'i32' if a8 else 'f32' + ('-a8exact' if a8f else '')}{'-mins' if mins else ''}"
    return _epilogue(B, y, sa, bias, m, n), form


ROWS_PER_WORKGROUP = 256  # output rows per IREE workgroup (the unit of multi-threading)


def _cpu_tiles(B: Builder, distribution, parallel, reduction) -> dict | None:
    """compilation_info for llvm-cpu: workgroup tiles, vector tiles of the parallel dims, and of the
    reduction dims (1 = scalar loops around the vector of rows), with IREE's DoubleTilingExpert pipeline."""
    if B.kind != "cpu":
        return None
    cfg = f"distribution = {distribution}, vector_common_parallel = {parallel}, vector_reduction = {reduction}"
    return {
        "compilation_info": "#iree_codegen.compilation_info<lowering_config = #iree_cpu.lowering_config<"
        + cfg
        + ">, translation_info = #iree_codegen.translation_info<pipeline = #iree_cpu.pipeline<DoubleTilingExpert>>>"
    }


# ----------------------------------------------------------------------------------------------------------
# qembedding: rows of a quantized table


def qembedding_rows(B: Builder, ids, packed, scales, offsets, a, ids_shape, lanes: int = 0):
    """Rows ids of a quantized table [V, K], dequantized: f32 [*ids_shape, K] = s (q - z), or s q + m with
    minimums (offsets holds the zero points or the minimums). The table is read where it lies: the stored
    layout (lanes = 0) or the blocked one of a qlinear that shares it (the tied LM head), so the table is
    passed to the module once. One generic over the output, each element a tensor.extract of its byte
    (a gather: linalg has no other way to index by a runtime id); ids are clipped to [0, V - 1], as the
    float embedding's gather."""
    from iree.compiler.dialects import arith, tensor

    bits, g, v, k = a["bits"], a["group_size"], a["n"], a["k"]
    per, planes = code_layout(a)
    mins = bool(a.get("mins"))
    mask = (1 << bits) - 1
    out_shape = (*ids_shape, k)
    r = len(out_shape)
    d = B.axis_names(r)

    def body(i, _o):
        it = B.ir.IntegerType(i.type)
        row = arith.index_cast(B.index, arith.minsi(arith.maxsi(i, arith.constant(it, 0)), arith.constant(it, v - 1)))
        col = B.index_in_region(r - 1)
        ci = B.cindex
        grp = arith.divui(col, ci(g))
        byte_at = arith.divui(col, ci(per))  # byte along K (stored layout)
        sub = arith.remui(col, ci(per))  # code within its byte
        if lanes:
            blk, lane = arith.divui(row, ci(lanes)), arith.remui(row, ci(lanes))
            cb = arith.remui(byte_at, ci(g // per))  # byte within the group
            widx, sidx = [blk, grp, cb, lane], [blk, grp, lane]
        else:
            widx, sidx = [row, byte_at], [row, grp]
        sh = arith.index_cast(B.i32, sub)
        if planes == 1:
            w = arith.extui(B.i32, tensor.extract(packed, widx))
            code = w if per == 1 else arith.andi(arith.shrui(w, arith.muli(sh, B.ci(bits))), B.ci(mask))
        else:
            code = None
            for p in range(planes):
                wb = arith.extui(B.i32, tensor.extract(packed, [ci(p), *widx]))
                bit = arith.andi(arith.shrui(wb, sh), B.ci(1))
                bit = arith.shli(bit, B.ci(p)) if p else bit
                code = bit if code is None else arith.ori(code, bit)
        s = tensor.extract(scales, sidx)
        off = tensor.extract(offsets, sidx)
        if mins:  # the reference's order: (q s) + m
            return arith.addf(arith.mulf(arith.uitofp(B.f32, code), s), off)
        return arith.mulf(arith.sitofp(B.f32, arith.subi(code, arith.extui(B.i32, off))), s)

    out = B.empty(out_shape, B.f32)
    return B.generic([ids], [out], [f"({', '.join(d)}) -> ({', '.join(d[:-1])})", B.identity_map(r)], "p" * r, body)[0]
