"""Non-uniform codebook weights (SqueezeLLM, Kim et al. 2023): spec `w{4,3,2}cb`.

Each output row has its own table of 2^b values; a weight's code indexes it, w[n, k] = table[n, code[n, k]]
(scales are 1, one group per row, zero points 0: the numeric contract's qlinear with attr `codebook`, the
table in place of the zero points). The table is the weighted k-means of the row's weights, each weight
weighed by its input feature's importance (the calibration mean square, GPTQ's Hessian diagonal, or 1):
SqueezeLLM's sensitivity-based clustering with the Fisher information replaced by that diagonal. Centres
start at the row's quantiles, are kept sorted (so a code is an order statistic and the nearest centre is
found from the midpoints), and end rounded to fp16 (the stored precision). A centre no weight is assigned
to keeps its place.
"""

from __future__ import annotations

import numpy as np

from compiler.quant.qweight import QuantizedWeight

ITERATIONS = 16
_CHUNK = 1 << 22  # elements x centres per assignment slice


def nearest(w: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Codes uint8 [N, K]: index of the nearest entry of each row's sorted table [N, C] (ties to the lower)."""
    w = np.asarray(w, np.float32)
    n, k = w.shape
    mids = ((table[:, 1:].astype(np.float64) + table[:, :-1]) / 2).astype(np.float32)  # [N, C-1]
    out = np.empty((n, k), np.uint8)
    step = max(1, _CHUNK // max(1, k * mids.shape[1]))
    for r in range(0, n, step):
        rows = slice(r, min(n, r + step))
        out[rows] = (w[rows, :, None] > mids[rows, None, :]).sum(axis=-1)
    return out


def fit_tables(w: np.ndarray, bits: int, importance: np.ndarray | None = None, iterations: int = ITERATIONS) -> np.ndarray:
    """Sorted tables float32 [N, 2^bits] (fp16 values) by weighted k-means of each row of w [N, K]."""
    w = np.asarray(w, np.float32)
    n, k = w.shape
    c = 1 << bits
    a = np.ones(k) if importance is None else np.asarray(importance, np.float64).reshape(k)
    a = np.where(np.isfinite(a) & (a > 0), a, 0.0)
    if not a.any():
        a = np.ones(k)
    cent = np.quantile(w, (np.arange(c) + 0.5) / c, axis=1).T.astype(np.float64)  # [N, C]
    aw = np.broadcast_to(a, (n, k))
    base = (np.arange(n) * c)[:, None]
    for _ in range(iterations):
        cent.sort(axis=1)
        codes = nearest(w, cent.astype(np.float32))
        idx = (base + codes).ravel()
        den = np.bincount(idx, weights=aw.ravel(), minlength=n * c).reshape(n, c)
        num = np.bincount(idx, weights=(aw * w).ravel(), minlength=n * c).reshape(n, c)
        new = np.where(den > 0, num / np.where(den > 0, den, 1), cent)
        if np.allclose(new, cent, rtol=0, atol=0):
            break
        cent = new
    cent.sort(axis=1)
    return cent.astype(np.float16).astype(np.float32)


def quantize_codebook(w: np.ndarray, bits: int, importance: np.ndarray | None = None) -> QuantizedWeight:
    """w [N, K] as codebook weights: per-row tables (fit_tables) and the nearest entry for every weight."""
    w = np.asarray(w, np.float32)
    n, k = w.shape
    table = fit_tables(w, bits, importance)
    return QuantizedWeight(nearest(w, table), np.ones((n, 1), np.float32), np.zeros((n, 1), np.uint8), bits, k, table=table)
