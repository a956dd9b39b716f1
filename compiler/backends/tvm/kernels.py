"""qlinear (mpGEMM) kernels in TE/TIR and the rule table that picks one per layer.

Every kernel implements DESIGN.md's numeric contract, y[m, n] = sum_j s[n, j] * acc[m, n, j] (+ bias):

- A16: x is rounded to fp16 (and back to fp32); acc[m, n, j] = sum_{k in group j} x[m, k] * (q[n, k] - z[n, j])
  in fp32; the integer weight (q - z) is formed in registers from the packed codes.
- A8: a separate stage (`act_quant_a8`, emitted once per activation even when several qlinears read it, e.g.
  q/k/v) gives sa[m] = max|x[m]| / 127 and qa = clamp(rint(x / sa), -127, 127) as int32; the group sums
  acc[m, n, j] = sum qa * (q - z) are int32 (exact: |acc| <= g * 127 * 255 < 2^31 for every g <= 65536),
  then y = sa[m] * sum_j s[n, j] * float(acc[m, n, j]).

The kernels read the artifact's storage layouts directly (compiler/quant/pack.py: 'nibble', 'dense',
'planes'), so they need no re-laid-out weights. A faster kernel (LUT, tile-blocked layouts) is added as one
more `QLinearKernel` and one more rule in `RULES`: it may declare `relayout` (packed, scales, zeros ->
the arrays it wants, saved in the target folder at compile time) and its own TE definition and schedule.
Nothing else in the backend changes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from tvm import te, tirx

from compiler.backends.tvm import kernels_cpu as KC
from compiler.backends.tvm import kernels_cuda as KCU
from compiler.backends.tvm import kernels_lut as KL
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
    act: str  # 'a16' | 'a8'
    layout: str  # storage layout of the packed codes
    target: str  # 'cpu' | 'cuda'
    bias: bool = False
    ternary: bool = False  # codes are {0, 1, 2} with zero 1 (2-bit dense storage)


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


def act_quant_a8(x: te.Tensor):
    """Per-token dynamic int8 (the A8 contract): returns (qa int32 [M, K], sa float32 [M])."""
    m, k = x.shape
    r = te.reduce_axis((0, k), name="r")
    amax = te.compute((m,), lambda i: te.max(tirx.abs(x[i, r]), axis=r), name="a8_amax")
    sa = te.compute(
        (m,),
        lambda i: tirx.Select(amax[i] > tirx.const(0, "float32"), amax[i] / tirx.const(127.0, "float32"), tirx.const(1.0, "float32")),
        name="a8_scale",
    )
    lo, hi = tirx.const(-127.0, "float32"), tirx.const(127.0, "float32")
    qa = te.compute((m, k), lambda i, c: tirx.max(tirx.min(tirx.nearbyint(x[i, c] / sa[i]), hi), lo).astype("int32"), name="a8_quant")
    return qa, sa


def qlinear_group_sums(xq: te.Tensor, packed: te.Tensor, zeros: te.Tensor, shape: QLinearShape, name: str = "acc"):
    """acc[m, n, j]: fp32 sums of fp16-rounded x (A16) or int32 sums of qa (A8) against (q - z) per group."""
    m = xq.shape[0]
    g, nj = shape.group, shape.k // shape.group
    kk = te.reduce_axis((0, g), name="kk")
    if shape.act == "a8":

        def body(i, n, j):
            k = j * g + kk
            return te.sum(xq[i, k] * (code_at(packed, shape.bits, shape.layout, n, k) - zeros[n, j].astype("int32")), axis=kk)

        return te.compute((m, shape.n, nj), body, name=name)

    def body16(i, n, j):
        k = j * g + kk
        w = (code_at(packed, shape.bits, shape.layout, n, k) - zeros[n, j].astype("int32")).astype("float32")
        return te.sum(x16(xq, i, k) * w, axis=kk)

    return te.compute((m, shape.n, nj), body16, name=name)


def x16(x: te.Tensor, i, k):
    """x rounded to fp16 (A16 activations), as fp32."""
    return x[i, k].astype("float16").astype("float32")


def qlinear_epilogue(acc: te.Tensor, scales: te.Tensor, sa, bias, shape: QLinearShape):
    m = acc.shape[0]
    j = te.reduce_axis((0, shape.k // shape.group), name="j")
    y = te.compute((m, shape.n), lambda i, n: te.sum(scales[n, j] * acc[i, n, j].astype("float32"), axis=j), name="qlinear")
    return scale_and_bias(y, sa, bias)


def qlinear_te(shape: QLinearShape):
    """The TE function for bb.emit_te: (x, packed, scales, zeros, [bias]) -> y [M, N] for A16, and
    (qa, packed, scales, zeros, sa, [bias]) for A8 (qa, sa from `act_quant_a8`)."""

    def f(x, packed, scales, zeros, *rest):
        rest = list(rest)
        sa = rest.pop(0) if shape.act == "a8" else None
        bias = rest.pop(0) if shape.bias else None
        acc = qlinear_group_sums(x, packed, zeros, shape)
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


def schedule_act_quant(kind: str):
    """Schedule for `act_quant_a8`. CPU: rows in parallel. CUDA: one block of 256 threads per row for the
    max (a cross-thread reduction), one thread per row for the scale, one thread per element for the
    rounding."""

    def sched(func: tirx.PrimFunc) -> tirx.PrimFunc:
        from tvm import s_tir

        sch = s_tir.Schedule(func)
        if kind == "cpu":
            for name in ("a8_amax", "a8_scale", "a8_quant"):
                sch.parallel(sch.get_loops(sch.get_sblock(name))[0])
            return sch.mod["main"].with_attr("tirx.is_scheduled", True)
        i, r = sch.get_loops(sch.get_sblock("a8_amax"))
        k = int(sch.get(r).extent)
        threads = max(d for d in (256, 128, 64, 32, 16, 8, 4, 2, 1) if k % d == 0)
        ri, ro = sch.split(r, factors=[threads, None])
        sch.bind(i, "blockIdx.x")
        sch.bind(ri, "threadIdx.x")
        for name, per_block in (("a8_scale", 32), ("a8_quant", 256)):
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
    if _has_block(sch, "qlinear_out"):
        sch.parallel(sch.get_loops(sch.get_sblock("qlinear_out"))[0])
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
    if _has_block(sch, "qlinear_out"):
        bo, bi = sch.split(sch.fuse(*sch.get_loops(sch.get_sblock("qlinear_out"))), factors=[None, 256])
        sch.bind(bo, "blockIdx.x")
        sch.bind(bi, "threadIdx.x")
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
    if _has_block(sch, "qlinear_out"):
        bo, bi = sch.split(sch.fuse(*sch.get_loops(sch.get_sblock("qlinear_out"))), factors=[None, 256])
        sch.bind(bo, "blockIdx.x")
        sch.bind(bi, "threadIdx.x")
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)


def _has_block(sch, name: str) -> bool:
    try:
        sch.get_sblock(name)
        return True
    except Exception:  # noqa: BLE001 - TVM raises its own error type for a missing block
        return False


# ----------------------------------------------------------------------------------------------------------
# The rule table


@dataclass(frozen=True)
class QLinearKernel:
    name: str
    te_func: Callable[[QLinearShape], Callable]  # shape -> function for bb.emit_te
    schedule: Callable[[tirx.PrimFunc], tirx.PrimFunc]
    # relayout(packed, scales, zeros, shape) -> {"packed": ..., "scales": ..., "zeros": ...} arrays the kernel
    # reads instead of the artifact's (None: it reads the storage layout as is)
    relayout: Callable | None = None
    about: str = ""


BLOCKED_CPU = QLinearKernel(
    "blocked-cpu",
    KC.blocked_te,
    KC.schedule_blocked,
    KC.relayout_blocked,
    about="weights [N/64, K/g, g*bits/8, 64]: dequantize in register, fp32 group sums vectorized over 64 rows "
    "(exact integers for A8), one scale per group, parallel over 64-row blocks, rows looped inside",
)
VNNI_CPU = QLinearKernel(
    "vnni-cpu",
    KC.vnni_te,
    KC.schedule_vnni,
    KC.relayout_vnni,
    about="weights [N/16, K/(4*8/b), 64] (16 rows x 4 k per 32-bit lane group), vpdpbusd int8 x code dot "
    "products into exact int32 group sums (A16: 13-bit activations as low 6 bits + high part, two products), one scale per group",
)
LUT_CPU = QLinearKernel(
    "lut-cpu",
    KL.lut_te,
    KL.schedule_lut,
    KL.relayout_lut,
    about="bit-plane weights [N/64, K/g, g/8, 2, ceil(b/2), 64] index per-row tables of 16 sums of 4 activations (vpshufb on "
    "low/high table bytes, vpmaddubsw adds plane pairs); exact int32 group sums (A16 through 13-bit activations)",
)
DEQUANT_CPU = QLinearKernel("dequant-cpu", qlinear_te, schedule_cpu_simple, about="dequantize in register, group sum in a register, parallel over (m, n/16)")
DEQUANT_CUDA = QLinearKernel("dequant-cuda", qlinear_te, schedule_cuda_simple, about="one thread per output, dequantize in register")
DEQUANT_CUDA_WARP = QLinearKernel("dequant-cuda-warp", qlinear_te, schedule_cuda_warp, about="up to 32 lanes per output over groups, cross-thread reduction")


@dataclass(frozen=True)
class Rule:
    when: Callable[[QLinearShape], bool]
    kernel: QLinearKernel
    about: str = ""


# First match wins. Later sessions put faster kernels (LUT for W2/ternary, tile-blocked GEMV for M = 1 ...)
# above the fallbacks, e.g. Rule(lambda s: s.target == "cpu" and s.bits == 2, LUT_W2_CPU).
# The fast CPU kernels (kernels_cpu.py) re-lay out weights at compile time (tvm-cpu/params.safetensors). They
# are on by default; LOWBIT_TVM_FAST_CPU=0 at compile time keeps every CPU layer on the fallback (to compare).
FAST_CPU_RULES: list[Rule] = [
    Rule(
        lambda s: s.target == "cpu" and s.n % KC.VNNI_ROWS == 0 and s.k % s.group == 0 and KC.vnni_ok(s.bits, s.group)
        and (s.act == "a8" or (s.bits == 4 and s.group % 16 == 0)),
        VNNI_CPU,
        "A8 W4/W2/ternary and A16 W4 on AVX-512 VNNI hosts: exact int32 group sums by vpdpbusd (A16: 13-bit activations as two "
        "int8 parts); at A16 W2/ternary the LUT kernel is faster (fewer instructions per code)",
    ),
    Rule(
        lambda s: s.target == "cpu" and s.n % KL.BLOCK == 0 and s.k % s.group == 0 and KL.lut_ok(s.bits, s.group),
        LUT_CPU,
        "W4/W3/W2/ternary on AVX-512BW hosts: table lookups beat dequantization (compute-bound on code->float); A8 where VNNI is absent",
    ),
    Rule(
        lambda s: s.target == "cpu" and s.bits in (2, 3, 4, 8) and s.n % KC.BLOCK == 0 and s.group % 4 == 0 and s.k % s.group == 0
        and (s.act == "a16" or KC.a8_fp32_exact(s.bits, s.group)),
        BLOCKED_CPU,
        "64-row tiles; any M (rows loop inside a tile); A8 only where fp32 group sums are exact (g*127*(2^b-1) < 2^24)",
    ),
]

RULES: list[Rule] = [
    *(FAST_CPU_RULES if os.environ.get("LOWBIT_TVM_FAST_CPU", "1") != "0" else []),
    Rule(lambda s: s.target == "cpu", DEQUANT_CPU, "fallback for every CPU shape"),
    Rule(KCU.gemm_rule_ok, KCU.GEMM_CUDA, "N % 64 == 0: tiled GEMM for M > 2 (prefill), the GEMV schedule below it (decode), one kernel"),
    Rule(lambda s: s.target == "cuda" and s.k // s.group >= 8, DEQUANT_CUDA_WARP, "enough groups per row to spread over lanes"),
    Rule(lambda s: s.target == "cuda", DEQUANT_CUDA, "fallback for every CUDA shape"),
]


def enable_fast_cpu_kernels() -> None:
    """Put FAST_CPU_RULES at the head of RULES (idempotent)."""
    for r in reversed(FAST_CPU_RULES):
        if r not in RULES:
            RULES.insert(0, r)


def choose_qlinear_kernel(
    m_dynamic: bool, n: int, k: int, bits: int, group: int, act: str, target: str, layout: str = "", bias: bool = False, ternary: bool = False,
    tune: bool | None = None, log: dict | None = None,
) -> tuple[QLinearKernel, QLinearShape]:
    """The first rule whose condition holds for this layer gives its kernel (and the shape it was asked for).
    With `tune` (default: LOWBIT_TVM_TUNE=1) and several fast CPU kernels matching, the fastest one measured
    on this machine wins instead (compiler/backends/tvm/tune.py; cached by shape); `log` collects the times."""
    shape = QLinearShape(m_dynamic, n, k, bits, group, act, layout, target, bias, ternary)
    # LOWBIT_TVM_DISABLE_KERNELS=lut-cpu,vnni-cpu skips kernels by name (benchmarks compare kernels this way)
    disabled = {v.strip() for v in os.environ.get("LOWBIT_TVM_DISABLE_KERNELS", "").split(",") if v.strip()}
    matching = [r.kernel for r in RULES if r.kernel.name not in disabled and r.when(shape)]
    if not matching:
        raise KeyError(f"no qlinear kernel for {shape}")
    if tune is None:
        tune = os.environ.get("LOWBIT_TVM_TUNE", "0") == "1"
    fast = [kern for kern in dict.fromkeys(matching) if kern.relayout is not None]  # the fallbacks are never faster
    if tune and target == "cpu" and len(fast) > 1:
        from compiler.backends.tvm.tune import pick

        return pick(shape, fast, log), shape
    return matching[0], shape
