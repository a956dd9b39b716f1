"""The TE pieces every qlinear kernel and the lowering share: `QLinearShape` (what a rule sees), the unpacking
of codes from the artifact's storage layouts ('nibble', 'dense', 'planes' of compiler/quant/pack.py), the A8
activation quantization stage, the portable qlinear definition in the contract's order with its rule-based
CPU/CUDA schedules, and the float linear.

The numeric contract (docs/DESIGN.md), y[m, n] = sum_j s[n, j] * acc[m, n, j] (+ bias):

- A16: x is rounded to fp16 (and back to fp32); acc[m, n, j] = sum_{k in group j} x[m, k] * (q[n, k] - z[n, j])
  in fp32; the integer weight (q - z) is formed in registers from the packed codes.
- A32: the same sums of x as given (float32, not rounded: weight-only quantization).
- A8: a separate stage (`act_quant_a8`, emitted once per activation even when several qlinears read it, e.g.
  q/k/v) gives sa[m] = max|x[m]| / 127 and qa = clamp(rint(x / sa), -127, 127) as int32; the group sums
  acc[m, n, j] = sum qa * (q - z) are int32 (exact: |acc| <= g * 127 * 255 < 2^31 for every g <= 65536),
  then y = sa[m] * sum_j s[n, j] * float(acc[m, n, j]).
- Scale-and-minimum groups (shape.mins: the fourth input is a float32 minimum m[n, j] per group instead of the
  zero point): acc is formed with z = 0, the group's activation sum xs[m, j] (of the fp16-rounded x in fp32 for
  A16, of x in fp32 for A32, of qa in int32 for A8: exact) joins each group's term, y = (sa[m] *) sum_j (s[n, j] acc + m[n, j] xs[m, j]).
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import te, tirx

from compiler.backends.tvm.epilogue import scale_and_bias

# ----------------------------------------------------------------------------------------------------------
# Shapes a rule sees


@dataclass(frozen=True)
class QLinearShape:
    """What a rule may look at: the layer's shape and quantization, and the target kind."""

    m_dynamic: bool  # M is the symbolic sequence length (prefill and decode share one kernel)
    n: int
    k: int
    bits: int
    group: int
    act: str  # 'a16' | 'a8' | 'a32'
    layout: str  # storage layout of the packed codes
    target: str  # 'cpu' | 'cuda'
    bias: bool = False
    ternary: bool = False  # codes are {0, 1, 2} with zero 1 (2-bit dense storage)
    mins: bool = False  # scale-and-minimum groups: the fourth weight input is float32 minimums, not zero points
    f16_params: bool = False  # the scales (and minimums) are all fp16 values: a re-laid-out copy may hold them in fp16, losslessly
    codebook: bool = False  # codebook weights: the fourth weight input is a table [N, 2^bits] the codes index (no zero point)
    fp: str = ""  # the float format of a shared table (compiler.quant.floatfmt), e.g. fp8: a kernel may decode the codes itself


# ----------------------------------------------------------------------------------------------------------
# Code unpacking from the storage layouts (expressions on the packed buffer, evaluated in registers)


def code_at(packed: te.Tensor, bits: int, layout: str, n, k):
    """The uint code q[n, k] as an int32 expression on the packed bytes."""
    if layout == "planes":
        byte, sh = k // 8, (k % 8).astype("int32")
        code = tirx.const(0, "int32")
        for b in range(bits):
            bit = (packed[b, n, byte].astype("int32") >> sh) & 1
            code = code | (bit << b)
        return code
    per = 8 // bits
    if per == 1:
        return packed[n, k].astype("int32")
    byte = packed[n, k // per].astype("int32")
    shift = ((k % per) * bits).astype("int32")
    return (byte >> shift) & ((1 << bits) - 1)


# ----------------------------------------------------------------------------------------------------------
# TE definitions


def token_scale(x: te.Tensor, top: float, prefix: str) -> te.Tensor:
    """sa [M] = max |x[m]| / top per row (1 for an all-zero row): the per-token scale of A8 (top 127) and AFP8
    (448); blocks `{prefix}_amax`, `{prefix}_scale` (schedule_act_quant's names)."""
    m, k = x.shape
    r = te.reduce_axis((0, k), name="r")
    amax = te.compute((m,), lambda i: te.max(tirx.abs(x[i, r]), axis=r), name=f"{prefix}_amax")
    return te.compute(
        (m,),
        lambda i: tirx.Select(amax[i] > tirx.const(0, "float32"), amax[i] / tirx.const(top, "float32"), tirx.const(1.0, "float32")),
        name=f"{prefix}_scale",
    )


def act_quant_a8(x: te.Tensor):
    """Per-token dynamic int8 (the A8 contract): returns (qa int32 [M, K], sa float32 [M])."""
    m, k = x.shape
    sa = token_scale(x, 127.0, "a8")
    lo, hi = tirx.const(-127.0, "float32"), tirx.const(127.0, "float32")
    qa = te.compute((m, k), lambda i, c: tirx.max(tirx.min(tirx.nearbyint(x[i, c] / sa[i]), hi), lo).astype("int32"), name="a8_quant")
    return qa, sa


def act_quant_fp8(x: te.Tensor):
    """Per-token dynamic FP8 E4M3 (the AFP8 contract): returns (xa float32 [M, K] holding E4M3 values, sa float32
    [M]). The rounding reads the exponent from the float's bits: step = 2^(max(e, -6) - 3), r = round(v / step)
    step, ties to even (v / step is exact: a power-of-two division that stays normal)."""
    m, k = x.shape
    sa = token_scale(x, 448.0, "fp8")

    def quant(i, c):
        y = x[i, c] / sa[i]
        v = tirx.min(tirx.abs(y), tirx.const(448.0, "float32"))
        e = tirx.max(((tirx.reinterpret("int32", v) >> 23) & 255) - 127, tirx.const(-6, "int32"))
        step = tirx.reinterpret("float32", (e + (127 - 3)) << 23)
        q = tirx.nearbyint(v / step) * step
        return tirx.Select(y < tirx.const(0, "float32"), -q, q)

    return te.compute((m, k), quant, name="fp8_quant"), sa


def _pow2(e):
    """2^e as float32 for an int32 e in -127..127 (2^-127 is the subnormal with mantissa bit 22)."""
    normal = tirx.reinterpret("float32", (e + 127) << 23)
    return tirx.Select(e >= -126, normal, tirx.reinterpret("float32", tirx.const(1 << 22, "int32")))


def act_quant_mx(x: te.Tensor, act: str, block: int = 32):
    """OCP MX activations (the AMX8 / AMXFP4 contract, floatfmt.mx_activations): float32 [M, K] of element * X with
    X = 2^(floor(log2 amax) - emax) per row and block of 32, floor(log2) from the float's exponent bits."""
    m, k = x.shape
    emax = {"amxfp4": 2, "amx8": 0}[act]
    r = te.reduce_axis((0, block), name="r")
    amax = te.compute((m, k // block), lambda i, b: te.max(tirx.abs(x[i, b * block + r]), axis=r), name="mx_amax")

    def exp_of(i, b):
        biased = (tirx.reinterpret("int32", amax[i, b]) >> 23) & 255
        e = tirx.Select(amax[i, b] > tirx.const(0, "float32"), tirx.Select(biased == 0, tirx.const(-127, "int32"), biased - 127), tirx.const(0, "int32"))
        return tirx.max(tirx.min(e - emax, tirx.const(127, "int32")), tirx.const(-127, "int32"))

    scale = te.compute((m, k // block), lambda i, b: _pow2(exp_of(i, b)), name="mx_scale")

    def quant(i, c):
        s = scale[i, c // block]
        v = x[i, c] / s
        if act == "amx8":
            q = tirx.max(tirx.min(tirx.nearbyint(v * tirx.const(64.0, "float32")), tirx.const(127.0, "float32")), tirx.const(-128.0, "float32"))
            return q * tirx.const(1.0 / 64, "float32") * s
        a = tirx.min(tirx.abs(v), tirx.const(6.0, "float32"))
        ee = tirx.max(((tirx.reinterpret("int32", a) >> 23) & 255) - 127, tirx.const(0, "int32"))
        step = tirx.reinterpret("float32", (ee + (127 - 1)) << 23)
        q = tirx.nearbyint(a / step) * step
        return tirx.Select(v < tirx.const(0, "float32"), -q, q) * s

    return te.compute((m, k), quant, name="mx_quant")


def qlinear_group_sums(xq: te.Tensor, packed: te.Tensor, zeros: te.Tensor, shape: QLinearShape, name: str = "acc"):
    """acc[m, n, j]: fp32 sums of fp16-rounded x (A16), of x (A32), or int32 sums of qa (A8) against (q - z) per
    group (against q for scale-and-minimum groups: `zeros` is not read)."""
    m = xq.shape[0]
    g, nj = shape.group, shape.k // shape.group
    kk = te.reduce_axis((0, g), name="kk")

    def w_int(n, k, j):
        q = code_at(packed, shape.bits, shape.layout, n, k)
        if shape.codebook:  # a lookup in the row's (or the shared) table (float: the sums below are fp32 for every act mode)
            return zeros[0 if int(zeros.shape[0]) == 1 else n, q]
        return q if shape.mins else q - zeros[n, j].astype("int32")

    if shape.act == "a8" and not shape.codebook:

        def body(i, n, j):
            k = j * g + kk
            return te.sum(xq[i, k] * w_int(n, k, j), axis=kk)

        return te.compute((m, shape.n, nj), body, name=name)
    if shape.act == "a8":  # codebook at A8: the int8 activations times table values, summed in fp32

        def body8(i, n, j):
            k = j * g + kk
            return te.sum(xq[i, k].astype("float32") * w_int(n, k, j), axis=kk)

        return te.compute((m, shape.n, nj), body8, name=name)

    def body16(i, n, j):
        k = j * g + kk
        return te.sum(x_act(xq, i, k, shape.act) * w_int(n, k, j).astype("float32"), axis=kk)

    return te.compute((m, shape.n, nj), body16, name=name)


def x_act(x: te.Tensor, i, k, act: str):
    """The float activation x[i, k] a kernel sums: rounded to fp16 and back (A16), or as given (A32)."""
    return x[i, k] if act == "a32" else x[i, k].astype("float16").astype("float32")


def act_group_sums(xq: te.Tensor, shape: QLinearShape, name: str = "x_gsum"):
    """xs[m, j]: the group sums of the activations (scale-and-minimum groups): int32 sums of qa (A8, exact),
    fp32 sums of the fp16-rounded x (A16) or of x (A32)."""
    g = shape.group
    r = te.reduce_axis((0, g), name="r")
    if shape.act == "a8":
        return te.compute((xq.shape[0], shape.k // g), lambda i, j: te.sum(xq[i, j * g + r], axis=r), name=name)
    return te.compute((xq.shape[0], shape.k // g), lambda i, j: te.sum(x_act(xq, i, j * g + r, shape.act), axis=r), name=name)


def qlinear_epilogue(acc: te.Tensor, scales: te.Tensor, sa, bias, shape: QLinearShape, mins: te.Tensor | None = None, xs: te.Tensor | None = None):
    """y[m, n] = sum_j s[n, j] * acc[m, n, j] (+ m[n, j] * xs[m, j] for scale-and-minimum groups), then sa, bias."""
    m = acc.shape[0]
    j = te.reduce_axis((0, shape.k // shape.group), name="j")
    if mins is None:
        y = te.compute((m, shape.n), lambda i, n: te.sum(scales[n, j] * acc[i, n, j].astype("float32"), axis=j), name="qlinear")
    else:
        y = te.compute(
            (m, shape.n),
            lambda i, n: te.sum(scales[n, j] * acc[i, n, j].astype("float32") + mins[n, j] * xs[i, j].astype("float32"), axis=j),
            name="qlinear",
        )
    return scale_and_bias(y, sa, bias)


def qlinear_te(shape: QLinearShape):
    """The TE function for bb.emit_te: (x, packed, scales, zeros | mins, [bias]) -> y [M, N] for A16 and A32, and
    (qa, packed, scales, zeros | mins, sa, [bias]) for A8 (qa, sa from `act_quant_a8`)."""

    def f(x, packed, scales, zeros, *rest):
        rest = list(rest)
        sa = rest.pop(0) if shape.act == "a8" else None
        bias = rest.pop(0) if shape.bias else None
        acc = qlinear_group_sums(x, packed, zeros, shape)
        if shape.mins:
            return qlinear_epilogue(acc, scales, sa, bias, shape, zeros, act_group_sums(x, shape))
        return qlinear_epilogue(acc, scales, sa, bias, shape)

    return f


def linear_te(x: te.Tensor, w: te.Tensor, b: te.Tensor | None = None):
    """Float linear y = x W^T (+ b) reading W [N, K] as stored (no transpose at run time)."""
    m, k = x.shape
    n = w.shape[0]
    r = te.reduce_axis((0, k), name="r")
    attrs = {"lowbit_linear": f"{int(n)},{int(k)}"}  # for schedules that replace the body (kernels_cpu.schedule_float_linear)
    y = te.compute((m, n), lambda i, j: te.sum(x[i, r] * w[j, r], axis=r), name="linear", attrs=attrs)
    if b is None:
        return y
    return te.compute((m, n), lambda i, j: y[i, j] + b[j], name="linear_bias", attrs=attrs)


# ----------------------------------------------------------------------------------------------------------
# Schedules (by rule, not tuned). Each takes a PrimFunc and returns a scheduled PrimFunc.


def schedule_act_quant(kind: str, prefix: str = "a8"):
    """Schedule for `act_quant_a8` (prefix a8), `act_quant_fp8` (prefix fp8) and `act_quant_mx` (prefix mx). CPU: rows in parallel. CUDA: one block of 256 threads per row for the
    max (a cross-thread reduction), one thread per row for the scale, one thread per element for the
    rounding."""

    def sched(func: tirx.PrimFunc) -> tirx.PrimFunc:
        from tvm import s_tir

        sch = s_tir.Schedule(func)
        if kind == "cpu":
            for name in (f"{prefix}_amax", f"{prefix}_scale", f"{prefix}_quant"):
                sch.parallel(sch.get_loops(sch.get_sblock(name))[0])
            return sch.mod["main"].with_attr("tirx.is_scheduled", True)
        i, r = sch.get_loops(sch.get_sblock(f"{prefix}_amax"))
        k = int(sch.get(r).extent)
        threads = max(d for d in (256, 128, 64, 32, 16, 8, 4, 2, 1) if k % d == 0)
        ri, ro = sch.split(r, factors=[threads, None])
        sch.bind(i, "blockIdx.x")
        sch.bind(ri, "threadIdx.x")
        for name, per_block in ((f"{prefix}_scale", 32), (f"{prefix}_quant", 256)):
            loops = sch.get_loops(sch.get_sblock(name))
            bo, bi = sch.split(sch.fuse(*loops), factors=[None, per_block])
            sch.bind(bo, "blockIdx.x")
            sch.bind(bi, "threadIdx.x")
        return sch.mod["main"].with_attr("tirx.is_scheduled", True)

    return sched


def schedule_cpu_simple(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """CPU: one output (m, n) per iteration of a parallel loop over fused (m, n-tiles); the group sum for
    (m, n, j) is computed in registers right where the epilogue consumes it; A8's quantization stage is a
    separate function. Reductions stay in order (no reassociation), so results are deterministic."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    acc = sch.get_sblock("acc")
    y = sch.get_sblock("qlinear")
    i, n, j = sch.get_loops(y)
    sch.compute_at(acc, j)
    no, ni = sch.split(n, factors=[None, 16])
    sch.parallel(sch.fuse(i, no))
    for name in ("qlinear_out", "x_gsum"):
        if has_block(sch, name):
            sch.parallel(sch.get_loops(sch.get_sblock(name))[0])
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)


def schedule_cuda_simple(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """CUDA: one thread per output (m, n) (threads along n, 128 per block, blocks along m and n-tiles); the
    per-group sum lives in a register. Simple and always valid (the fallback when a row has few groups).
    The epilogue (A8 scale, bias), when present, is its own elementwise kernel."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    acc = sch.get_sblock("acc")
    y = sch.get_sblock("qlinear")
    i, n, j = sch.get_loops(y)
    sch.compute_at(acc, j)
    sch.set_scope(acc, 0, "local")
    no, ni = sch.split(n, factors=[None, 128])
    sch.bind(i, "blockIdx.y")
    sch.bind(no, "blockIdx.x")
    sch.bind(ni, "threadIdx.x")
    bind_elementwise_cuda(sch)
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)


def schedule_cuda_warp(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """CUDA GEMV-style: 4 outputs (m, n) per block of 4 x T threads; the T lanes of an output split its
    groups (T = the largest divisor of K/g up to 32), each lane sums whole groups in a register (group sum,
    then scale: the contract's order), and the lanes' scaled sums are combined by a cross-thread
    reduction."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    acc = sch.get_sblock("acc")
    y = sch.get_sblock("qlinear")
    i, n, j = sch.get_loops(y)
    nj = int(sch.get(j).extent)
    lanes = max(d for d in range(1, min(32, nj) + 1) if nj % d == 0)
    nn = int(sch.get(n).extent)
    rows = 4 if nn % 4 == 0 else 1
    no, ni = sch.split(n, factors=[None, rows])
    ji, jo = sch.split(j, factors=[lanes, None])
    sch.reorder(i, no, ni, ji, jo)
    sch.compute_at(acc, jo)
    sch.set_scope(acc, 0, "local")
    sch.bind(i, "blockIdx.y")
    sch.bind(no, "blockIdx.x")
    sch.bind(ni, "threadIdx.y")
    sch.bind(ji, "threadIdx.x")
    bind_elementwise_cuda(sch)
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)


def bind_elementwise_cuda(sch, blocks=("qlinear_out", "x_gsum")) -> None:
    """CUDA: one thread per output of the epilogue (A8 scale, bias) and of the activation group sums (scale-and-
    minimum groups; each thread sums one group), each its own kernel, where the function has them."""
    for name in blocks:
        if has_block(sch, name):
            blk = sch.get_sblock(name)
            loops = sch.get_loops(blk)
            outer = loops[:2] if name == "x_gsum" else loops  # (x_gsum's last loop is the group's reduction)
            bo, bi = sch.split(sch.fuse(*outer), factors=[None, 256 if name == "qlinear_out" else 64])
            sch.bind(bo, "blockIdx.x")
            sch.bind(bi, "threadIdx.x")


def has_block(sch, name: str) -> bool:
    try:
        sch.get_sblock(name)
        return True
    except Exception:  # noqa: BLE001 - TVM raises its own error type for a missing block
        return False
