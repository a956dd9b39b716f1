"""Test helpers: write presets as Hugging Face model directories, run the CLI in-process."""

from __future__ import annotations

import functools
import json
import struct
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from compiler.frontend.presets import PRESETS, preset_weights


def write_hf_dir(path: Path, preset: str, shards: int = 1, bf16: bool = False, seed: int = 0) -> dict[str, np.ndarray]:
    """A Hugging Face-style directory for a preset: config.json, weights in `shards` safetensors files (with
    an index when sharded), optionally stored as bfloat16. Returns the weights as written (bf16-rounded)."""
    p = PRESETS[preset]
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(p.config))
    w = preset_weights(p, seed)
    if bf16:
        w = {k: ((v.view(np.uint32) + 0x8000) & 0xFFFF0000).view(np.float32) for k, v in w.items()}  # round to bf16
    names = sorted(w)
    parts = [names[i::shards] for i in range(shards)]
    weight_map = {}
    for i, part in enumerate(parts):
        fname = "model.safetensors" if shards == 1 else f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        if bf16:
            write_bf16(path / fname, {k: w[k] for k in part})
        else:
            save_file({k: w[k] for k in part}, str(path / fname))
        weight_map.update({k: fname for k in part})
    if shards > 1:
        (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return w


def write_bf16(path: Path, tensors: dict[str, np.ndarray]):
    """safetensors with BF16 tensors (numpy cannot write bfloat16 through the library)."""
    header, blobs, off = {}, [], 0
    for k, v in tensors.items():
        raw = (v.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes()
        header[k] = {"dtype": "BF16", "shape": list(v.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Run `lowbit ARGS` in-process; returns (exit code, stdout, stderr)."""
    from runtime.cli import main

    code = 0
    try:
        main([str(a) for a in args])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


@functools.lru_cache(maxsize=None)
def quantized_graph(model: str, spec: str):
    """A model's graph quantized by RTN at `spec` ("none": the float graph), made once per test session."""
    from compiler.frontend import load_model
    from compiler.quant.apply import quantize_graph
    from compiler.quant.spec import parse_spec

    m = load_model(model)
    s = parse_spec(spec)
    return m.graph if s is None else quantize_graph(m.graph, s, "rtn")


# ---- agreement between backends (tests/runtime/backends and the per-family tests)

IDS = [1, 87, 107, 104, 35, 116, 120, 108, 102, 110, 35, 101, 117]  # a fixed prompt of in-vocabulary ids
# tvm-* and mlir-* against ref, by spec_mode (tests/runtime/backends/test_agreement.py says why)
COMPILER_TOL = {"float": 1e-4, "a32": 1e-4, "a16": 5e-3, "a8": 2e-2, "afp8": 2e-2, "amx8": 2e-2, "amxfp4": 2e-2}


def spec_mode(spec: str) -> str:
    """'float' or an act mode ('a32', 'a16', 'a8', 'afp8', 'amx8', 'amxfp4'): the row of a tolerance table a quant spec falls in."""
    if spec == "none":
        return "float"
    from compiler.quant.spec import parse_spec

    return parse_spec(spec).act


def check_close(out: dict, ref: dict, tol: float, what: str, cos_min: dict | None = None, cos_default: float = 0.999) -> dict:
    """Assert max|out - ref| <= tol * max|ref| and cosine >= cos_default (or cos_min[name]) for every output of
    ref; returns {name: relative error}."""
    from runtime.compare import cosine

    errs = {}
    for name, r in ref.items():
        a = out[name]
        assert a.shape == r.shape, f"{what} {name}: shape {a.shape} vs {r.shape}"
        scale = max(float(np.abs(r).max()), 1e-6) if r.size else 1.0
        err = float(np.abs(a.astype(np.float64) - r).max()) if r.size else 0.0
        assert err <= tol * scale, f"{what} {name}: max abs err {err:.3g} > {tol} * {scale:.3g}"
        if r.size:
            floor = (cos_min or {}).get(name, cos_default)
            assert cosine(a, r) >= floor, f"{what} {name}: cosine {cosine(a, r):.6f} < {floor}"
        errs[name] = err / scale
    return errs


def cache_code_flips(a: dict, b: dict) -> int:
    """How many quantized KV-cache codes (integer present_* arrays of two runs' outputs) differ, each by at most one
    step (asserted). The reference's float sums come from the BLAS, whose kernels may depend on the number of rows
    (OpenBLAS's Haswell sgemm does, single-threaded): a K or V value within an ulp of a rounding midpoint can then
    round to the neighbouring code when the same tokens arrive in other chunks."""
    flips = total = 0
    for k in a:
        if k.startswith("present_") and np.asarray(a[k]).dtype.kind in "iu" and k in b:
            x, y = np.asarray(a[k]).astype(np.int64), np.asarray(b[k]).astype(np.int64)
            rows = min(x.shape[0], y.shape[0])
            d = np.abs(x[:rows] - y[:rows])
            assert d.max(initial=0) <= 1, f"{k}: a code {int(d.max())} steps from the other run's"
            flips += int(np.count_nonzero(d))
            total += d.size
    # a flip moves later layers' K and V by ~1e-4 of a code's range, which flips ~1% of the values near a midpoint
    assert flips <= max(8, total // 100), f"{flips} of {total} cache codes differ between the runs: more than rounding-midpoint ties explain"
    return flips


def chunked_logits_tol(flips: int) -> float:
    """Relative tolerance of logits from the same tokens in other chunks: float32 reassociation (measured <= 1.2e-6),
    or, once a cache code flipped (cache_code_flips), one code step of one K or V value (measured 6.8e-5 .. 2e-4 for
    int8 codes on llama-tiny)."""
    return 1e-5 if flips == 0 else 2e-3
