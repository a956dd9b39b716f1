"""Round-to-nearest (RTN) weight quantization, in the numeric contract's format (docs/DESIGN.md).

`quantize_rtn(w, spec)` turns a float weight w [N, K] (N outputs, K input features) into a
`QuantizedWeight` with per-group scales and zero points; groups of g = spec.group_for(K) consecutive
input features per output row. The rules, per group (b = spec.bits, qmax = 2^b - 1):

- symmetric (zero = h = 2^(b-1), so the integer weights q - zero run over -h .. h-1), the scale of least
  squared error among a fixed set of candidates:
      s0    = max(-xmin / h, xmax / (h-1))     (xmin = min(group.min(), 0), xmax = max(group.max(), 0)),
      s     = argmin over s0 and absmax * f / h, absmax * f / (h-1) for f in SYM_SHRINK (0.70 .. 1.00)
              of sum over the group of (w - s (code - zero))^2   (the first candidate wins a tie),
      code  = clamp(rint(w / scale) + zero, 0, qmax)
  s0 is the smallest scale that clips nothing: every value is within s0/2 of its dequantized value and the
  extreme value itself is on the grid (exactly -h s0 or (h-1) s0). The search can only lower the group's
  squared error below s0's (it may clip a few values to gain resolution for the rest). It matters: with
  the fixed rule s = 2 absmax / qmax the largest weight of every group is off by s/2; on SmolLM2-135M w4g32
  (4 windows of 512 tokens of runtime/data/alice.txt, GPTQ protocol; float 25.8) perplexity goes from 34.2
  with that rule to 31.9 with this one. llama.cpp's Q4_0 rule (the signed extreme mapped to -8, so the scale
  is negative when the extreme is positive) gets 31.2 here, but scales stay positive in this format: the
  accelerator's dyadic scales (hwsim/golden.py) are unsigned.
  At 8 bits the fixed rule stays (scale = 2 absmax / qmax: half a step of 255 levels is below what the
  search can buy, and A8 encoders are sensitive to int8 roundings moving): every value within scale/2.
- asymmetric (`-asym`), searched like llama.cpp's K-quants (ggml-quants.c make_qkx2_quants):
      xmin  = min(group.min(), 0),  xmax = max(group.max(), 0),  s0 = (xmax - xmin) / qmax,
      the range rule: scale = s0, zero = clamp(rint(-xmin / s0), 0, qmax);
      candidates: for each trial scale t = f s0, f in SEARCH_STEPS (0.70 .. 1.10), the zero point
      z = clamp(rint(-xmin / t)) or the one centring the range, z = clamp(rint(qmax/2 - (xmin + xmax) / 2t)),
      the codes c = clamp(rint(w / t) + z, 0, qmax), and then the least-squares scale for those codes,
      s = sum w (c - z) / sum (c - z)^2;
      kept: the candidate of least squared error, where it is below the range rule's (stored float32 scale);
      code  = clamp(rint(w / scale) + zero, 0, qmax)   (with the kept scale: rounding can only lower the error).
  So a group's squared error is never above the range rule's, and a group the search cannot improve keeps the
  range rule's scale and zero bit for bit. Unlike the range rule, the kept grid may clip a group's extremes.
  (zero is always representable: it is clamped to 0 .. qmax.)
- ternary (BitNet b1.58 absmean):
      a = mean(|w|) over the group,  t = clamp(rint(w / a), -1, 1),
      then the scale is refit by least squares on the chosen t:  s = mean(|w| over elements with t != 0),
      stored code = t + 1, zero = 1, bits = 2.
  Weights that are already exactly ternary (s * t, t in {-1, 0, 1}, one s per group) round-trip exactly:
  |w| / a >= 1 for every nonzero element, so t is recovered, and the refit mean of identical values is
  computed in float64 (exact) and gives s back bit for bit.

- scale-and-minimum (`-min`, `quantize_rtn_min`, `min_params`): w ~ scale * code + m with a float minimum m.
  The range rule (llama.cpp's Q4_1): m = group.min(), scale = (group.max() - m) / qmax. The search: for each
  trial scale t = f * range / qmax (f in SEARCH_STEPS) and each of two grid origins (the minimum, or centred on
  the range), the codes c = clamp(rint((w - origin) / t), 0, qmax), then the least-squares (s, m) of
  w ~ s c + m for those codes (the 2x2 normal equations, solved for all groups at once); kept as for `-asym`
  (least squared error, and only where it is below the range rule's), then
  code = clamp(rint((w - m) / scale), 0, qmax). Weights already on a scale-and-minimum grid (a dequantized
  Q4_1 tensor) keep the range rule's exact grid.
  The searches run in units of each group's absmax, so their sums neither overflow nor underflow float32.
  Measured on 64 x 256 Gaussian weights, total squared error searched / range rule: w3g32-min 0.75,
  w2g32-min 0.59, w3g32-asym 0.86, w4g32-asym 0.90 (tests/compiler/quant/test_rtn_search.py).

Importance weighting (`importance`, float [K] >= 0 per input feature; llama.cpp's imatrix: the mean square
of each feature over calibration tokens, compiler.quant.apply.importance_matrix): every "squared error" above
becomes sum a_k (w_k - w^_k)^2 with a = the importance scaled to mean 1 in each group (`group_importance`; a
group with no importance weighs its features equally), and the least-squares refits are weighted the same
way. The symmetric rule compares its candidates on that error; the asymmetric and scale-and-minimum rules
run the weighted search and keep, per group, the better on the weighted error of its result and the plain
search's; ternary refits s = sum a |w| / sum a over t != 0. So the weighted error is never above plain
RTN's (tests/compiler/quant/test_rtn_importance.py). The 8-bit symmetric rule stays fixed.

A layer whose K the spec's group does not divide uses the group of `QuantSpec.group_for` (compiler.groups).
rint is numpy's round-half-to-even. Scales are float32 and codes are computed with the float32 scale
that is stored, so dequantizing and requantizing with the same scales gives the same codes.
An all-zero group gets scale 1 and therefore codes = zero (dequantizes to 0). For the symmetric and
asymmetric rules a nonzero scale below the smallest normal float32 (weights around 1e-38) is raised to it,
so the stored scale never loses precision to underflow and the bounds above still hold.
"""

from __future__ import annotations

import numpy as np

from compiler.errors import LowbitError
from compiler.quant.qweight import QuantizedWeight
from compiler.quant.spec import QuantSpec


def check_weight(w: np.ndarray, spec: QuantSpec, name: str = "weight") -> int:
    """Validate a [N, K] float weight for `spec`; return the group size. Raises LowbitError."""
    if w.ndim != 2:
        raise LowbitError(
            f"layer '{name}': weight must be 2-D [N, K] to quantize, got shape {tuple(w.shape)}",
            "reshape it to [out_features, in_features]",
        )
    n, k = w.shape
    g = spec.group_for(k)
    if k == 0 or k % g:  # only K=0 since group_for picks a group that divides K
        raise LowbitError(
            f"layer '{name}': weight shape [{n}, {k}] has K={k} input features, not a multiple of "
            f"group size {g} (spec '{spec.name}')",
            "use per-channel groups ('pc', e.g. w4pc) or a group size that divides K",
        )
    if not np.isfinite(w).all():
        raise LowbitError(
            f"layer '{name}': weight shape [{n}, {k}] contains NaN or infinite values",
            "check the model file; quantization needs finite weights",
        )
    return g


def _grouped(w: np.ndarray, g: int) -> np.ndarray:
    n, k = w.shape
    return w.reshape(n, k // g, g)


def _normal(scale: np.ndarray) -> np.ndarray:
    """Raise nonzero scales below the smallest normal float32 to it (zero stays zero)."""
    tiny = float(np.finfo(np.float32).tiny)
    return np.where(scale > 0, np.maximum(scale, tiny), 0.0)


def _positive_f32(scale: np.ndarray) -> np.ndarray:
    """float32 scales; a scale that is 0 in float32 (all-zero group or underflow) becomes 1."""
    s32 = scale.astype(np.float32)
    return np.where(s32 > 0, s32, np.float32(1.0)).astype(np.float32)


def ternary_select(wg: np.ndarray, imp: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """BitNet absmean ternary selection on grouped weights wg [N, J, g] (float32).

    Returns (t float32 [N, J, g] in {-1, 0, 1}, refit scale float64 [N, J]; 0 for an all-zero group).
    Sums are accumulated in float64, so a group of identical magnitudes refits to exactly that magnitude.
    With imp [J, g] the refit is the importance-weighted least-squares scale, sum a |w| / sum a over t != 0.
    """
    absw = np.abs(wg)
    a = absw.mean(axis=-1, dtype=np.float64)
    a = np.where(a > 0, a, 1.0).astype(np.float32)
    t = np.rint(wg / a[..., None])
    np.clip(t, -1, 1, out=t)
    nz = t != 0
    if imp is not None:
        a = np.where(nz, imp, np.float32(0))
        den = a.sum(axis=-1, dtype=np.float64)
        s = (a * absw).sum(axis=-1, dtype=np.float64) / np.where(den > 0, den, 1)
        plain = np.where(nz, absw, np.float32(0)).sum(axis=-1, dtype=np.float64) / np.maximum(nz.sum(axis=-1), 1)
        return t, np.where(den > 0, s, plain)
    cnt = nz.sum(axis=-1)
    s = np.where(nz, absw, np.float32(0)).sum(axis=-1, dtype=np.float64) / np.maximum(cnt, 1)
    return t, s


def group_params(w: np.ndarray, spec: QuantSpec, g: int, importance: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-group (scales float32 [N, J], zeros uint8 [N, J]) for w [N, K] by the rules in the module doc;
    `importance` (float [K] >= 0, `group_importance`) weighs each input feature's squared error.

    For ternary the scale is the refit s of the absmean selection (GPTQ rounds onto {-s, 0, s} with it).
    """
    wg = _grouped(np.asarray(w, dtype=np.float32), g)
    qmax = spec.qmax
    imp = group_importance(importance, wg.shape[1], g)
    if spec.ternary:
        _, scale = ternary_select(wg, imp)
        zeros = np.ones(scale.shape, dtype=np.uint8)
    elif spec.symmetric and spec.bits == 8:
        absmax = np.abs(wg).max(axis=-1).astype(np.float64)
        scale = _normal(2.0 * absmax / qmax)
        zeros = np.full(scale.shape, 1 << (spec.bits - 1), dtype=np.uint8)
    elif spec.symmetric:
        return symmetric_scales(wg, spec.bits, imp), np.full(wg.shape[:2], 1 << (spec.bits - 1), dtype=np.uint8)
    else:
        xmin = np.minimum(wg.min(axis=-1), 0).astype(np.float64)
        xmax = np.maximum(wg.max(axis=-1), 0).astype(np.float64)
        scale = _normal((xmax - xmin) / qmax)
        safe = _positive_f32(scale).astype(np.float64)
        zeros = np.clip(np.rint(-xmin / safe), 0, qmax).astype(np.uint8)
        scale = _positive_f32(scale)
        if imp is None:
            return _asym_search(wg, qmax, scale, zeros)
        return _weighted_or_plain(_asym_search, _asym_err, wg, qmax, scale, zeros, imp, np.uint8)
    return _positive_f32(scale), zeros


def group_importance(importance: np.ndarray | None, j: int, g: int) -> np.ndarray | None:
    """Per-feature importance [K] -> float32 [J, g], each group scaled to mean 1 (a group whose importance
    is all 0 weighs its features equally), or None for plain (unweighted) RTN."""
    if importance is None:
        return None
    imp = np.asarray(importance, np.float64).reshape(-1)
    if imp.size != j * g or not np.all(np.isfinite(imp)) or np.any(imp < 0):
        raise ValueError(f"importance must be {j * g} finite values >= 0, got shape {np.shape(importance)}")
    imp = imp.reshape(j, g)
    mean = imp.mean(axis=1, keepdims=True)
    return np.where(mean > 0, imp / np.where(mean > 0, mean, 1), 1.0).astype(np.float32)


def _asym_search(wg: np.ndarray, qmax: int, scale: np.ndarray, zeros: np.ndarray, imp: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The searched asymmetric (scale, zero) where the search beats the range rule's (scale, zero)."""
    for rows, u, wt, at in _search_slices(wg, imp):
        found, sn, zn = _search_asym(wt, qmax, at)
        shape = scale[rows].shape
        sn = _positive_f32(_normal(sn.reshape(shape) * u))
        zn = zn.reshape(shape).astype(np.uint8)
        # Keep a searched pair only where its error (in the stored float32 scale) is really below the rule's.
        ok = found.reshape(shape) & (_asym_err(wg[rows], sn, zn, qmax, imp) < _asym_err(wg[rows], scale[rows], zeros[rows], qmax, imp))
        scale[rows] = np.where(ok, sn, scale[rows])
        zeros[rows] = np.where(ok, zn, zeros[rows])
    return scale, zeros


def _asym_err(wg: np.ndarray, s: np.ndarray, z: np.ndarray, qmax: int, imp: np.ndarray | None = None) -> np.ndarray:
    s32 = s.astype(np.float32)[..., None]
    zf = z.astype(np.float32)[..., None]
    q = np.clip(np.rint(wg / s32) + zf, 0, qmax)
    d = wg.astype(np.float64) - s32 * (q - zf)
    return _group_sse(d, imp)


def _group_sse(d: np.ndarray, imp: np.ndarray | None) -> np.ndarray:
    """Per-group squared error of d [N, J, g], weighted by imp [J, g] when given."""
    if imp is None:
        return np.einsum("njg,njg->nj", d, d)
    return np.einsum("njg,njg,jg->nj", d, d, imp.astype(d.dtype))


SYM_SHRINK = np.linspace(0.70, 1.0, 13)  # candidate scales of the symmetric rule, as fractions of absmax / h


def _sym_sse(wn: np.ndarray, s: np.ndarray | float, half: int, qmax: int, imp: np.ndarray | None = None) -> np.ndarray:
    """Squared error of each group of wn (weights in units of their group's absmax) on the grid s (q - zero),
    weighted by imp [J, g] when given."""
    sg = s[..., None] if isinstance(s, np.ndarray) else np.float32(s)
    q = np.rint(wn / sg)
    np.clip(q, -half, qmax - half, out=q)
    q *= sg
    np.subtract(wn, q, out=q)
    return _group_sse(q, imp)


def symmetric_scales(wg: np.ndarray, bits: int, imp: np.ndarray | None = None) -> np.ndarray:
    """Scales float32 [N, J] of the symmetric rule (module doc) for grouped weights wg [N, J, g] (float32);
    with imp [J, g] (group_importance) the candidates are compared by the importance-weighted error.

    The errors are compared in units of each group's absmax, so every candidate but s0 is one number for all
    groups, and weights near the float32 limits neither overflow nor underflow the sums."""
    half = 1 << (bits - 1)
    qmax = (1 << bits) - 1
    xmin = np.minimum(wg.min(axis=-1), 0).astype(np.float64)
    xmax = np.maximum(wg.max(axis=-1), 0).astype(np.float64)
    amax = np.maximum(-xmin, xmax)
    unit = np.where(amax > 0, np.maximum(amax, float(np.finfo(np.float32).tiny)), 1.0)
    wn = (wg / unit.astype(np.float32)[..., None]).astype(np.float32)
    s0 = np.where(amax > 0, np.maximum(-xmin / half, xmax / (half - 1)) / unit, 1.0)  # all-zero group: any
    best = s0
    err = _sym_sse(wn, s0.astype(np.float32), half, qmax, imp)
    for f in SYM_SHRINK:
        for base in (1.0 / half, 1.0 / (half - 1)):
            e = _sym_sse(wn, float(base * f), half, qmax, imp)
            better = e < err
            best = np.where(better, base * f, best)
            err = np.where(better, e, err)
    return _positive_f32(_normal(best * unit * (amax > 0)))


def quantize_codes_with_scales(
    w: np.ndarray, scales: np.ndarray, zeros: np.ndarray, spec: QuantSpec
) -> np.ndarray:
    """Codes uint8 [N, K] = clamp(rint(w / s) + z, 0, qmax) for fixed per-group scales/zeros [N, J].

    For ternary specs this is nearest rounding onto the grid {-s, 0, s} (qmax = 2, zero = 1); it is the
    rule GPTQ uses once a group's scale is fixed. Given the scales of `quantize_rtn`, requantizing the
    dequantized weight returns the same codes.
    """
    w = np.asarray(w, dtype=np.float32)
    n, k = w.shape
    j = scales.shape[1]
    if scales.shape != (n, j) or zeros.shape != (n, j) or k % j:
        raise ValueError(f"scales/zeros {scales.shape}/{zeros.shape} do not fit weight {w.shape}")
    g = k // j
    wg = _grouped(w, g)
    q = np.rint(wg / scales.astype(np.float32)[..., None]) + zeros.astype(np.float32)[..., None]
    np.clip(q, 0, spec.qmax, out=q)
    return q.astype(np.uint8).reshape(n, k)


def quantize_rtn(w: np.ndarray, spec: QuantSpec, name: str = "weight", importance: np.ndarray | None = None) -> QuantizedWeight:
    """Round-to-nearest quantization of w [N, K] (float) by `spec`; see the module doc for the rules.
    `importance` (float [K] >= 0, e.g. the mean square of each input feature over calibration tokens)
    makes every scale search minimize the importance-weighted squared error instead.

    Raises LowbitError (naming `name` and the shape) when K is not a multiple of the group size or the
    weight is not finite.
    """
    w = np.asarray(w, dtype=np.float32)
    g = check_weight(w, spec, name)
    if spec.outliers:  # dense-and-sparse: the dense part without its outliers, then their fp16 residuals
        from dataclasses import replace

        from compiler.quant import outliers

        outliers.check_k(w.shape[1], name)
        cols = outliers.select(w, spec.outlier_count(w.shape[1]), g, importance)
        qw = quantize_rtn(outliers.fill(w, cols, g), replace(spec, outliers=0.0), name, importance)
        qw = replace(qw, codes=outliers.recode(qw.codes, w, cols, qw.scales, qw.zeros, qw.mins, spec.qmax, qw.table))
        return replace(qw, sparse_cols=cols, sparse_vals=outliers.residual(w, qw.dequantize(), cols))
    if spec.fp:
        from compiler.quant.floatfmt import quantize_float

        return quantize_float(w, spec.fp, g, name)
    if spec.codebook:
        from compiler.quant.codebook import quantize_codebook

        return quantize_codebook(w, spec.bits, importance)
    if spec.sub_bits:
        from dataclasses import replace

        from compiler.quant.twolevel import snap_rtn

        one = quantize_rtn(w, replace(spec, sub_bits=0), name, importance)
        return snap_rtn(w, one, spec.sub_bits, spec.qmax, group_importance(importance, w.shape[1] // g, g), signed=spec.symmetric and not spec.minimum)
    if spec.minimum:
        return quantize_rtn_min(w, spec.bits, g, importance)
    if spec.ternary:
        # Codes from the absmean selection t = clamp(rint(w / a)), not from rounding with the refit s.
        t, s = ternary_select(_grouped(w, g), group_importance(importance, w.shape[1] // g, g))
        scales = _positive_f32(s)
        zeros = np.ones(scales.shape, dtype=np.uint8)
        codes = (t + 1).astype(np.uint8).reshape(w.shape)
    else:
        scales, zeros = group_params(w, spec, g, importance)
        codes = quantize_codes_with_scales(w, scales, zeros, spec)
    return QuantizedWeight(codes=codes, scales=scales, zeros=zeros, bits=spec.bits, group_size=g, ternary=spec.ternary)


def quantize_rtn_min(w: np.ndarray, bits: int, group: int, importance: np.ndarray | None = None) -> QuantizedWeight:
    """Scale-and-minimum RTN: per group (s, m) by `min_params` (the searched rule of the module doc),
    q = clamp(rint((w - m) / s), 0, qmax), w ~ s q + m. The minimum is a float, so a group's range is
    used fully even when it does not include 0. An all-equal group gets s = 1 and q = 0 (exactly m)."""
    w = np.asarray(w, np.float32)
    n, k = w.shape
    if k % group:
        raise ValueError(f"K={k} is not a multiple of group size {group}")
    qmax = (1 << bits) - 1
    wg = w.reshape(n, k // group, group)
    s, lo = min_params(wg, qmax, group_importance(importance, k // group, group))
    q = np.clip(np.rint((wg - lo[..., None]) / s[..., None]), 0, qmax).astype(np.uint8).reshape(n, k)
    zeros = np.zeros((n, k // group), np.uint8)
    return QuantizedWeight(q, s, zeros, bits, group, mins=lo)


def min_params(wg: np.ndarray, qmax: int, imp: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(scales, minimums) float32 [N, J] of grouped weights wg [N, J, g] by the searched scale-and-minimum
    rule (module doc); a group the search cannot improve keeps the range rule's (s, m) exactly. With imp
    [J, g] (group_importance) the search minimizes the importance-weighted error, and each group keeps the
    better, by that error, of the weighted and the plain search's result."""
    wg = np.asarray(wg, np.float32)
    lo = wg.min(axis=-1).astype(np.float32)
    s = ((wg.max(axis=-1) - lo) / np.float32(qmax)).astype(np.float32)
    s = np.where(s > 0, np.maximum(s, np.finfo(np.float32).tiny), np.float32(1.0)).astype(np.float32)
    if imp is not None:
        return _weighted_or_plain(_min_search, _min_err, wg, qmax, s, lo, imp, np.float32)
    return _min_search(wg, qmax, s, lo, None)


def _weighted_or_plain(search, err, wg, qmax, scale, offset, imp, offset_dtype):
    """The weighted search from the range rule's (scale, offset), then per group the better, by the weighted
    error, of it and the plain search's result: the weighted error is never above plain RTN's."""
    ps, po = search(wg, qmax, scale.copy(), offset.copy(), None)
    ws, wo = search(wg, qmax, scale, offset, imp)
    ok = err(wg, ws, wo, qmax, imp) < err(wg, ps, po, qmax, imp)
    return np.where(ok, ws, ps).astype(np.float32), np.where(ok, wo, po).astype(offset_dtype)


def _min_search(wg, qmax, s, lo, imp):
    for rows, u, wt, at in _search_slices(wg, imp):
        found, sn, mn = _search_min(wt, qmax, at)
        shape = s[rows].shape
        sn = _positive_f32(_normal(sn.reshape(shape) * u))
        mn = (mn.reshape(shape) * u).astype(np.float32)
        ok = found.reshape(shape) & (_min_err(wg[rows], sn, mn, qmax, imp) < _min_err(wg[rows], s[rows], lo[rows], qmax, imp))
        s[rows] = np.where(ok, sn, s[rows])
        lo[rows] = np.where(ok, mn, lo[rows])
    return s, lo


def _min_err(wg: np.ndarray, s: np.ndarray, m: np.ndarray, qmax: int, imp: np.ndarray | None = None) -> np.ndarray:
    q = np.clip(np.rint((wg - m[..., None]) / s[..., None]), 0, qmax)
    d = wg.astype(np.float64) - (s[..., None] * q + m[..., None])
    return _group_sse(d, imp)


SEARCH_STEPS = np.linspace(0.70, 1.10, 17)  # candidate scales of the searched rules, in units of range / qmax
_CHUNK = 1 << 17  # elements per slice of the search, so its temporaries stay in cache


def _search_slices(wg: np.ndarray, imp: np.ndarray | None = None):
    """(row slice, absmax unit [n, J] float64, weights [g, n*J] float32 in those units, importance [g, n*J]
    or None) per slice of rows. In units of its absmax a group's squared errors neither overflow nor
    underflow float32, and with the group's elements along the first axis the per-group sums are whole-row
    vector adds."""
    n, j, g = wg.shape
    step = max(1, _CHUNK // max(1, j * g))
    for r in range(0, n, step):
        rows = slice(r, min(n, r + step))
        amax = np.abs(wg[rows]).max(axis=-1).astype(np.float64)
        u = np.where(amax > 0, np.maximum(amax, float(np.finfo(np.float32).tiny)), 1.0)
        wn = (wg[rows] / u.astype(np.float32)[..., None]).astype(np.float32)
        at = None if imp is None else np.ascontiguousarray(np.tile(imp.T, (1, rows.stop - rows.start)))
        yield rows, u, np.ascontiguousarray(wn.reshape(-1, g).T), at


def _wsum(x: np.ndarray, at: np.ndarray | None) -> np.ndarray:
    """Per-group (column) sum of x [g, M], weighted by at [g, M] when given; float64."""
    if at is None:
        return x.sum(axis=0, dtype=np.float64)
    return np.einsum("gm,gm->m", at, x).astype(np.float64)


def _wdot(x: np.ndarray, y: np.ndarray, at: np.ndarray | None) -> np.ndarray:
    if at is None:
        return np.einsum("gm,gm->m", x, y).astype(np.float64)
    return np.einsum("gm,gm,gm->m", at, x, y).astype(np.float64)


def _search_min(wt: np.ndarray, qmax: int, at: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(improved mask, scale, minimum) [M] for M groups wt [g, M] (float32, in units of the absmax), with
    the squared errors weighted by at [g, M] when given.

    Each candidate's codes are rounded from a trial grid, then (s, m) is the (weighted) least-squares fit of
    w ~ s q + m to those codes (2x2 normal equations), whose squared error follows from the same sums."""
    g = wt.shape[0] if at is None else _wsum(np.ones_like(wt), at)
    lo = wt.min(axis=0)
    rng = wt.max(axis=0) - lo
    live = rng > 0
    s0 = np.where(live, rng / qmax, 1.0).astype(np.float32)
    sw = _wsum(wt, at)
    sww = _wdot(wt, wt, at)
    q = np.clip(np.rint((wt - lo) / s0), 0, qmax)
    d = wt - (s0 * q + lo)
    err = _wdot(d, d, at)
    found = np.zeros(s0.shape, bool)
    best_s, best_m = s0.astype(np.float64), lo.astype(np.float64)
    for f in SEARCH_STEPS:
        sc = (s0 * np.float32(f)).astype(np.float32)
        inv = np.float32(1) / sc
        for anchor in (lo, lo + (rng - sc * qmax) / 2):  # the grid from the minimum up, or centred on the range
            np.multiply(wt, inv, out=q)
            q -= anchor * inv
            np.rint(q, out=q)
            np.clip(q, 0, qmax, out=q)
            s1 = _wsum(q, at)
            s2 = _wdot(q, q, at)
            sqw = _wdot(q, wt, at)
            det = g * s2 - s1 * s1
            s = (g * sqw - s1 * sw) / np.where(det > 0, det, 1)
            s = np.where((det > 0) & (s > 0), s, sc)
            m = (sw - s * s1) / np.where(g > 0, g, 1)
            e = sww - 2 * s * sqw - 2 * m * sw + s * s * s2 + 2 * s * m * s1 + g * m * m
            better = (e < err) & live
            found |= better
            best_s = np.where(better, s, best_s)
            best_m = np.where(better, m, best_m)
            err = np.where(better, e, err)
    return found, best_s, best_m


def _search_asym(wt: np.ndarray, qmax: int, at: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(improved mask, scale, zero) [M] of the asymmetric search for M groups wt [g, M] (float32, in units
    of the absmax): per trial scale the zero point rint(-xmin / s) (or the one centring the range), the codes,
    then the least-squares scale of w ~ s (q - z) for them; its squared error is sum w^2 - s sum (q - z) w.
    The caller compares the winner with the range rule's own error."""
    xmin = np.minimum(wt.min(axis=0), 0)
    xmax = np.maximum(wt.max(axis=0), 0)
    live = xmax > xmin
    s0 = np.where(live, (xmax - xmin) / qmax, 1.0).astype(np.float32)
    sww = _wdot(wt, wt, at)
    q = np.empty_like(wt)
    err = np.full(s0.shape, np.inf)
    found = np.zeros(s0.shape, bool)
    best_s, best_z = s0.astype(np.float64), np.zeros(s0.shape, np.float32)
    for f in SEARCH_STEPS:
        sc = (s0 * np.float32(f)).astype(np.float32)
        inv = np.float32(1) / sc
        for z in (np.rint(-xmin * inv), np.rint(qmax / 2 - (xmin + xmax) * inv / 2)):  # from xmin, or centred
            z = np.clip(z, 0, qmax).astype(np.float32)
            np.multiply(wt, inv, out=q)
            np.rint(q, out=q)
            np.clip(q, -z, qmax - z, out=q)
            qq = _wdot(q, q, at)
            qw = _wdot(q, wt, at)
            s = qw / np.where(qq > 0, qq, 1)
            s = np.where((qq > 0) & (s > 0), s, sc)
            e = sww - 2 * s * qw + s * s * qq
            better = (e < err) & live
            found |= better
            best_s = np.where(better, s, best_s)
            best_z = np.where(better, z, best_z)
            err = np.where(better, e, err)
    return found, best_s, best_z
