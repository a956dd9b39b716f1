"""Dense-and-sparse weights (SqueezeLLM, SpQR): a few weights per output row leave the quantized grid and are
kept as fp16 corrections in a sparse side matrix, so they neither cost their own rounding error nor stretch
their group's range (which costs every other weight of the group).

Contract (docs/DESIGN.md): y = qlinear(x; codes, scales, ...) + x S^T, where S [N, K] is zero except at
(n, cols[n, c]), where it holds vals[n, c] (fp16). Every row has the same number C of entries (an ELL
matrix: no row pointers, one gather per entry), cols int16 sorted ascending per row. In the graph the side
matrix is its own op, `sparse_matmul(x, cols, vals)`, added to the qlinear's output.

The split of a float matrix, `split`, is exact: dense + S == w bit for bit (the dense part is 0 at the
outliers). The quantizers store S in residual form instead: vals = fp16(w - dequantized dense) at the
outliers, so the effective weight there is w up to the fp16 rounding of that residual, whatever code the
dense part holds. Before the scale search the outliers are replaced by their group's median (`fill`), so
they do not widen the range.

Which weights: per row the C largest of a_k (w[n, k] - median of its group)^2, a_k the input feature's
importance (the calibration mean square, or GPTQ's Hessian diagonal; 1 without calibration): the weights
far from their group's centre in the features that matter, which are the ones that set the range and round
worst (SqueezeLLM's sensitivity-weighted choice; SpQR's is the same idea measured after rounding).
"""

from __future__ import annotations

import numpy as np

from compiler.errors import LowbitError

SPARSE_BITS = 32  # per outlier: an fp16 value and an int16 column index
MAX_K = np.iinfo(np.int16).max


def check_k(k: int, name: str = "weight"):
    if k > MAX_K:
        raise LowbitError(f"layer {name} has K={k} input features; sparse outliers index columns with int16 (K <= {MAX_K})", "drop the -sp suffix for this layer")


def _group_median(w: np.ndarray, group: int, mask: np.ndarray | None = None) -> np.ndarray:
    """Median [N, J] of each group of w [N, K], over the entries mask does not mark (0 where it marks all)."""
    n, k = w.shape
    wg = w.reshape(n, k // group, group).astype(np.float64)
    if mask is None:
        return np.median(wg, axis=-1)
    wg = np.where(mask.reshape(wg.shape), np.nan, wg)
    full = np.all(np.isnan(wg), axis=-1)
    wg[full] = 0.0
    return np.nanmedian(wg, axis=-1)


def select(w: np.ndarray, count: int, group: int, importance: np.ndarray | None = None) -> np.ndarray:
    """Columns int16 [N, count] (ascending per row) of each row's `count` outliers (module doc)."""
    w = np.asarray(w, np.float32)
    n, k = w.shape
    check_k(k)
    if not 0 < count <= k:
        raise ValueError(f"outlier count {count} must be in 1..{k}")
    centre = np.repeat(_group_median(w, group), group, axis=1)
    score = (w.astype(np.float64) - centre) ** 2
    if importance is not None:
        imp = np.asarray(importance, np.float64).reshape(1, k)
        score *= np.where(np.isfinite(imp) & (imp > 0), imp, 0.0)
    top = np.argpartition(-score, count - 1, axis=1)[:, :count]
    return np.sort(top, axis=1).astype(np.int16)


def mask_of(cols: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[np.arange(shape[0])[:, None], cols.astype(np.int64)] = True
    return m


def split(w: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(dense float32 [N, K], vals float32 [N, C]): w with its outliers set to 0, and their values;
    dense + scatter(cols, vals) == w exactly."""
    w = np.asarray(w, np.float32)
    rows = np.arange(w.shape[0])[:, None]
    c = cols.astype(np.int64)
    vals = w[rows, c].copy()
    dense = w.copy()
    dense[rows, c] = 0.0
    return dense, vals


def fill(w: np.ndarray, cols: np.ndarray, group: int) -> np.ndarray:
    """w with each outlier replaced by the median of the rest of its group: the weights the scale search sees."""
    w = np.asarray(w, np.float32)
    return fill_mask(w, mask_of(cols, w.shape), group)


def fill_mask(w: np.ndarray, mask: np.ndarray, group: int) -> np.ndarray:
    """`fill` with the outliers given as a bool mask of w's shape."""
    w = np.asarray(w, np.float32)
    if not mask.any():
        return w
    med = np.repeat(_group_median(w, group, mask), group, axis=1).astype(np.float32)
    return np.where(mask, med, w).astype(np.float32)


def recode(codes: np.ndarray, w: np.ndarray, cols: np.ndarray, scales: np.ndarray, zeros: np.ndarray, mins: np.ndarray | None, qmax: int,
           table: np.ndarray | None = None) -> np.ndarray:
    """codes with each outlier's code the nearest on its group's grid (or its row's codebook table) to its own
    weight (clamped), as GPTQ rounds it: the residual then is the part of w outside the grid."""
    rows = np.arange(w.shape[0])[:, None]
    c = cols.astype(np.int64)
    if table is not None:  # (any code is exact here: the residual stores the rest) the nearest entry to w / s
        j = c // (w.shape[1] // scales.shape[1])
        v = np.asarray(w, np.float32)[rows, c] / scales[rows, j]
        t = np.broadcast_to(table, (w.shape[0], table.shape[1]))
        out = codes.copy()
        out[rows, c] = np.abs(v[:, :, None] - t[:, None, :]).argmin(axis=-1).astype(np.uint8)
        return out
    j = c // (w.shape[1] // scales.shape[1])
    s = scales[rows, j].astype(np.float32)
    wv = np.asarray(w, np.float32)[rows, c]
    q = np.rint((wv - mins[rows, j]) / s) if mins is not None else np.rint(wv / s) + zeros[rows, j].astype(np.float32)
    out = codes.copy()
    out[rows, c] = np.clip(q, 0, qmax).astype(np.uint8)
    return out


def residual(w: np.ndarray, dequantized: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """vals float16 [N, C]: fp16(w - dequantized) at the outliers (the residual form of the module doc)."""
    rows = np.arange(w.shape[0])[:, None]
    c = cols.astype(np.int64)
    return (np.asarray(w, np.float32)[rows, c] - np.asarray(dequantized, np.float32)[rows, c]).astype(np.float16)


def scatter(cols: np.ndarray, vals: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The side matrix S float32 [N, K] (duplicate columns add)."""
    s = np.zeros(shape, np.float32)
    np.add.at(s, (np.arange(shape[0])[:, None], cols.astype(np.int64)), vals.astype(np.float32))
    return s


def sparse_matmul(x: np.ndarray, cols: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """x S^T for x float32 [..., K]: y[..., n] = sum_c x[..., cols[n, c]] vals[n, c] (fp32)."""
    x = np.asarray(x, np.float32)
    g = x[..., cols.astype(np.int64)]  # [..., N, C]
    return np.einsum("...nc,nc->...n", g, vals.astype(np.float32)).astype(np.float32)
