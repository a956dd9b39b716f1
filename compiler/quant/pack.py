"""Packing of weight codes (uint8 [N, K], values < 2^bits) into bytes, for storage and for backends.

Layouts (K runs along the last axis; "along K" means consecutive input features share a byte):

- "nibble" (bits = 4 only): two codes per byte, even k in the low nibble, odd k in the high nibble
  -> uint8 [N, ceil(K/2)].  Example: codes [1, 2] -> 0x21.
- "dense" (bits in {2, 4, 8}): 8/bits codes per byte, little-endian within the byte (code k % per sits
  at bit offset bits * (k % per)) -> uint8 [N, ceil(K * bits / 8)].  For bits = 4 it equals "nibble".
  Example, bits = 2: codes [1, 2, 3, 0] -> 0b00_11_10_01 = 0x39.
- "planes" (any bits in 1..8): bit-planes; plane b holds bit b of every code, 8 codes per byte along K,
  the lowest k in the least significant bit -> uint8 [bits, N, ceil(K/8)]. This is the layout the
  bit-serial LUT arrays read (one plane per cycle).  Example, bits = 2: codes [1, 2, 3, 0] ->
  plane 0 = 0b0101 = 0x05, plane 1 = 0b0110 = 0x06.

When K is not a multiple of the codes-per-byte count the codes are padded with zeros; `unpack` takes the
true k and cuts the padding off.
"""

from __future__ import annotations

import numpy as np

LAYOUTS = ("nibble", "dense", "planes")
_LAYOUT_BITS = {"nibble": (4,), "dense": (2, 4, 8), "planes": tuple(range(1, 9))}
_STORAGE = {8: "dense", 4: "nibble", 2: "dense", 3: "planes"}


def storage_layout(bits: int) -> str:
    """The canonical layout of `bits`-bit codes in artifacts: 8 and 2 -> dense, 4 -> nibble, 3 -> planes."""
    try:
        return _STORAGE[bits]
    except KeyError:
        raise ValueError(f"no storage layout for {bits}-bit codes; weight bits must be one of 8, 4, 3, 2") from None


def _check(bits: int, layout: str) -> None:
    if layout not in _LAYOUT_BITS:
        raise ValueError(f"unknown pack layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    if bits not in _LAYOUT_BITS[layout]:
        allowed = ", ".join(str(b) for b in _LAYOUT_BITS[layout])
        raise ValueError(f"layout {layout!r} cannot hold {bits}-bit codes (it takes bits in {{{allowed}}})")


def packed_shape(n: int, k: int, bits: int, layout: str) -> tuple[int, ...]:
    """Shape of pack(codes [n, k], bits, layout)."""
    _check(bits, layout)
    if layout == "planes":
        return (bits, n, -(-k // 8))
    per = 8 // bits
    return (n, -(-k // per))


def pack(codes: np.ndarray, bits: int, layout: str) -> np.ndarray:
    """Pack uint8 codes [N, K] (each < 2^bits) into uint8 bytes in `layout` (see the module doc)."""
    _check(bits, layout)
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be 2-D [N, K], got shape {codes.shape}")
    if codes.dtype != np.uint8:
        raise ValueError(f"codes must be uint8, got {codes.dtype}")
    if codes.size and int(codes.max()) >= (1 << bits):
        raise ValueError(f"code {int(codes.max())} does not fit in {bits} bits")
    n, k = codes.shape
    if layout == "planes":
        planes = [(codes >> b) & 1 for b in range(bits)]
        return np.packbits(np.stack(planes), axis=-1, bitorder="little")
    per = 8 // bits
    kp = -(-k // per) * per
    if kp != k:
        codes = np.concatenate([codes, np.zeros((n, kp - k), np.uint8)], axis=1)
    if per == 1:
        return codes.copy()
    g = codes.reshape(n, kp // per, per)
    out = np.zeros((n, kp // per), np.uint8)
    for i in range(per):
        out |= g[..., i] << np.uint8(bits * i)
    return out


def unpack(packed: np.ndarray, bits: int, layout: str, k: int) -> np.ndarray:
    """Inverse of `pack`: uint8 codes [N, k] from packed bytes (padding beyond k is dropped)."""
    _check(bits, layout)
    packed = np.asarray(packed)
    if packed.dtype != np.uint8:
        raise ValueError(f"packed data must be uint8, got {packed.dtype}")
    if layout == "planes":
        if packed.ndim != 3 or packed.shape[0] != bits or packed.shape[2] != -(-k // 8):
            raise ValueError(f"planes data for {bits}-bit codes with k={k} must be [{bits}, N, {-(-k // 8)}], got {packed.shape}")
        b = np.unpackbits(packed, axis=-1, count=k, bitorder="little")  # [bits, N, k]
        out = np.zeros(b.shape[1:], np.uint8)
        for i in range(bits):
            out |= b[i] << np.uint8(i)
        return out
    per = 8 // bits
    if packed.ndim != 2 or packed.shape[1] != -(-k // per):
        raise ValueError(f"{layout} data for {bits}-bit codes with k={k} must be [N, {-(-k // per)}], got {packed.shape}")
    if per == 1:
        return packed[:, :k].copy()
    mask = np.uint8((1 << bits) - 1)
    n = packed.shape[0]
    out = np.empty((n, packed.shape[1], per), np.uint8)
    for i in range(per):
        out[..., i] = (packed >> np.uint8(bits * i)) & mask
    return out.reshape(n, -1)[:, :k].copy()
