"""Quantization and reference-runtime speed.

- RTN and GPTQ time to quantize every block linear of `llama-1b` (Llama-3.2-1B shapes, 1.1 B quantized
  weights). Baselines in the same run: for RTN, one numpy pass over the same weights computing the per-group
  abs-max (the least work any RTN must do); for GPTQ, RTN itself.
- The reference runtime's decode tokens/s on `llama-tiny` at W4g128 (A16 and A8) against the float model on
  the same engine.

Usage: python benchmarks/quantize.py [--skip-gptq] [--calib-samples N] [--json FILE]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.common import machine, print_table, timeit  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-gptq", action="store_true")
    ap.add_argument("--calib-samples", type=int, default=16)
    ap.add_argument("--calib-seqlen", type=int, default=128)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from compiler.frontend import load_model
    from compiler.quant.apply import quantizable, quantize_graph
    from compiler.quant.calib import calibration_feeds
    from compiler.quant.spec import parse_spec
    from runtime.model import CompiledModel

    print(f"machine: {machine()}")
    rows = []
    t0 = time.perf_counter()
    big = load_model("llama-1b")
    print(f"llama-1b built in {time.perf_counter() - t0:.1f} s ({big.graph.n_params() / 1e9:.2f} B parameters)")
    spec = parse_spec("w4g128")
    mats = [big.graph.consts[big.graph.nodes[i].inputs[1]] for i in quantizable(big.graph)]
    n_w = sum(m.size for m in mats)

    def one_pass():
        for m in mats:
            np.abs(m.reshape(m.shape[0], -1, 128)).max(axis=-1)

    t_pass = timeit(one_pass, 2)
    t_rtn = timeit(lambda: quantize_graph(big.graph, spec, "rtn"), 1)
    rows.append(["RTN w4g128, llama-1b", f"{n_w / 1e9:.2f} B weights", t_rtn, "numpy abs-max pass", t_pass, t_rtn / t_pass])
    if not args.skip_gptq:
        feeds = calibration_feeds(big, args.calib_samples, args.calib_seqlen)
        t = time.perf_counter()
        quantize_graph(big.graph, spec, "gptq", feeds, damp=0.1)
        t_gptq = time.perf_counter() - t
        rows.append([f"GPTQ w4g128, llama-1b, calib {args.calib_samples}x{args.calib_seqlen}", f"{n_w / 1e9:.2f} B weights", t_gptq, "RTN", t_rtn, t_gptq / t_rtn])
    del big, mats

    tiny = load_model("llama-tiny")
    prompt = list(range(3, 19))
    n_new = 64

    def tok_s(graph):
        cm = CompiledModel(graph, "llama", tiny.tokenizer)
        cm.generate(prompt, 4, stop_ids=())  # warm up (unpacks weights once)
        best = 0.0
        for _ in range(3):
            best = max(best, cm.generate(prompt, n_new, stop_ids=()).decode_tokens_per_s)
        return best

    f_tps = tok_s(tiny.graph)
    for s in ("w4g128", "w4g128a8", "w2g64"):
        q_tps = tok_s(quantize_graph(tiny.graph, parse_spec(s), "rtn"))
        rows.append([f"ref decode, llama-tiny {s}", f"{n_new} tokens", f"{q_tps:.1f} tok/s", "float model, same engine", f"{f_tps:.1f} tok/s", q_tps / f_tps])
    print_table(f"lowbit quantization and reference runtime ({machine()})", ["what", "size", "ours (s or tok/s)", "baseline", "baseline (s or tok/s)", "ratio ours/baseline"], rows, args.json)


if __name__ == "__main__":
    main()
