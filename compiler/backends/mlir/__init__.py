"""MLIR backend: a (quantized or float) Graph -> MLIR (func/arith/math/linalg/tensor, built with the
upstream Python bindings in iree-base-compiler) -> an IREE vmfb per target.

Targets: `mlir-cpu` (IREE llvm-cpu for the host CPU) and `mlir-cuda` (IREE cuda, sm_80; IREE 3.13 cannot
build sm_90). Files:

- builder.py  a general Builder over the MLIR bindings (tensor types with dynamic dims, linalg.generic with
              Python region bodies, elementwise ops, reductions, reshapes, slices, concat); no model ops
- qlinear.py  the qlinear kernels in the contract's order (A16/A8/A32 activations, unpack + group sum in one
              generic, then the per-group dequantization and one epilogue), on the stored or the blocked layout,
              with zero points or scale-and-minimum groups; the qembedding gather
- lower.py    Graph -> MLIR module, one converter per IR op (the float ops written with the Builder);
              symbolic S, P dims stay dynamic; weights are function parameters
- build.py    IREE flags per target, compile to vmfb, the target folder (model.vmfb, mlir.json,
              model.mlir, stages/ with --dump-mlir)
- gemv.py     a standalone W4/W2/ternary x A16/A8 GEMV (static M = 1) with timing, for the benchmarks

The runtime side is runtime/backends/mlir.py (loads model.vmfb, feeds the weights, no recompilation).
"""

from __future__ import annotations

from pathlib import Path

MLIR_TARGETS = ("mlir-cpu", "mlir-cuda")


def build_mlir_target(graph, target: str, out_dir: Path, options) -> dict:
    """Build one MLIR target into out_dir (the artifact's <target>/ folder); returns a summary for the
    manifest (the full description is out_dir/mlir.json). options: compiler.backends.BuildOptions (dump_mlir)."""
    dump_mlir = options.dump_mlir
    import time

    from compiler.backends.mlir.build import INFO, VMFB, build_target, require_iree_compiler

    t0 = time.perf_counter()
    require_iree_compiler()
    t_import = time.perf_counter() - t0
    info = build_target(graph, target, Path(out_dir), dump_mlir=dump_mlir)
    summary = {"vmfb": f"{target}/{VMFB}", "info": f"{target}/{INFO}", "timings_s": {"import_iree": round(t_import, 3), **info["timings_s"]}}
    if "cuda_arch" in info:
        summary["cuda_arch"] = info["cuda_arch"]
    if "knobs" in info:
        summary["knobs"] = info["knobs"]
    if dump_mlir:
        summary["mlir"] = [f"{target}/model.mlir"] + [f"{target}/stages/{s}" for s in info["stages"]]
    return summary
