"""Two-level scales (llama.cpp's K-quant form): each group's scale is a small integer times one fp16 scale per
super-block of 256 weights along K, and so is each group's minimum (`-min`).

    s[n, j] = d[n, b] * sc[n, j]         sc in [1, 2^SUB - 1]; symmetric formats store sc signed, as Q3_K and Q6_K
                                         do ([-2^(SUB-1), 2^(SUB-1) - 1]; ours use its positive half)
    m[n, j] = -(dmin[n, b] * mq[n, j])   mq in [0, 2^SUB - 1]
    b = (j * group) // 256

The numeric contract does not change: a layer still has float32 scales (and minimums) per group, and every
backend reads those. Both products are exact in float32 (an fp16 significand of 11 bits times an integer of at
most 8 bits), so the two-level form is only a smaller way of storing the same numbers: 6-bit sub-scales cost
6 / g bits per weight where an fp16 scale costs 16 / g, so w4g32k-min is Q4_K's 4.5 bits and w3g16k is Q3_K's
3.44. Artifacts store the two-level form (`pack_consts`) and rebuild the float32 scales bit for bit when loaded
(`unpack_consts`).

Quantizing (`snap_rtn`): the group scales of the one-level rule (compiler.quant.rtn: searched, optionally
importance-weighted) give each super-block d = fp16(max s / (2^SUB - 1)); each scale becomes d * rint(s / d)
(at least d: a group never loses its scale), minimums likewise with dmin (a positive minimum, possible when a
whole group is positive, is lowered to 0 and that group's range rule redone). The codes are then re-rounded to
the snapped grid, and one least-squares refit of each group's scale (and minimum) for those codes, snapped
again, is kept per group where it lowers the (weighted) error. GPTQ snaps each group's scale to the same grid
(`Grid`) as it goes, with d taken from this rule on the unmodified weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SUPER = 256  # weights per super-block along K (llama.cpp's QK_K)


def super_index(j: int, group: int) -> np.ndarray:
    """The super-block of each of j groups of `group` weights."""
    return (np.arange(j) * group) // SUPER


def n_super(j: int, group: int) -> int:
    return int(super_index(j, group)[-1]) + 1 if j else 0


def qrange(sub_bits: int, signed: bool) -> tuple[int, int]:
    """Smallest and largest sub-scale."""
    return (-(1 << (sub_bits - 1)), (1 << (sub_bits - 1)) - 1) if signed else (0, (1 << sub_bits) - 1)


def _block_max(a: np.ndarray, group: int) -> np.ndarray:
    """max over each super-block of a [N, J] -> [N, S]."""
    j = a.shape[1]
    idx = super_index(j, group)
    starts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
    return np.maximum.reduceat(a, starts, axis=1)


def _expand(d: np.ndarray, j: int, group: int) -> np.ndarray:
    """[N, S] per super-block -> [N, J] per group (float32)."""
    return d.astype(np.float32)[:, super_index(j, group)]


def super_scale(a: np.ndarray, group: int, top: int) -> np.ndarray:
    """fp16 d [N, S] for non-negative values a [N, J]: each super-block's largest value over the largest
    sub-scale `top`, rounded to fp16 (0 for an all-zero super-block)."""
    d = (_block_max(a.astype(np.float32), group) / np.float32(top)).astype(np.float16)
    return np.where(np.isfinite(d), d, np.float16(np.finfo(np.float16).max)).astype(np.float16)


def snap(a: np.ndarray, d: np.ndarray, group: int, top: int, lowest: int) -> tuple[np.ndarray, np.ndarray]:
    """(d * q exactly in float32, q) for values a [N, J] >= 0 on the grid of fp16 d [N, S], q in [lowest, top]."""
    j = a.shape[1]
    de = _expand(d, j, group)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(de > 0, np.rint(a / de), 0)
    q = np.clip(q, lowest, top)
    q = np.where(de > 0, q, 0).astype(np.int16)
    return (de * q.astype(np.float32)).astype(np.float32), q


@dataclass
class Grid:
    """A layer's super-block scales, fixed before GPTQ: snaps each group's (scale, minimum) as it is formed."""

    group: int
    top: int  # largest sub-scale
    top_min: int  # largest sub-minimum
    d: np.ndarray  # fp16 [N, S]
    dmin: np.ndarray | None  # fp16 [N, S] (scale-and-minimum groups)

    def scale(self, j: int, s: np.ndarray) -> np.ndarray:
        """Group j's scales [N] on the grid (a row whose super-block scale is 0 keeps its own: stored float)."""
        s = np.asarray(s, np.float32)
        de = self.d[:, j * self.group // SUPER][:, None]
        sq = snap(s[:, None], de, SUPER, self.top, 1)[0][:, 0]
        return np.where(sq > 0, sq, s).astype(np.float32)

    def minimum(self, j: int, m: np.ndarray) -> np.ndarray:
        de = self.dmin[:, j * self.group // SUPER][:, None]
        neg = np.maximum(-np.asarray(m, np.float32), 0)[:, None]
        return -snap(neg, de, SUPER, self.top_min, 0)[0][:, 0]


def grid_of(qw) -> Grid:
    """The grid of a two-level QuantizedWeight of ours (positive scales, already on it)."""
    top, top_min = qrange(qw.sub_bits, qw.sub_signed)[1], qrange(qw.sub_bits, False)[1]
    d = super_scale(qw.scales, qw.group_size, top)
    dmin = super_scale(np.maximum(-qw.mins, 0), qw.group_size, top_min) if qw.mins is not None else None
    return Grid(qw.group_size, top, top_min, d, dmin)


# ---- RTN -----------------------------------------------------------------------------------------------------

def _codes(wg, s, z, m, qmax):
    if m is not None:
        return np.clip(np.rint((wg - m[..., None]) / s[..., None]), 0, qmax)
    return np.clip(np.rint(wg / s[..., None]) + z[..., None], 0, qmax)


def _err(wg, q, s, z, m, imp):
    dq = s[..., None] * q + m[..., None] if m is not None else s[..., None] * (q - z[..., None])
    e = (wg - dq) ** 2
    return (e * imp).sum(-1) if imp is not None else e.sum(-1)


def _refit(wg, q, z, m, imp):
    """Least-squares (scale, minimum) per group for fixed codes q (weighted by imp)."""
    w = np.ones_like(wg) if imp is None else np.broadcast_to(imp, wg.shape)
    if m is None:
        x = q - z[..., None]
        num, den = (w * wg * x).sum(-1), (w * x * x).sum(-1)
        return np.where(den > 0, num / np.where(den > 0, den, 1), 0), None
    sw, sx, sy = w.sum(-1), (w * q).sum(-1), (w * wg).sum(-1)
    sxx, sxy = (w * q * q).sum(-1), (w * q * wg).sum(-1)
    det = sw * sxx - sx * sx
    ok = np.abs(det) > 1e-12 * np.maximum(sw * sxx, 1e-30)
    det = np.where(ok, det, 1)
    s = np.where(ok, (sw * sxy - sx * sy) / det, 0)
    mm = np.where(ok, (sxx * sy - sx * sxy) / det, 0)
    return s, mm


def snap_rtn(w: np.ndarray, qw, sub_bits: int, qmax: int, importance_g: np.ndarray | None = None, signed: bool = False):
    """The two-level form of a one-level RTN QuantizedWeight `qw` of w [N, K] (module doc); importance_g:
    [J, g] weights of each group's squared error (compiler.quant.rtn.group_importance), or None. signed: the
    sub-scales are stored signed (symmetric formats, as Q3_K and Q6_K), so they use the positive half of the range."""
    from compiler.quant.qweight import QuantizedWeight

    g = qw.group_size
    n, k = w.shape
    j = k // g
    wg = w.reshape(n, j, g).astype(np.float32)
    s = qw.scales.astype(np.float32)
    z = qw.zeros.astype(np.float32)
    m = None
    if qw.mins is not None:
        m = qw.mins.astype(np.float32).copy()
        pos = m > 0  # a minimum above 0 has no unsigned sub-minimum: range rule from 0 for that group
        if pos.any():
            s = np.where(pos, np.maximum(wg.max(-1) / np.float32(qmax), np.finfo(np.float32).tiny), s)
            m = np.where(pos, 0, m)
    top, top_min = qrange(sub_bits, signed)[1], qrange(sub_bits, False)[1]
    d = super_scale(s, g, top)
    dmin = super_scale(-m, g, top_min) if m is not None else None

    def on_grid(s_, m_):
        sq, _ = snap(np.maximum(s_, 0), d, g, top, 1)
        mq = None if m_ is None else -snap(np.maximum(-m_, 0), dmin, g, top_min, 0)[0]
        return sq, mq

    sq, mq = on_grid(s, m)
    sq = np.where(sq > 0, sq, np.float32(1.0))  # an all-zero super-block: codes rint(0 / 1) stay exact
    q = _codes(wg, sq, z, mq, qmax)
    best = _err(wg, q, sq, z, mq, importance_g)
    rs, rm = _refit(wg, q, z, mq, importance_g)
    rs = np.where(rs > 0, rs, sq)
    s2, m2 = on_grid(rs, rm if mq is not None else None)
    s2 = np.where(s2 > 0, s2, np.float32(1.0))
    q2 = _codes(wg, s2, z, m2, qmax)
    e2 = _err(wg, q2, s2, z, m2, importance_g)
    better = e2 < best
    sq = np.where(better, s2, sq).astype(np.float32)
    q = np.where(better[..., None], q2, q)
    if mq is not None:
        mq = np.where(better, m2, mq).astype(np.float32)
    return QuantizedWeight(q.astype(np.uint8).reshape(n, k), sq, qw.zeros, qw.bits, g, qw.ternary,
                           None if mq is None else mq.astype(np.float32), sub_bits=sub_bits, sub_signed=signed)


# ---- storage ---------------------------------------------------------------------------------------------------

def decompose(a: np.ndarray, group: int, sub_bits: int, signed: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """fp16 d [N, S] and integer q [N, J] with d * q == a exactly (float32), each q within the sub-scale range,
    or None when `a` is not on such a grid. The group of each super-block's largest |a| (its peak) is tried at
    the widest sub-scale first, with a signed range at the negative end first, d taking either sign: llama.cpp's
    quantizers give the peak 15 (Q2_K), 63 (Q4_K, Q5_K), -32 (Q3_K) or -128 (Q6_K), so a file's own (d, q) come
    back, and any exact decomposition is found when one exists. An all-zero super-block gets d = 0, q = 0."""
    a = np.asarray(a, np.float32)
    n, j = a.shape
    lo, hi = qrange(sub_bits, signed)
    per = SUPER // group
    s = n_super(j, group)
    blocks = np.zeros((n, s * per), np.float32)
    blocks[:, :j] = a
    blocks = blocks.reshape(n * s, per)  # padding groups are 0: exact with q = 0
    pad = np.zeros((n, s * per), bool)
    pad[:, j:] = True
    pad_rows = pad.reshape(n * s, per)
    neg = np.signbit(blocks) & ~pad_rows  # a -0.0 must come back as -0.0 (d < 0, q = 0); padding may take either
    peak = blocks[np.arange(len(blocks)), np.abs(blocks).argmax(axis=1)]  # the signed value of largest |a|
    if not np.all(np.isfinite(peak)):
        return None
    d = np.zeros(n * s, np.float16)
    q = np.zeros(blocks.shape, np.int16)
    todo = np.flatnonzero(peak != 0)
    for c in range(max(hi, -lo), 0, -1):
        for end in ((-c, c) if signed else (c,)):  # the peak's sub-scale
            if todo.size == 0 or not lo <= end <= hi:
                continue
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                dc = (peak[todo] / np.float32(end)).astype(np.float16)
                de = dc.astype(np.float32)[:, None]
                qc = np.rint(blocks[todo] / de) + np.float32(0)  # -0.0 -> 0.0: the integer the file stores
                back = de * qc
                exact = (back == blocks[todo]) & ((np.signbit(back) == neg[todo]) | pad_rows[todo])
                ok = (exact & (qc >= lo) & (qc <= hi)).all(axis=1) & (dc != 0) & np.isfinite(dc)
            d[todo[ok]] = dc[ok]
            q[todo[ok]] = qc[ok].astype(np.int16)
            todo = todo[~ok]
    if todo.size:
        return None
    return d.reshape(n, s), q.reshape(n, s * per)[:, :j]


def _sub_dtype(sub_bits: int, signed: bool):
    return np.int8 if signed else np.uint8


def pack_consts(graph) -> tuple[dict, dict]:
    """The tensors to store for `graph`: the float32 scales (and minimums) of every two-level qlinear replaced by
    `<name>.d` (fp16 per super-block) and `<name>.q` (a byte per group). Returns (tensors, {name: how}), how
    being the record `unpack_consts` reads back (only for the tensors it could store exactly so)."""
    tensors = dict(graph.consts)
    packed = {}
    for node in graph.nodes:
        tl = node.attrs.get("two_level") if node.op == "qlinear" else None
        if not tl:
            continue
        g = node.attrs["group_size"]
        names = [(node.inputs[2], tl.get("signed", False), 1)]
        if node.attrs.get("mins"):
            names.append((node.inputs[3], False, -1))
        for name, signed, sign in names:
            if name not in tensors or name in packed:
                continue
            dq = decompose(sign * graph.consts[name], g, tl["sub_bits"], signed)
            if dq is None:
                continue  # not on a grid (e.g. edited by a pass): stored as float32
            del tensors[name]
            tensors[name + ".d"] = dq[0]
            tensors[name + ".q"] = dq[1].astype(_sub_dtype(tl["sub_bits"], signed))
            packed[name] = {"group": g, "sign": sign}
    return tensors, packed


def unpack_consts(tensors: dict, packed: dict) -> dict:
    """Inverse of pack_consts: the float32 tensors rebuilt bit for bit."""
    out = dict(tensors)
    for name, how in packed.items():
        d, q = out.pop(name + ".d"), out.pop(name + ".q")
        a = _expand(d, q.shape[1], int(how["group"])) * q.astype(np.float32)
        out[name] = (a if how["sign"] > 0 else -a).astype(np.float32)
    return out
