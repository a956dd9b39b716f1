"""Latency and rooflines per layer, prefill and decode, for a model on an accelerator design (simulated by
hwsim) and on CPUs/GPUs described by peak operations and memory bandwidth (LLM-Viewer style: every number
traces to an input below).

Layers: the quantized linears of a model, as plain data (`Linear`: role, N, K, count and weight format).
`model_linears_from_config` derives them from a model's config.json fields and one weight format (tests check
them against compiler.frontend's graph); the caller resolves MODEL and the quant spec (runtime/shapes.py,
which also reads a compiled artifact's qlinear nodes). Bytes per layer count what a kernel must move: packed
weight codes, per-group scales and zero points, activations in and outputs out. Formats:
- CPU/GPU kernels: codes at b bits, scales fp16 (2 B), zero points at b bits per group; activations int8
  (A8, plus one fp32 scale per row) or fp16 (A16); outputs fp16.
- accelerators: the array's formats (hwsim.memory): codes b bits, zero b + dyadic mantissa 16 + shift 5
  bits per group, activations AW bits (+ BFP exponent offsets for A16), outputs fp16.
Attention score/context matmuls, norms and activations are not linears: they run on the host in the
accelerator flow and are left out of these totals (the report says so); float (unquantized) linears such
as a tied lm_head are listed separately.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from compiler.errors import LowbitError
from compiler import kvformat


@dataclass
class Linear:
    name: str  # role, e.g. "mlp.down_proj"
    N: int
    K: int
    count: int  # how many layers of the model have this role and shape
    bits: int
    group: int
    act: str
    ternary: bool = False
    mins: bool = False  # scale-and-minimum groups: a minimum per group (stored like the scale) instead of a zero point
    sub_bits: int = 0  # two-level scales: sub_bits per group plus an fp16 per 256 weights along K (else an fp16 per group)
    sparse: int = 0  # dense-and-sparse: outliers per output row, 4 bytes each (fp16 value, int16 column), on the host
    codebook: bool = False  # codebook weights: 2^bits fp16 table entries per row in place of scales and zero points
    fp: str = ""  # a 4-bit float format (mxfp4 / nvfp4: an 8-bit scale per group, nf4: fp16), its table shared

    @property
    def params(self) -> int:
        return self.N * self.K * self.count


@dataclass
class ModelLinears:
    model: str
    family: str
    quant: str
    linears: list[Linear]
    float_linears: list[tuple[str, int, int]] = field(default_factory=list)  # (name, N, K) left on the host
    source: str = ""
    kv: dict | None = None  # causal LMs: {"layers", "kv_heads", "head_dim", "format"} of the KV cache (decode_vs_context)
    block: dict | None = None  # one transformer block's shape for the vector unit and attention costs (block_of)


def block_of(family: str, cfg: dict) -> dict | None:
    """One block's widths (hidden, heads, kv_heads, head_dim, inter), its norm and gate units and its layer count,
    from config.json-style fields; None for a family without a table."""
    if family not in ("llama", "bert"):
        return None
    h, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    llama = family == "llama"
    return {"hidden": h, "heads": heads, "kv_heads": cfg.get("num_key_value_heads", heads) if llama else heads,
            "head_dim": (cfg.get("head_dim") or h // heads) if llama else h // heads, "inter": cfg["intermediate_size"],
            "layers": cfg["num_hidden_layers"], "norm": "rmsnorm" if llama else "layernorm", "gate": "silu" if llama else "gelu",
            "causal": llama}


def linears_from_config(family: str, cfg: dict) -> tuple[list[tuple[str, int, int, int]], list[tuple[str, int, int]]]:
    """(role, N, K, count) of the linears compiler.frontend marks for quantization, and the float ones."""
    h, inter, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    if family == "llama":
        heads, kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
        hd = cfg.get("head_dim") or h // heads
        q = [
            ("self_attn.q_proj", heads * hd, h, L),
            ("self_attn.k_proj", kv * hd, h, L),
            ("self_attn.v_proj", kv * hd, h, L),
            ("self_attn.o_proj", h, heads * hd, L),
            ("mlp.gate_proj", inter, h, L),
            ("mlp.up_proj", inter, h, L),
            ("mlp.down_proj", h, inter, L),
        ]
        return q, [("lm_head", cfg["vocab_size"], h)]
    if family == "bert":
        q = [
            ("attention.self.query", h, h, L),
            ("attention.self.key", h, h, L),
            ("attention.self.value", h, h, L),
            ("attention.output.dense", h, h, L),
            ("intermediate.dense", inter, h, L),
            ("output.dense", h, inter, L),
        ]
        return q, []
    raise LowbitError(f"model family '{family}' has no linear-layer table", "use a llama or bert model")


def model_linears_from_config(name: str, family: str, config: dict, *, bits: int, group: int, act: str, ternary: bool = False,
                              quant: str = "", source: str = "") -> ModelLinears:
    """The quantized linears of a model described by its config.json-style fields (`linears_from_config`)
    in one weight format: `bits`, `group` (0: one group per output row, spanning all K), `act` (a8 | a16),
    `ternary`. `quant` names the format in reports; `source` says where the config came from."""
    try:
        q, fl = linears_from_config(family, config)
    except (KeyError, TypeError) as e:
        raise LowbitError(f"config of model '{name}' lacks a field the layer table needs ({e})",
                          "pass a Llama or BERT Hugging Face folder with a complete config.json") from None
    lins = []
    for role, n, k, cnt in q:
        g = k if group == 0 else group
        if k % g:
            raise LowbitError(f"layer {role} has K={k}, not a multiple of group {g}", "choose a group size that divides K")
        lins.append(Linear(role, n, k, cnt, bits, g, act, ternary))
    kv = None
    if family == "llama":
        heads = config["num_attention_heads"]
        kv = {"layers": config["num_hidden_layers"], "kv_heads": config.get("num_key_value_heads", heads),
              "head_dim": config.get("head_dim") or config["hidden_size"] // heads, "format": "f32"}
    return ModelLinears(name, family, quant, lins, fl, source, kv, block_of(family, config))


# ----------------------------------------------------------------------------------------------------
# The KV cache (compiler.kvformat's formats; fp16 as vLLM / llama.cpp default, f32 as lowbit's float cache)

KV_FORMATS = ("f32", "fp16", "fp8", "int8", "int4", "int2")  # compiler.kvformat's names; the report's rows
kv_bytes_per_token = kvformat.kv_bytes_per_token  # codes plus an fp16 scale per group, the compiler's own count


def decode_vs_context(ml: ModelLinears, plat: "Platform", contexts=(512, 2048, 8192), formats=None) -> list[dict]:
    """Decode roofline per token at each context length: the quantized linears' bytes (kernel_bytes at M = 1) plus
    the KV cache read by attention (context x bytes per token), over the platform's bandwidth; the attention's
    flops (4 x context x heads x head_dim per layer) are far below its bytes' time on every platform here."""
    if ml.kv is None:
        return []
    if formats is None:  # the common formats, and the model's own when it is another (options such as -g64 change the bytes)
        own = str(kvformat.parse_kv(ml.kv.get("format", "f32")))
        formats = KV_FORMATS + ((own,) if own not in KV_FORMATS else ())
    w = sum(lin.count * kernel_bytes(lin, 1)["total"] for lin in ml.linears)
    rows = []
    for fmt in formats:
        per = kv_bytes_per_token(ml.kv["layers"], ml.kv["kv_heads"], ml.kv["head_dim"], fmt)
        for ctx in contexts:
            total = w + ctx * per
            rows.append({"platform": plat.name, "kv": fmt, "context": ctx, "kv_bytes_per_token": per, "weight_bytes": w,
                         "kv_bytes": ctx * per, "time_s": total / plat.bandwidth, "kv_share": ctx * per / total})
    return rows


# ----------------------------------------------------------------------------------------------------
# Platforms


@dataclass
class Platform:
    name: str
    int8_ops: float  # peak int8 ops/s (2 per MAC)
    fp16_ops: float  # peak fp16 ops/s
    bandwidth: float  # bytes/s
    source: str
    fp8_ops: float = 0.0  # peak FP8 ops/s (0: no FP8 units; AFP8 then runs at the fp16 rate)

    def peak(self, act: str) -> float:
        if act in ("afp8", "amxfp4"):  # (FP4 activations: no FP4 units on these platforms, the FP8 rate)
            return self.fp8_ops or self.fp16_ops
        return self.int8_ops if act in ("a8", "amx8") else self.fp16_ops


PLATFORMS = {
    "h100-sxm": Platform("NVIDIA H100 SXM5", 1979e12, 989.4e12, 3.35e12,
                         "NVIDIA H100 Tensor Core GPU datasheet: dense INT8 1,979 TOPS, FP8 1,979 TFLOPS, FP16 989.4 TFLOPS (no sparsity), HBM3 3.35 TB/s", 1979e12),
    "h200": Platform("NVIDIA H200 SXM", 1979e12, 989.4e12, 4.8e12,
                     "NVIDIA H200 datasheet: same Hopper tensor cores as H100 SXM, HBM3e 4.8 TB/s", 1979e12),
    "rtx4090": Platform("NVIDIA RTX 4090", 660.6e12, 165.2e12, 1.008e12,
                        "NVIDIA Ada whitepaper: dense INT8 660.6 TOPS, FP8 and FP16 (fp32 accumulate) 330.3 and 165.2 TFLOPS, GDDR6X 1,008 GB/s", 330.3e12),
}

_MEASURED: dict = {}


def measure_this_cpu(seconds: float = 0.6) -> Platform:
    """This machine, measured now: read bandwidth (numpy max over a 256 MiB float64 array, best of runs) and
    peak arithmetic (numpy float32 matmul 1024^3, best of runs; used for both int8 and fp16 since no
    low-bit CPU kernel beats BLAS fp32 here by a known factor). Cached for the process."""
    if "cpu" in _MEASURED:
        return _MEASURED["cpu"]
    import os

    a = np.ones(256 * 1024 * 1024 // 8, dtype=np.float64)
    best_bw = 0.0
    t_end = time.time() + seconds
    while time.time() < t_end or best_bw == 0:
        t0 = time.perf_counter()
        a.max()
        best_bw = max(best_bw, a.nbytes / (time.perf_counter() - t0))
    del a
    x = np.random.default_rng(0).standard_normal((1024, 1024), dtype=np.float32)
    best_fl = 0.0
    t_end = time.time() + seconds
    while time.time() < t_end or best_fl == 0:
        t0 = time.perf_counter()
        x @ x
        best_fl = max(best_fl, 2 * 1024**3 / (time.perf_counter() - t0))
    th = os.environ.get("OMP_NUM_THREADS", "default")
    p = Platform("this CPU (measured)", best_fl, best_fl, best_bw,
                 f"measured on this machine: numpy max over 256 MiB (read bandwidth) and float32 1024^3 matmul (OMP_NUM_THREADS={th})")
    _MEASURED["cpu"] = p
    return p


def platform(name: str) -> Platform:
    if name == "this-cpu":
        return measure_this_cpu()
    if name not in PLATFORMS:
        raise LowbitError(f"unknown platform '{name}'", f"use this-cpu or {', '.join(PLATFORMS)}")
    return PLATFORMS[name]


# ----------------------------------------------------------------------------------------------------
# Per-layer traffic and roofline


def kernel_bytes(lin: Linear, M: int) -> dict:
    """Bytes a CPU/GPU kernel moves for one layer at M rows (weights incl. scales and zero points)."""
    ng = lin.K // lin.group
    codes = lin.N * lin.K * lin.bits / 8
    scales = lin.N * (ng * lin.sub_bits / 8 + -(-lin.K // 256) * 2) if lin.sub_bits else lin.N * ng * 2
    zeros = scales if lin.mins else lin.N * ng * lin.bits / 8
    if lin.fp:
        scales, zeros = lin.N * ng * {"nf4": 2, "fp8": 4, "fp8b": 4 / 128}.get(lin.fp, 1), 0  # fp16 / fp32 scales (fp8b: per 128 rows); E8M0 and E4M3 a byte
    elif lin.codebook:
        scales, zeros = lin.N * (1 << lin.bits) * 2, 0
    if lin.act in ("amx8", "amxfp4"):  # MX: 8 or 4 bits per activation and an E8M0 byte per 32
        acts = M * lin.K * (1 if lin.act == "amx8" else 0.5) + M * lin.K / 32
    else:
        byte_acts = lin.act in ("a8", "afp8")  # one byte per activation and a float32 scale per token
        acts = M * lin.K * (1 if byte_acts else 2) + (M * 4 if byte_acts else 0)
    outs = M * lin.N * 2
    sparse = lin.N * lin.sparse * 4
    return {"codes": codes, "scales": scales, "zeros": zeros, "sparse": sparse, "acts": acts, "outs": outs,
            "total": codes + scales + zeros + sparse + acts + outs}


def roofline_time(lin: Linear, M: int, plat: Platform) -> dict:
    ops = 2 * M * lin.N * lin.K
    b = kernel_bytes(lin, M)
    t_c = ops / plat.peak(lin.act)
    t_m = b["total"] / plat.bandwidth
    return {"ops": ops, "bytes": b["total"], "intensity": ops / b["total"], "t_compute_s": t_c, "t_memory_s": t_m,
            "time_s": max(t_c, t_m), "bound": "compute" if t_c >= t_m else "memory",
            "scale_zero_bytes": b["scales"] + b["zeros"], "sparse_bytes": b["sparse"]}


def design_peak_ops(cfg, clock_ghz: float) -> float:
    return 2 * cfg.macs_per_beat / cfg.cycles_per_beat * clock_ghz * 1e9


def linear_dict(lin: Linear) -> dict:
    return asdict(lin)
