"""GGUF export: a lowbit artifact of a llama-family model as a GGUF file that llama.cpp loads.

Each qlinear weight is written as the GGUF block type that holds its codes as they are (blocks built here from
the artifact's codes, so nothing is re-rounded except, for the one-level types, the scales, which GGUF stores as
fp16). The first type in this order that holds a layer is used:

    type   layer                                                      llama.cpp's rule
    Q2_K   w2 with minimums, two-level, group a multiple of 16       w = d sc q - dmin mq    sc, mq 4-bit
    Q3_K   w3 symmetric (z = 4), two-level, group a multiple of 16   w = d sc (q - 4)        sc 6-bit signed
    Q4_K   w4 with minimums, two-level, group a multiple of 32       w = d sc q - dmin mq    sc, mq 6-bit
    Q5_K   w8 with minimums, codes <= 31, two-level, as Q4_K         w = d sc q - dmin mq    sc, mq 6-bit
    Q6_K   w8 symmetric, codes - 128 in [-32, 31], two-level, g16    w = d sc (q - 32)       sc int8
    Q5_0   w8 symmetric, codes - 128 in [-16, 15], group % 32 == 0   w = d (q - 16)
    Q8_0   w8 symmetric (z = 128), group a multiple of 32            w = d q8
    Q4_0   w4 symmetric (z = 8), group a multiple of 32              w = d (q - 8)
    Q5_1   w8 with minimums, codes <= 31, group a multiple of 32     w = d q + m
    Q4_1   w4 with minimums, or with integer zero points             w = d q + m   (m = -s z for zero points)
    TQ2_0  ternary, group a multiple of 256                          w = d (q - 1)
    TQ1_0  the same, five trits per byte (ternary_type="TQ1_0")      w = d (q - 1)
A group larger than a block (or a K-quant sub-block) is several of them with the same scale. K-quants need K a
multiple of 256 and a layer whose scales (and minimums) are exactly fp16 d per 256 weights times sub-scales in
the type's range (`two_level` layers: lowbit's w2g16k4-min, w3g16k, w4g32k-min, w8g16k8 and the K-quants that
`--quant keep` kept); they are then exact, and a kept GGUF's K-quant, Q5_0 and Q5_1 layers go back to their
own type. Anything else (w3 / w2 without two-level scales, w8 asym, ...) is written dequantized as F16 or F32
when `fallback` allows it, else refused naming the layer. Norms, biases and float weights are F32.

The q and k projections are permuted to llama.cpp's interleaved-RoPE row order (lowbit keeps Hugging Face's
half-split order). Permuting rows moves whole rows of codes, scales and offsets, so it is exact.

For every tensor the export reports the largest weight change, relative to the largest weight of its 32-weight
block, that the fp16 rounding of scales (and minimums) caused: zero when the scales are fp16-exact (a kept GGUF)
and for the K-quants.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compiler.artifact import Artifact, load_artifact
from compiler.errors import LowbitError
from compiler.frontend import SMOLLM2, smollm2_path
from compiler.quant import twolevel
from compiler.quant.pack import unpack

FALLBACKS = ("error", "f16", "f32")
BLOCK = 32  # weights per Q8_0 / Q4_0 / Q4_1 block
QK_K = 256  # weights per TQ2_0 super-block

_BLOCK_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_HF_BLOCK = re.compile(r"^model\.layers\.(\d+)\.(.+?)(\.weight|\.bias)?$")
_GGUF_NAME = re.compile(r"^(blk\.\d+\.[a-z_]+|token_embd|output_norm|output|rope_freqs)\.(weight|bias)$")


@dataclass
class TensorReport:
    name: str  # GGUF tensor name
    gguf_type: str  # "Q4_0", "F32", ...
    source: str  # what the artifact holds: "w4g64", "w4g32 (mins)", "float"
    max_rel_change: float  # largest |exported - artifact| / (largest |artifact| weight of its 32-weight block)
    fallback: bool = False  # written dequantized because no GGUF block type holds it exactly


@dataclass
class ExportReport:
    path: Path
    tensors: list[TensorReport]

    @property
    def max_rel_change(self) -> float:
        return max((t.max_rel_change for t in self.tensors), default=0.0)

    def type_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.tensors:
            out[t.gguf_type] = out.get(t.gguf_type, 0) + 1
        return out

    def to_json(self) -> dict:
        return {"path": str(self.path), "types": self.type_counts(), "max_rel_change": self.max_rel_change,
                "tensors": [t.__dict__ for t in self.tensors]}


def gguf_name(const_name: str) -> str:
    """GGUF tensor name of a Hugging Face llama weight name (names already in GGUF form pass through)."""
    if _GGUF_NAME.match(const_name):
        return const_name
    if const_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if const_name == "model.norm.weight":
        return "output_norm.weight"
    if const_name == "lm_head.weight":
        return "output.weight"
    m = _HF_BLOCK.match(const_name)
    if m:
        i, rest, suffix = m.group(1), m.group(2), m.group(3) or ""
        mapped = _BLOCK_NAMES.get(rest + suffix) or (_BLOCK_NAMES.get(rest, "") + suffix if rest in _BLOCK_NAMES else None)
        if mapped:
            return f"blk.{i}.{mapped}"
    raise LowbitError(f"weight '{const_name}' has no GGUF tensor name (llama architecture)", "export supports llama-family artifacts with Hugging Face weight names")


def permute_rows(a: np.ndarray, n_head: int) -> np.ndarray:
    """Hugging Face rows (RoPE halves) -> llama.cpp's interleaved pairs, per head (llama.cpp's converter)."""
    rows = a.shape[0]
    return a.reshape(n_head, 2, rows // n_head // 2, *a.shape[1:]).swapaxes(1, 2).reshape(a.shape)


def unpermute_rows(a: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of permute_rows (what an importer of GGUF undoes)."""
    rows = a.shape[0]
    return a.reshape(n_head, rows // n_head // 2, 2, *a.shape[1:]).swapaxes(1, 2).reshape(a.shape)


# ---- blocks ------------------------------------------------------------------------------------------------

def _f16(x: np.ndarray, what: str) -> np.ndarray:
    with np.errstate(over="ignore"):
        h = np.asarray(x, np.float32).astype("<f2")
    if not np.all(np.isfinite(h)):
        raise LowbitError(f"{what}: a scale or minimum exceeds fp16's range (65504), which GGUF blocks store",
                          "export this layer dequantized with --fallback f32")
    return h


def _per_block(a: np.ndarray, group: int, block: int) -> np.ndarray:
    """[N, K/group] -> [N, K/block]: a group of several blocks gives each block its value."""
    return np.repeat(a, group // block, axis=1)


def _nibbles(codes: np.ndarray) -> np.ndarray:
    """uint8 codes [N, nb, 32] -> the 16 bytes of each block: weight j in the low nibble of byte j, j + 16 in the high."""
    return codes[..., :16] | (codes[..., 16:] << np.uint8(4))


def _blocks(parts: list[np.ndarray], n: int) -> np.ndarray:
    """Concatenate per-block byte fields [N, nb, *] into GGUF rows uint8 [N, nb * block_bytes]."""
    return np.ascontiguousarray(np.concatenate([p.view(np.uint8).reshape(n, p.shape[1], -1) for p in parts], axis=2).reshape(n, -1))


def encode_q8_0(codes, scales, group, what):
    n, k = codes.shape
    d = _f16(_per_block(scales, group, BLOCK), what)  # [N, nb]
    q = (codes.astype(np.int16) - 128).astype(np.int8).reshape(n, k // BLOCK, BLOCK)
    w = np.repeat(d.astype(np.float32), BLOCK, axis=1) * q.reshape(n, k).astype(np.float32)
    return _blocks([d[..., None], q], n), w


def encode_q4_0(codes, scales, group, what):
    n, k = codes.shape
    d = _f16(_per_block(scales, group, BLOCK), what)
    c = codes.reshape(n, k // BLOCK, BLOCK)
    w = np.repeat(d.astype(np.float32), BLOCK, axis=1) * (codes.astype(np.float32) - 8)
    return _blocks([d[..., None], _nibbles(c)], n), w


def encode_q4_1(codes, scales, mins, group, what):
    n, k = codes.shape
    d = _f16(_per_block(scales, group, BLOCK), what)
    m = _f16(_per_block(mins, group, BLOCK), what)
    c = codes.reshape(n, k // BLOCK, BLOCK)
    w = np.repeat(d.astype(np.float32), BLOCK, axis=1) * codes.astype(np.float32) + np.repeat(m.astype(np.float32), BLOCK, axis=1)
    return _blocks([d[..., None], m[..., None], _nibbles(c)], n), w


def encode_tq2_0(codes, scales, group, what):
    n, k = codes.shape
    d = _f16(_per_block(scales, group, QK_K), what)
    # each 128-weight half: byte m holds weights m, m+32, m+64, m+96 at bits 0, 2, 4, 6 (llama.cpp's TQ2_0)
    c = codes.reshape(n, k // QK_K, 2, 4, 32)
    qs = (c[:, :, :, 0] | (c[:, :, :, 1] << 2) | (c[:, :, :, 2] << 4) | (c[:, :, :, 3] << 6)).reshape(n, k // QK_K, 64)
    w = np.repeat(d.astype(np.float32), QK_K, axis=1) * (codes.astype(np.float32) - 1)
    return _blocks([qs, d[..., None]], n), w


def _trits(c: np.ndarray, fields: int, width: int) -> np.ndarray:
    """TQ1_0 bytes of codes [..., fields * width]: byte m holds codes m + width n (n = 0..fields-1) as the base-3
    number with the first code most significant, padded to five trits, stored as ceil(v 256 / 243) so that a
    byte multiplied by 3^n (mod 256) carries trit n in its top bits: llama.cpp's decoder reads (b 3^n mod 256) 3 >> 8."""
    c = c.reshape(*c.shape[:-1], fields, width).astype(np.uint16)
    v = sum(c[..., n, :] * 3 ** (4 - n) for n in range(fields))
    return ((v * 256 + 242) // 243).astype(np.uint8)


def encode_tq1_0(codes, scales, group, what):
    n, k = codes.shape
    d = _f16(_per_block(scales, group, QK_K), what)
    # a 256-weight block: 160 weights in 32 bytes, 80 in 16 and 16 in the 4 bytes qh (four trits each), then d
    c = codes.reshape(n, k // QK_K, QK_K)
    qs = np.concatenate([_trits(c[..., :160], 5, 32), _trits(c[..., 160:240], 5, 16), _trits(c[..., 240:], 4, 4)], axis=-1)
    w = np.repeat(d.astype(np.float32), QK_K, axis=1) * (codes.astype(np.float32) - 1)
    return _blocks([qs, d[..., None]], n), w


def _pack(fields: np.ndarray, width: int) -> np.ndarray:
    """[..., P, L] small fields -> [..., L] bytes, field p at shift width*p (the inverse of gguf_quant's _planes)."""
    shifts = (np.arange(fields.shape[-2], dtype=np.uint8) * np.uint8(width))[:, None]
    return np.bitwise_or.reduce(fields.astype(np.uint8) << shifts, axis=-2).astype(np.uint8)


def _fifth_bits(high: np.ndarray) -> np.ndarray:
    """Q5_0 / Q5_1's qh: [N, nb, 32] bits -> 4 bytes per block, weight i at little-endian bit i."""
    return _pack(high.reshape(*high.shape[:-1], 4, 8).swapaxes(-1, -2), 1)


def encode_q5_0(codes, scales, group, what):
    """w8 symmetric codes within 112..143 (q + 112, q 5-bit)."""
    n, k = codes.shape
    d = _f16(_per_block(scales, group, BLOCK), what)
    q = (codes.astype(np.int16) - 112).astype(np.uint8).reshape(n, k // BLOCK, BLOCK)
    w = np.repeat(d.astype(np.float32), BLOCK, axis=1) * (codes.astype(np.float32) - 128)
    return _blocks([d[..., None], _fifth_bits(q >> 4), _nibbles(q & 15)], n), w


def encode_q5_1(codes, scales, mins, group, what):
    """w8 codes 0..31 with minimums."""
    n, k = codes.shape
    d = _f16(_per_block(scales, group, BLOCK), what)
    m = _f16(_per_block(mins, group, BLOCK), what)
    q = codes.reshape(n, k // BLOCK, BLOCK)
    w = np.repeat(d.astype(np.float32), BLOCK, axis=1) * codes.astype(np.float32) + np.repeat(m.astype(np.float32), BLOCK, axis=1)
    return _blocks([d[..., None], m[..., None], _fifth_bits(q >> 4), _nibbles(q & 15)], n), w


# ---- K-quants: (raw codes [N, K], fp16 d [N, S], sub-scales [N, K / sub], fp16 dmin, sub-minimums) -> blocks.
# Raw codes are the block's own fields: Q3_K's q3 + 4, Q6_K's q (0..63), the others' q.

def _superblocks(a: np.ndarray, *shape: int) -> np.ndarray:
    """[N, S * prod(shape)] -> [N, S, *shape]."""
    return a.reshape(a.shape[0], -1, *shape)


def _k_scales_6bit(sc: np.ndarray, mq: np.ndarray) -> np.ndarray:
    """Q4_K / Q5_K's 12 bytes of 8 sub-scales and 8 sub-minimums (the inverse of get_scale_min_k4)."""
    sc, mq = _superblocks(sc.astype(np.uint8), 8), _superblocks(mq.astype(np.uint8), 8)
    lo_s, hi_s, lo_m, hi_m = sc[..., :4], sc[..., 4:], mq[..., :4], mq[..., 4:]
    return np.concatenate([(lo_s & 63) | ((hi_s >> 4) << 6), (lo_m & 63) | ((hi_m >> 4) << 6), (hi_s & 15) | ((hi_m & 15) << 4)], axis=-1)


def encode_q2_k(q, d, sc, dmin, mq):
    n = q.shape[0]
    qs = _pack(_superblocks(q, 2, 4, 32), 2).reshape(n, -1, 64)  # per 128 weights: shift 2i holds weights 32i..32i+31
    scales = _superblocks((sc.astype(np.uint8) & 15) | (mq.astype(np.uint8) << 4), 16)
    return _blocks([scales, qs, d[..., None], dmin[..., None]], n)


def encode_q3_k(q, d, sc, dmin=None, mq=None):
    n = q.shape[0]
    hmask = _pack(_superblocks(q >> 2, 8, 32), 1)  # a set bit: no -4
    qs = _pack(_superblocks(q & 3, 2, 4, 32), 2).reshape(n, -1, 64)
    u = _superblocks((sc.astype(np.int16) + 32).astype(np.uint8), 16)  # stored sc + 32 in 6 bits
    lo = _pack((u & 15).reshape(n, -1, 2, 8), 4)  # sub-block j's low nibble: byte j % 8, high nibble for j >= 8
    hi = _pack((u >> 4).reshape(n, -1, 4, 4), 2)  # its top 2 bits: byte 8 + j % 4, shift 2 (j / 4)
    return _blocks([hmask, qs, lo, hi, d[..., None]], n)


def encode_q4_k(q, d, sc, dmin, mq):
    n = q.shape[0]
    qs = _pack(_superblocks(q, 4, 2, 32), 4).reshape(n, -1, 128)  # chunk c: sub-block 2c low nibbles, 2c + 1 high
    return _blocks([d[..., None], dmin[..., None], _k_scales_6bit(sc, mq), qs], n)


def encode_q5_k(q, d, sc, dmin, mq):
    n = q.shape[0]
    qh = _pack(_superblocks(q >> 4, 8, 32), 1)  # sub-block j's fifth bits: bit j of the 32 bytes
    qs = _pack(_superblocks(q & 15, 4, 2, 32), 4).reshape(n, -1, 128)
    return _blocks([d[..., None], dmin[..., None], _k_scales_6bit(sc, mq), qh, qs], n)


def encode_q6_k(q, d, sc, dmin=None, mq=None):
    n = q.shape[0]
    ql = _pack(_superblocks(q & 15, 2, 2, 64), 4).reshape(n, -1, 128)  # per 128 weights: 64 low-nibble bytes
    qh = _pack(_superblocks(q >> 4, 2, 4, 32), 2).reshape(n, -1, 64)
    return _blocks([ql, qh, _superblocks(sc.astype(np.int8), 16), d[..., None]], n)


def split_two_level(a: np.ndarray, sub: int, lo: int, hi: int, empty: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
    """fp16 d [N, S] and integers q [N, K / sub] in [lo, hi] with d * q == a exactly in float32 (a: [N, K / sub],
    one value per sub-block), or None: compiler.quant.twolevel.decompose, whose candidate order gives back the
    (d, q) of a file llama.cpp wrote. An all-zero super-block's sub-scales are `empty` (what llama.cpp stores as
    zero bits: -32 for Q3_K)."""
    signed = lo < 0
    bits = (hi - lo).bit_length()
    if twolevel.qrange(bits, signed) != (lo, hi):
        raise ValueError(f"sub-scale range [{lo}, {hi}] is not a {bits}-bit range")
    r = twolevel.decompose(a, sub, bits, signed)
    if r is None:
        return None
    d, q = r
    if empty:
        zero = np.repeat(d == 0, QK_K // sub, axis=1)[:, : q.shape[1]]
        q = np.where(zero, np.int16(empty), q)
    return d, q


# type -> (encoder, code bits, sub-block, zero point (None: minimums), raw code range as codes, offset to raw,
#          sub-scale range, the sub-scale stored as zero bits)
K_TYPES = {
    "Q2_K": (encode_q2_k, 2, 16, None, (0, 3), 0, (0, 15), 0),
    "Q3_K": (encode_q3_k, 3, 16, 4, (0, 7), 0, (-32, 31), -32),
    "Q4_K": (encode_q4_k, 4, 32, None, (0, 15), 0, (0, 63), 0),
    "Q5_K": (encode_q5_k, 8, 32, None, (0, 31), 0, (0, 63), 0),
    "Q6_K": (encode_q6_k, 8, 16, 128, (96, 159), 96, (-128, 127), 0),
}


def block_rel_change(exported: np.ndarray, original: np.ndarray) -> float:
    """max |exported - original| / max |original| of its 32-weight block (blocks of zeros must stay zero)."""
    n, k = original.shape
    if k % BLOCK:
        den = np.abs(original).max(axis=1, keepdims=True)
        diff = np.abs(exported - original).max(axis=1, keepdims=True)
    else:
        den = np.abs(original.reshape(n, -1, BLOCK)).max(axis=2)
        diff = np.abs((exported - original).reshape(n, -1, BLOCK)).max(axis=2)
    if np.any((den == 0) & (diff > 0)):
        return float("inf")
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(den > 0, diff / np.where(den > 0, den, 1), 0.0)
    return float(r.max(initial=0.0))


# ---- the graph's weights -----------------------------------------------------------------------------------

@dataclass
class _QWeight:
    codes: np.ndarray
    scales: np.ndarray
    zeros: np.ndarray | None
    mins: np.ndarray | None
    bits: int
    group: int
    ternary: bool
    two_level: dict | None = None  # {"sub_bits", "signed"}: the scales are fp16 per 256 weights times sub-scales

    @property
    def spec(self) -> str:
        k = self.codes.shape[1]
        w = "ternary" if self.ternary else f"w{self.bits}"
        g = "pc" if self.group == k else f"g{self.group}"
        if self.two_level:
            g += "k" if self.two_level.get("sub_bits") == 6 else f"k{self.two_level.get('sub_bits')}"
        kind = " (mins)" if self.mins is not None else ("" if self.symmetric else " (zero points)")
        return f"{w}{g}{kind}"

    @property
    def symmetric(self) -> bool:
        if self.zeros is None:
            return False
        z = 1 if self.ternary else 1 << (self.bits - 1)
        return bool(np.all(self.zeros == z))

    def dequantize(self) -> np.ndarray:
        s = np.repeat(self.scales, self.group, axis=1)
        if self.mins is not None:
            return (s * self.codes.astype(np.float32) + np.repeat(self.mins.astype(np.float32), self.group, axis=1)).astype(np.float32)
        z = np.repeat(self.zeros.astype(np.int16), self.group, axis=1)
        return (s * (self.codes.astype(np.int16) - z).astype(np.float32)).astype(np.float32)

    def permuted(self, n_head: int) -> _QWeight:
        p = lambda a: None if a is None else permute_rows(a, n_head)
        return _QWeight(p(self.codes), p(self.scales), p(self.zeros), p(self.mins), self.bits, self.group, self.ternary, self.two_level)


def _qweight(graph, node) -> _QWeight:
    a = node.attrs
    packed, scales, offsets = (graph.consts[i] for i in node.inputs[1:4])
    codes = unpack(packed, a["bits"], a["layout"], a["k"])
    mins = np.asarray(offsets, np.float32) if a.get("mins") else None
    zeros = None if a.get("mins") else np.asarray(offsets, np.uint8)
    # a qembedding shares its table with the tied head's qlinear, whose attrs say whether it is two-level
    tl = a.get("two_level") or next((n.attrs.get("two_level") for n in graph.nodes if n.op == "qlinear" and n.inputs[1] == node.inputs[1]), None)
    return _QWeight(codes, np.asarray(scales, np.float32), zeros, mins, a["bits"], a["group_size"], bool(a.get("ternary")), tl)


def _k_quant(q: _QWeight, t: str):
    """(blocks, exported weights) of q as K-quant t, or None where t does not hold it exactly (module doc)."""
    enc, bits, sub, zero, (cmin, cmax), offset, (lo, hi), empty = K_TYPES[t]
    k = q.codes.shape[1]
    if not q.two_level or q.ternary or q.bits != bits or k % QK_K or q.group % sub or (zero is None) != (q.mins is not None):
        return None
    if zero is not None and not np.all(q.zeros == zero):
        return None
    if q.codes.min(initial=cmin) < cmin or q.codes.max(initial=cmax) > cmax:
        return None
    rep = q.group // sub  # a group of several sub-blocks repeats its sub-scale
    ds = split_two_level(np.repeat(q.scales, rep, axis=1), sub, lo, hi, empty)
    dm = split_two_level(-np.repeat(q.mins, rep, axis=1), sub, 0, hi) if q.mins is not None else (None, None)
    if ds is None or dm is None:
        return None
    (d, sc), (dmin, mq) = ds, dm
    data = enc((q.codes.astype(np.int16) - offset).astype(np.uint8), d, sc, dmin, mq)
    s = np.repeat(np.repeat(d.astype(np.float32), QK_K // sub, axis=1) * sc.astype(np.float32), sub, axis=1)
    if zero is not None:
        return data, s * (q.codes.astype(np.float32) - np.float32(zero))
    m = -(np.repeat(np.repeat(dmin.astype(np.float32), QK_K // sub, axis=1) * mq.astype(np.float32), sub, axis=1))
    return data, s * q.codes.astype(np.float32) + m


def _one_level(q: _QWeight, t: str, what: str):
    """(blocks, exported weights) of q as Q5_0 / Q8_0 / Q4_0 / Q5_1 / Q4_1 / TQ2_0, or None where t does not hold it."""
    k = q.codes.shape[1]
    sym = q.mins is None and q.symmetric and not q.ternary and q.group % BLOCK == 0
    narrow = lambda lo, hi: bool(q.codes.min(initial=lo) >= lo and q.codes.max(initial=hi) <= hi)
    if t == "Q5_0" and sym and q.bits == 8 and narrow(112, 143):
        return encode_q5_0(q.codes, q.scales, q.group, what)
    if t == "Q8_0" and sym and q.bits == 8:
        return encode_q8_0(q.codes, q.scales, q.group, what)
    if t == "Q4_0" and sym and q.bits == 4:
        return encode_q4_0(q.codes, q.scales, q.group, what)
    if t == "Q5_1" and q.mins is not None and q.bits == 8 and q.group % BLOCK == 0 and narrow(0, 31):
        return encode_q5_1(q.codes, q.scales, q.mins, q.group, what)
    if t == "Q4_1" and q.bits == 4 and not q.ternary and q.group % BLOCK == 0:
        mins = q.mins if q.mins is not None else -q.scales * q.zeros.astype(np.float32)
        return encode_q4_1(q.codes, q.scales, mins, q.group, what)
    if t in TERNARY_TYPES and q.ternary and q.symmetric and q.group % QK_K == 0 and k % QK_K == 0:
        return (encode_tq1_0 if t == "TQ1_0" else encode_tq2_0)(q.codes, q.scales, q.group, what)
    return None


# the order in which types are tried: exact two-level ones first, then the smallest one-level type; ternary
# layers take TQ2_0 (2 bits per weight, llama.cpp's faster kernel) or, when asked, TQ1_0 (1.6875)
TYPE_ORDER = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q5_0", "Q8_0", "Q4_0", "Q5_1", "Q4_1", "TQ2_0")
TERNARY_TYPES = ("TQ2_0", "TQ1_0")


def encode_qweight(q: _QWeight, what: str, fallback: str, ternary_type: str = "TQ2_0"):
    """(GGUF type name, data, exported float weights, fell back?) for one quantized weight; `what` names it in errors."""
    for t in TYPE_ORDER[:-1] + (ternary_type,):
        got = _k_quant(q, t) if t in K_TYPES else _one_level(q, t, what)
        if got is not None:
            return (t, *got, False)
    if fallback == "error":
        raise LowbitError(
            f"{what}: no GGUF block type holds it exactly (Q8_0 / Q5_0: w8 symmetric, Q4_0 / Q4_1: w4, Q5_1: w8 codes <= 31 with "
            f"minimums, groups a multiple of 32; K-quants: two-level w2 / w3 / w4 / w8 with K a multiple of 256; TQ2_0: ternary g256)",
            "pass --fallback f16 or --fallback f32 to store such layers dequantized, or compile with e.g. --quant w4g32",
        )
    w = q.dequantize()
    if fallback == "f16":
        h = w.astype(np.float16)
        return "F16", h, h.astype(np.float32), True
    return "F32", w, w, True


# ---- metadata ----------------------------------------------------------------------------------------------

def _source_gguf(art: Artifact) -> Path | None:
    src = art.manifest.get("model", {}).get("source", {}) or {}
    if src.get("kind") == "package" and src.get("name") == SMOLLM2:
        return smollm2_path()
    for key in ("path", "file", "gguf"):
        p = src.get(key)
        if isinstance(p, str) and p.endswith(".gguf") and Path(p).is_file():
            return Path(p)
    return None


def _read_fields(source: Path) -> list[tuple[str, object, object, object]]:
    """(key, value, GGUF type, array element type) of every metadata field of the source GGUF (read once:
    GGUFReader takes seconds on a 50k-token vocabulary)."""
    import gguf

    out = []
    for key, f in gguf.GGUFReader(source).fields.items():
        if f.types:
            sub = f.types[-1] if f.types[0] == gguf.GGUFValueType.ARRAY else None
            out.append((key, f.contents(), f.types[0], sub))
    return out


def _copy_fields(writer, fields, prefixes: tuple[str, ...], skip: set[str]):
    """Re-emit the source GGUF's metadata under `prefixes` as it was (tokenizer, general info)."""
    for key, value, vtype, sub in fields:
        if key.startswith(prefixes) and key not in skip:
            writer.add_key_value(key, value, vtype, sub_type=sub)


def _byte_vocab(writer, tok, vocab: int):
    """lowbit's byte tokenizer (pad/bos/eos, then byte b = id b + 3) as a SentencePiece vocabulary of byte tokens:
    llama.cpp's byte fallback then encodes text exactly as lowbit does. llama.cpp writes spaces as U+2581 before
    tokenizing, so the space byte's token is that piece."""
    import gguf

    tokens = ["<pad>", "<s>", "</s>"] + [("\u2581" if b == 0x20 else f"<0x{b:02X}>") for b in range(256)]
    types = [gguf.TokenType.CONTROL] * 3 + [(gguf.TokenType.NORMAL if b == 0x20 else gguf.TokenType.BYTE) for b in range(256)]
    if vocab < len(tokens):
        raise LowbitError(f"the model's vocabulary has {vocab} rows, fewer than the byte tokenizer's {len(tokens)}", "export a model with a real tokenizer")
    tokens += [f"<unused{i}>" for i in range(vocab - len(tokens))]
    types += [gguf.TokenType.UNUSED] * (vocab - len(types))
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * vocab)
    writer.add_token_types([int(t) for t in types])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(0)
    writer.add_add_bos_token(bool(getattr(tok, "add_bos", True)))
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(False)


def _hf_vocab(writer, tok, vocab: int):
    """A byte-level BPE tokenizer.json (GPT-2 style) as GGUF's "gpt2" tokenizer."""
    import json

    import gguf

    data = json.loads(Path(tok.path).read_text())
    model = data.get("model", {})
    pre = json.dumps(data.get("pre_tokenizer"))
    if model.get("type") != "BPE" or "ByteLevel" not in pre:
        raise LowbitError(f"tokenizer {tok.path.name} is not a byte-level BPE tokenizer, which is all the GGUF export writes",
                          "export a GGUF-sourced or GPT-2-style byte-level BPE model")
    ids = dict(model["vocab"])
    special = {}
    for t in data.get("added_tokens", []):
        ids[t["content"]] = t["id"]
        if t.get("special"):
            special[t["content"]] = t["id"]
    tokens = [f"[PAD{i}]" for i in range(vocab)]
    types = [gguf.TokenType.UNUSED] * vocab
    for text, i in ids.items():
        if i < vocab:
            tokens[i] = text
            types[i] = gguf.TokenType.CONTROL if text in special else gguf.TokenType.NORMAL
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm" if '"individual_digits": true' in pre else "gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types([int(t) for t in types])
    writer.add_token_merges(merges)
    _special_ids(writer, tok)


def _special_ids(writer, tok):
    bos = getattr(tok, "bos_id", None)
    eos = list(getattr(tok, "eos_ids", None) or [])
    if bos is not None:
        writer.add_bos_token_id(int(bos))
    if eos:
        writer.add_eos_token_id(int(eos[0]))
        if len(eos) > 1:
            writer.add_eot_token_id(int(eos[1]))
    writer.add_add_bos_token(bool(getattr(tok, "add_bos", False)))
    tmpl = getattr(tok, "chat_template", None)
    if tmpl:
        writer.add_chat_template(tmpl)


def _token_list_vocab(writer, tok, vocab: int):
    """A tokenizer that carries its GGUF-style vocabulary (tokens, merges or scores, types)."""
    tokens = list(tok.tokens)
    if len(tokens) != vocab:
        raise LowbitError(f"the tokenizer has {len(tokens)} tokens, the model's vocabulary {vocab}", "recompile the artifact")
    writer.add_tokenizer_model(getattr(tok, "model", None) or "gpt2")
    writer.add_tokenizer_pre(getattr(tok, "pre", None) or "default")
    writer.add_token_list(tokens)
    if getattr(tok, "token_types", None) is not None:
        writer.add_token_types([int(t) for t in tok.token_types])
    if getattr(tok, "scores", None) is not None:
        writer.add_token_scores([float(s) for s in tok.scores])
    if getattr(tok, "merges", None):
        writer.add_token_merges(list(tok.merges))
    _special_ids(writer, tok)


def _write_tokenizer(writer, art: Artifact, vocab: int, fields):
    if fields is not None:
        _copy_fields(writer, fields, ("tokenizer.",), set())
        return
    tok = art.tokenizer()
    if tok is None:
        raise LowbitError(f"artifact {art.path} has no tokenizer", "llama.cpp needs one: compile from a model with a tokenizer")
    if getattr(tok, "tokens", None):
        _token_list_vocab(writer, tok, vocab)
    elif getattr(tok, "kind", "") == "bytes":
        _byte_vocab(writer, tok, vocab)
    elif getattr(tok, "kind", "") == "hf":
        _hf_vocab(writer, tok, vocab)
    else:
        raise LowbitError(f"artifact {art.path}: tokenizer kind '{getattr(tok, 'kind', '?')}' cannot be written to GGUF", "export a GGUF-sourced or Hugging Face byte-level BPE model")


def _file_type(counts: dict[str, int]):
    import gguf

    ft = gguf.LlamaFileType
    by = {"Q4_0": ft.MOSTLY_Q4_0, "Q4_1": ft.MOSTLY_Q4_1, "Q5_0": ft.MOSTLY_Q5_0, "Q5_1": ft.MOSTLY_Q5_1, "Q8_0": ft.MOSTLY_Q8_0,
          "Q2_K": ft.MOSTLY_Q2_K, "Q3_K": ft.MOSTLY_Q3_K_S, "Q4_K": ft.MOSTLY_Q4_K_S, "Q5_K": ft.MOSTLY_Q5_K_S, "Q6_K": ft.MOSTLY_Q6_K,
          "TQ2_0": ft.MOSTLY_TQ2_0, "TQ1_0": ft.MOSTLY_TQ1_0, "F16": ft.MOSTLY_F16}
    quant = {t: c for t, c in counts.items() if t in by}
    return by[max(quant, key=quant.get)] if quant else gguf.LlamaFileType.ALL_F32


# ---- export ------------------------------------------------------------------------------------------------

def default_output(artifact: str | Path) -> Path:
    p = Path(artifact).resolve()
    return p.parent / f"{p.name}.gguf"


def export_gguf(artifact: str | Path, out: str | Path | None = None, fallback: str = "error", float_type: str = "f32",
                ternary_type: str = "TQ2_0") -> ExportReport:
    """Write the artifact as GGUF (atomically: a temporary file renamed into place). Returns what was written
    per tensor. fallback: 'error' | 'f16' | 'f32' for weights no GGUF block type holds exactly; float_type: 'f32' |
    'f16' for float embedding / head matrices (norms and biases are always F32); ternary_type: TQ2_0 | TQ1_0."""
    import gguf

    if fallback not in FALLBACKS:
        raise LowbitError(f"unknown fallback '{fallback}'", f"use one of {', '.join(FALLBACKS)}")
    if ternary_type not in TERNARY_TYPES:
        raise LowbitError(f"unknown ternary type '{ternary_type}'", f"use one of {', '.join(TERNARY_TYPES)}")
    if float_type not in ("f32", "f16"):
        raise LowbitError(f"unknown float type '{float_type}'", "use f32 or f16")
    art = load_artifact(artifact)
    if not art.causal:
        raise LowbitError(f"artifact {art.path} is a {art.family} model; GGUF export writes llama-family causal LMs",
                          "export an artifact compiled from a llama-family model (e.g. smollm2-135m, llama-tiny)")
    out = Path(out) if out is not None else default_output(art.path)
    if not out.parent.is_dir():
        raise LowbitError(f"output folder {out.parent} does not exist", "create it first or choose another -o path")
    inside = next((d for d in Path(os.path.abspath(out)).parents if d == Path(os.path.abspath(art.path))), None)
    if inside is not None:
        raise LowbitError(f"output {out} is inside the artifact {art.path}", "write the GGUF file outside the artifact folder")
    if out.is_dir():
        raise LowbitError(f"output {out} is a folder", "give a file name, e.g. -o model.gguf")

    g = art.graph
    sparse = [n.inputs[1].removesuffix(".sp_cols") for n in g.nodes if n.op == "sparse_matmul"]
    if sparse:
        raise LowbitError(f"artifact {art.path} has sparse outliers ({len(sparse)} layers, e.g. {sparse[0]}), which no GGUF block type holds",
                          "export an artifact compiled without the -sp suffix")
    cb = [n.inputs[1] for n in g.nodes if n.op == "qlinear" and n.attrs.get("codebook")]
    if cb:
        raise LowbitError(f"artifact {art.path} has codebook weights ({len(cb)} layers, e.g. {cb[0].removesuffix('.qweight')}): a table per row, "
                          "which no GGUF block type holds", "export an artifact compiled with a group spec (e.g. w3g16k-min)")
    if ((art.manifest.get("quant") or {}).get("rotate") or {}).get("online"):
        raise LowbitError(f"artifact {art.path} was compiled with --rotate hadamard: its FFN down projections read a Hadamard transform "
                          "of their input, an op llama.cpp's graph does not have", "export an artifact compiled without --rotate")
    hp = g.meta.get("hparams") or {}
    cfg = art.manifest["model"].get("config") or {}
    source = _source_gguf(art)
    tensors: list[tuple[str, np.ndarray, object]] = []  # (name, data, raw GGML type or None)
    reports: list[TensorReport] = []

    def add_float(name: str, w: np.ndarray, f16: bool = False):
        w = np.asarray(w, np.float32)
        data = w.astype(np.float16) if f16 else w
        change = block_rel_change(data.astype(np.float32), w) if f16 and w.ndim == 2 else 0.0
        tensors.append((name, np.ascontiguousarray(data), None))
        reports.append(TensorReport(name, "F16" if f16 else "F32", "float", change))

    def add_quant(name: str, q: _QWeight, original: np.ndarray, layer: str):
        t, data, w, fell = encode_qweight(q, f"layer {layer} ({name}, {q.spec})", fallback, ternary_type)
        change = block_rel_change(w, original)
        raw = getattr(gguf.GGMLQuantizationType, t) if t not in ("F16", "F32") else None
        tensors.append((name, np.ascontiguousarray(data), raw))
        reports.append(TensorReport(name, t, q.spec, change, fell))

    def n_head_of(name: str) -> int | None:
        if ".attn_q." in name:
            return hp["heads"]
        if ".attn_k." in name:
            return hp["kv_heads"]
        return None

    embed_src = None  # the const(s) of the embedding table, to tell a tied head
    done: set[str] = set()
    for node in g.nodes:
        if node.op == "embedding":
            embed_src = (node.inputs[1],)
            add_float("token_embd.weight", g.consts[node.inputs[1]], float_type == "f16")
        elif node.op == "qembedding":
            embed_src = tuple(node.inputs[1:4])
            q = _qweight(g, node)
            add_quant("token_embd.weight", q, q.dequantize(), node.inputs[1])
        elif node.op in ("linear", "qlinear"):
            head = "logits" in node.outputs
            srcs = (node.inputs[1],) if node.op == "linear" else tuple(node.inputs[1:4])
            if head and srcs == embed_src:
                continue  # tied: llama.cpp reads token_embd when there is no output.weight
            wname = node.inputs[1]
            if node.op == "qlinear":
                wname = re.sub(r"\.qweight$", ".weight", wname)
            base = re.sub(r"\.weight$", "", wname)
            name = "output.weight" if head else gguf_name(wname)
            nh = n_head_of(name)
            if node.op == "linear":
                w = g.consts[node.inputs[1]]
                add_float(name, permute_rows(w, nh) if nh else w, head and float_type == "f16")
            else:
                q = _qweight(g, node)
                if nh:
                    q = q.permuted(nh)
                add_quant(name, q, q.dequantize(), base)
            bias_in = node.inputs[2] if node.op == "linear" and len(node.inputs) == 3 else (node.inputs[4] if node.op == "qlinear" and len(node.inputs) == 5 else None)
            if bias_in is not None:
                b = g.consts[bias_in]
                add_float(name[: -len(".weight")] + ".bias", permute_rows(b, nh) if nh else b)
        elif node.op == "rmsnorm":
            name = "output_norm.weight" if node.attrs.get("block") is None else gguf_name(node.inputs[1])
            if name not in done:
                add_float(name, g.consts[node.inputs[1]])
                done.add(name)
        elif node.op in ("layernorm",):
            raise LowbitError(f"artifact {art.path} has layernorm nodes; GGUF export writes llama-family models", "export a llama-family artifact")
    if hp.get("rope_scaling"):
        from compiler.reference import rope_inv_freq

        d = hp["head_dim"]
        freqs = rope_inv_freq(d, hp["theta"], None) / rope_inv_freq(d, hp["theta"], hp["rope_scaling"])
        add_float("rope_freqs.weight", freqs.astype(np.float32))

    counts: dict[str, int] = {}
    for r in reports:
        counts[r.gguf_type] = counts.get(r.gguf_type, 0) + 1
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    try:
        w = gguf.GGUFWriter(tmp, "llama")
        fields = _read_fields(source) if source is not None else None
        if fields is not None:
            _copy_fields(w, fields, ("general.",), {"general.architecture", "general.file_type", "general.quantization_version", "general.alignment"})
        else:
            w.add_name(art.manifest["model"].get("name") or g.name)
        w.add_string("general.quantized_by", "lowbit")
        w.add_file_type(int(_file_type(counts)))
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        w.add_context_length(int(cfg.get("max_position_embeddings") or hp.get("context") or 2048))
        w.add_embedding_length(int(hp["hidden"]))
        w.add_block_count(int(hp["layers"]))
        w.add_feed_forward_length(int(hp["inter"]))
        w.add_head_count(int(hp["heads"]))
        w.add_head_count_kv(int(hp["kv_heads"]))
        w.add_rope_dimension_count(int(hp["head_dim"]))
        if hp["head_dim"] * hp["heads"] != hp["hidden"]:
            w.add_key_length(int(hp["head_dim"]))
            w.add_value_length(int(hp["head_dim"]))
        w.add_rope_freq_base(float(hp["theta"]))
        w.add_layer_norm_rms_eps(float(hp["eps"]))
        w.add_vocab_size(int(hp["vocab"]))
        _write_tokenizer(w, art, int(hp["vocab"]), fields)
        for name, data, raw in tensors:
            w.add_tensor(name, data, raw_dtype=raw)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, out)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        from compiler.fsutil import write_error

        raise write_error(out, e) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ExportReport(out, reports)
