"""Decode speed and KV-cache memory by cache format at long context: lowbit's tvm-cpu with --kv f32 / fp16 / fp8 / int8 / int4 /
int4-rot-w128 / int2-rot-w128 (any --kv specs with --formats).

The model is compiled once per format (`lowbit compile MODEL --quant keep|SPEC --kv FMT --target tvm-cpu`, kept under
--work). Then, in one process and alternating the formats, for each context: a cache of that many positions (random
values in the format's own arrays), a warm-up step, and --tokens single-token decode steps; the best of --rounds.
Printed: the machine, tokens/s per format and context, the cache's bytes per token and at the largest context
(the arrays the runtime allocates per row; a float window's fixed rings are not per token), each format's speed
against fp16 (the issue's baseline, vLLM's and llama.cpp's default) and f32 at the same context, and the decode step's bytes
against the machine's read bandwidth measured in the same run (runtime.bench).

    python -m benchmarks.kv_cache [--model smollm2-135m] [--quant keep] [--formats f32,fp16,...] [--contexts 512,2048,8160] [--tokens 16]
                                  [--rounds 2] [--threads 2] [--work DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FORMATS = ("f32", "fp16", "fp8", "int8", "int4", "int4-rot-w128", "int2-rot-w128")


def compiled(model: str, quant: str, fmt: str, work: Path) -> Path:
    from compiler.compile import compile_model

    out = work / f"{model}-{quant}-kv-{fmt}"
    if not (out / "manifest.json").is_file():
        t = time.perf_counter()
        compile_model(model, out, quant, targets="tvm-cpu", progress=False, kv=fmt)
        print(f"  compiled {out.name} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return out


def decode_tok_s(m, b, ctx: int, tokens: int, rng) -> float:
    from runtime import bench

    cache = bench._cache(m, b, ctx, ctx + tokens, rng)
    tok = int(rng.integers(1, m.graph.meta["hparams"]["vocab"]))
    cache = bench._step(m, b, [tok], ctx, cache)  # warm-up
    t = time.perf_counter()
    for i in range(tokens):
        cache = bench._step(m, b, [tok], ctx + 1 + i, cache)
    return tokens / (time.perf_counter() - t)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--quant", default="keep")
    ap.add_argument("--formats", default=",".join(FORMATS), help="--kv specs, f32 and fp16 among them")
    ap.add_argument("--contexts", default="512,2048,8160", help="positions already cached (SmolLM2 holds 8192: 8160 leaves room for the steps)")
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default=str(Path.home() / ".cache" / "lowbit" / "kv-bench"))
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    os.environ.setdefault("TVM_NUM_THREADS", str(args.threads))

    import numpy as np

    import runtime
    from benchmarks.common import machine
    from compiler.frontend.llama import empty_cache
    from runtime import bench

    contexts = [int(c) for c in args.contexts.split(",")]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    formats = list(dict.fromkeys(["f32", "fp16", *args.formats.split(",")]))
    models = {f: runtime.load(compiled(args.model, args.quant, f, work)) for f in formats}
    backends = {f: m.backend("tvm-cpu") for f, m in models.items()}
    bw = bench.bandwidth_gbs()
    rng = np.random.default_rng(0)
    best: dict[tuple[str, int], float] = {}
    for _ in range(args.rounds):
        for ctx in contexts:
            for f in formats:  # alternating: the machine's drift falls on every format alike
                r = decode_tok_s(models[f], backends[f], ctx, args.tokens, rng)
                best[f, ctx] = max(best.get((f, ctx), 0.0), r)
    rows = []
    for f in formats:
        g = models[f].graph
        # the arrays' bytes per position: a cache of 64 rows less one of 32, over 32 (-kc's key parameters are a row per 32)
        per_token = (sum(a.nbytes for a in empty_cache(g, 64).values()) - sum(a.nbytes for a in empty_cache(g, 32).values())) / 32
        for ctx in contexts:
            step = bench.step_bytes(g, ctx)["total"]
            rows.append({"kv": f, "context": ctx, "decode_tok_s": best[f, ctx], "vs_fp16": best[f, ctx] / best["fp16", ctx], "vs_f32": best[f, ctx] / best["f32", ctx],
                         "kv_bytes_per_token": per_token, "kv_mb_at_max": per_token * max(contexts) / 1e6,
                         "step_mb": step / 1e6, "roofline_tok_s": bw * 1e9 / step, "of_roofline": best[f, ctx] * step / (bw * 1e9)})
    print(f"Machine: {machine()}; read bandwidth {bw:.1f} GB/s (measured in this run); {args.threads} threads; {args.model} ({args.quant}), tvm-cpu")
    print()
    print("| KV cache | context | decode tok/s | vs fp16 | vs f32 | KV bytes/token | KV MB at %d | step MB | roofline tok/s | of roofline |" % max(contexts))
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['kv']} | {r['context']} | {r['decode_tok_s']:.1f} | {r['vs_fp16']:.2f}x | {r['vs_f32']:.2f}x | {r['kv_bytes_per_token']:,.0f} | {r['kv_mb_at_max']:.0f} | "
              f"{r['step_mb']:.1f} | {r['roofline_tok_s']:.0f} | {r['of_roofline']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "bandwidth_gbs": bw, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
