"""One tvm-cuda qlinear (prefill and decode: M = 1 ... 512) against torch fp16 matmul on the same GPU.

Two steps, because the GPU machine needs neither TVM's compiler nor nvcc:

    # here (apache-tvm + nvcc): one-layer graphs -> tvm-cuda folders (model.so + kernels.fatbin), the kernel
    # the rule table picks, with --before the previous GEMV-only kernel (dequant-cuda-warp) for comparison, and
    # with --variants other tile sizes / GEMV thresholds of gemm-cuda (LOWBIT_TVM_CUDA_GEMM_TILE, _GEMV_MAX_M)
    python benchmarks/gemm_cuda.py build --out gemm_cuda_build [--shapes 4096x4096,11008x4096] [--specs w4g128,w4g128a8]
                                         [--before] [--variants 32x64:2,64x64:0]

    # on the GPU machine (runtime-only TVM: TVM_USE_RUNTIME_LIB=1 works; torch for the baseline)
    python benchmarks/gemm_cuda.py run --dir gemm_cuda_build [--ms 1,16,128,512] [--json FILE]

`run` regenerates the same RTN weights from the same seed (numpy only), checks every output against the
reference qlinear (compiler/reference.py) and prints: machine, N x K, quant, kernel, M, ours us, torch fp16 us
(x [M, K] @ W^T, W the dequantized weights in fp16), ours/torch. Times are the median of CUDA-synchronized
runs (TVM's time_evaluator for ours: one Relax VM call each, A8's activation quantization included)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

SHAPES = "4096x4096,11008x4096"  # N x K (11008x4096: the llama-7b MLP up/gate projection's N)
SPECS = "w4g128,w4g128a8"


def build(args):
    from benchmarks.gemv_cpu import one_layer_graph
    from compiler.backends.tvm.build import build_target
    from compiler.knobs import TVM_CUDA_GEMM_TILE, TVM_CUDA_GEMV_MAX_M, TVM_DISABLE_KERNELS

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for shape in args.shapes.split(","):
        n, k = (int(v) for v in shape.lower().split("x"))
        for spec in args.specs.split(","):
            g, _ = one_layer_graph(n, k, spec)
            variants = [("now", {})]
            for v in filter(None, args.variants.split(",")):  # TILE:GEMV_MAX_M, e.g. 32x64:2 or 64x64:0
                tile, _, gmax = v.partition(":")
                variants.append((v.replace(":", "_m"), {TVM_CUDA_GEMM_TILE.name: tile, TVM_CUDA_GEMV_MAX_M.name: gmax or str(TVM_CUDA_GEMV_MAX_M.default)}))
            if args.before:
                variants.append(("before", {TVM_DISABLE_KERNELS.name: "gemm-cuda"}))
            for variant, env in variants:
                saved = {key: os.environ.get(key) for key in env}
                os.environ.update(env)
                try:
                    folder = out / f"{n}x{k}_{spec}_{variant}"
                    info = build_target(g, "tvm-cuda", folder)
                finally:
                    for key, val in saved.items():
                        os.environ.pop(key) if val is None else os.environ.__setitem__(key, val)
                (folder / "bench.json").write_text(json.dumps({"n": n, "k": k, "spec": spec, "variant": variant}))
                print(folder, sorted(set(info["kernels"].values())), info["cuda_binary"], flush=True)


def _load(folder: Path, dev):
    """The folder's Relax VM, with kernels.fatbin served to TVM's CUDA load hook (as runtime/backends/tvm.py)."""
    import tvm
    from tvm.runtime.vm import VirtualMachine

    from runtime.backends.tvm import TVMCUDABackend, _load_cuda_runtime

    _load_cuda_runtime()
    info = json.loads((folder / "tvm.json").read_text())
    TVMCUDABackend._before_load(object.__new__(TVMCUDABackend), folder, info)
    return VirtualMachine(tvm.runtime.load_module(str(folder / "model.so")), dev), info


def run(args):
    import torch
    import tvm

    from benchmarks.gemv_cpu import one_layer_graph
    from compiler.reference import QLinearWeights, qlinear

    dev = tvm.cuda(0)
    gpu = torch.cuda.get_device_name(0)
    rows = []
    for folder in sorted(p.parent for p in Path(args.dir).glob("*/bench.json")):
        meta = json.loads((folder / "bench.json").read_text())
        n, k, spec = meta["n"], meta["k"], meta["spec"]
        g, _ = one_layer_graph(n, k, spec)
        node = next(nd for nd in g.nodes if nd.op == "qlinear")
        packed, scales, zeros = (g.consts[c] for c in node.inputs[1:4])
        w = QLinearWeights(packed, scales, zeros, node.attrs)
        act = node.attrs["act"]
        vm, info = _load(folder, dev)
        main = vm["main"]
        params = [tvm.runtime.tensor(np.ascontiguousarray(g.consts[p["key"]]), dev) for p in info["params"]]
        kernel = ",".join(sorted(set(info["kernels"].values())))
        # torch baseline: the same weights dequantized to fp16, W^T contiguous as a torch.nn.Linear keeps it
        wd = (w.wg.transpose(2, 0, 1).reshape(n, k) * np.repeat(scales, w.group, axis=1)).astype(np.float16)
        wt = torch.from_numpy(wd).cuda()
        for m in (int(v) for v in args.ms.split(",")):
            x = np.random.default_rng(m).standard_normal((m, k), dtype=np.float32)
            xs = tvm.runtime.tensor(x, dev)
            got = main(xs, *params)[0].numpy()  # main returns the tuple of graph outputs
            want = qlinear(x, w, act)
            err = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))
            ev = vm.time_evaluator("main", dev, number=args.number, repeat=args.repeat)(xs, *params)
            ours = float(np.median(ev.results)) * 1e6
            xt = torch.from_numpy(x).cuda().half()
            for _ in range(10):
                torch.nn.functional.linear(xt, wt)
            torch.cuda.synchronize()
            times = []
            for _ in range(args.repeat):
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                for _ in range(args.number):
                    torch.nn.functional.linear(xt, wt)
                b.record()
                torch.cuda.synchronize()
                times.append(a.elapsed_time(b) * 1e3 / args.number)
            ref = float(np.median(times))
            rows.append(dict(machine=gpu, shape=f"{n}x{k}", spec=spec, variant=meta["variant"], kernel=kernel, m=m, ours_us=ours, torch_us=ref, ratio=ours / ref, max_rel_err=err))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    header = ["machine", "N x K", "quant", "build", "kernel", "M", "ours us", "torch fp16 us", "ours/torch", "max rel err vs ref"]
    table = [[r["machine"], r["shape"], r["spec"], r["variant"], r["kernel"], r["m"], f"{r['ours_us']:.1f}", f"{r['torch_us']:.1f}", f"{r['ratio']:.2f}", f"{r['max_rel_err']:.1e}"] for r in rows]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for t in table:
        print("| " + " | ".join(str(v) for v in t) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="here: compile the one-layer tvm-cuda folders (needs apache-tvm and nvcc)")
    b.add_argument("--out", default="gemm_cuda_build")
    b.add_argument("--shapes", default=SHAPES)
    b.add_argument("--specs", default=SPECS)
    b.add_argument("--before", action="store_true", help="also build with gemm-cuda disabled (the GEMV-only kernel it replaced)")
    b.add_argument("--variants", default="", help="also these gemm-cuda configurations, TILE:GEMV_MAX_M comma-separated, e.g. 32x64:2,64x64:0")
    r = sub.add_parser("run", help="on the GPU machine: time ours and torch fp16")
    r.add_argument("--dir", default="gemm_cuda_build")
    r.add_argument("--ms", default="1,16,128,512")
    r.add_argument("--number", type=int, default=20)
    r.add_argument("--repeat", type=int, default=5)
    r.add_argument("--json", default=None)
    args = ap.parse_args()
    build(args) if args.cmd == "build" else run(args)


if __name__ == "__main__":
    main()
