"""Low-bit GEMV (decode, M = 1) on the CPU: lowbit's tvm-cpu qlinear kernels against numpy's
dequantize-then-matmul, and against the machine's read bandwidth measured in the same run.

For every shape (N x K), quant spec, activation mode and thread count the table gives:
- ours: one qlinear through the same compiled path as a whole model (`lowbit compile --target tvm-cpu` on a
  one-layer graph: Relax VM call, A8 activation quantization included), the kernel the rule table picks
  (LOWBIT_TVM_FAST_CPU=0 in the environment measures the fallback kernel instead);
- numpy: dequantize the codes to float32 (w = s (q - z) per group) and multiply, as a numpy user would
  without keeping a float copy of the weights;
- effective weight bandwidth: bytes of packed codes + scales + zero points read per call / our time, and its
  ratio to the read bandwidth of this machine at the same thread count (a parallel TVM sum over a buffer of
  the same size class, measured in the same process).
Weights are never in cache when timed: each call reads the next of enough copies of the weights that the
working set is at least 4x the last-level cache, as a real decode step that streams every layer does.

Thread counts run in separate processes (TVM's thread pool size is fixed at start-up).

    python benchmarks/gemv_cpu.py [--shapes 4096x4096,...] [--specs w4g128,w2g128,ternary] [--acts a16,a8]
                                  [--threads 1,2] [--repeat 20] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from compiler.hostinfo import llc_bytes  # noqa: E402

SHAPES = "4096x4096,11008x4096,4096x11008,4096x14336"
SPECS = "w4g128,w2g128,ternary"
FAST = {"vnni-cpu", "lut-cpu", "blocked-cpu"}


def one_layer_graph(n: int, k: int, spec_text: str, seed: int = 0):
    """A graph x[S, K] -> qlinear -> y[S, N] with RTN-quantized random weights."""
    from compiler.ir import Graph, TensorType
    from compiler.quant.apply import qlinear_node
    from compiler.quant.rtn import quantize_rtn
    from compiler.quant.spec import parse_spec

    spec = parse_spec(spec_text)
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, k), dtype=np.float32) * np.float32(0.02)
    qw = quantize_rtn(w, spec, name="w")
    g = Graph(f"gemv_{n}x{k}_{spec.name}")
    x = g.add_input("x", TensorType(("S", k)))
    g.add_const("w", w)
    g.add_node("linear", [x, "w"], "y")
    g.nodes[0] = qlinear_node(g, g.nodes[0], qw, spec)
    del g.consts["w"]
    g.set_outputs(["y"])
    g.verify()
    return g, qw


def bandwidth_gbs(tvm, nbytes: int, repeat: int) -> float:
    """Read bandwidth: a parallel TVM sum over a buffer of nbytes (>= 4x LLC), best of repeat (runtime.bench's,
    which `lowbit bench` uses too)."""
    from runtime.bench import bandwidth_gbs as measure

    return measure(nbytes, repeat)


def worker(args) -> list[dict]:
    """Runs in a process whose TVM and BLAS thread pools have args.threads threads."""
    import tvm
    from tvm.runtime.vm import VirtualMachine

    from compiler.backends.tvm.build import build_target
    from compiler.backends.tvm.target import host_cpu

    llc = llc_bytes()
    bw = bandwidth_gbs(tvm, 4 * llc, args.repeat)
    rows = []
    mlir = _mlir_gemv() if args.mlir else None
    for shape in args.shapes.split(","):
        n, k = (int(v) for v in shape.lower().split("x"))
        for spec_text in args.specs.split(","):
            for act in args.acts.split(","):
                full = spec_text + ("a8" if act == "a8" else "")
                g, qw = one_layer_graph(n, k, full)
                x_np = np.random.default_rng(1).standard_normal((1, k), dtype=np.float32)
                kernel, ours, weight_bytes = time_tvm(tvm, VirtualMachine, build_target, g, x_np, llc, args.repeat)
                # the other fast kernels on the same layer (first thread count only): the LUT kernel and the
                # dequantize-in-register kernel (blocked-cpu), each forced by disabling the others
                alt = {}
                if args.compare:
                    for want in ("lut-cpu", "blocked-cpu"):
                        if want != kernel:
                            r = time_tvm(tvm, VirtualMachine, build_target, g, x_np, llc, args.repeat, disable=",".join(FAST - {want}))
                            if r[0] == want:
                                alt[want] = r[1]
                base = time_numpy(g, qw, x_np, k, llc)
                gbs = weight_bytes / ours / 1e9
                row = dict(shape=f"{n}x{k}", spec=full, threads=args.threads, kernel=kernel, ours_ms=ours * 1e3, numpy_ms=base * 1e3, speedup=base / ours,
                           weight_mb=weight_bytes / 1e6, eff_gbs=gbs, machine_gbs=bw, bw_ratio=gbs / bw, host=host_cpu()[0],
                           lut_ms=alt.get("lut-cpu", float("nan")) * 1e3, dequant_ms=alt.get("blocked-cpu", float("nan")) * 1e3)
                if kernel == "lut-cpu":
                    row["lut_ms"] = ours * 1e3
                if kernel == "blocked-cpu":
                    row["dequant_ms"] = ours * 1e3
                if mlir is not None:
                    try:
                        gm = mlir(n, k, full, threads=int(args.threads))
                        row["mlir_ms"] = gm.time_ms(repeat=args.repeat)
                    except Exception as e:  # noqa: BLE001 - the table says which shapes the MLIR path could not build
                        row["mlir_ms"] = float("nan")
                        print(f"mlir {n}x{k} {full}: {e}", file=sys.stderr)
                rows.append(row)
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def time_tvm(tvm, VirtualMachine, build_target, g, x_np, llc, repeat, disable=""):  # noqa: N803
    """(kernel name, seconds per call, bytes of weights read per call) for the graph on tvm-cpu, weights
    rotated over copies >= 4x LLC; `disable` names kernels the rule table must skip."""
    from safetensors.numpy import load_file

    from compiler.knobs import TVM_DISABLE_KERNELS

    var, old = TVM_DISABLE_KERNELS.name, TVM_DISABLE_KERNELS.raw()
    os.environ[var] = ",".join(v for v in (old, disable) if v)  # on top of the caller's
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "t"
            summary = build_target(g, "tvm-cpu", folder)
            info = json.loads((folder / "tvm.json").read_text())
            vm = VirtualMachine(tvm.runtime.load_module(str(folder / "model.so")), tvm.cpu(0))
            relaid = load_file(str(folder / "params.safetensors")) if (folder / "params.safetensors").is_file() else {}
    finally:
        if old is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = old
    main = vm["main"]
    arrays = [(g.consts if p["source"] == "weights" else relaid)[p["key"]] for p in info["params"]]
    weight_bytes = sum(a.nbytes for a in arrays)  # what the kernel reads: codes, scales, zero points
    copies = max(2, -(-4 * llc // weight_bytes))
    params = [[tvm.runtime.tensor(a.copy()) for a in arrays] for _ in range(copies)]
    x = tvm.runtime.tensor(x_np)
    main(x, *params[0])
    best = min(_timed(lambda i: main(x, *params[i]), copies) for _ in range(max(2, repeat // copies + 1)))
    kernels = summary.get("kernels", {})
    name = ",".join(sorted({str(v) for v in kernels.values()})) if isinstance(kernels, dict) else str(kernels)
    return name, best, weight_bytes


def time_numpy(g, qw, x_np, k, llc):
    """numpy: dequantize then matmul, over copies of the codes (uint8, unpacked), scales and zeros."""
    from compiler.quant.pack import unpack

    copies = max(2, min(4, -(-4 * llc // (qw.codes.size))))
    codes = [unpack(g.consts["w.qweight"], qw.bits, info_layout(g), k).copy() for _ in range(copies)]
    z = np.repeat(qw.zeros.astype(np.float32), qw.group_size, axis=1)
    s = np.repeat(qw.scales, qw.group_size, axis=1)

    def numpy_call(i):
        w = (codes[i % len(codes)].astype(np.float32) - z) * s
        return x_np @ w.T

    return min(_timed(numpy_call, len(codes)) for _ in range(2))


def _ms(v: float) -> str:
    return "" if v != v else f"{v:.3f}"


def _ratio(a: float, b: float) -> str:
    return "" if a != a or b != b else f"{a / b:.2f}"


def _timed(fn, calls):
    t = time.perf_counter()
    for i in range(calls):
        fn(i)
    return (time.perf_counter() - t) / calls


def _mlir_gemv():
    """compiler.backends.mlir.gemv.build_gemv when IREE is installed, else None (no MLIR column)."""
    try:
        from compiler.backends.mlir.gemv import build_gemv

        import iree.compiler  # noqa: F401
    except ImportError:
        return None
    return build_gemv


def info_layout(g) -> str:
    return next(n.attrs["layout"] for n in g.nodes if n.op == "qlinear")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default=SHAPES)
    ap.add_argument("--specs", default=SPECS)
    ap.add_argument("--acts", default="a16,a8")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-mlir", dest="mlir", action="store_false", help="leave out the MLIR (IREE) column")
    ap.add_argument("--compare-threads", default="1", help="thread counts at which the other fast kernels are measured too")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--compare", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    from benchmarks.common import machine, print_table, run_workers

    rows = run_workers(__file__, args.threads, lambda t: ["--shapes", args.shapes, "--specs", args.specs, "--acts", args.acts, "--repeat", str(args.repeat)]
                       + ([] if args.mlir else ["--no-mlir"]) + (["--compare"] if t in args.compare_threads.split(",") else []))
    has_mlir = any("mlir_ms" in r for r in rows)
    table = []
    for r in rows:
        line = [r["shape"], r["spec"], r["threads"], r["kernel"], f"{r['ours_ms']:.3f}"]
        line += [_ms(r["lut_ms"]), _ms(r["dequant_ms"]), _ratio(r["dequant_ms"], r["lut_ms"])]
        line += [f"{r['numpy_ms']:.3f}", f"{r['speedup']:.1f}", f"{r['eff_gbs']:.2f}", f"{r['machine_gbs']:.2f}", f"{r['bw_ratio']:.2f}"]
        if has_mlir:
            line += [f"{r.get('mlir_ms', float('nan')):.3f}", f"{r.get('mlir_ms', float('nan')) / r['ours_ms']:.2f}"]
        table.append(line)
    header = ["N x K", "quant", "thr", "kernel", "ours ms", "lut ms", "dequant ms", "dequant/lut", "numpy ms", "numpy/ours", "ours GB/s", "machine GB/s", "ours/machine"]
    header += ["mlir ms", "mlir/ours"] if has_mlir else []
    print_table(
        f"GEMV M=1, weights out of cache (working set >= 4x LLC {llc_bytes() >> 20} MiB); 'ours' = the kernel the rule table picks; "
        f"'lut' = lut-cpu, 'dequant' = the dequantize-in-register kernel (blocked-cpu), both on the same layer in the same run; {machine()}",
        header,
        table,
        args.json,
    )


if __name__ == "__main__":
    main()
