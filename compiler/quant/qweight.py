"""The quantized weight of one linear layer, in the numeric contract's terms (docs/DESIGN.md).

w[n, k] = scales[n, j] * (codes[n, k] - zeros[n, j]),  j = k // group_size        (zero-point groups)
w[n, k] = scales[n, j] * codes[n, k] + mins[n, j]                                  (scale-and-minimum groups)

Codes are unsigned: [0, 2^bits - 1]; symmetric weights use zeros = 2^(bits-1); ternary weights store
q + 1 in {0, 1, 2} with zeros = 1, so every integer format dequantizes by the same rule. Scale-and-minimum
groups (llama.cpp's Q4_1 and K-quants: w = d q + m with a float m that is not a multiple of d) carry a
float32 minimum per group instead of a zero point; their `zeros` are all 0. Two-level scales (K-quants) are the
same numbers stored smaller: `sub_bits` says that every scale (and minimum) is an fp16 per super-block times a
small integer (compiler.quant.twolevel).
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
        w = s * self.int_weights().astype(np.float32)
        if self.mins is not None:
            w = w + np.repeat(self.mins.astype(np.float32), self.group_size, axis=1)
        return w.astype(np.float32)

    def nbytes_packed(self) -> int:
        """Bytes of packed codes plus float32 scales plus zero points (one byte each) or float32 minimums."""
        n, k = self.codes.shape
        offsets = self.mins.nbytes if self.mins is not None else self.zeros.nbytes
        return n * k * self.bits // 8 + self.scales.nbytes + offsets
