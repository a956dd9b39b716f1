"""The quantized weight of one linear layer, in the numeric contract's terms (docs/DESIGN.md).

w[n, k] = scales[n, j] * (codes[n, k] - zeros[n, j]),  j = k // group_size        (zero-point groups)
w[n, k] = scales[n, j] * codes[n, k] + mins[n, j]                                  (scale-and-minimum groups)

Codes are unsigned: [0, 2^bits - 1]; symmetric weights use zeros = 2^(bits-1); ternary weights store
q + 1 in {0, 1, 2} with zeros = 1, so every integer format dequantizes by the same rule. Scale-and-minimum
groups (llama.cpp's Q4_1 and K-quants: w = d q + m with a float m that is not a multiple of d) carry a
float32 minimum per group instead of a zero point; their `zeros` are all 0. Two-level scales (K-quants) are the
same numbers stored smaller: `sub_bits` says that every scale (and minimum) is an fp16 per super-block times a
small integer (compiler.quant.twolevel). Dense-and-sparse weights (compiler.quant.outliers) add a side matrix:
`sparse_cols` int16 [N, C] and `sparse_vals` float16 [N, C], whose values add to the dequantized weights.
Codebook weights (SqueezeLLM, compiler.quant.codebook) index a per-row table: w[n, k] = scales[n, j] * table[n, codes[n, k]].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class QuantizedWeight:
    codes: np.ndarray  # uint8 [N, K]
    scales: np.ndarray  # float32 [N, K // group_size]
    zeros: np.ndarray  # uint8 [N, K // group_size]
    bits: int  # storage bits per code: 8, 4, 3, 2 (ternary: 2)
    group_size: int  # actual group length along K (per-channel: K)
    ternary: bool = False
    mins: np.ndarray | None = None  # float32 [N, K // group_size]: scale-and-minimum groups (zeros are 0)
    sub_bits: int = 0  # two-level scales (compiler.quant.twolevel): scales / minimums are an fp16 per 256 weights times sub_bits-bit integers
    sub_signed: bool = False  # sub-scales signed (imported Q3_K / Q6_K); ours are unsigned
    sparse_cols: np.ndarray | None = None  # int16 [N, C]: each row's outlier columns, ascending
    sparse_vals: np.ndarray | None = None  # float16 [N, C]: the values the side matrix adds there
    table: np.ndarray | None = None  # float32 [N, 2^bits] (or [1, 2^bits], shared): codebook weights, w = scales * table[n, code]
    fp: str = ""  # the float format of a shared table (mxfp4, nvfp4, nf4, mxfp8, fp8: compiler.quant.floatfmt)

    def __post_init__(self):
        n, k = self.codes.shape
        if k % self.group_size:
            raise ValueError(f"K={k} is not a multiple of group size {self.group_size}")
        j = k // self.group_size
        if self.scales.shape != (n, j) or self.zeros.shape != (n, j):
            raise ValueError(f"scales/zeros must be [{n}, {j}], got {self.scales.shape} / {self.zeros.shape}")
        if self.mins is not None:
            if self.mins.shape != (n, j):
                raise ValueError(f"mins must be [{n}, {j}], got {self.mins.shape}")
            if np.any(self.zeros):
                raise ValueError("scale-and-minimum groups have no zero point: zeros must be 0")
            if self.ternary:
                raise ValueError("ternary weights have no minimum")
        if self.table is not None:
            if self.table.shape not in ((n, 1 << self.bits), (1, 1 << self.bits)) or self.table.dtype != np.float32:
                raise ValueError(f"table must be float32 [{n} or 1, {1 << self.bits}], got {self.table.shape} {self.table.dtype}")
            if self.mins is not None or np.any(self.zeros):
                raise ValueError("codebook weights have no zero point or minimum")
        if (self.sparse_cols is None) != (self.sparse_vals is None):
            raise ValueError("sparse_cols and sparse_vals come together")
        if self.sparse_cols is not None:
            if self.sparse_cols.ndim != 2 or self.sparse_cols.shape[0] != n or self.sparse_vals.shape != self.sparse_cols.shape:
                raise ValueError(f"sparse cols/vals must be [{n}, C], got {self.sparse_cols.shape} / {self.sparse_vals.shape}")
            if self.sparse_cols.dtype != np.int16 or self.sparse_vals.dtype != np.float16:
                raise ValueError("sparse cols must be int16 and vals float16")

    @property
    def shape(self) -> tuple[int, int]:
        return self.codes.shape

    @property
    def n_groups(self) -> int:
        return self.codes.shape[1] // self.group_size

    def int_weights(self) -> np.ndarray:
        """codes - zeros per element, int16 [N, K]: the integers the contract multiplies activations by."""
        z = np.repeat(self.zeros.astype(np.int16), self.group_size, axis=1)
        return self.codes.astype(np.int16) - z

    @property
    def has_mins(self) -> bool:
        return self.mins is not None

    def dequantize(self) -> np.ndarray:
        """float32 [N, K] weights."""
        s = np.repeat(self.scales, self.group_size, axis=1)
        if self.table is not None:
            t = np.broadcast_to(self.table, (self.codes.shape[0], self.table.shape[1]))
            return (s * np.take_along_axis(t, self.codes.astype(np.int64), axis=1)).astype(np.float32)
        w = s * self.int_weights().astype(np.float32)
        if self.mins is not None:
            w = w + np.repeat(self.mins.astype(np.float32), self.group_size, axis=1)
        return w.astype(np.float32)

    @property
    def has_sparse(self) -> bool:
        return self.sparse_cols is not None

    def effective(self) -> np.ndarray:
        """float32 [N, K]: the dequantized weights plus the sparse side matrix (what the layer computes with)."""
        w = self.dequantize()
        if self.sparse_cols is not None:
            np.add.at(w, (np.arange(w.shape[0])[:, None], self.sparse_cols.astype(np.int64)), self.sparse_vals.astype(np.float32))
        return w

    def nbytes_packed(self) -> int:
        """Bytes of packed codes plus float32 scales plus zero points (one byte each) or float32 minimums."""
        n, k = self.codes.shape
        offsets = self.mins.nbytes if self.mins is not None else self.zeros.nbytes
        sparse = 0 if self.sparse_cols is None else self.sparse_cols.nbytes + self.sparse_vals.nbytes
        return n * k * self.bits // 8 + self.scales.nbytes + offsets + sparse
