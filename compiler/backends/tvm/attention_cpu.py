"""`cache_attention` on CPUs: one TIR kernel over the preallocated KV cache that reads cache rows
0..positions[i] only (the loop bound is read from the positions tensor), so a decode step costs what its
context holds, not the cache's capacity, and rows past the last position are never touched.

    q [S, Hq, D], k / v [C, Hkv, D], positions [S] -> o [S, Hq, D];  Hq = rep * Hkv (GQA)

    parallel (i, h, split) over S x Hkv x splits:       the rep query heads of KV head h share each K / V row
      rows [lo, hi) of 0..positions[i], in blocks of BLOCK rows:
        scores[r, j] = (q[i, h*rep + r] . k[j, h]) * scale      (D-lane FMAs, a tree of vector adds at the end)
        running max m_r, sum l_r, acc_r[D]: a block's new max rescales l_r and acc_r once (online softmax)
        p = exp(scores - m_r) (vectorized over the block), l_r += p, acc_r += p v[j, h]
      one split: o = acc / l;  several (decode): (m, l, acc) per split in `part`, then combined per (i, h)

A prefill without a float window (f32, f16 or quantized cache) takes another walk, with queries in vector lanes: a task
is TILE consecutive queries x one KV head; each block of rows is widened (or dequantized) once into a float32 buffer, the scores
of 8 rows at a time are independent FMA chains over D (a query vector times a broadcast K value: no reduction
tree), the online softmax runs lane-wise (query l masks rows past pos[l]), and PV keeps D-chunks of the
accumulators in registers across the block. One smollm2-135m layer at 512 queries (9 / 3 heads, D 64, fp16
cache) went 4.1 -> 1.9 ms at 1 thread.

Splits: at S = 1 the Hkv heads alone leave threads idle (smollm2: 3 heads on 2 threads) and one head's
cache walk is long, so a decode step splits each head's rows into SPLITS ranges, combined exactly like
blocks (max, rescale, add). A prefill has S x Hkv tasks and takes one split.

exp is a Cephes-style polynomial on vectors (range reduction by ln 2, degree-6 polynomial, 2^n through the
exponent bits; within 2 ulp on [-87, 0], the arguments here: scores minus their running max); libm's expf
is a scalar call per score. Against compiler/reference.py's cache_attention (float64-exact softmax order
aside) the outputs agree within 1e-5 relative (tests/compiler/backends/tvm/test_attention_cpu.py).
"""

from __future__ import annotations

from tvm import tirx

from compiler.backends.tvm import vmath
from compiler.kvformat import TOKEN_GROUP  # rows per -kc key parameter row

BLOCK = 32  # cache rows per online-softmax block (their scores live in a stack buffer)
SPLITS = 8  # row ranges of a decode step's walk, in parallel
SPLIT_MIN = 128  # a decode context up to this many rows is walked by one thread
TILE = 16  # prefill queries per task of a float cache, one per vector lane


def lanes(d: int) -> int:
    """Vector width along D: the largest of 16, 8, 4, 2, 1 that divides it."""
    return next(v for v in (16, 8, 4, 2, 1) if d % v == 0)


def cache_attention_prim_func(hq: int, hkv: int, d: int, scale: float, pos_dtype: str = "int64", kv_bits: int | None = None, kv_group: int = 32,
                              window: int = 0, cache_dtype: str = "float32", kv_code: str = "int", keys_channel: bool = False) -> tirx.PrimFunc:
    """kv_bits 8 / 4 / 2: the cache is a quantized one (compiler.passes.kv_quant): k / v are codes and ks / vs their fp16
    scales, each row read as s * q in registers (no float copy of the cache); kv_code e4m3 (8 bits): FP8 codes, read
    through their fp16 bit pattern; keys_channel (with a window): keys are kv_write_kc's unsigned codes, row j read as
    u s + m with the scale and minimum vectors of its token group's parameter row j // 32 (ks: f16[G, Hkv, 2 D]). cache_dtype float16 (a float cache):
    the rows are widened to float32 in registers. window R > 0 (a quantized cache only):
    query i walks rows 0..positions[i] - R dequantized and the rest in float, from this step's new rows kn / vn or
    the rings kw / vw (row j % R), with one online softmax over both walks; then the step's last min(S, R) rows go
    into the rings (the signature gains kw, vw, kn, vn before o; Relax calls it in place on the rings)."""
    from tvm.script import tirx as T

    rep = hq // hkv
    vl = lanes(d)
    dc = d // vl
    B, NS = BLOCK, SPLITS
    sc_f = float(scale)
    lo_f = T.float32(-3.0e38)  # the running max before any row

    def rp(base):  # vl consecutive elements from base (one element when vl = 1)
        return base if vl == 1 else T.Ramp(base, 1, vl)

    def bc(x):
        return x if vl == 1 else T.Broadcast(x, vl)

    def bvec(val, n):
        return T.float32(val) if n == 1 else T.Broadcast(T.float32(val), n)

    fv = "float32" if vl == 1 else f"float32x{vl}"
    iv = "int32" if vl == 1 else f"int32x{vl}"
    hv = "int16" if vl == 1 else f"int16x{vl}"
    f16v = "float16" if vl == 1 else f"float16x{vl}"

    def row(buf, sbuf, j, h, c, p0=None, keys=False):
        """vl consecutive values of cache row j, head h, from element c * vl: as stored (float cache), or s * q; with p0
        (the step's first position) a float window row: this step's new row j - p0 (buf), or ring row j % window (sbuf)
        (both loads are in bounds, the select keeps one)"""
        if p0 is not None:
            cond = j >= p0
            return T.Select(cond if vl == 1 else T.Broadcast(cond, vl), buf[T.max(j - p0, T.int64(0)), h, rp(c * vl)], sbuf[T.floormod(j, window), h, rp(c * vl)])
        if kv_bits is None:
            return buf[j, h, rp(c * vl)] if cache_dtype == "float32" else T.Cast(fv, buf[j, h, rp(c * vl)])
        if keys and keys_channel:  # u s + m, s and m per channel: vectors of the group's parameter row
            gk = T.floordiv(j, TOKEN_GROUP)
            if kv_bits == 2:
                byte2 = T.Cast(iv, buf[j, h, rp((c * vl) // 64 * 16 + (c * vl) % 64 % 16)])
                uq = T.bitwise_and(T.shift_right(byte2, bc(T.Cast("int32", (c * vl) % 64 // 16 * 2))), bc(T.int32(3)))
            else:
                byte4 = T.Cast(iv, buf[j, h, rp((c * vl) // kv_group * (kv_group // 2) + (c * vl) % kv_group % (kv_group // 2))])
                uq = T.bitwise_and(T.shift_right(byte4, bc(T.Cast("int32", (c * vl) % kv_group // (kv_group // 2) * 4))), bc(T.int32(15)))
            return T.Cast(fv, uq) * T.Cast(fv, sbuf[gk, h, rp(c * vl)]) + T.Cast(fv, sbuf[gk, h, rp(d + c * vl)])
        s_ = bc(T.Cast("float32", sbuf[j, h, (c * vl) // kv_group]))  # vl divides the group: one scale per vector
        if kv_code == "e4m3":
            # E4M3 sign.exp4.man3 -> fp16 bits sign << 15 | exp4.man3 << 7 is the same number times 2^-8 (fp16's bias
            # 15 against 7; E4M3's subnormals land on fp16's, exactly), widened to float32 by the hardware (F16C)
            # the byte sign-extended to 16 bits and shifted left by 7 puts its sign on bit 15 and a copy on bit 14,
            # which the mask clears: two integer ops a vector
            cb = T.Cast(hv, T.reinterpret("int8" if vl == 1 else f"int8x{vl}", buf[j, h, rp(c * vl)]))
            h16 = T.bitwise_and(T.shift_left(cb, bc(T.int16(7))), bc(T.int16(-0x4080)))
            return T.Cast(fv, T.reinterpret(f16v, h16)) * (s_ * bvec(256.0, vl))
        if kv_bits == 8:
            return T.Cast(fv, buf[j, h, rp(c * vl)]) * s_
        if kv_bits == 2:  # (q - 1.5) s; element o of a block of 64 sits in byte o % 16 at bits 2 (o // 16); vl divides 16
            base2, o2 = (c * vl) // 64 * 16, (c * vl) % 64
            byte2 = T.Cast(iv, buf[j, h, rp(base2 + o2 % 16)])
            three = T.int32(3) if vl == 1 else T.Broadcast(T.int32(3), vl)
            q2 = T.bitwise_and(T.shift_right(byte2, bc(T.Cast("int32", o2 // 16 * 2))), three)
            return T.Cast(fv, q2) * s_ + s_ * bvec(-1.5, vl)
        # int4 (q4_0 order): element o of a group of 32 sits in byte o % 16 of the group's 16, in the high nibble
        # when o >= 16; vl divides 16, so a vector is vl consecutive bytes, one shift for all of them
        base, o = (c * vl) // kv_group * (kv_group // 2), (c * vl) % kv_group
        byte = T.Cast(iv, buf[j, h, rp(base + o % (kv_group // 2))])
        sh = T.Cast("int32", o // (kv_group // 2) * 4)
        mask = T.int32(15) if vl == 1 else T.Broadcast(T.int32(15), vl)
        q = T.bitwise_and(T.shift_right(byte, bc(sh)), mask)
        return T.Cast(fv, q) * s_ + s_ * bvec(-8.0, vl)  # = (q - 8) s exactly (the products are exact), as one FMA

    def vexp(x, n):
        """exp(x) for x <= 0, x an n-lane float32 expression (n = 1: a scalar)."""
        return vmath.exp(x, n, T.Bind, hi=False)  # (the reduced argument bound once: used 7 times)

    # one signature for both caches: a float cache is passed as its own "scales" (never read: row() ignores them)
    kd = d if kv_bits in (None, 8) else d * kv_bits // 8
    cdt = {None: cache_dtype, 8: "uint8" if kv_code == "e4m3" else "int8", 4: "uint8", 2: "uint8"}[kv_bits]
    sd, sdt = (d, cache_dtype) if kv_bits is None else (d // kv_group, "float16")
    ksd = 2 * d if keys_channel else sd  # the key scales' row: -kc's scale and minimum vectors
    # software prefetch of the next block's rows, PFL 64-byte lines of PFE elements per head row: the walk is
    # too busy for the hardware prefetchers to run ahead of it from DRAM
    PFE = 64 // (4 if cdt == "float32" else 2 if cdt == "float16" else 1)
    PFL = (kd + PFE - 1) // PFE

    def pf(elem):  # a read prefetch of the line holding buffer element elem, into every cache level
        return T.call_llvm_intrin("void", "llvm.prefetch.p0", T.address_of(elem), 0, 3, 1)

    def qk(q, k, ks, i, h, r, j, p0):  # the vl-lane partial dot product of query head h * rep + r with key row j
        out = None
        for c in range(dc):
            t = q[i, h * rep + r, rp(c * vl)] * row(k, ks, j, h, c, p0, True)
            out = t if out is None else out + t
        return out

    @T.macro
    def init(mrun, lrun, acc):
        for g in range(hq):
            mrun[g] = lo_f
            lrun[g] = T.float32(0)
            for c in range(dc):
                acc[rp(g * d + c * vl)] = bvec(0.0, vl)

    @T.macro
    def walk(q, k, ks, v, vs, i, lo, hi, mrun, lrun, acc, p0):
        # rows [lo, hi) of the cache (every KV head: one contiguous row of Hkv * D floats at a time) for
        # query i, into (mrun, lrun, acc) of its Hq heads; query head g = h * rep + r reads KV head h
        # (p0 None: the cache; else the float window's sources, row() above)
        sc = T.alloc_buffer((hq * B,), "float32")
        bm = T.alloc_buffer((1,), "float32")
        cr = T.alloc_buffer((1,), "float32")
        s = T.alloc_buffer((1,), "float32")
        for jb in range((T.max(hi - lo, T.int64(0)) + B - 1) // B):
            j0 = T.Bind(lo + jb * B)
            nb = T.Bind(T.min(hi - j0, B))
            for jj in range(nb):
                if p0 is None:
                    jn = T.Bind(T.min(j0 + B + jj, k.shape[0] - 1))
                    for h in range(hkv):
                        for ln in range(PFL):
                            T.evaluate(pf(k[jn, h, ln * PFE]))
                            T.evaluate(pf(v[jn, h, ln * PFE]))
                    if kv_bits is not None:
                        T.evaluate(pf(ks[T.floordiv(jn, TOKEN_GROUP) if keys_channel else jn, 0, 0]))
                        T.evaluate(pf(vs[jn, 0, 0]))
                for h in range(hkv):
                    for r in T.unroll(rep):
                        # one expression per query head, in registers; the rep heads' identical K loads (and
                        # dequantizations) are one after LLVM's value numbering
                        dot = T.Bind(qk(q, k, ks, i, h, r, j0 + jj, p0))
                        sc[(h * rep + r) * B + jj] = vmath.lane_sum(dot, vl) * T.float32(sc_f)
            for g in range(hq):
                # the block's max and sum over its B lanes at once (lanes past nb hold stale scores: masked); a scalar
                # loop over the rows was a chain of dependent max / add, most of a long decode walk's time
                blkmax = T.Bind(vmath.lane_max(T.Select(T.Ramp(T.int64(0), T.int64(1), B) < T.Broadcast(nb, B), sc[T.Ramp(g * B, 1, B)], T.Broadcast(lo_f, B)), B))
                bm[0] = T.max(mrun[g], blkmax)
                cr[0] = vexp(mrun[g] - bm[0], 1)  # the old max's correction
                sc[T.Ramp(g * B, 1, B)] = T.Select(T.Ramp(T.int64(0), T.int64(1), B) < T.Broadcast(nb, B), vexp(sc[T.Ramp(g * B, 1, B)] - T.Broadcast(bm[0], B), B), T.Broadcast(T.float32(0), B))
                s[0] = vmath.lane_sum(sc[T.Ramp(g * B, 1, B)], B)
                lrun[g] = lrun[g] * cr[0] + s[0]
                mrun[g] = bm[0]
                for c in range(dc):
                    acc[rp(g * d + c * vl)] = acc[rp(g * d + c * vl)] * bc(cr[0])
            for h in range(hkv):
                for c in range(dc):
                    for jj in range(nb):
                        vv = T.Bind(row(v, vs, j0 + jj, h, c, p0))  # read (and dequantized) once for the rep heads
                        for r in range(rep):
                            acc[rp((h * rep + r) * d + c * vl)] = acc[rp((h * rep + r) * d + c * vl)] + bc(sc[(h * rep + r) * B + jj]) * vv

    @T.macro
    def finish(o, i, lrun, acc):
        for g in range(hq):
            inv = T.Bind(T.float32(1) / T.max(lrun[g], T.float32(1e-38)))
            for c in range(dc):
                o[i, g, rp(c * vl)] = acc[rp(g * d + c * vl)] * bc(inv)

    W = window
    QT = TILE
    tiled = not W  # a prefill without a float window: queries in vector lanes (tile_walk)
    EC = vl  # D values per register block of the PV accumulators
    RU = 8  # cache rows per register block of the scores (B is a multiple)

    def qv(buf, base):  # the QT query lanes of buf from base
        return buf[T.Ramp(base, 1, QT)]

    @T.macro
    def tile_walk(q, k, ks, v, vs, pos, o, S, C, t, h):
        # queries t*QT .. t*QT+QT-1 (lanes) x the rep query heads of KV head h: scores, softmax and PV vectorized over the
        # queries, each K / V value widened once into a block buffer and broadcast; query l masks rows past pos[l]
        qt = T.alloc_buffer((rep * d * QT,), "float32")  # [r, e, lane]: q * scale
        pq = T.alloc_buffer((QT,), "int32")  # each lane's position (-1: no query)
        hi1 = T.alloc_buffer((1,), "int64")
        kb = T.alloc_buffer((B * d,), "float32")
        vb = T.alloc_buffer((B * d,), "float32")
        sc = T.alloc_buffer((rep * B * QT,), "float32")  # [r, jj, lane]
        mr = T.alloc_buffer((rep * QT,), "float32")
        lr = T.alloc_buffer((rep * QT,), "float32")
        acc = T.alloc_buffer((rep * d * QT,), "float32")  # [r, e, lane]
        bm = T.alloc_buffer((QT,), "float32")
        cr = T.alloc_buffer((QT,), "float32")
        ls = T.alloc_buffer((QT,), "float32")
        blk = T.alloc_buffer((max(EC, RU) * QT,), "float32")
        hi1[0] = T.int64(0)
        for ln in range(QT):
            i = T.Bind(t * QT + ln)
            if i < S:
                pq[ln] = T.Cast("int32", T.min(T.Cast("int64", pos[i]), C - 1))  # (rows past C are never read)
                hi1[0] = T.max(hi1[0], T.Cast("int64", pq[ln]) + 1)
                for r in range(rep):
                    for e in range(d):
                        qt[(r * d + e) * QT + ln] = q[i, h * rep + r, e] * T.float32(sc_f)
            else:
                pq[ln] = -1
                for r in range(rep):
                    for e in range(d):
                        qt[(r * d + e) * QT + ln] = T.float32(0)
        for r in range(rep):
            mr[T.Ramp(r * QT, 1, QT)] = T.Broadcast(lo_f, QT)
            lr[T.Ramp(r * QT, 1, QT)] = T.Broadcast(T.float32(0), QT)
            for e in range(d):
                acc[T.Ramp((r * d + e) * QT, 1, QT)] = T.Broadcast(T.float32(0), QT)
        for jb in range((hi1[0] + B - 1) // B):
            j0 = T.Bind(jb * B)
            nb = T.Bind(T.min(hi1[0] - j0, B))
            for jj in range(nb):
                for c in range(dc):
                    kb[rp(jj * d + c * vl)] = row(k, ks, j0 + jj, h, c, None, True)
                    vb[rp(jj * d + c * vl)] = row(v, vs, j0 + jj, h, c)
            for r in range(rep):
                for jg in range((nb + RU - 1) // RU):  # RU rows at a time: independent FMA chains over e
                    for u in T.unroll(RU):
                        blk[T.Ramp(u * QT, 1, QT)] = T.Broadcast(T.float32(0), QT)
                    for e in range(d):
                        for u in T.unroll(RU):
                            blk[T.Ramp(u * QT, 1, QT)] = blk[T.Ramp(u * QT, 1, QT)] + qv(qt, (r * d + e) * QT) * T.Broadcast(kb[(jg * RU + u) * d + e], QT)
                    for u in T.unroll(RU):  # (rows past nb: stale block rows, masked here)
                        sc[T.Ramp((r * B + jg * RU + u) * QT, 1, QT)] = T.Select(
                            T.Broadcast(T.Cast("int32", j0 + jg * RU + u), QT) <= pq[T.Ramp(0, 1, QT)], blk[T.Ramp(u * QT, 1, QT)], T.Broadcast(lo_f, QT))
                bm[T.Ramp(0, 1, QT)] = mr[T.Ramp(r * QT, 1, QT)]
                for jj in range(nb):
                    bm[T.Ramp(0, 1, QT)] = T.max(bm[T.Ramp(0, 1, QT)], sc[T.Ramp((r * B + jj) * QT, 1, QT)])
                cr[T.Ramp(0, 1, QT)] = vexp(mr[T.Ramp(r * QT, 1, QT)] - bm[T.Ramp(0, 1, QT)], QT)
                ls[T.Ramp(0, 1, QT)] = T.Broadcast(T.float32(0), QT)
                for jj in range(nb):
                    sc[T.Ramp((r * B + jj) * QT, 1, QT)] = T.Select(
                        T.Broadcast(T.Cast("int32", j0 + jj), QT) <= pq[T.Ramp(0, 1, QT)],
                        vexp(sc[T.Ramp((r * B + jj) * QT, 1, QT)] - bm[T.Ramp(0, 1, QT)], QT), T.Broadcast(T.float32(0), QT))
                    ls[T.Ramp(0, 1, QT)] = ls[T.Ramp(0, 1, QT)] + sc[T.Ramp((r * B + jj) * QT, 1, QT)]
                lr[T.Ramp(r * QT, 1, QT)] = lr[T.Ramp(r * QT, 1, QT)] * cr[T.Ramp(0, 1, QT)] + ls[T.Ramp(0, 1, QT)]
                mr[T.Ramp(r * QT, 1, QT)] = bm[T.Ramp(0, 1, QT)]
                for ec in range(d // EC):  # EC accumulators in registers across the block's rows
                    for u in T.unroll(EC):
                        blk[T.Ramp(u * QT, 1, QT)] = acc[T.Ramp((r * d + ec * EC + u) * QT, 1, QT)] * cr[T.Ramp(0, 1, QT)]
                    for jj in range(nb):
                        for u in T.unroll(EC):
                            blk[T.Ramp(u * QT, 1, QT)] = blk[T.Ramp(u * QT, 1, QT)] + sc[T.Ramp((r * B + jj) * QT, 1, QT)] * T.Broadcast(vb[jj * d + ec * EC + u], QT)
                    for u in T.unroll(EC):
                        acc[T.Ramp((r * d + ec * EC + u) * QT, 1, QT)] = blk[T.Ramp(u * QT, 1, QT)]
        for ln in range(QT):
            i = T.Bind(t * QT + ln)
            if i < S:
                for r in range(rep):
                    inv = T.Bind(T.float32(1) / T.max(lr[r * QT + ln], T.float32(1e-38)))
                    for e in range(d):
                        o[i, h * rep + r, e] = acc[(r * d + e) * QT + ln] * inv

    @T.macro
    def walk_rows(q, k, ks, v, vs, kw, vw, kn, vn, p0, i, lo, hi, nq, mrun, lrun, acc):
        # rows [lo, hi) for query i: those below nq from the cache, the rest from the float window
        if W > 0:
            walk(q, k, ks, v, vs, i, lo, T.min(hi, nq), mrun, lrun, acc, None)
            walk(q, kn, kw, vn, vw, i, T.max(lo, nq), hi, mrun, lrun, acc, p0)
        else:
            walk(q, k, ks, v, vs, i, lo, hi, mrun, lrun, acc, None)

    @T.macro
    def body(q, k, ks, v, vs, kw, vw, kn, vn, pos, o, S, C):
        t0 = T.Bind(T.max(T.min(T.Cast("int64", pos[0]) + 1, C), T.int64(0)))
        p0 = T.Bind(T.Cast("int64", pos[0]))
        nq0 = T.Bind(T.max(p0 + 1 - W, T.int64(0)))  # rows of query 0 read from the cache (all of them without a window)
        if S == 1 and t0 > SPLIT_MIN:
            part = T.alloc_buffer((NS * hq * (d + 2),), "float32")  # (acc[D], m, l) per split and query head
            for sp in T.parallel(NS):
                per = T.Bind((t0 + NS - 1) // NS)
                lo = T.Bind(T.min(sp * per, t0))
                mrun = T.alloc_buffer((hq,), "float32")
                lrun = T.alloc_buffer((hq,), "float32")
                acc = T.alloc_buffer((hq * d,), "float32")
                init(mrun, lrun, acc)
                walk_rows(q, k, ks, v, vs, kw, vw, kn, vn, p0, 0, lo, T.min(lo + per, t0), nq0, mrun, lrun, acc)
                for g in range(hq):
                    for c in range(dc):
                        part[rp((sp * hq + g) * (d + 2) + c * vl)] = acc[rp(g * d + c * vl)]
                    part[(sp * hq + g) * (d + 2) + d] = mrun[g]
                    part[(sp * hq + g) * (d + 2) + d + 1] = lrun[g]
            # o = sum_sp e_sp acc_sp / sum_sp e_sp l_sp, e_sp = exp(m_sp - max m): empty splits (l = 0) add nothing
            mx = T.alloc_buffer((1,), "float32")
            tot = T.alloc_buffer((1,), "float32")
            wsp = T.alloc_buffer((NS,), "float32")
            ov = T.alloc_buffer((vl,), "float32")
            for g in range(hq):
                mx[0] = lo_f
                for sp in range(NS):
                    mx[0] = T.max(mx[0], part[(sp * hq + g) * (d + 2) + d])
                tot[0] = T.float32(0)
                for sp in range(NS):
                    wsp[sp] = vexp(part[(sp * hq + g) * (d + 2) + d] - mx[0], 1)
                    tot[0] = tot[0] + wsp[sp] * part[(sp * hq + g) * (d + 2) + d + 1]
                for sp in range(NS):
                    wsp[sp] = wsp[sp] / T.max(tot[0], T.float32(1e-38))
                for c in range(dc):
                    ov[rp(0)] = bvec(0.0, vl)
                    for sp in range(NS):
                        ov[rp(0)] = ov[rp(0)] + part[rp((sp * hq + g) * (d + 2) + c * vl)] * bc(wsp[sp])
                    o[0, g, rp(c * vl)] = ov[rp(0)]
        elif S == 1:  # a short decode context: one thread (a parallel launch costs more than the walk)
            mrun1 = T.alloc_buffer((hq,), "float32")
            lrun1 = T.alloc_buffer((hq,), "float32")
            acc1 = T.alloc_buffer((hq * d,), "float32")
            init(mrun1, lrun1, acc1)
            walk_rows(q, k, ks, v, vs, kw, vw, kn, vn, p0, 0, T.int64(0), t0, nq0, mrun1, lrun1, acc1)
            finish(o, 0, lrun1, acc1)
        elif tiled:
            NT = T.Bind((S + QT - 1) // QT)
            for task in T.parallel(NT * hkv):
                # tiles taken in the order 0, NT-1, 1, NT-2, ...: tile t walks about (t + 1) QT rows
                tk = T.Bind(task // hkv)
                t = T.Bind(T.if_then_else(tk % 2 == 0, tk // 2, NT - 1 - tk // 2))
                tile_walk(q, k, ks, v, vs, pos, o, S, C, t, task % hkv)
        else:
            for t in T.parallel(S):
                # queries taken in the order 0, S-1, 1, S-2, ...: query i walks i + 1 rows, so each thread's share
                # of the parallel range holds as many long walks as short ones
                i = T.Bind(T.if_then_else(t % 2 == 0, t // 2, S - 1 - t // 2))
                mrun2 = T.alloc_buffer((hq,), "float32")
                lrun2 = T.alloc_buffer((hq,), "float32")
                acc2 = T.alloc_buffer((hq * d,), "float32")
                pi = T.Bind(T.Cast("int64", pos[i]))
                init(mrun2, lrun2, acc2)
                walk_rows(q, k, ks, v, vs, kw, vw, kn, vn, p0, i, T.int64(0), T.max(T.min(pi + 1, C), T.int64(0)), T.max(pi + 1 - W, T.int64(0)),
                          mrun2, lrun2, acc2)
                finish(o, i, lrun2, acc2)

    if not W:

        @T.prim_func(private=True)
        def cache_attention(var_q: T.handle, var_k: T.handle, var_ks: T.handle, var_v: T.handle, var_vs: T.handle, var_pos: T.handle, var_o: T.handle):
            T.func_attr({"tirx.noalias": True})
            S, C = T.int64(), T.int64()
            q = T.match_buffer(var_q, (S, hq, d), "float32")
            k = T.match_buffer(var_k, (C, hkv, kd), cdt)
            ks = T.match_buffer(var_ks, (C, hkv, sd), sdt)
            v = T.match_buffer(var_v, (C, hkv, kd), cdt)
            vs = T.match_buffer(var_vs, (C, hkv, sd), sdt)
            pos = T.match_buffer(var_pos, (S,), pos_dtype)
            o = T.match_buffer(var_o, (S, hq, d), "float32")
            body(q, k, ks, v, vs, None, None, None, None, pos, o, S, C)

        return cache_attention.with_attr("op_pattern", 8)  # opaque: never fused with neighbours

    @T.prim_func(private=True)
    def cache_attention_window(var_q: T.handle, var_k: T.handle, var_ks: T.handle, var_v: T.handle, var_vs: T.handle, var_pos: T.handle,
                               var_kw: T.handle, var_vw: T.handle, var_kn: T.handle, var_vn: T.handle, var_o: T.handle):
        T.func_attr({"tirx.noalias": True})
        S, C, CK = T.int64(), T.int64(), T.int64()
        q = T.match_buffer(var_q, (S, hq, d), "float32")
        k = T.match_buffer(var_k, (C, hkv, kd), cdt)
        ks = T.match_buffer(var_ks, (CK, hkv, ksd), sdt)  # (a row per token group with keys per channel)
        v = T.match_buffer(var_v, (C, hkv, kd), cdt)
        vs = T.match_buffer(var_vs, (C, hkv, sd), sdt)
        pos = T.match_buffer(var_pos, (S,), pos_dtype)
        kw = T.match_buffer(var_kw, (W, hkv, d), "float32")
        vw = T.match_buffer(var_vw, (W, hkv, d), "float32")
        kn = T.match_buffer(var_kn, (S, hkv, d), "float32")
        vn = T.match_buffer(var_vn, (S, hkv, d), "float32")
        o = T.match_buffer(var_o, (S, hq, d), "float32")
        body(q, k, ks, v, vs, kw, vw, kn, vn, pos, o, S, C)
        # after every query has read the rings: the step's last rows replace the oldest
        for t, h, e in T.grid(T.min(S, W), hkv, d):
            kw[T.floormod(T.Cast("int64", pos[S - 1 - t]), W), h, e] = kn[S - 1 - t, h, e]
            vw[T.floormod(T.Cast("int64", pos[S - 1 - t]), W), h, e] = vn[S - 1 - t, h, e]

    return cache_attention_window.with_attr("op_pattern", 8)
