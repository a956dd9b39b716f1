"""GPTQ weight quantization (Frantar et al., 2022, "GPTQ: Accurate Post-Training Quantization for
Generative Pre-trained Transformers"), in the same `QuantizedWeight` format as RTN.

GPTQ minimizes the layer-output error ||x W^T - x Wq^T||^2 over calibration inputs x [T, K] one input column
at a time: after column k is rounded, its rounding error is spread over the not-yet-quantized columns
through the inverse Hessian H^-1 of the layer (H = 2/T x^T x), so correlated input features compensate for
each other. What this module does, step by step:

1. Dead columns (H[k, k] == 0: the feature is always zero in the calibration data) get H[k, k] = 1 and
   w[:, k] = 0 (they contribute nothing to the output).
2. Dampening: damp * mean(diag H) is added to the diagonal (damp = 0.01 by default).
3. The upper Cholesky factor U of H^-1 (H^-1 = U^T U), in float64; row k of U holds the update
   coefficients of column k. It is computed from one Cholesky factorization of H taken in reverse order
   (H = R R^T with R upper triangular, U = R^-1), which equals chol(H^-1) without forming H^-1 and
   factoring it a second time. If the factorization fails
   (H not positive definite), the dampening is retried at 10x, up to 3 times, then a LowbitError names the
   layer and suggests more calibration data.
4. Columns are processed left to right in blocks of `block_size` with lazy updates: inside a block the
   error feedback is applied immediately; the columns after the block receive the whole block's errors in
   one matrix product when the block is done.
5. Groups: when the column loop reaches the first column of a group, the group's scale and zero are
   computed from the *current* (already error-updated) weights of that group by exactly the RTN rules
   (compiler.quant.rtn.group_params: symmetric, asymmetric, or ternary absmean with least-squares refit).
   Pending in-block errors are applied to the group's columns outside the block first, so the parameters
   really see the current weights. Each column is then rounded to nearest on that fixed grid:
   code = clamp(rint(w / s) + z, 0, qmax)  (for ternary: nearest of {-s, 0, s}). Scale-and-minimum specs
   (`-min`) take the group's scale and float minimum m from the current weights by the same RTN rule
   (compiler.quant.rtn.min_params) and round code = clamp(rint((w - m) / s), 0, qmax); the error fed back
   is w - (s code + m).
6. Act-order (optional, `gptq_factor(..., act_order=True)`): columns are quantized in descending order of
   H[k, k] (the input features with the most energy first, while every other column can still absorb their
   rounding error), with static groups: every group's scale and zero are computed up front from the
   original weights by the RTN rules, since a group's columns are no longer visited together. The codes
   are stored at the columns' original positions, so groups stay contiguous in K as the numeric contract
   requires; only the order of the error feedback changes. Without act-order, columns go left to right
   and each group's parameters are computed when the loop reaches it (step 5).

Weight updates run in float32 over all N rows at once (vectorized over rows); the factorizations in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compiler.errors import LowbitError
from compiler.quant import outliers, twolevel
from compiler.quant.qweight import QuantizedWeight
from compiler.quant.rtn import check_weight, group_importance, group_params, min_params, quantize_rtn
from compiler.quant.spec import QuantSpec

CHOLESKY_RETRIES = 3


def hessian_from_inputs(x: np.ndarray) -> np.ndarray:
    """H = 2/T x^T x (float64 [K, K]) for layer inputs x [T, K] (leading axes are flattened into T)."""
    x = np.asarray(x, dtype=np.float64)
    x = x.reshape(-1, x.shape[-1])
    if x.shape[0] == 0:
        raise LowbitError("no calibration rows to build a Hessian from", "pass at least one input row")
    return (2.0 / x.shape[0]) * (x.T @ x)


class HessianAccumulator:
    """Accumulates H = 2/T x^T x over batches of layer inputs (rows of [..., K]) without keeping them.

    The sum x^T x is kept in float32 (as GPTQ's reference implementation does: a relative error of a few
    1e-6 over thousands of rows, far below the dampening; float64 products cost 2x and the conversions more
    on the widest layers) and divided by the row count in float64 when `hessian()` is called, which equals
    the running mean of the batches' Hessians weighted by their row counts.
    """

    def __init__(self, k: int | None = None):
        self.k = k
        self.n_rows = 0
        self._xtx: np.ndarray | None = None if k is None else np.zeros((k, k), np.float32)

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float32)
        if self.k is None:
            self.k = x.shape[-1]
            self._xtx = np.zeros((self.k, self.k), np.float32)
        if x.shape[-1] != self.k:
            raise ValueError(f"input has {x.shape[-1]} features, accumulator expects {self.k}")
        x = x.reshape(-1, self.k)
        self._xtx += x.T @ x
        self.n_rows += x.shape[0]

    def hessian(self) -> np.ndarray:
        if self.n_rows == 0:
            raise LowbitError("no calibration inputs were recorded for this layer", "run calibration data through the model first")
        return (2.0 / self.n_rows) * self._xtx.astype(np.float64)


def _inverse_lower(lower: np.ndarray, leaf: int = 128) -> np.ndarray:
    """Inverse of a lower-triangular matrix by 2x2 blocks, [[A, 0], [C, D]]^-1 = [[A^-1, 0], [-D^-1 C A^-1,
    D^-1]]: n^3/3 multiply-adds in matrix products, where a general inverse (LU) takes 2 n^3 and is 5-8x
    slower at K = 1536."""
    n = lower.shape[0]
    if n <= leaf:
        return np.linalg.inv(lower)
    h = n // 2
    ai = _inverse_lower(lower[:h, :h], leaf)
    di = _inverse_lower(lower[h:, h:], leaf)
    out = np.zeros_like(lower)
    out[:h, :h] = ai
    out[h:, h:] = di
    out[h:, :h] = -(di @ (lower[h:, :h] @ ai))
    return out


def _inverse_upper_cholesky(h: np.ndarray, damp: float, name: str) -> np.ndarray:
    """Upper Cholesky factor U (H^-1 = U^T U) of the inverse of the damped Hessian, float64."""
    diag_mean = float(np.mean(np.diag(h)))
    idx = np.arange(h.shape[0])
    for attempt in range(CHOLESKY_RETRIES + 1):
        hd = h.copy()
        hd[idx, idx] += damp * (10.0**attempt) * diag_mean
        try:
            # Reverse (UL) Cholesky: with J the reversal permutation, chol(J H J) = L gives H = R R^T,
            # R = J L J upper triangular, so H^-1 = R^-T R^-1 and U = R^-1 is the upper Cholesky factor of
            # H^-1 (the unique one with a positive diagonal). One factorization and one triangular inverse
            # instead of chol(H), the inverse, and chol(H^-1).
            lower = np.linalg.cholesky(np.ascontiguousarray(hd[::-1, ::-1]))
            u = np.triu(_inverse_lower(lower)[::-1, ::-1])
        except np.linalg.LinAlgError:
            continue
        if np.isfinite(u).all():
            return u
    raise LowbitError(
        f"layer '{name}': GPTQ Hessian is not positive definite even with dampening "
        f"{damp * 10.0**CHOLESKY_RETRIES:g} x mean(diag)",
        "use more (and more varied) calibration data, or quantize this layer with --method rtn",
    )


@dataclass
class GPTQFactor:
    """What GPTQ needs from one layer input's Hessian: the upper Cholesky factor of the damped inverse and
    the dead input columns. Layers that read the same input (q/k/v, gate/up) share one factor."""

    u: np.ndarray  # float32 [K, K] (of the permuted Hessian when perm is set)
    dead: np.ndarray  # bool [K]
    perm: np.ndarray | None = None  # act-order: column processing order (descending Hessian diagonal)
    diag: np.ndarray | None = None  # float64 [K]: H[k, k] in the original column order (the importance matrix)


def gptq_factor(hessian: np.ndarray, damp: float = 0.01, name: str = "weight", act_order: bool = False) -> GPTQFactor:
    h = np.array(hessian, dtype=np.float64, copy=True)
    if h.ndim != 2 or h.shape[0] != h.shape[1]:
        raise ValueError(f"layer '{name}': Hessian must be square, got {h.shape}")
    if not np.isfinite(h).all():
        raise LowbitError(f"layer '{name}': GPTQ Hessian contains NaN or infinite values", "check the calibration inputs")
    diag = np.diag(h).copy()
    dead = diag == 0
    h[dead, dead] = 1.0
    perm = None
    if act_order:  # the most used input features (largest H[k, k]) first
        perm = np.argsort(-np.diag(h), kind="stable")
        h = h[perm][:, perm]
    return GPTQFactor(_inverse_upper_cholesky(h, damp, name).astype(np.float32), dead, perm, diag)


def quantize_gptq(
    w: np.ndarray,
    hessian: np.ndarray | None,
    spec: QuantSpec,
    *,
    block_size: int = 128,
    damp: float = 0.01,
    name: str = "weight",
    factor: GPTQFactor | None = None,
    act_order: bool = False,
    weighted: bool = False,
) -> QuantizedWeight:
    """GPTQ-quantize w [N, K] (float) given the layer Hessian [K, K] (see `hessian_from_inputs`), or a
    precomputed `gptq_factor` of it (then `hessian`, `damp` and `act_order` are not used: the factor
    carries its own column order).

    weighted: each group's scale (and zero or minimum) search weighs a column's squared error by H[k, k]
    (the importance-weighted RTN rules of compiler.quant.rtn), as llama.cpp does with an importance matrix.

    Returns the same format as `quantize_rtn`; see the module doc for the algorithm and its choices.
    """
    w = np.asarray(w, dtype=np.float32)
    g = check_weight(w, spec, name)
    n, k = w.shape
    if factor is None:
        if hessian is None or np.shape(hessian) != (k, k):
            raise ValueError(f"layer '{name}': Hessian must be [{k}, {k}] for weight [{n}, {k}], got {None if hessian is None else np.shape(hessian)}")
        factor = gptq_factor(hessian, damp, name, act_order)
    elif factor.u.shape != (k, k):
        raise ValueError(f"layer '{name}': GPTQ factor is {factor.u.shape}, weight is [{n}, {k}]")
    if block_size < 1:
        raise ValueError(f"block_size must be positive, got {block_size}")

    wt = w.T.copy()  # [K, N]: column k of w is the contiguous row wt[k]
    wt[factor.dead] = 0.0
    hinv = factor.u
    imp = None
    if weighted:
        imp = factor.diag if factor.diag is not None else np.ones(k)
        imp = np.where(factor.dead, 0.0, imp)
    sp = None  # dense-and-sparse: the outliers' mask [K, N]; their rounding error is 0 (an fp16 residual stores it)
    if spec.outliers:
        from dataclasses import replace

        outliers.check_k(k, name)
        diag = np.where(factor.dead, 0.0, factor.diag if factor.diag is not None else np.ones(k))
        cols = outliers.select(np.ascontiguousarray(wt.T), spec.outlier_count(k), g, diag)
        sp = _Sparse(cols, outliers.mask_of(cols, (n, k)).T, g)
        spec = replace(spec, outliers=0.0)
    if spec.codebook:
        return _gptq_codebook(wt, hinv, factor.perm, spec, block_size, imp, sp)
    if factor.perm is not None:
        return _gptq_act_order(wt, hinv, factor.perm, spec, g, block_size, imp, sp)

    qmax = np.float32(spec.qmax)
    n_groups = k // g
    codes_t = np.empty((k, n), np.uint8)
    scales_t = np.empty((n_groups, n), np.float32)
    zeros_t = np.zeros((n_groups, n), np.uint8)
    mins_t = np.empty((n_groups, n), np.float32) if spec.minimum else None
    scale = zero = mn = None
    grid = None
    if spec.sub_bits:  # each group's scale snaps to super-block scales fixed from the unmodified weights
        grid = twolevel.grid_of(quantize_rtn(np.ascontiguousarray(wt.T) if sp is None else sp.filled(wt), spec, importance=imp))

    for i1 in range(0, k, block_size):
        i2 = min(i1 + block_size, k)
        cnt = i2 - i1
        w1 = wt[i1:i2].copy()
        err1 = np.zeros((cnt, n), np.float32)
        hinv1 = hinv[i1:i2, i1:i2]
        for i in range(cnt):
            col = i1 + i
            if col % g == 0:
                ge = col + g
                cur = w1[i : min(ge, i2) - i1]
                if ge > i2:  # the group reaches past this block: bring its later columns up to date
                    rest = wt[i2:ge] - hinv[i1 : i1 + i, i2:ge].T @ err1[:i]
                    cur = np.concatenate([cur, rest], axis=0)
                if sp is not None:
                    cur = sp.fill_group(cur, col)
                gi = None if imp is None else group_importance(imp[col:ge], 1, g)
                if spec.minimum:
                    s, m = min_params(cur.T[:, None, :], spec.qmax, gi)
                    if grid is not None:
                        s, m = _snap_min(grid, col // g, s[:, 0], m[:, 0], cur.max(axis=0), qmax)
                    mins_t[col // g] = mn = m[:, 0]
                    zero = np.float32(0)
                else:
                    s, z = group_params(cur.T, spec, g, None if imp is None else imp[col:ge])
                    if grid is not None:
                        s = grid.scale(col // g, s[:, 0])[:, None]
                    zeros_t[col // g] = z[:, 0]
                    zero = z[:, 0].astype(np.float32)
                scales_t[col // g] = s[:, 0]
                scale = s[:, 0]
            wcol = w1[i]
            q = np.rint((wcol - mn) / scale if mn is not None else wcol / scale) + zero
            np.clip(q, 0, qmax, out=q)
            codes_t[col] = q.astype(np.uint8)
            dq = scale * q + mn if mn is not None else scale * (q - zero)
            if sp is not None:
                dq = sp.correct(col, wcol, dq)
            e = (wcol - dq) / hinv1[i, i]
            w1[i + 1 :] -= np.outer(hinv1[i, i + 1 :], e)
            err1[i] = e
        wt[i2:] -= hinv[i1:i2, i2:].T @ err1

    return _with_sparse(sp, QuantizedWeight(
        codes=np.ascontiguousarray(codes_t.T),
        scales=np.ascontiguousarray(scales_t.T),
        zeros=np.ascontiguousarray(zeros_t.T),
        bits=spec.bits,
        group_size=g,
        ternary=spec.ternary,
        mins=None if mins_t is None else np.ascontiguousarray(mins_t.T),
        sub_bits=spec.sub_bits,
        sub_signed=spec.symmetric and not spec.minimum,
    ))


class _Sparse:
    """GPTQ's view of a layer's outliers: at an outlier the stored weight is the code's value plus the fp16
    residual of the current (error-updated) weight, so its error is 0 up to that rounding, and the group
    parameters are computed with the outliers replaced by their group's median (compiler.quant.outliers)."""

    def __init__(self, cols: np.ndarray, mask_t: np.ndarray, group: int):
        self.cols, self.mask_t, self.group = cols, mask_t, group
        self.resid_t = np.zeros(mask_t.shape, np.float16)  # [K, N]

    def filled(self, wt: np.ndarray) -> np.ndarray:
        """[N, K] weights for a static parameter rule: wt [K, N] with the outliers filled."""
        return outliers.fill_mask(np.ascontiguousarray(wt.T), np.ascontiguousarray(self.mask_t.T), self.group)

    def fill_group(self, cur: np.ndarray, col: int) -> np.ndarray:
        """cur [g, N]: the group starting at `col`, with its outliers filled."""
        m = self.mask_t[col : col + cur.shape[0]]
        return outliers.fill_mask(np.ascontiguousarray(cur.T), np.ascontiguousarray(m.T), cur.shape[0]).T

    def correct(self, col: int, wcol: np.ndarray, dq: np.ndarray) -> np.ndarray:
        m = self.mask_t[col]
        if not m.any():
            return dq
        r = (wcol[m] - dq[m]).astype(np.float16)
        self.resid_t[col, m] = r
        out = dq.copy()
        out[m] = dq[m] + r.astype(np.float32)
        return out


def _with_sparse(sp: "_Sparse | None", qw: QuantizedWeight) -> QuantizedWeight:
    if sp is None:
        return qw
    from dataclasses import replace

    rows = np.arange(qw.shape[0])[:, None]
    return replace(qw, sparse_cols=sp.cols, sparse_vals=np.ascontiguousarray(sp.resid_t.T[rows, sp.cols.astype(np.int64)]))


def _snap_min(grid, j: int, s: np.ndarray, m: np.ndarray, wmax: np.ndarray, qmax) -> tuple[np.ndarray, np.ndarray]:
    """A group's (scale, minimum) [N] on the two-level grid, as [N, 1]; a positive minimum (no unsigned
    sub-minimum) becomes 0 with the range rule's scale from 0."""
    pos = m > 0
    s = np.where(pos, np.maximum(wmax / qmax, np.finfo(np.float32).tiny), s).astype(np.float32)
    m = np.where(pos, 0, m).astype(np.float32)
    return grid.scale(j, s)[:, None], grid.minimum(j, m)[:, None]


def _fixed_grid_loop(wt: np.ndarray, hinv: np.ndarray, order: np.ndarray, round_col, block_size: int, sp: _Sparse | None) -> np.ndarray:
    """GPTQ's error feedback over the columns of wt [K, N] in `order`, on grids fixed up front (act-order's static
    groups, codebook tables): round_col(col, w) -> (codes [N], dequantized [N]) rounds one column as it stands; hinv
    is the factor of the Hessian permuted to `order`. Returns the codes [K, N] at the columns' original positions."""
    k, n = wt.shape
    wp = wt[order]  # [K, N] in processing order
    codes_t = np.empty((k, n), np.uint8)
    for i1 in range(0, k, block_size):
        i2 = min(i1 + block_size, k)
        w1 = wp[i1:i2].copy()
        err1 = np.zeros((i2 - i1, n), np.float32)
        hinv1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = order[i1 + i]
            wcol = w1[i]
            q, dq = round_col(col, wcol)
            codes_t[col] = q
            if sp is not None:
                dq = sp.correct(col, wcol, dq)
            e = (wcol - dq) / hinv1[i, i]
            w1[i + 1 :] -= np.outer(hinv1[i, i + 1 :], e)
            err1[i] = e
        wp[i2:] -= hinv[i1:i2, i2:].T @ err1
    return codes_t


def _gptq_codebook(wt: np.ndarray, hinv: np.ndarray, perm: np.ndarray | None, spec: QuantSpec, block_size: int, imp: np.ndarray | None = None,
                   sp: _Sparse | None = None) -> QuantizedWeight:
    """GPTQ onto codebook weights (compiler.quant.codebook): each row's table is fit up front from the (dead-column
    cleared, outlier-filled) weights, then every column is rounded to its row's nearest entry with GPTQ's error
    feedback, in the factor's order (act-order's permutation, or left to right)."""
    from compiler.quant.codebook import fit_tables, nearest

    k, n = wt.shape
    w0 = np.ascontiguousarray(wt.T) if sp is None else sp.filled(wt)
    if spec.fp:  # a float format: its shared table and the group scales of its rule, fixed from the weights
        from compiler.quant import floatfmt as fp4

        g = spec.group_for(k)
        scales = fp4.scales_for(w0, spec.fp, g)
        tab = fp4.table(spec.fp)

        def round_col(col, wcol):
            s = scales[:, col // g]
            q = fp4.nearest_codes(wcol / s, spec.fp)
            return q, s * tab[0, q]
    else:
        g = k
        scales = np.ones((n, 1), np.float32)
        tab = fit_tables(w0, spec.bits, imp)

        def round_col(col, wcol):
            q = nearest(wcol[:, None], tab)[:, 0]
            return q, tab[np.arange(n), q]
    codes_t = _fixed_grid_loop(wt, hinv, np.arange(k) if perm is None else perm, round_col, block_size, sp)
    return _with_sparse(sp, QuantizedWeight(np.ascontiguousarray(codes_t.T), scales, np.zeros(scales.shape, np.uint8),
                                            spec.bits, g, table=tab, fp=spec.fp))


def _gptq_act_order(wt: np.ndarray, hinv: np.ndarray, perm: np.ndarray, spec: QuantSpec, g: int, block_size: int, imp: np.ndarray | None = None,
                    sp: _Sparse | None = None) -> QuantizedWeight:
    """GPTQ with act-order and static groups: every group's scale and zero come from the (dead-column
    cleared) original weights by the RTN rules, then the columns are quantized in the order `perm` (largest
    Hessian diagonal first: the most used input features are rounded while every other column can still
    compensate) on those fixed grids. hinv is the factor of the permuted Hessian. Codes are stored at the
    columns' original positions, so groups stay contiguous in K as the numeric contract requires."""
    k, n = wt.shape
    m = None
    w0 = np.ascontiguousarray(wt.T) if sp is None else sp.filled(wt)  # [N, K], outliers filled
    if spec.sub_bits:  # two-level scales: the RTN rule's, on its super-block grid
        one = quantize_rtn(w0, spec, importance=imp)
        s, z, m = one.scales, one.zeros, one.mins
    elif spec.minimum:
        s, m = min_params(w0.reshape(n, k // g, g), spec.qmax, group_importance(imp, k // g, g))  # [N, J]
        z = np.zeros(s.shape, np.uint8)
    else:
        s, z = group_params(w0, spec, g, imp)  # [N, J]
    scales_t = np.ascontiguousarray(s.T)
    zeros_t = np.ascontiguousarray(z.T)
    mins_t = None if m is None else np.ascontiguousarray(m.T)
    qmax = np.float32(spec.qmax)

    def round_col(col, wcol):
        j = col // g
        scale = scales_t[j]
        if mins_t is not None:
            q = np.clip(np.rint((wcol - mins_t[j]) / scale), 0, qmax)
            return q.astype(np.uint8), scale * q + mins_t[j]
        zero = zeros_t[j].astype(np.float32)
        q = np.clip(np.rint(wcol / scale) + zero, 0, qmax)
        return q.astype(np.uint8), scale * (q - zero)

    codes_t = _fixed_grid_loop(wt, hinv, perm, round_col, block_size, sp)
    return _with_sparse(sp, QuantizedWeight(
        codes=np.ascontiguousarray(codes_t.T),
        scales=np.ascontiguousarray(s),
        zeros=np.ascontiguousarray(z),
        bits=spec.bits,
        group_size=g,
        ternary=spec.ternary,
        mins=m,
        sub_bits=spec.sub_bits,
        sub_signed=spec.symmetric and not spec.minimum,
    ))
