"""Decode speed of a whole causal LM on the CPU: tokens/s of lowbit's tvm-cpu (and mlir-cpu when IREE is
installed) against the ref backend, next to the bandwidth roofline for the same bytes.

For each quant spec the model is compiled once (`lowbit compile MODEL --target ref,tvm-cpu[,mlir-cpu]`; the
artifact is kept under --out and reused while its manifest matches). Each thread count runs in its own process
(TVM's and IREE's thread pools are sized at start-up) and measures, in that process:
- the machine's read bandwidth (a parallel TVM sum over a buffer of 4x the last-level cache);
- for each backend: a prompt of --prompt-tokens ids, then greedy decoding; tokens/s counts decode steps only
  (every step reads every weight once: one token through the whole model, KV cache included);
- the roofline: bytes one decode step must read (packed codes, scales and zero points of every quantized
  linear, float weights, one embedding row, the KV cache) / bandwidth. The table also gives the share of those
  bytes in float weights: with tied embeddings the LM head (vocab x hidden, fp32) is read every step.

    python benchmarks/decode_cpu.py [--model llama-1b] [--specs w4g128,w2g128] [--backends tvm-cpu,mlir-cpu,ref]
                                    [--threads 1,2] [--prompt-tokens 8] [--tokens 16] [--ref-tokens 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def step_bytes(graph, context: int) -> dict:
    """Bytes one decode step reads: weights by kind, and the KV cache at `context` positions (runtime.bench's)."""
    from runtime.bench import step_bytes as count

    return count(graph, context)


def worker(args) -> list[dict]:
    import tvm

    import runtime
    from benchmarks.gemv_cpu import bandwidth_gbs, llc_bytes

    bw = bandwidth_gbs(tvm, 4 * llc_bytes(), 10)
    rows = []
    for spec in args.specs.split(","):
        path = Path(args.out) / artifact_name(args, spec)
        m = runtime.load(path)
        prompt = list(np.random.default_rng(0).integers(1, m.graph.meta["hparams"]["vocab"], args.prompt_tokens))
        nbytes = step_bytes(m.graph, args.prompt_tokens + args.tokens // 2)
        first = None
        for backend in args.backends.split(","):
            if backend not in m.artifact.manifest["targets"] and backend != "ref":
                continue
            n = args.ref_tokens if backend == "ref" else args.tokens
            t = time.perf_counter()
            m.backend(backend)  # load the library and copy the weights (not timed as decode)
            load_s = time.perf_counter() - t
            gen = m.generate(prompt, n, backend, stop_ids=())  # fixed length: timing, not text
            toks = gen.tokens
            if first is None:
                first = toks
            agree = sum(a == b for a, b in zip(toks, first)) / min(len(toks), len(first))
            rows.append(dict(model=args.model, spec=spec + ("" if args.quant_head == "none" else f" head {args.quant_head}"), backend=backend, threads=args.threads, tok_s=gen.decode_tokens_per_s, prefill_s=gen.prefill_s,
                             load_s=load_s, step_mb=nbytes["total"] / 1e6, float_share=(nbytes["float"]) / nbytes["total"], machine_gbs=bw,
                             roofline_tok_s=bw * 1e9 / nbytes["total"], eff_gbs=gen.decode_tokens_per_s * nbytes["total"] / 1e9, agree=agree))
            rows[-1]["ratio"] = rows[-1]["tok_s"] / rows[-1]["roofline_tok_s"]
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
            m._backends.pop(backend, None)  # free its copy of the weights before the next backend
    return rows


def artifact_name(args, spec: str) -> str:
    return f"{args.model}-{spec}" + ("" if args.quant_head == "none" else f"-head-{args.quant_head}")


def compile_all(args):
    """Compile (or reuse) one artifact per spec with every requested target."""
    from compiler.backends import targets as known_targets
    from compiler.compile import compile_model

    known = known_targets()
    targets = ["ref"] + [b for b in args.backends.split(",") if b != "ref" and b in known]
    for spec in args.specs.split(","):
        path = Path(args.out) / artifact_name(args, spec)
        man = path / "manifest.json"
        if man.is_file():
            got = json.loads(man.read_text())
            q = got.get("quant") or {}
            if set(targets) <= set(got.get("targets", {})) and q.get("name") == spec and q.get("head") == (None if args.quant_head == "none" else args.quant_head):
                print(f"reusing {path}", file=sys.stderr)
                continue
        t = time.perf_counter()
        compile_model(args.model, path, quant=spec, targets=",".join(targets), progress=False, quant_head=args.quant_head)
        print(f"compiled {args.model} {spec} for {','.join(targets)} in {time.perf_counter() - t:.1f} s", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="llama-1b")
    ap.add_argument("--specs", default="w4g128,w2g128")
    ap.add_argument("--backends", default="tvm-cpu,mlir-cpu,ref")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--prompt-tokens", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=16, help="tokens generated by the compiled backends")
    ap.add_argument("--ref-tokens", type=int, default=3, help="tokens generated by ref (slow)")
    ap.add_argument("--out", default="build/decode_cpu", help="where the compiled artifacts are kept between runs")
    ap.add_argument("--quant-head", default="none", help="also quantize the LM head (lowbit compile --quant-head), e.g. w8pc")
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    from benchmarks.common import machine, print_table, run_workers

    try:
        import iree.compiler  # noqa: F401
    except ImportError:
        args.backends = ",".join(b for b in args.backends.split(",") if not b.startswith("mlir"))
    compile_all(args)
    rows = run_workers(__file__, args.threads, lambda t: ["--model", args.model, "--specs", args.specs, "--backends", args.backends, "--prompt-tokens",
                                                          str(args.prompt_tokens), "--tokens", str(args.tokens), "--ref-tokens", str(args.ref_tokens),
                                                          "--out", args.out, "--quant-head", args.quant_head])
    table = [
        [r["model"], r["spec"], r["backend"], r["threads"], f"{r['tok_s']:.2f}", f"{r['roofline_tok_s']:.2f}", f"{r['ratio']:.2f}", f"{r['eff_gbs']:.2f}",
         f"{r['machine_gbs']:.2f}", f"{r['step_mb']:.0f}", f"{100 * r['float_share']:.0f}%", f"{r['agree']:.2f}"]
        for r in rows
    ]
    print_table(
        f"Greedy decode, {args.prompt_tokens}-token prompt; roofline = machine read bandwidth / bytes per decode step; {machine()}",
        ["model", "quant", "backend", "thr", "tok/s", "roofline tok/s", "tok/s / roofline", "GB/s", "machine GB/s", "MB/step", "float bytes", "same tokens"],
        table,
        args.json,
    )


if __name__ == "__main__":
    main()
