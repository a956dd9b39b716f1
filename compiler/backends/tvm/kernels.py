"""The qlinear (mpGEMM) kernels and the rule table that picks one per layer.

Every kernel implements the numeric contract (docs/DESIGN.md; the A16/A8/A32 forms are spelled out in
qlinear_te.py) and reads either the artifact's storage layouts directly or weights it re-laid out at compile
time. The kernels that carry A16 activations as 13-bit integers (vnni-cpu, lut-cpu) take no A32 layer (float32
activations as given): their rules say so. A faster kernel (LUT, tile-blocked layouts) is one more `QLinearKernel` here and one more
`Rule` in `rules()`: it may declare `relayout` (packed, scales, zeros -> the arrays it wants, saved in the
target folder at compile time) and brings its own TE definition and schedule. A kernel that takes
scale-and-minimum groups (float minimums in place of the zero points) says so (`mins=True`); no other is
chosen for such a layer. Nothing else in the backend
changes. The rule table is built when asked for (`rules()`), so the knobs that shape it
(LOWBIT_TVM_FAST_CPU, LOWBIT_TVM_DISABLE_KERNELS) are read at compile time, not at import.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Callable

from tvm import tirx

from compiler.backends.tvm import kernels_cpu, kernels_cuda, kernels_lut
from compiler.backends.tvm.qlinear_te import QLinearShape, qlinear_te, schedule_cpu_simple, schedule_cuda_simple, schedule_cuda_warp
from compiler.knobs import TVM_DISABLE_KERNELS, TVM_FAST_CPU
from compiler.quant.floatfmt import E2M1_FORMATS, E4M3_FORMATS

# ----------------------------------------------------------------------------------------------------------
# Kernels


@dataclass(frozen=True)
class QLinearKernel:
    name: str
    te_func: Callable[[QLinearShape], Callable]  # shape -> function for bb.emit_te
    schedule: Callable[[tirx.PrimFunc], tirx.PrimFunc]
    # relayout(packed, scales, zeros, shape) -> {"packed": ..., "scales": ..., "zeros": ...} arrays the kernel
    # reads instead of the artifact's (None: it reads the storage layout as is)
    relayout: Callable | None = None
    about: str = ""
    mins: bool = False  # takes scale-and-minimum groups (QLinearShape.mins); a kernel without it is never chosen for them
    codebook: bool = False  # takes codebook weights (QLinearShape.codebook: the codes index a per-row table)
    # with relayout: code_at(packed, shape, n, k) -> the int32 code q[n, k] read from the re-laid-out codes, and the
    # rows per block of its scales / zeros [N/rows, K/g, rows]: a tied table's embedding rows are read from the head's copy
    code_at: Callable | None = None
    rows: int = 0


BLOCKED_CPU = QLinearKernel(
    "blocked-cpu",
    kernels_cpu.blocked_te,
    kernels_cpu.schedule_blocked,
    kernels_cpu.relayout_blocked,
    code_at=kernels_cpu.blocked_code_at,
    rows=kernels_cpu.BLOCK,
    about="weights [N/64, K/g, g*bits/8, 64]: dequantize in register, fp32 group sums vectorized over 64 rows "
    "(exact integers for A8), one scale per group, parallel over 64-row blocks, rows looped inside; E4M3 codes (fp8, fp8b, "
    "mxfp8) and E2M1 codes (mxfp4, nvfp4) decoded in register through their fp16 bit pattern",
    codebook=True,  # (the E4M3 and E2M1 formats only: its rule says so)
    mins=True,
)
VNNI_CPU = QLinearKernel(
    "vnni-cpu",
    kernels_cpu.vnni_te,
    kernels_cpu.schedule_vnni,
    kernels_cpu.relayout_vnni,
    code_at=kernels_cpu.vnni_code_at,
    rows=kernels_cpu.VNNI_ROWS,
    about="weights [N/16, K/(4*8/b), 64] (16 rows x 4 k per 32-bit lane group), vpdpbusd int8 x code dot "
    "products into exact int32 group sums (A16: 13-bit activations as low 6 bits + high part, two products), one scale per group; "
    "E2M1 codes through a 16-byte table (vpshufb) to 2 v + 12, scale s / 2 and zero point 12",
    mins=True,
    codebook=True,  # (the E2M1 formats only: its rule says so)
)
VNNI_TRIT_CPU = QLinearKernel(
    "vnni-trit-cpu",
    kernels_cpu.trit_te,
    kernels_cpu.schedule_vnni,
    kernels_cpu.relayout_trit,
    code_at=kernels_cpu.trit_code_at,
    rows=kernels_cpu.VNNI_ROWS,
    about="ternary weights at 1.6-1.75 bits: vnni-cpu's blocks with five trits per byte (sum q_h 3^h), each group's last "
    "codes as 2-bit fields; field h of 64 bytes becomes 64 trits by two vpermi2b over a 256-entry table (AVX-512 VBMI), then "
    "vpdpbusd as vnni-cpu (exact int32 group sums; A16 as two products)",
    mins=True,  # (vnni-cpu's group end; ternary layers have none)
)
LUT_CPU = QLinearKernel(
    "lut-cpu",
    kernels_lut.lut_te,
    kernels_lut.schedule_lut,
    kernels_lut.relayout_lut,
    code_at=kernels_lut.lut_code_at,
    rows=kernels_lut.BLOCK,
    about="bit-plane weights [N/64, K/g, g/8, 2, ceil(b/2), 64] index per-row tables of 16 sums of 4 activations (vpshufb on "
    "low/high table bytes, vpmaddubsw adds plane pairs); exact int32 group sums (A16 through 13-bit activations)",
    mins=True,
)
DEQUANT_CPU = QLinearKernel(
    "dequant-cpu", qlinear_te, schedule_cpu_simple, about="dequantize in register (codebook: a lookup in the row's table), group sum in a register, "
    "parallel over (m, n/16)", mins=True, codebook=True
)
DEQUANT_CUDA = QLinearKernel("dequant-cuda", qlinear_te, schedule_cuda_simple, about="one thread per output, dequantize in register", mins=True, codebook=True)
DEQUANT_CUDA_WARP = QLinearKernel(
    "dequant-cuda-warp", qlinear_te, schedule_cuda_warp, about="up to 32 lanes per output over groups, cross-thread reduction", mins=True, codebook=True
)
GEMM_CUDA = QLinearKernel("gemm-cuda", kernels_cuda.gemm_te, kernels_cuda.schedule_gemm, about=kernels_cuda.ABOUT, mins=True)


# ----------------------------------------------------------------------------------------------------------
# The rule table


@dataclass(frozen=True)
class Rule:
    when: Callable[[QLinearShape], bool]
    kernel: QLinearKernel
    about: str = ""


# First match wins. The fast CPU kernels (kernels_cpu.py, kernels_lut.py) re-lay out weights at compile time
# (tvm-cpu/params.safetensors); with LOWBIT_TVM_FAST_CPU=0 every CPU layer takes the fallback (to compare).
FAST_CPU_RULES: list[Rule] = [
    Rule(
        lambda s: s.target == "cpu" and s.n % kernels_cpu.VNNI_ROWS == 0 and s.k % s.group == 0 and s.act == "a8" and kernels_cpu.trit_ok(s),
        VNNI_TRIT_CPU,
        "ternary A8 on AVX-512 VNNI + VBMI hosts: 1.6 bits per weight at per-channel scales (1.75 at g128) against vnni-cpu's "
        "2, the same sums; 1.16-1.3x faster at 1 thread on Zen 5",
    ),
    Rule(
        lambda s: s.target == "cpu" and s.n % kernels_cpu.VNNI_ROWS == 0 and s.k % s.group == 0 and kernels_cpu.vnni_ok(s.bits, s.group)
        and (not s.codebook or s.fp in E2M1_FORMATS)
        and (s.act == "a8" or (s.act == "a16" and kernels_cpu.vnni_a16_exact(s.bits, s.group))),
        VNNI_CPU,
        "A8 and A16 W8/W4/W2/ternary/MXFP4/NVFP4 on AVX-512 VNNI hosts: exact int32 group sums by vpdpbusd (E2M1 codes looked "
        "up as 2 v + 12 by vpshufb; A16: 13-bit activations as two int8 parts, so not A32; W8 groups up to 1024); with 8 KB "
        "of prefetch it streams at 0.9-1.0 of the read bandwidth, where the LUT kernel is compute-bound at W2/ternary A16",
    ),
    Rule(
        lambda s: s.target == "cpu" and s.n % kernels_cpu.VNNI_ROWS == 0 and s.k % s.group == 0 and s.act == "a16" and kernels_cpu.trit_ok(s),
        VNNI_TRIT_CPU,
        "ternary A16: after vnni-cpu, a candidate for --tune (its two products per code make it compute-bound at one "
        "thread: 0.95-1.04x of vnni-cpu on Zen 5)",
    ),
    Rule(
        lambda s: s.target == "cpu" and s.act != "a32" and s.n % kernels_lut.BLOCK == 0 and s.k % s.group == 0 and kernels_lut.lut_ok(s.bits, s.group),
        LUT_CPU,
        "W3, and W4/W2/ternary where VNNI is absent, on AVX-512BW hosts: table lookups beat dequantization (compute-bound on "
        "code->float); "
        "not A32 (its A16 is 13-bit activations)",
    ),
    Rule(
        lambda s: s.target == "cpu" and s.bits in (2, 3, 4, 8) and s.n % kernels_cpu.BLOCK == 0 and s.group % 4 == 0 and s.k % s.group == 0
        and (not s.codebook or s.fp in (*E4M3_FORMATS, *E2M1_FORMATS, "nf4")) and (s.act != "a8" or s.codebook or kernels_cpu.a8_fp32_exact(s.bits, s.group)),
        BLOCKED_CPU,
        "64-row tiles; any M (rows loop inside a tile); A16 and A32 (float activations); A8 only where fp32 group sums are exact "
        "(g*127*(2^b-1) < 2^24); of the codebook weights, the E4M3 and E2M1 formats (decoded in register through an fp16 bit "
        "pattern; fp32 sums, as the contract's)",
    ),
]

# the CPU fallback and the CUDA kernels, after the fast CPU rules
BASE_RULES: list[Rule] = [
    Rule(lambda s: s.target == "cpu", DEQUANT_CPU, "fallback for every CPU shape"),
    Rule(kernels_cuda.gemm_rule_ok, GEMM_CUDA, "N % 64 == 0: tiled GEMM for M > 2 (prefill), the GEMV schedule below it (decode), one kernel"),
    Rule(lambda s: s.target == "cuda" and s.k // s.group >= 8, DEQUANT_CUDA_WARP, "enough groups per row to spread over lanes"),
    Rule(lambda s: s.target == "cuda", DEQUANT_CUDA, "fallback for every CUDA shape"),
]


def rules(fast_cpu: bool | None = None, disabled: Iterable[str] | None = None) -> list[Rule]:
    """The rule table, first match wins: FAST_CPU_RULES unless `fast_cpu` is false (default: LOWBIT_TVM_FAST_CPU),
    then BASE_RULES; without the rules of the kernels named in `disabled` (default: LOWBIT_TVM_DISABLE_KERNELS,
    e.g. lut-cpu,vnni-cpu: benchmarks compare kernels this way)."""
    if fast_cpu is None:
        fast_cpu = TVM_FAST_CPU.get()
    off = set(TVM_DISABLE_KERNELS.get() if disabled is None else disabled)
    return [r for r in (*(FAST_CPU_RULES if fast_cpu else ()), *BASE_RULES) if r.kernel.name not in off]


def qlinear_shape(
    m_dynamic: bool, n: int, k: int, bits: int, group: int, act: str, target: str, layout: str = "", bias: bool = False, ternary: bool = False,
    mins: bool = False, f16_params: bool = False, codebook: bool = False, fp: str = "",
) -> QLinearShape:
    """A layer's QLinearShape, from the arguments in choose_qlinear_kernel's order."""
    return QLinearShape(m_dynamic, n, k, bits, group, act, layout, target, bias, ternary, mins, f16_params, codebook, fp)


def rule_holds(rule: Rule, shape: QLinearShape) -> bool:
    """The rule's condition, and for scale-and-minimum groups (codebook weights) its kernel must take minimums (tables)."""
    return (rule.kernel.mins or not shape.mins) and (rule.kernel.codebook or not shape.codebook) and rule.when(shape)


def matching_kernels(shape: QLinearShape, table: list[Rule] | None = None) -> list[QLinearKernel]:
    """The kernels of every rule of `table` (default: `rules()`) whose condition holds for `shape` (`rule_holds`),
    in rule order, each once; KeyError when none does."""
    found = list(dict.fromkeys(r.kernel for r in (rules() if table is None else table) if rule_holds(r, shape)))
    if not found:
        raise KeyError(f"no qlinear kernel for {shape}")
    return found


def choose_qlinear_kernel(
    m_dynamic: bool, n: int, k: int, bits: int, group: int, act: str, target: str, layout: str = "", bias: bool = False, ternary: bool = False,
    table: list[Rule] | None = None, mins: bool = False,
) -> tuple[QLinearKernel, QLinearShape]:
    """The kernel of the first rule whose condition holds for this layer, and the shape it was asked for.
    (The lowering may measure instead where several fast CPU kernels match: lower.choose_kernel.)"""
    shape = qlinear_shape(m_dynamic, n, k, bits, group, act, target, layout, bias, ternary, mins)
    return matching_kernels(shape, table)[0], shape
