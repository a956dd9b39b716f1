"""Low-bit GEMV (decode, M = 1) on the CPU through the MLIR backend: lowbit's qlinear lowered to linalg and
compiled with IREE (llvm-cpu, host CPU), against numpy's dequantize-then-matmul, the machine's read
bandwidth, and (when Apache TVM is installed) the tvm-cpu kernel, all measured in the same run.

For every shape (N x K), quant spec, activation mode and thread count the table gives:
- mlir: one call of the compiled IREE function (compiler.backends.mlir.gemv.build_gemv: the blocked qlinear
  the whole-model lowering uses, A8 activation quantization included), weights re-laid out once;
- numpy: dequantize the codes to float32 (w = s (q - z) per group) and multiply, as a numpy user would
  without keeping a float copy of the weights;
- tvm: the tvm-cpu qlinear of the same layer (the rule table's kernel, as benchmarks/gemv_cpu.py builds it);
- effective weight bandwidth: bytes of packed codes + scales + zero points read per call / mlir time, and
  its ratio to the read bandwidth of this machine at the same thread count (an IREE-compiled sum over a
  buffer of 4x the last-level cache, measured in the same process).
Weights are never in cache when timed: each call reads the next of enough copies of the weights that the
working set is at least 4x the last-level cache.

Thread counts run in separate processes (IREE's task topology is fixed when its first device is made).

    python benchmarks/gemv_mlir.py [--shapes 4096x4096,...] [--specs w4g128,w2g128,ternary] [--acts a16,a8]
                                   [--threads 1,2] [--repeat 20] [--no-tvm] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

SHAPES = "4096x4096,4096x14336"
SPECS = "w4g128,w2g128,ternary"


def tvm_gemv_ms(n: int, k: int, spec: str, repeat: int, copies_bytes: int) -> float | None:
    """The tvm-cpu qlinear of the same layer, timed with the same rotation, or None without TVM."""
    try:
        import tvm
        from tvm.runtime.vm import VirtualMachine
    except ImportError:
        return None
    from safetensors.numpy import load_file

    from benchmarks.gemv_cpu import one_layer_graph
    from compiler.backends.tvm.build import build_target

    g, _ = one_layer_graph(n, k, spec)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "t"
        build_target(g, "tvm-cpu", folder)
        info = json.loads((folder / "tvm.json").read_text())
        vm = VirtualMachine(tvm.runtime.load_module(str(folder / "model.so")), tvm.cpu(0))
        relaid = load_file(str(folder / "params.safetensors")) if (folder / "params.safetensors").is_file() else {}
    main = vm["main"]
    arrays = [(g.consts if p["source"] == "weights" else relaid)[p["key"]] for p in info["params"]]
    wb = sum(a.nbytes for a in arrays)
    copies = max(2, -(-copies_bytes // wb))
    params = [[tvm.runtime.tensor(a.copy()) for a in arrays] for _ in range(copies)]
    x = tvm.runtime.tensor(np.random.default_rng(1).standard_normal((1, k), dtype=np.float32))
    main(x, *params[0])
    best = float("inf")
    for _ in range(max(2, -(-repeat // copies))):
        t = time.perf_counter()
        for i in range(copies):
            main(x, *params[i])
        best = min(best, (time.perf_counter() - t) / copies)
    return best * 1e3


def worker(args) -> list[dict]:
    from compiler.backends.mlir.gemv import build_gemv, llc_bytes, read_bandwidth_gbs

    threads = int(args.threads)
    llc = llc_bytes()
    bw = read_bandwidth_gbs(4 * llc, threads, args.repeat)
    rows = []
    for shape in args.shapes.split(","):
        n, k = (int(v) for v in shape.lower().split("x"))
        for spec_text in args.specs.split(","):
            for act in args.acts.split(","):
                full = spec_text + ("a8" if act == "a8" else "")
                g = build_gemv(n, k, full, threads=threads)
                err = g.max_rel_err_vs_ref()
                ours = g.time_ms(args.repeat)
                base = g.numpy_baseline_ms()
                tvm_ms = tvm_gemv_ms(n, k, full, args.repeat, 4 * llc) if args.tvm else None
                gbs = g.weight_bytes / (ours / 1e3) / 1e9
                rows.append(
                    dict(shape=f"{n}x{k}", spec=full, threads=threads, mlir_ms=ours, numpy_ms=base, tvm_ms=tvm_ms, speedup=base / ours,
                         tvm_ratio=(ours / tvm_ms) if tvm_ms else None, weight_mb=g.weight_bytes / 1e6, eff_gbs=gbs, machine_gbs=bw,
                         bw_ratio=gbs / bw, max_rel_err=err, compile_s=g.compile_s, copies=g.copies)
                )
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
                del g
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default=SHAPES)
    ap.add_argument("--specs", default=SPECS)
    ap.add_argument("--acts", default="a16,a8")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--no-tvm", dest="tvm", action="store_false", help="skip the tvm-cpu column")
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    from benchmarks.common import machine, print_table, run_workers
    from compiler.backends.mlir.gemv import llc_bytes

    rows = run_workers(__file__, args.threads, lambda t: ["--shapes", args.shapes, "--specs", args.specs, "--acts", args.acts, "--repeat", str(args.repeat)]
                       + ([] if args.tvm else ["--no-tvm"]))
    table = [
        [r["shape"], r["spec"], r["threads"], f"{r['mlir_ms']:.3f}", f"{r['numpy_ms']:.3f}", f"{r['speedup']:.2f}",
         "-" if r["tvm_ms"] is None else f"{r['tvm_ms']:.3f}", "-" if r["tvm_ratio"] is None else f"{r['tvm_ratio']:.2f}",
         f"{r['eff_gbs']:.2f}", f"{r['machine_gbs']:.2f}", f"{r['bw_ratio']:.2f}", f"{r['max_rel_err']:.1e}"]
        for r in rows
    ]
    print_table(
        f"MLIR (IREE llvm-cpu) GEMV M=1, weights out of cache (working set >= 4x LLC {llc_bytes() >> 20} MiB); {machine()}",
        ["N x K", "quant", "threads", "mlir ms", "numpy ms", "numpy/mlir", "tvm ms", "mlir/tvm", "mlir GB/s", "machine GB/s", "mlir/machine", "err vs ref"],
        table,
        args.json,
    )


if __name__ == "__main__":
    main()
