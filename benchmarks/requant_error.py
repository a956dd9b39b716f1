"""The measurement behind `--quant keep`'s re-quantization rule (compiler/quant/keep.py): for each GGUF type, the relative
RMS error of re-quantizing its dequantized weights with each candidate lowbit format. The GGUF frontend decodes all
of these types exactly (compiler/frontend/gguf_quant.py), so keep re-quantizes them only where a weight of such a
type reaches it without its decoded form; the table is what the exact decode saves.

Blocks of each type are random (random code bytes; the fp16 super-block scale and minimum fixed to ordinary values),
decoded by the `gguf` package, so every sub-block scale, minimum and code pattern the type can store appears. Q5_0 and
Q5_1 are made by gguf's own quantizer from Gaussian weights, because their random blocks would not be ones llama.cpp
writes. The weight is 256 x 1536 (K = 1536: a multiple of 256 and of every group).

Usage: python -m benchmarks.requant_error [--rows 256] [--k 1536] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks.common import machine, print_table

# byte offsets of the fp16 scale fields in one block (gguf-py / ggml-common.h block layouts)
_F16_FIELDS = {"Q6_K": (208,), "Q5_K": (0, 2), "Q4_K": (0, 2), "Q3_K": (108,), "Q2_K": (80, 82)}
CANDIDATES = {
    "Q6_K": ["w8g32", "w8g32-asym", "w8g32-min", "w8g64", "w8pc"],
    "Q5_K": ["w8g32", "w8g32-asym", "w8g32-min"],
    "Q5_0": ["w8g32", "w8g32-asym", "w8g32-min"],
    "Q5_1": ["w8g32", "w8g32-asym", "w8g32-min"],
    "Q4_K": ["w4g32", "w4g32-asym", "w4g32-min"],
    "Q3_K": ["w3g32", "w3g32-asym", "w3g32-min", "w4g32-min"],
    "Q2_K": ["w2g32", "w2g32-asym", "w2g32-min"],
}


def gguf_weight(type_name: str, rows: int, k: int, rng) -> np.ndarray:
    """A [rows, k] float32 weight that is exactly representable in the GGUF type."""
    import gguf
    from gguf import quants

    qt = gguf.GGMLQuantizationType[type_name]
    block, nbytes = gguf.GGML_QUANT_SIZES[qt]
    if type_name in ("Q5_0", "Q5_1"):
        packed = quants.quantize(rng.standard_normal((rows, k)).astype(np.float32), qt)
    else:
        raw = rng.integers(0, 256, (rows, k // block, nbytes), dtype=np.uint8)
        for i, off in enumerate(_F16_FIELDS[type_name]):  # d, then dmin: ordinary positive fp16 values
            raw[..., off : off + 2] = np.frombuffer(np.float16(0.01 if i == 0 else 0.004).tobytes(), np.uint8)
        packed = raw.reshape(rows, -1)
    return quants.dequantize(packed, qt).astype(np.float32).reshape(rows, k)


def rel_rms(w: np.ndarray, spec_text: str) -> float:
    from compiler.quant.rtn import quantize_rtn
    from compiler.quant.spec import parse_spec

    qw = quantize_rtn(w, parse_spec(spec_text))
    return float(np.sqrt(np.mean((qw.dequantize() - w) ** 2) / np.mean(w**2)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--k", type=int, default=1536)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from compiler.quant.keep import requant_spec

    print(f"machine: {machine()}")
    rng = np.random.default_rng(args.seed)
    rows = []
    for t, cands in CANDIDATES.items():
        w = gguf_weight(t, args.rows, args.k, rng)
        errs = {c: rel_rms(w, c) for c in cands}
        best = min(errs, key=errs.get)
        rule = requant_spec(t).name
        rows.append([t, "  ".join(f"{c} {e:.4f}" for c, e in errs.items()), best, rule, f"{errs.get(rule, float('nan')):.4f}"])
    print_table(f"re-quantization error (relative RMS) of {args.rows} x {args.k} random blocks of each GGUF type",
                ["type", "candidates", "lowest", "keep's rule", "rule's error"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
