"""The KV cache's storage formats, `--kv FMT[-rot][-kc][-gN][-wN]`: the grammar, and the bytes a token adds to the cache.

One table for the compiler (compiler.passes.kv_quant rewrites the graph to it) and the cost model
(hwsim.cost.roofline counts the same bytes). The formats and their arithmetic: docs/DESIGN.md, KV cache.
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler.errors import LowbitError

GROUP = 32  # values of a head per fp16 scale, unless -gN says otherwise
GROUPS = (32, 64, 128)
FORMATS = {"f32": None, "fp16": None, "fp8": 8, "int8": 8, "int4": 4, "int2": 2}  # bits of the codes (None: a float cache)
CODES = {"fp8": "e4m3"}  # formats whose codes are not integers (attr `code` of the ops; "int" otherwise)
TOKEN_GROUP = 32  # -kc: keys share a scale and a minimum per channel over this many consecutive rows (KIVI)
KEY_GROUP_DIM = "G"  # the rows dim of -kc's key parameters: one per TOKEN_GROUP cache rows (cache_rows)
OPTIONS = {"rot": "a Hadamard rotation of every K and V head (QuaRot; llama.cpp rotates its quantized cache too)",
           "kc": f"keys quantized per channel over groups of {TOKEN_GROUP} rows, with a minimum (KIVI; int4 and int2, with -wN, N >= {TOKEN_GROUP})",
           "gN": f"N values of a head per fp16 scale, N one of {', '.join(map(str, GROUPS))} (default {GROUP}), e.g. -g64",
           "wN": "the N most recent rows read in float32 (KIVI's full-precision window), e.g. -w128"}
MAX_WINDOW = 4096
DEFAULT_KV = "fp16"  # what `lowbit compile` stores a causal model's cache in when --kv is not given (vLLM's and llama.cpp's default)


@dataclass(frozen=True)
class KVSpec:
    """`--kv FMT[-rot][-kc][-gN][-wN]`: the cache's number format and its options."""

    fmt: str
    rotate: bool = False
    window: int = 0
    group: int = GROUP
    keys_channel: bool = False

    @property
    def bits(self) -> int | None:
        return FORMATS[self.fmt]

    @property
    def code(self) -> str:
        return CODES.get(self.fmt, "int")

    def __str__(self) -> str:
        return (self.fmt + ("-rot" if self.rotate else "") + ("-kc" if self.keys_channel else "") + (f"-g{self.group}" if self.group != GROUP else "")
                + (f"-w{self.window}" if self.window else ""))


def parse_kv(text: str) -> KVSpec:
    fmt, *opts = str(text).strip().lower().split("-")
    if fmt not in FORMATS:
        raise LowbitError(f"unknown KV cache format '{text}'", f"use one of {', '.join(FORMATS)}, with options -rot, -gN and -wN (e.g. int4-rot-w128)")
    rotate, window, group, seen = False, 0, GROUP, set()
    for o in opts:
        valid = o in ("rot", "kc") or (o[:1] in ("w", "g") and o[1:].isdigit())  # a bare -w or -g is unknown
        key = o if o in ("rot", "kc") else o[:1]
        if not valid or key in seen:
            raise LowbitError(f"{'unknown' if not valid else 'repeated'} KV cache option '-{o}' in '{text}'",
                              "the options are: " + "; ".join(f"-{k}: {v}" for k, v in OPTIONS.items()))
        seen.add(key)
        if key == "rot":
            rotate = True
        elif key == "kc":
            pass
        elif key == "g":
            group = int(o[1:])
            if group not in GROUPS:
                raise LowbitError(f"KV cache group '-{o}' in '{text}' is not one of {', '.join(map(str, GROUPS))}", "e.g. -g64")
        else:
            window = int(o[1:])
            if not 1 <= window <= MAX_WINDOW:
                raise LowbitError(f"KV cache window '-{o}' in '{text}' is outside 1..{MAX_WINDOW}", "e.g. -w128")
    for opt, val in (("w", window), ("g", group)):
        if opt in seen and FORMATS[fmt] is None:
            raise LowbitError(f"--kv {text}: -{opt}{val} needs a quantized cache", f"e.g. --kv int4-{opt}{val}, or drop -{opt}{val}")
    kc = "kc" in seen
    if kc and fmt not in ("int4", "int2"):
        raise LowbitError(f"--kv {text}: keys per channel (-kc) are for int4 and int2 caches", "e.g. --kv int4-kc-w128, or drop -kc")
    if kc and window < TOKEN_GROUP:
        raise LowbitError(f"--kv {text}: keys per channel (-kc) need a float window of at least {TOKEN_GROUP} rows (the group being filled)",
                          f"add -w128 (or any -wN, N >= {TOKEN_GROUP})")
    return KVSpec(fmt, rotate, window, group, kc)


def cache_rows(dim, rows: int) -> int:
    """Rows of a cache input whose first dim is `dim` in a cache of `rows` positions: a fixed count (a window's rings),
    one per TOKEN_GROUP rows (-kc's key parameters), or one per position."""
    if isinstance(dim, int):
        return dim
    return -(-rows // TOKEN_GROUP) if dim == KEY_GROUP_DIM else rows


def row_share(dim) -> float:
    """The share of one position in a row of a cache input (cache_rows): 0 for fixed rows, 1 / TOKEN_GROUP for -kc's."""
    return 0.0 if isinstance(dim, int) else 1.0 / TOKEN_GROUP if dim == KEY_GROUP_DIM else 1.0


def kv_bytes_per_token(layers: int, kv_heads: int, head_dim: int, fmt: str) -> float:
    """Bytes of K and V one token adds to the cache over all layers: codes plus a 2-byte (fp16) scale per group
    (a -wN window's rings are fixed rows, not per token)."""
    spec = parse_kv(fmt)
    bits = spec.bits
    if bits is None:
        return 2.0 * layers * kv_heads * head_dim * (2 if spec.fmt == "fp16" else 4)
    values = head_dim * bits / 8 + head_dim // spec.group * 2
    keys = head_dim * bits / 8 + 2 * head_dim * 2 / TOKEN_GROUP if spec.keys_channel else values  # -kc: a scale and a minimum per channel per 32 rows
    return layers * kv_heads * (keys + values)
