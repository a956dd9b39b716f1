"""GGUF files whose K-quant blocks follow llama.cpp's own convention, for byte-exact re-export tests.

tests/compiler/frontend/gguf_fixtures.py writes Q2_K / Q3_K / Q5_K / Q6_K tensors as random blocks: their
sub-scales need not reach the end of their range, so the same weights have other (d, sub-scale) splits (d / 2
and twice the sub-scales, or -d and the negated ones) and the file's own split cannot be told from its values.
llama.cpp's quantizers give each super-block's largest sub-block the end of the range: 15 (Q2_K), 63 (Q4_K,
Q5_K, and the sub-minimums), -32 (Q3_K), -128 (Q6_K). `canonical_k_quants` sets sub-block 0's fields so in
every super-block of the file's K-quant tensors, in place.
"""

from __future__ import annotations

import gguf
import numpy as np


def _set_first_sub_block(blocks: np.ndarray, type_name: str) -> None:
    """blocks: uint8 [B, block bytes] of one tensor, modified in place."""
    if type_name == "Q2_K":
        blocks[:, 0] = 0xFF  # sc = 15, mq = 15
    elif type_name == "Q3_K":
        blocks[:, 96] &= 0xF0  # stored sc + 32 = 0: low nibble of byte 0 of the scales ...
        blocks[:, 104] &= 0xFC  # ... and its top two bits
    elif type_name in ("Q4_K", "Q5_K"):
        blocks[:, 4] |= 0x3F  # sc = 63
        blocks[:, 8] |= 0x3F  # mq = 63
    elif type_name == "Q6_K":
        blocks[:, 192] = 0x80  # sc = -128


def canonical_k_quants(path) -> None:
    r = gguf.GGUFReader(str(path), "r+")
    for t in r.tensors:
        name = t.tensor_type.name
        if name in ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"):
            size = gguf.GGML_QUANT_SIZES[t.tensor_type][1]
            data = t.data.reshape(-1, size)
            _set_first_sub_block(data, name)
    r.data.flush()
