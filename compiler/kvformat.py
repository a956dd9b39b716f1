"""The KV cache's storage formats, `--kv FMT[-rot][-gN][-wN]`: the grammar, and the bytes a token adds to the cache.

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
OPTIONS = {"rot": "a Hadamard rotation of every K and V head (QuaRot; llama.cpp rotates its quantized cache too)",
           "gN": f"N values of a head per fp16 scale, N one of {', '.join(map(str, GROUPS))} (default {GROUP}), e.g. -g64",
           "wN": "the N most recent rows read in float32 (KIVI's full-precision window), e.g. -w128"}
MAX_WINDOW = 4096
DEFAULT_KV = "fp16"  # what `lowbit compile` stores a causal model's cache in when --kv is not given (vLLM's and llama.cpp's default)


@dataclass(frozen=True)
class KVSpec:
    """`--kv FMT[-rot][-gN][-wN]`: the cache's number format and its options."""

    fmt: str
    rotate: bool = False
    window: int = 0
    group: int = GROUP

    @property
    def bits(self) -> int | None:
        return FORMATS[self.fmt]

    @property
    def code(self) -> str:
        return CODES.get(self.fmt, "int")

    def __str__(self) -> str:
        return (self.fmt + ("-rot" if self.rotate else "") + (f"-g{self.group}" if self.group != GROUP else "")
                + (f"-w{self.window}" if self.window else ""))


def parse_kv(text: str) -> KVSpec:
    fmt, *opts = str(text).strip().lower().split("-")
    if fmt not in FORMATS:
        raise LowbitError(f"unknown KV cache format '{text}'", f"use one of {', '.join(FORMATS)}, with options -rot, -gN and -wN (e.g. int4-rot-w128)")
    rotate, window, group, seen = False, 0, GROUP, set()
    for o in opts:
        valid = o == "rot" or (o[:1] in ("w", "g") and o[1:].isdigit())  # a bare -w or -g is unknown
        key = o if o == "rot" else o[:1]
        if not valid or key in seen:
            raise LowbitError(f"{'unknown' if not valid else 'repeated'} KV cache option '-{o}' in '{text}'",
                              "the options are: " + "; ".join(f"-{k}: {v}" for k, v in OPTIONS.items()))
        seen.add(key)
        if key == "rot":
            rotate = True
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
    return KVSpec(fmt, rotate, window, group)


def kv_bytes_per_token(layers: int, kv_heads: int, head_dim: int, fmt: str) -> float:
    """Bytes of K and V one token adds to the cache over all layers: codes plus a 2-byte (fp16) scale per group
    (a -wN window's rings are fixed rows, not per token)."""
    spec = parse_kv(fmt)
    bits = spec.bits
    per = head_dim * (2 if spec.fmt == "fp16" else 4) if bits is None else head_dim * bits / 8 + head_dim // spec.group * 2
    return 2.0 * layers * kv_heads * per
