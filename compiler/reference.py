"""Reference semantics of the IR in numpy: what every op computes, and the numeric contract for qlinear.

This is the `ref` backend's engine and the calibration engine of the quantizers (GPTQ runs the float graph
block by block through it). Float ops run in float32. qlinear follows the numeric contract (docs/DESIGN.md) exactly:
one (integer or fp32) sum per weight group, then one dequantization per group.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import numpy as np

from compiler.errors import LowbitError
from compiler.ir import Graph, Node
from compiler.quant.spec import CODED_ACTS

KERNELS: dict[str, Callable] = {}


def kernel(name):
    def deco(fn):
        KERNELS[name] = fn
        return fn

    return deco


# ----------------------------------------------------------------------------------------------------------
# qlinear: the numeric contract


def quantize_activations_a8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-token dynamic int8: sa = max|x| / 127 per row (1 for an all-zero row), qa = clamp(round(x/sa))."""
    amax = np.abs(x).max(axis=-1, keepdims=True).astype(np.float32)
    sa = np.where(amax > 0, amax / np.float32(127.0), np.float32(1.0)).astype(np.float32)
    qa = np.clip(np.rint(x / sa), -127, 127).astype(np.int8)
    return qa, sa[..., 0]


def quantize_activations_fp8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-token dynamic FP8 E4M3: sa = max|x| / 448 per row (1 for an all-zero row), xa = E4M3(x / sa), the
    nearest E4M3 value, ties to even, saturating at 448; xa is float32 holding E4M3 values."""
    from compiler.quant.floatfmt import E4M3_MAX, e4m3

    amax = np.abs(x).max(axis=-1, keepdims=True).astype(np.float32)
    sa = np.where(amax > 0, amax / np.float32(E4M3_MAX), np.float32(1.0)).astype(np.float32)
    y = (x.astype(np.float32) / sa).astype(np.float32)
    r = e4m3(np.abs(y))
    return np.where(y < 0, -r, r).astype(np.float32), sa[..., 0]


def group_sums(xg: np.ndarray, wg: np.ndarray, exact_int: bool) -> np.ndarray:
    """acc[j, m, n] = sum_k xg[j, m, k] * wg[j, k, n] for every group j.

    With exact_int (A8) the operands are integers; the float32 BLAS sum is exact while every partial sum
    stays below 2^24, which `int_sum_fits_f32` checks, otherwise float64 (exact below 2^53) is used."""
    if exact_int and not int_sum_fits_f32(xg.shape[-1], 127, int(np.abs(wg).max(initial=0))):
        return np.matmul(xg.astype(np.float64), wg.astype(np.float64))
    return np.matmul(xg, wg)


def int_sum_fits_f32(group: int, amax: int, wmax: int) -> bool:
    return group * amax * wmax < (1 << 24)


class QLinearWeights:
    """A qlinear's weights prepared for numpy: integer weights (codes - zeros) as float32 [J, g, N] (codebook
    weights: the table entries the codes index), and for scale-and-minimum groups the minimums [J, N]."""

    def __init__(self, packed, scales, offsets, attrs):
        from compiler.quant.pack import unpack

        n, k, g = attrs["n"], attrs["k"], attrs["group_size"]
        codes = unpack(packed, attrs["bits"], attrs["layout"], k)
        self.exact = not attrs.get("codebook")  # integer weights (exact A8 sums), or table values (fp32 sums)
        if attrs.get("codebook"):
            t = np.broadcast_to(np.asarray(offsets, np.float32), (n, offsets.shape[1]))  # a per-row or shared table
            w = np.take_along_axis(t, codes.astype(np.int64), axis=1)
            self.mins_t = None
        elif attrs.get("mins"):
            w = codes.astype(np.int16)
            self.mins_t = np.ascontiguousarray(np.asarray(offsets, np.float32).T)  # [J, N]
        else:
            w = codes.astype(np.int16) - np.repeat(offsets.astype(np.int16), g, axis=1)
            self.mins_t = None
        self.wg = np.ascontiguousarray(w.reshape(n, k // g, g).transpose(1, 2, 0)).astype(np.float32)
        self.scales_t = np.ascontiguousarray(scales.T)  # [J, N]
        self.group = g
        self.wmax = int(np.ceil(np.abs(w).max(initial=0)))

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Dequantized rows [.., K] of the table (qembedding): w = s (q - z), or s q + m."""
        j, g, _ = self.wg.shape
        w = self.wg[:, :, ids].transpose(*range(2, 2 + ids.ndim), 0, 1)  # [.., J, g]
        s = self.scales_t[:, ids].transpose(*range(1, 1 + ids.ndim), 0)[..., None]
        y = w * s
        if self.mins_t is not None:
            y = y + self.mins_t[:, ids].transpose(*range(1, 1 + ids.ndim), 0)[..., None]
        return y.reshape(*ids.shape, j * g).astype(np.float32)


def qlinear_acc(x2: np.ndarray, w: QLinearWeights, act: str) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Per-group sums acc [J, M, N] (float32, or float64 when an A8 sum could exceed 2^24), the per-token
    activation scale (A8, AFP8) or None (A16, A32, AMX8, AMXFP4), and for scale-and-minimum groups the per-group
    activation sums xs [J, M] (of qa for A8, exact; of the E4M3 / MX values for AFP8 / AMX*; of the fp16 activations
    for A16; of the float32 activations for A32), else None."""
    m, k = x2.shape
    j, g = k // w.group, w.group
    if act == "a8":
        qa, sa = quantize_activations_a8(x2)
        xg = qa.astype(np.float32).reshape(m, j, g).transpose(1, 0, 2)
        xs = xg.sum(axis=2) if w.mins_t is not None else None  # |sum| <= 127 g: exact in float32
        return group_sums(xg, w.wg, exact_int=w.exact), sa, xs
    if act in CODED_ACTS:  # E4M3 / MX values (scale folded in for MX) times the weights, summed in float32 like A32
        if act == "afp8":
            xa, sa = quantize_activations_fp8(x2)
        else:
            from compiler.quant.floatfmt import mx_activations

            xa, sa = mx_activations(x2, act), None
        xg = xa.reshape(m, j, g).transpose(1, 0, 2)
        xs = xg.sum(axis=2, dtype=np.float32) if w.mins_t is not None else None
        return np.matmul(xg, w.wg), sa, xs
    # A16: activations are fp16 values; A32: float32 as given (weight-only quantization)
    xf = x2.astype(np.float32) if act == "a32" else x2.astype(np.float16).astype(np.float32)
    xg = xf.reshape(m, j, g).transpose(1, 0, 2)
    xs = xg.sum(axis=2, dtype=np.float32) if w.mins_t is not None else None
    return np.matmul(xg, w.wg), None, xs


ACC_BYTES = 1 << 28  # bound on the per-group accumulators [J, rows, N] of one qlinear call: rows are done in chunks


def qlinear(x: np.ndarray, w: QLinearWeights, act: str, bias: np.ndarray | None = None) -> np.ndarray:
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    j, n = w.scales_t.shape
    rows = max(1, ACC_BYTES // (8 * j * n))  # (a long prompt through a large head: 18 groups x 4096 rows x 49152 would be 14 GB)
    if x2.shape[0] > rows:  # every output row depends on its own input row only: the same numbers, chunk by chunk
        return np.concatenate([qlinear(x2[r : r + rows], w, act, bias) for r in range(0, x2.shape[0], rows)]).reshape(*lead, -1)
    acc, sa, xs = qlinear_acc(x2, w, act)
    y = np.zeros(acc.shape[1:], np.float32)
    for j in range(acc.shape[0]):  # one dequantization per group, accumulated over the groups in order
        y += acc[j].astype(np.float32) * w.scales_t[j]
        if xs is not None:
            y += xs[j][:, None] * w.mins_t[j]
    if sa is not None:
        y = y * sa[:, None]
    if bias is not None:
        y = y + bias
    return y.astype(np.float32).reshape(*lead, -1)


# ----------------------------------------------------------------------------------------------------------
# float ops


@kernel("embedding")
def _embedding(ins, a, _):
    ids, table = ins
    return [table[ids].astype(np.float32)]


@kernel("linear")
def _linear(ins, a, _):
    y = ins[0] @ ins[1].T
    if len(ins) == 3:
        y = y + ins[2]
    return [y.astype(np.float32)]


@kernel("matmul")
def _matmul(ins, a, _):
    return [np.matmul(ins[0], ins[1]).astype(np.float32)]


@kernel("rmsnorm")
def _rmsnorm(ins, a, _):
    x, w = ins
    var = np.mean(x * x, axis=-1, keepdims=True)
    return [(x / np.sqrt(var + np.float32(a["eps"])) * w).astype(np.float32)]


@kernel("layernorm")
def _layernorm(ins, a, _):
    x, w, b = ins
    mu = x.mean(axis=-1, keepdims=True)
    d = x - mu
    var = np.mean(d * d, axis=-1, keepdims=True)
    return [(d / np.sqrt(var + np.float32(a["eps"])) * w + b).astype(np.float32)]


def rope_inv_freq(dim: int, theta: float, scaling: dict | None) -> np.ndarray:
    """Inverse frequencies [dim/2] in float64, with Llama 3's frequency-dependent scaling when configured."""
    inv = 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    if scaling and scaling.get("rope_type", scaling.get("type")) == "llama3":
        factor = scaling["factor"]
        lo, hi = scaling.get("low_freq_factor", 1.0), scaling.get("high_freq_factor", 4.0)
        old = scaling.get("original_max_position_embeddings", 8192)
        wavelen = 2 * math.pi / inv
        lo_wl, hi_wl = old / lo, old / hi
        smooth = (old / wavelen - lo) / (hi - lo)
        scaled = np.where(wavelen > lo_wl, inv / factor, inv)
        mid = (wavelen <= lo_wl) & (wavelen >= hi_wl)
        inv = np.where(mid, (1 - smooth) * inv / factor + smooth * inv, scaled)
    elif scaling and scaling.get("rope_type", scaling.get("type")) == "linear":
        inv = inv / scaling["factor"]
    return inv


@kernel("rope")
def _rope(ins, a, _):
    x, pos = ins
    d = x.shape[-1]
    inv = rope_inv_freq(d, a["theta"], a.get("scaling"))
    ang = pos.astype(np.float64)[:, None] * inv[None, :]
    cos = np.cos(np.concatenate([ang, ang], -1)).astype(np.float32)[:, None, :]
    sin = np.sin(np.concatenate([ang, ang], -1)).astype(np.float32)[:, None, :]
    half = d // 2
    rot = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return [(x * cos + rot * sin).astype(np.float32)]


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


@kernel("attention")
def _attention(ins, a, _):
    q, k, v = ins
    s, h, d = q.shape
    t, hk, _ = k.shape
    rep = h // hk
    # Group query heads by the KV head they share (GQA) instead of copying K and V.
    qg = q.reshape(s, hk, rep, d).transpose(1, 2, 0, 3)  # [hk, rep, S, D]
    scores = np.matmul(qg, k.transpose(1, 2, 0)[:, None]) * np.float32(a["scale"])  # [hk, rep, S, T]
    if a["causal"]:
        # Query i sits at absolute position (t - s) + i; it sees keys 0 .. (t - s) + i.
        allowed = np.arange(t)[None, :] <= (t - s) + np.arange(s)[:, None]
        scores = np.where(allowed, scores, np.float32(-np.inf))
    p = softmax(scores)
    out = np.matmul(p, v.transpose(1, 0, 2)[:, None])  # [hk, rep, S, D]
    return [out.transpose(2, 0, 1, 3).reshape(s, h, d).astype(np.float32)]


@kernel("kv_write")
def _kv_write(ins, a, _):
    # Writes into the fed cache array itself: the caller allocates the cache once and passes it every step.
    cache, new, pos = ins
    if pos.size and (pos.min() < 0 or pos.max() >= cache.shape[0]):
        raise LowbitError(f"position {int(pos.max())} is past the KV cache's {cache.shape[0]} rows", "generate fewer --tokens, or use a shorter prompt")
    dt = np.float16 if cache.dtype == np.float16 else np.float32  # an fp16 cache (--kv fp16) stays fp16
    if not cache.flags.writeable or cache.dtype != dt:
        cache = np.array(cache, dt)
    cache[pos] = new.astype(dt)  # (float32 -> fp16: round to nearest even)
    return [cache]


@kernel("cache_attention")
def _cache_attention(ins, a, _):
    # Rows past the last position are never read; with contiguous positions ending at T - 1 this is
    # `attention` (causal) over the first T rows, bit for bit.
    q, kc, vc, pos = ins
    t = int(pos.max()) + 1
    k, v = kc[:t].astype(np.float32, copy=False), vc[:t].astype(np.float32, copy=False)
    s = q.shape[0]
    if np.array_equal(pos, np.arange(t - s, t)):
        return _attention([q, k, v], {"causal": True, "scale": a["scale"]}, None)
    h, d = q.shape[1:]
    hk = k.shape[1]
    qg = q.reshape(s, hk, h // hk, d).transpose(1, 2, 0, 3)
    scores = np.matmul(qg, k.transpose(1, 2, 0)[:, None]) * np.float32(a["scale"])
    scores = np.where(np.arange(t)[None, :] <= pos[:, None], scores, np.float32(-np.inf))
    out = np.matmul(softmax(scores), v.transpose(1, 0, 2)[:, None])
    return [out.transpose(2, 0, 1, 3).reshape(s, h, d).astype(np.float32)]


E4M3_MAX = 448.0


def e4m3_encode(y: np.ndarray) -> np.ndarray:
    """OCP FP8 E4M3 codes of float32 y (compiler.quant.floatfmt.e4m3_encode)."""
    from compiler.quant.floatfmt import e4m3_encode as encode

    return encode(y)


def e4m3_table() -> np.ndarray:
    """The float32 value of each of the 256 E4M3 codes, NaN at 0x7f and 0xff (compiler.quant.floatfmt.e4m3_table)."""
    from compiler.quant.floatfmt import e4m3_table as tab

    return tab()


def _kv_quantize(x: np.ndarray, bits: int, group: int, code: str = "int") -> tuple[np.ndarray, np.ndarray]:
    """(codes, scales) of rows x f32[S, H, D] in the quantized cache's forms (compiler.passes.kv_quant)."""
    s_, h, d = x.shape
    xg = x.reshape(s_, h, d // group, group)
    if code == "e4m3":  # s = fp16(max |x| / 448), codes e4m3(clamp(x / s, +-448))
        sc = (np.abs(xg).max(axis=-1) / np.float32(E4M3_MAX)).astype(np.float16)
        safe = np.where(sc > 0, sc.astype(np.float32), np.float32(1))
        y = np.clip(xg / safe[..., None], np.float32(-E4M3_MAX), np.float32(E4M3_MAX))
        return e4m3_encode(y).reshape(s_, h, d), sc
    if bits == 2:
        # four levels (q - 1.5) s, q in 0..3, no zero: s = fp16(max |x| / 1.5); packed four to a byte per 64 values,
        # byte i holding elements i, i + 16, i + 32, i + 48 at bits 0, 2, 4, 6
        sc = (np.abs(xg).max(axis=-1) / np.float32(1.5)).astype(np.float16)
        safe = np.where(sc > 0, sc.astype(np.float32), np.float32(1))
        q = np.clip(np.rint(xg / safe[..., None] + np.float32(1.5)), 0, 3).astype(np.uint8).reshape(s_, h, d // 64, 4, 16)
        return (q[..., 0, :] | q[..., 1, :] << 2 | q[..., 2, :] << 4 | q[..., 3, :] << 6).reshape(s_, h, d // 4).astype(np.uint8), sc
    qmax = 127 if bits == 8 else 7
    sc = (np.abs(xg).max(axis=-1) / np.float32(qmax)).astype(np.float16)  # stored as fp16
    safe = np.where(sc > 0, sc.astype(np.float32), np.float32(1))
    q = np.clip(np.rint(xg / safe[..., None]), -qmax, qmax).astype(np.int8).reshape(s_, h, d)
    if bits == 8:
        return q, sc
    # llama.cpp's q4_0 order within each group of 32: byte i holds element i (low nibble) and element i + 16 (high)
    u = (q + 8).astype(np.uint8).reshape(s_, h, d // group, 2, group // 2)
    return (u[..., 0, :] | (u[..., 1, :] << 4)).reshape(s_, h, d // 2).astype(np.uint8), sc


def kv_dequantize(codes: np.ndarray, scales: np.ndarray, bits: int, group: int, code: str = "int") -> np.ndarray:
    """Rows f32[T, H, D] of a quantized cache: s * q."""
    if code == "e4m3":
        q = e4m3_table()[codes]
    elif bits == 8:
        q = codes.astype(np.float32)
    elif bits == 2:
        t_, h_, nb = codes.shape
        c = codes.reshape(t_, h_, nb // 16, 1, 16)
        q = ((c >> np.array([0, 2, 4, 6], np.uint8).reshape(4, 1)) & 3).reshape(t_, h_, nb * 4).astype(np.float32) - np.float32(1.5)
    else:
        t_, h_, nb = codes.shape
        c = codes.reshape(t_, h_, nb // (group // 2), group // 2)
        lo, hi = (c & 15).astype(np.int16) - 8, (c >> 4).astype(np.int16) - 8
        q = np.stack([lo, hi], axis=-2).reshape(t_, h_, nb * 2).astype(np.float32)
    t, h, d = q.shape
    return (q.reshape(t, h, d // group, group) * scales.astype(np.float32)[..., None]).reshape(t, h, d).astype(np.float32)


@kernel("kv_write_q")
def _kv_write_q(ins, a, _):
    codes, scales, new, pos = ins
    if pos.size and (pos.min() < 0 or pos.max() >= codes.shape[0]):
        raise LowbitError(f"position {int(pos.max())} is past the KV cache's {codes.shape[0]} rows", "generate fewer --tokens, or use a shorter prompt")
    if not codes.flags.writeable:
        codes = np.array(codes)
    if not scales.flags.writeable:
        scales = np.array(scales)
    codes[pos], scales[pos] = _kv_quantize(np.asarray(new, np.float32), a["bits"], a["group"], a.get("code", "int"))
    return [codes, scales]


def _pack(u: np.ndarray, bits: int, group: int) -> np.ndarray:
    """Unsigned codes u[R, H, D] (int4 0..15, int2 0..3) in the cache's byte order (_kv_quantize)."""
    r, h, d = u.shape
    u = u.astype(np.uint8)
    if bits == 2:
        b = u.reshape(r, h, d // 64, 4, 16)
        return (b[..., 0, :] | b[..., 1, :] << 2 | b[..., 2, :] << 4 | b[..., 3, :] << 6).reshape(r, h, d // 4)
    b = u.reshape(r, h, d // group, 2, group // 2)
    return (b[..., 0, :] | (b[..., 1, :] << 4)).reshape(r, h, d // 2)


def _unpack(codes: np.ndarray, bits: int, group: int) -> np.ndarray:
    """The unsigned codes (float32) of packed rows: _pack's inverse."""
    r, h, nb = codes.shape
    if bits == 2:
        c = codes.reshape(r, h, nb // 16, 1, 16)
        return ((c >> np.array([0, 2, 4, 6], np.uint8).reshape(4, 1)) & 3).reshape(r, h, nb * 4).astype(np.float32)
    c = codes.reshape(r, h, nb // (group // 2), group // 2)
    return np.stack([c & 15, c >> 4], axis=-2).reshape(r, h, nb * 2).astype(np.float32)


def kv_quantize_channels(x: np.ndarray, bits: int, group: int) -> tuple[np.ndarray, np.ndarray]:
    """-kc keys (KIVI): rows x f32[R <= 32, H, D] of one token group, per channel: s = fp16((max - min) / (2^bits - 1)),
    m = fp16(min), codes u = clamp(rint((x - m) / s), 0, 2^bits - 1) (s = 1 where it is 0), packed as _pack; returns
    (codes [R, H, D * bits / 8], the group's parameters f16[H, 2 D]: the scales, then the minimums)."""
    qmax = np.float32(2**bits - 1)
    mn, mx = x.min(axis=0), x.max(axis=0)
    sc, m = ((mx - mn) / qmax).astype(np.float16), mn.astype(np.float16)
    safe = np.where(sc > 0, sc.astype(np.float32), np.float32(1))
    u = np.clip(np.rint((x - m.astype(np.float32)) / safe), 0, qmax)
    return _pack(u, bits, group), np.concatenate([sc, m], axis=-1)


def kv_dequantize_channels(codes: np.ndarray, params: np.ndarray, bits: int, group: int) -> np.ndarray:
    """Rows f32[T, H, D] of -kc keys: u s + m with the parameters of the row's token group (row j: group j // 32)."""
    from compiler.kvformat import TOKEN_GROUP

    u = _unpack(codes, bits, group)
    d = u.shape[-1]
    p = params[np.arange(u.shape[0]) // TOKEN_GROUP].astype(np.float32)
    return (u * p[..., :d] + p[..., d:]).astype(np.float32)


@kernel("kv_write_kc")
def _kv_write_kc(ins, a, _):
    # each token group the step's rows touch is quantized again over its rows so far (ring rows before the step,
    # the step's own after); a group is read quantized only once it is whole (the window covers the rest)
    from compiler.kvformat import TOKEN_GROUP as T

    codes, params, ring, new, pos = ins
    if pos.size and (pos.min() < 0 or pos.max() >= codes.shape[0]):
        raise LowbitError(f"position {int(pos.max())} is past the KV cache's {codes.shape[0]} rows", "generate fewer --tokens, or use a shorter prompt")
    codes = codes if codes.flags.writeable else np.array(codes)
    params = params if params.flags.writeable else np.array(params)
    if not pos.size:
        return [codes, params]
    w, p0, pl = a["window"], int(pos[0]), int(pos[-1])
    for g in range(p0 // T, pl // T + 1):
        r = np.arange(T * g, min(T * g + T, pl + 1))
        x = np.where((r >= p0)[:, None, None], np.asarray(new, np.float32)[np.maximum(r - p0, 0)], np.asarray(ring, np.float32)[r % w])
        codes[r], params[g] = kv_quantize_channels(x, a["bits"], a["group"])
    return [codes, params]


@kernel("cache_attention_q")
def _cache_attention_q(ins, a, _):
    q, kc, ks, vc, vs, pos = ins[:6]
    t = int(pos.max()) + 1
    if a.get("keys") == "channel":
        k = kv_dequantize_channels(kc[:t], ks, a["bits"], a["group"])
    else:
        k = kv_dequantize(kc[:t], ks[:t], a["bits"], a["group"], a.get("code", "int"))
    v = kv_dequantize(vc[:t], vs[:t], a["bits"], a["group"], a.get("code", "int"))
    w = a.get("window", 0)
    if not w:
        return _cache_attention([q, k, v, pos], {"scale": a["scale"]}, None)
    kw, vw = (x if x.flags.writeable and x.dtype == np.float32 else np.array(x, np.float32) for x in ins[6:8])  # rings: written in place
    kn, vn = (np.asarray(x, np.float32) for x in ins[8:])
    return _window_attention(q, k, v, kw, vw, kn, vn, pos, w, a["scale"])


def _window_attention(q, kq, vq, kw, vw, kn, vn, pos, w, scale):
    """cache_attention_q with a float window of w rows: query i reads row j as float when j > pos[i] - w (the step's
    new row j - pos[0], or ring row j % w for rows before the step) and dequantized (kq, vq) otherwise; then the
    step's last min(S, w) rows go into the rings at row % w. Positions are contiguous and ascending."""
    s, t, p0 = q.shape[0], kq.shape[0], int(pos[0])
    kf, vf = np.zeros_like(kq), np.zeros_like(vq)
    old = np.arange(max(0, p0 - w), min(p0, t))
    kf[old], vf[old] = kw[old % w], vw[old % w]
    kf[p0:p0 + s], vf[p0:p0 + s] = kn, vn
    h, d = q.shape[1:]
    hk = kq.shape[1]
    qg = q.reshape(s, hk, h // hk, d).transpose(1, 2, 0, 3)  # [hk, rep, S, D]
    j = np.arange(t)[None, :]
    fl = j > pos[:, None] - w  # [S, T]: read in float
    sq = np.matmul(qg, kq.transpose(1, 2, 0)[:, None])
    sf = np.matmul(qg, kf.transpose(1, 2, 0)[:, None])
    scores = np.where(fl, sf, sq) * np.float32(scale)
    scores = np.where(j <= pos[:, None], scores, np.float32(-np.inf))
    p = softmax(scores)
    out = np.matmul(np.where(fl, 0, p), vq.transpose(1, 0, 2)[:, None]) + np.matmul(np.where(fl, p, 0), vf.transpose(1, 0, 2)[:, None])
    last = np.arange(max(0, s - w), s)
    kw[(p0 + last) % w], vw[(p0 + last) % w] = kn[last], vn[last]
    return [out.transpose(2, 0, 1, 3).reshape(s, h, d).astype(np.float32), kw, vw]


@kernel("softmax")
def _softmax(ins, a, _):
    return [softmax(ins[0])]


@kernel("silu")
def _silu(ins, a, _):
    x = ins[0]
    return [(x / (1.0 + np.exp(-x))).astype(np.float32)]


def erf(x: np.ndarray) -> np.ndarray:
    """erf for arrays (numpy has none): the Chebyshev-fitted erfc of Numerical Recipes (erfcc), fractional
    error < 1.2e-7 everywhere, i.e. at float32 resolution. Saves a SciPy dependency for one function."""
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    r = t * np.exp(
        -z * z
        - 1.26551223
        + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))))
    )
    return np.where(x >= 0, 1.0 - r, r - 1.0)


@kernel("gelu")
def _gelu(ins, a, _):
    x = ins[0].astype(np.float64)
    if a.get("approximate") == "tanh":
        y = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    else:
        y = 0.5 * x * (1 + erf(x / math.sqrt(2)))
    return [y.astype(np.float32)]


@kernel("sparse_matmul")
def _sparse_matmul(ins, a, _):
    from compiler.quant.outliers import sparse_matmul

    return [sparse_matmul(ins[0], ins[1], ins[2])]


@kernel("add")
def _add(ins, a, _):
    return [(ins[0] + ins[1]).astype(np.float32)]


@kernel("mul")
def _mul(ins, a, _):
    return [(ins[0] * ins[1]).astype(np.float32)]


@kernel("reshape")
def _reshape(ins, a, _):
    x = ins[0]
    shape = [x.shape[i] if d == 0 else d for i, d in enumerate(a["shape"])]
    return [x.reshape(shape)]


@kernel("concat")
def _concat(ins, a, _):
    return [np.concatenate(ins, axis=a["axis"])]


@kernel("mean")
def _mean(ins, a, _):
    return [ins[0].mean(axis=a["axis"]).astype(np.float32)]


@kernel("l2norm")
def _l2norm(ins, a, _):
    x = ins[0]
    n = np.sqrt((x * x).sum(axis=-1, keepdims=True))
    return [(x / np.maximum(n, np.float32(a["eps"]))).astype(np.float32)]


def hadamard(x: np.ndarray, n: int) -> np.ndarray:
    """The `hadamard` op's contract: the in-place fast Walsh-Hadamard butterfly in float32 over each block of n
    along the last axis (stages h = 1, 2, 4, ...: x[i], x[i + h] <- x[i] + x[i + h], x[i] - x[i + h]), then one
    multiply by float32(1 / sqrt(n)). Backends that run this butterfly in this order match it bit for bit."""
    y = np.array(x, np.float32).reshape(-1, n)
    h = 1
    while h < n:
        y = y.reshape(-1, n // (2 * h), 2, h)
        y = np.stack([y[:, :, 0] + y[:, :, 1], y[:, :, 0] - y[:, :, 1]], axis=2)
        h *= 2
    return (y.reshape(np.shape(x)) * np.float32(1.0 / math.sqrt(n))).astype(np.float32)


@kernel("hadamard")
def _hadamard(ins, a, _):
    return [hadamard(ins[0], a["size"])]


@kernel("qlinear")
def _qlinear(ins, a, prepared):
    return [qlinear(ins[0], prepared, a["act"], ins[4] if len(ins) == 5 else None)]


@kernel("qembedding")
def _qembedding(ins, a, prepared):
    return [prepared.rows(np.asarray(ins[0]))]


# ----------------------------------------------------------------------------------------------------------
# Interpreter


class Interpreter:
    """Executes a Graph with numpy. Prepared qlinear weights are cached per node (the unpacked integer
    weights), so repeated calls (decode steps) pay the unpacking once."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self._prepared: dict[int, QLinearWeights] = {}
        self._last_use = self._liveness()

    def _liveness(self) -> dict[str, int]:
        last = {}
        for i, n in enumerate(self.graph.nodes):
            for v in n.inputs:
                last[v] = i
        for o in self.graph.outputs:
            last[o] = len(self.graph.nodes)
        return last

    def prepare(self, idx: int, node: Node):
        if node.op not in ("qlinear", "qembedding"):
            return None
        if idx not in self._prepared:
            c = self.graph.consts
            self._prepared[idx] = QLinearWeights(c[node.inputs[1]], c[node.inputs[2]], c[node.inputs[3]], node.attrs)
        return self._prepared[idx]

    def run(self, feeds: dict[str, np.ndarray], outputs: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        env = self.start(feeds)
        self.run_nodes(env, range(len(self.graph.nodes)))
        return {o: env[o] for o in (outputs or self.graph.outputs)}

    def start(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        g = self.graph
        missing = [k for k in g.inputs if k not in feeds]
        if missing:
            raise ValueError(f"missing graph inputs: {missing}")
        env = {}
        for k, t in g.inputs.items():
            env[k] = np.asarray(feeds[k])
        return env

    def run_nodes(self, env: dict, indices: Iterable[int], keep: set[str] = frozenset(), on_node=None, after_node=None):
        """Run the given nodes in order on env (modified in place; constants are read from the graph, so a
        pass may swap a node's weights between runs). Values dead after a node are dropped unless in keep.
        on_node(idx, node, inputs) is called before each node runs (calibration hooks); after_node(idx, node,
        inputs, outputs) returns the outputs to keep (a pass's stand-in for a node it has not rewritten yet)."""
        g = self.graph
        consts = g.consts
        for i in indices:
            node = g.nodes[i]
            ins = [consts[v] if v in consts else env[v] for v in node.inputs]
            if on_node is not None:
                on_node(i, node, ins)
            outs = KERNELS[node.op](ins, node.attrs, self.prepare(i, node))
            if after_node is not None:
                outs = after_node(i, node, ins, outs)
            for name, val in zip(node.outputs, outs):
                env[name] = val
            for v in node.inputs:
                if self._last_use.get(v) == i and v not in keep:
                    env.pop(v, None)
