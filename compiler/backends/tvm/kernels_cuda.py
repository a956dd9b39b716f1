"""tvm-cuda qlinear for prefill and decode in one kernel: a tiled GEMM for M > GEMV_MAX_M, a GEMV for small M.

The qlinear op has a symbolic M (the tokens of this call), so one PrimFunc serves decode (M = 1) and prefill.
Its body is a host-side branch on M around two differently scheduled copies of the same TE computation:

    if M <= GEMV_MAX_M:  GEMV  (qlinear_te.schedule_cuda_warp: lanes split a row's groups, cross-thread sum)
    else:                GEMM  (below)

TVM's SplitHostDevice makes one device kernel per thread-bound region, so each branch becomes its own
`__global__` function and the host code picks one per call (checked in tests/compiler/backends/tvm/test_cuda_gemm.py on
the generated source).

GEMM form (`gemm-cuda`): a block of 16 x 16 threads computes a 64 x 64 tile of y; each thread keeps a 4 x 4
register tile. K is walked group by group, each group in chunks of KC (<= 64) codes:

- stage xT[k, m] (x rounded to fp16, as fp32; A32: x as given; A8: the int8 codes qa) and wT[k, n] = q[n, k] - z[n, j] (the
  codes unpacked once per block from the artifact's packed storage, no re-laid-out weights) into shared
  memory, transposed so that a thread's 4 consecutive rows / columns are 4 consecutive words;
- each thread sums xT * wT over the chunk into its 4 x 4 group sums (registers);
- after the group: y[m, n] += s[n, j] * acc[m, n, j] (dequantization once per group, after the group's
  sum: compiler/reference.py's contract), y in fp32 registers; then the epilogue (A8 sa[m], bias) on the
  way out.

Scale-and-minimum groups (shape.mins, the fourth input float minimums): wT = q (no zero point), and a small
kernel before either launch forms the activation group sums xs[m, j] (qlinear_te.act_group_sums: fp32 sums of
the fp16-rounded x or of x (A32), int32 sums of qa); each group then adds m[n, j] * xs[m, j] beside s[n, j] * acc.

A8 group sums must be exact integers: they are fp32 when every partial sum stays below 2^24
(g * 127 * (2^b - 1) < 2^24: W4 up to g = 8192, W8 up to 512), which is exact and twice as fast on CUDA cores as int32,
and int32 otherwise. No tensor cores (fp32 FMA): they are the next step for large M.
"""

from __future__ import annotations

from tvm import te, tirx

from compiler.backends.tvm.epilogue import scale_and_bias
from compiler.backends.tvm.qlinear_te import act_group_sums, bind_elementwise_cuda, code_at, has_block, schedule_cuda_simple, schedule_cuda_warp, x_act
from compiler.errors import LowbitError
from compiler.knobs import TVM_CUDA_GEMM_TILE, TVM_CUDA_GEMV_MAX_M

TILE = TVM_CUDA_GEMM_TILE.default  # default rows (m) and columns (n) of y per block
PER_THREAD = 4  # each thread owns a PER_THREAD x PER_THREAD register tile: 16 x 16 = 256 threads for 64 x 64
GEMV_MAX_M = TVM_CUDA_GEMV_MAX_M.default  # M at or below which the GEMV kernel runs (one row per weight pass beats a 64-row tile)
TILES = (16, 32, 64, 128)


def config() -> tuple[int, int, int]:
    """(rows per tile, columns per tile, GEMV_MAX_M), read at compile time: the defaults, or for measuring
    other choices LOWBIT_TVM_CUDA_GEMM_TILE=MxN (each of 16, 32, 64, 128) and LOWBIT_TVM_CUDA_GEMV_MAX_M=m
    (0: the GEMM also at M = 1)."""
    tm, tn = TVM_CUDA_GEMM_TILE.get()
    name, fix = TVM_CUDA_GEMM_TILE.name, f"unset it or give {TVM_CUDA_GEMM_TILE.syntax}"
    if tm not in TILES or tn not in TILES:
        raise LowbitError(f"{name}: rows and columns must be in {TILES}, got {tm}x{tn}", fix)
    if tm * tn > 512 * PER_THREAD**2 or tm * tn < 32 * PER_THREAD**2:
        raise LowbitError(f"{name}={tm}x{tn}: a block would have {tm * tn // PER_THREAD**2} threads (32 ... 512)", fix)
    return tm, tn, TVM_CUDA_GEMV_MAX_M.get()


def a8_fp32_exact(bits: int, group: int) -> bool:
    """fp32 group sums of int8 x (q - z) are exact integers when every partial sum is below 2^24."""
    return group * 127 * ((1 << bits) - 1) < (1 << 24)


def chunk(group: int) -> int:
    """Codes per shared-memory stage: the largest of 64, 32, 16, 8 that divides the group."""
    for kc in (64, 32, 16, 8):
        if group % kc == 0:
            return kc
    return 0


def gemm_ok(n: int, k: int, group: int) -> bool:
    return n % config()[1] == 0 and k % group == 0 and chunk(group) > 0 and k // group >= 1


def small_int_to_f32(v, cuda: bool = True):
    """float(v) for an int32 |v| < 2^22, exactly, without a conversion instruction (I2F runs at 1/8 of the FMA
    rate on sm_80/sm_90): the bits of 1.5 * 2^23 plus v are the float 1.5 * 2^23 + v; subtract 1.5 * 2^23.
    CUDA: through __int_as_float, because TVM widens the integer arithmetic of a loop nest over the int64 M
    to int64, which tirx.reinterpret then refuses (C++ narrows the argument back: the value fits)."""
    if not cuda:  # the same value, converted (the CPU has the same int64 widening)
        return v.astype("float32")
    bits = v + tirx.const(0x4B400000, "int32")
    return tirx.call_pure_extern("float32", "__int_as_float", bits) - tirx.const(12582912.0, "float32")


def gemm_te(shape):
    """TE for bb.emit_te, same arguments as qlinear_te.qlinear_te: (x | qa, packed, scales, zeros, [sa], [bias])."""
    g, nj = shape.group, shape.k // shape.group
    a8_int = shape.act == "a8" and not a8_fp32_exact(shape.bits, g)
    acc_t = "int32" if a8_int else "float32"
    cuda = shape.target == "cuda"  # (the tests run the definition on the CPU too)

    def f(x, packed, scales, zeros, *rest):
        rest = list(rest)
        sa = rest.pop(0) if shape.act == "a8" else None
        bias = rest.pop(0) if shape.bias else None
        m = x.shape[0]
        # rows padded to whole tiles (zeros past M): shared stages of constant size for a symbolic M
        tm = config()[0]
        mp = (m + (tm - 1)) // tm * tm

        def xv(c, i):  # if_then_else: the load past M is never issued
            if shape.act == "a8":  # qa: int8 codes in int32
                v = x[i, c] if a8_int else small_int_to_f32(x[i, c], cuda)
            else:  # A16: fp16-rounded; A32: as given
                v = x_act(x, i, c, shape.act)
            return tirx.if_then_else(i < m, v, tirx.const(0, acc_t))

        xT = te.compute((shape.k, mp), xv, name="x_t")

        def wq(c, n):
            code = code_at(packed, shape.bits, shape.layout, n, c)
            w = code if shape.mins else code - zeros[n, c // g].astype("int32")  # |q - z| < 2^8
            return w if a8_int else small_int_to_f32(w, cuda)

        wT = te.compute((shape.k, shape.n), wq, name="w_t")
        kk = te.reduce_axis((0, g), name="kk")
        acc = te.compute((mp, shape.n, nj), lambda i, n, j: te.sum(xT[j * g + kk, i] * wT[j * g + kk, n], axis=kk), name="acc")
        # y over the M rows only (acc is over whole tiles: the GEMM computes padded rows, never stores them)
        jr = te.reduce_axis((0, nj), name="j")
        if shape.mins:  # zeros holds the minimums
            xs = act_group_sums(x, shape)
            y = te.compute(
                (m, shape.n),
                lambda i, n: te.sum(scales[n, jr] * acc[i, n, jr].astype("float32") + zeros[n, jr] * xs[i, jr].astype("float32"), axis=jr),
                name="qlinear",
            )
        else:
            y = te.compute((m, shape.n), lambda i, n: te.sum(scales[n, jr] * acc[i, n, jr].astype("float32"), axis=jr), name="qlinear")
        return scale_and_bias(y, sa, bias)

    return f


def _schedule_gemm(func: tirx.PrimFunc, group: int) -> tirx.PrimFunc:
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    bind_elementwise_cuda(sch, ("x_gsum",))  # scale-and-minimum groups: the activation group sums, their own kernel
    y = sch.get_sblock("qlinear")
    acc = sch.get_sblock("acc")
    xs = sch.get_sblock("x_t")
    ws = sch.get_sblock("w_t")
    tm, tn, _ = config()
    per = PER_THREAD
    ty, tx = tm // per, tn // per
    i, n, j = sch.get_loops(y)
    bi, ti, ii = sch.split(i, factors=[None, ty, per], disable_predication=True)
    bn, tj, ni = sch.split(n, factors=[None, tx, per])
    sch.reorder(bi, bn, ti, tj, j, ii, ni)
    sch.bind(bi, "blockIdx.y")
    sch.bind(bn, "blockIdx.x")
    sch.bind(ti, "threadIdx.y")
    sch.bind(tj, "threadIdx.x")
    # y accumulates in registers; written back (with the epilogue when there is one) per thread
    yl = sch.cache_write(y, 0, "local")
    sch.reverse_compute_at(yl, tj)
    if has_block(sch, "qlinear_out"):
        sch.reverse_compute_inline(sch.get_sblock("qlinear_out"))
    # group sums in registers, computed where the group loop consumes them
    sch.compute_at(acc, j)
    sch.set_scope(acc, 0, "local")
    a0, a1, kk = sch.get_loops(acc)[-3:]
    kc = chunk(group)
    while kc > 8 and kc * (tm + 4 + tn + 4) * 4 > 48 * 1024:  # static shared memory of a block: at most 48 KiB
        kc //= 2
    ko, ki = sch.split(kk, factors=[None, kc])
    sch.reorder(ko, ki, a0, a1)
    # shared-memory stages of one chunk, filled by all 256 threads
    # Each warp reads 4 rows x 8 consecutive k (x: 4 sectors of 32 B, not 32 scattered words), and writes them
    # to the transposed tile whose rows are padded to 68 words: bank (4 k + row) differs for all 32 lanes,
    # and a thread's 4 consecutive words stay 16-byte aligned for the float4 reads of the FMA loop.
    for blk in (xs, ws):
        sch.set_scope(blk, 0, "shared")
        sch.compute_at(blk, ko)
        sch.storage_align(blk, 0, axis=0, factor=32, offset=4)
        c, r = sch.get_loops(blk)[-2:]
        c_hi, c_lo = sch.split(c, factors=[None, 8])
        sch.reorder(c_hi, r, c_lo)
        fused = sch.fuse(c_hi, r, c_lo)
        _, fy, fx = sch.split(fused, factors=[None, ty, tx])
        sch.bind(fy, "threadIdx.y")
        sch.bind(fx, "threadIdx.x")
    sch.decompose_reduction(acc, ko)
    k4 = sch.split(ki, factors=[None, 4])[1]
    for lp in (k4, a0, a1):  # 4 x (4 x 4) FMAs per step, operands as float4 loads from shared memory
        sch.unroll(lp)
    sch.decompose_reduction(y, j)
    return sch.mod["main"]


def _schedule_gemv(func: tirx.PrimFunc, nj: int) -> tirx.PrimFunc:
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    sch.compute_inline(sch.get_sblock("x_t"))
    sch.compute_inline(sch.get_sblock("w_t"))
    f = sch.mod["main"]
    return schedule_cuda_warp(f) if nj >= 8 else schedule_cuda_simple(f)


def schedule_gemm(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """The two schedules of the module doc under one host-side branch on M."""
    from tvm import s_tir

    # M (symbolic), group size and groups per row from the loop extents of y (i, n, j) and acc (kk)
    sch = s_tir.Schedule(func)
    m = sch.get(sch.get_loops(sch.get_sblock("qlinear"))[0]).extent
    group = int(sch.get(sch.get_loops(sch.get_sblock("acc"))[-1]).extent)
    nj = int(sch.get(sch.get_loops(sch.get_sblock("qlinear"))[-1]).extent)
    gemv = _schedule_gemv(func, nj)
    gemm = _schedule_gemm(func, group)
    root_v, root_m = gemv.body.block, gemm.body.block
    # The branch is written as two host loops of 0 or 1 trips, not an IfThenElse: TVM's shared-memory sync
    # planner refuses syncs inside any condition (it cannot tell that this one is uniform, on the host).
    small = tirx.Select(m <= config()[2], tirx.const(1, "int64"), tirx.const(0, "int64"))
    one = tirx.const(1, "int64")
    body = tirx.SeqStmt(
        [
            tirx.For(tirx.Var("use_gemv", "int64"), tirx.const(0, "int64"), small, tirx.ForKind.SERIAL, root_v.body),
            tirx.For(tirx.Var("use_gemm", "int64"), tirx.const(0, "int64"), one - small, tirx.ForKind.SERIAL, root_m.body),
        ]
    )
    allocs = list(root_v.alloc_buffers)
    allocs += [buf for buf in root_m.alloc_buffers if not any(buf.same_as(v) for v in allocs)]  # (x_gsum: the same buffer on both sides)
    root = s_tir.SBlock([], [], [], "root", body, alloc_buffers=allocs)
    out = gemm.with_body(s_tir.SBlockRealize([], tirx.const(True, "bool"), root))
    return out.with_attr("tirx.is_scheduled", True)


ABOUT = (
    f"M > {GEMV_MAX_M}: {TILE[0]}x{TILE[1]} tiles of y per 256-thread block (LOWBIT_TVM_CUDA_GEMM_TILE), x and unpacked (q - z) staged transposed in shared memory "
    "per chunk of a group, 4x4 fp32 (exact int A8) register group sums, scale once per group; M <= "
    f"{GEMV_MAX_M}: the GEMV schedule (host-side branch on M)"
)


def gemm_rule_ok(s) -> bool:
    return s.target == "cuda" and gemm_ok(s.n, s.k, s.group)
