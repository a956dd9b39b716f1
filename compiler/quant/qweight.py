"""The quantized weight of one linear layer, in the numeric contract's terms (docs/DESIGN.md).

w[n, k] = scales[n, j] * (codes[n, k] - zeros[n, j]),  j = k // group_size

Codes are unsigned: [0, 2^bits - 1]; symmetric weights use zeros = 2^(bits-1); ternary weights store
q + 1 in {0, 1, 2} with zeros = 1, so every format dequantizes by the same rule.
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

    def __post_init__(self):
        n, k = self.codes.shape
        if k % self.group_size:
            raise ValueError(f"K={k} is not a multiple of group size {self.group_size}")
        j = k // self.group_size
        if self.scales.shape != (n, j) or self.zeros.shape != (n, j):
            raise ValueError(f"scales/zeros must be [{n}, {j}], got {self.scales.shape} / {self.zeros.shape}")

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

    def dequantize(self) -> np.ndarray:
        """float32 [N, K] weights."""
        s = np.repeat(self.scales, self.group_size, axis=1)
        return (s * self.int_weights().astype(np.float32)).astype(np.float32)

    def nbytes_packed(self) -> int:
        """Bytes of packed codes plus float32 scales plus zero points (one byte each) actually stored."""
        n, k = self.codes.shape
        return n * k * self.bits // 8 + self.scales.nbytes + self.zeros.nbytes
