"""A standalone low-bit GEMV (decode, M = 1) through the same qlinear lowering as whole models, compiled with
IREE for the host CPU, with a timing method that streams the weights from memory.

    from compiler.backends.mlir.gemv import build_gemv
    g = build_gemv(4096, 4096, "w4g128", threads=1)     # spec: w4g128, w2g128, ternary, + a8 suffix
    g = build_gemv(1536, 576, "w4g32", mins=True)       # scale-and-minimum groups (quantize_rtn_min)
    y = g(x)                                            # x f32 [K] or [1, K] -> y f32 [1, N] (copy 0)
    ms = g.time_ms(repeat=20)                           # best mean per call over rounds, weights rotated
    g.weight_bytes, g.copies, g.compile_s, g.max_rel_err_vs_ref()
    time_gemv(4096, 4096, "w4g128a8", threads=1)       # the same as one dict row (ms, bytes, error, ...)

What `time_ms` measures: one call of the compiled function (IREE VM invoke from Python, A8 activation
quantization included, the per-group dequantization and the output) with the weights of copy i % copies,
where copies is chosen so that all copies together are at least 4x the last-level cache (the method of
benchmarks/gemv_cpu.py), so weights are read from DRAM as in a decode step that streams every layer.
The function signature is (x [1, K], codes, scales, zeros) -> y [1, N] (zeros: the f32 minimums with
mins=True); M is static (1), which lets IREE pick GEMV tiles.

Threads: 1 uses IREE's `local-sync` driver (the caller's thread); more uses `local-task` with
`--task_topology_max_group_count=threads`, a process-wide flag that must be set before the first device is
made, so measure different thread counts in different processes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from compiler.backends.mlir.build import CPU_FLAGS
from compiler.hostinfo import llc_bytes  # noqa: F401 (re-exported: benchmarks and tests use gemv.llc_bytes)


def quantized_layer(n: int, k: int, spec_text: str, seed: int = 0, mins: bool = False):
    """RTN-quantized random weights [N, K] (std 0.02) for `spec_text`: (QuantizedWeight, QuantSpec).
    mins: scale-and-minimum groups (quantize_rtn_min at the spec's bits and group) instead of zero points."""
    from compiler.quant.rtn import quantize_rtn, quantize_rtn_min
    from compiler.quant.spec import parse_spec

    spec = parse_spec(spec_text)
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, k), dtype=np.float32) * np.float32(0.02)
    if mins:
        if spec.ternary:
            raise ValueError("ternary weights have no minimum")
        return quantize_rtn_min(w, spec.bits, spec.group_for(k)), spec
    return quantize_rtn(w, spec, name="w"), spec


def qlinear_attrs(qw, spec, n: int, k: int) -> dict:
    from compiler.quant.pack import storage_layout

    attrs = {"bits": qw.bits, "group_size": qw.group_size, "n": n, "k": k, "act": spec.act, "layout": storage_layout(qw.bits), "ternary": qw.ternary}
    if qw.has_mins:
        attrs["mins"] = True
    return attrs


def gemv_module(attrs: dict, m: int | str = "M", lanes: int = 0):
    """MLIR text of func @gemv(x f32[m, K], codes, scales f32[N, J], zeros i8[N, J] (mins: f32)) -> f32[m, N]."""
    from iree.compiler import ir
    from iree.compiler.dialects import func

    from compiler.backends.mlir import qlinear
    from compiler.backends.mlir.builder import Builder
    from compiler.quant.pack import packed_shape

    n, k, g = attrs["n"], attrs["k"], attrs["group_size"]
    with ir.Context(), ir.Location.unknown():
        module = ir.Module.create()
        module.operation.attributes["sym_name"] = ir.StringAttr.get("lowbit_gemv")
        B = Builder()
        if lanes:
            ws, ss, zs = qlinear.blocked_shapes(attrs, lanes)
        else:
            ws, ss, zs = packed_shape(n, k, attrs["bits"], attrs["layout"]), (n, k // g), (n, k // g)
        offsets = B.tensor_type(zs, "f32" if attrs.get("mins") else "u8")  # minimums, or zero points
        ins = [B.tensor_type((m, k), "f32"), B.tensor_type(ws, "u8"), B.tensor_type(ss, "f32"), offsets]
        with ir.InsertionPoint(module.body):
            fn = func.FuncOp("gemv", (ins, [B.tensor_type((m, n), "f32")]))
            entry = fn.add_entry_block()
            with ir.InsertionPoint(entry):
                x, codes, scales, zeros = entry.arguments
                B.bind_dims({"x": (x, (m, k))})
                xin = qlinear.activations(B, x, m, k, attrs["act"])
                ka = qlinear.kernel_attrs(attrs)
                if lanes:
                    y, _ = qlinear.qlinear_blocked(B, xin, m, codes, scales, zeros, None, ka, lanes)
                else:
                    y, _ = qlinear.qlinear(B, xin, m, codes, scales, zeros, None, ka)
                func.ReturnOp([y])
        if not module.operation.verify():
            raise RuntimeError("the GEMV module does not verify")
        return str(module)


@dataclass
class Gemv:
    n: int
    k: int
    spec: str
    threads: int
    asm: str
    compile_s: float
    weight_bytes: int
    copies: int
    _fn: object = field(repr=False)
    _params: list = field(repr=False)
    _host: list = field(repr=False)
    _attrs: dict = field(repr=False)
    _device: object = field(repr=False)

    def __call__(self, x: np.ndarray, copy: int = 0) -> np.ndarray:
        x = np.ascontiguousarray(np.asarray(x, np.float32).reshape(1, self.k))
        return np.asarray(self._fn(x, *self._params[copy % self.copies]).to_host())

    def time_ms(self, repeat: int = 20, x: np.ndarray | None = None) -> float:
        """Best, over rounds, of the mean time per call when each call reads the next copy of the weights;
        at least `repeat` calls in all."""
        import iree.runtime as rt

        if x is None:
            x = np.random.default_rng(1).standard_normal((1, self.k), dtype=np.float32)
        xd = rt.asdevicearray(self._device, np.ascontiguousarray(x, np.float32))
        fn, params, c = self._fn, self._params, self.copies
        fn(xd, *params[0])
        best = float("inf")
        for _ in range(max(2, -(-repeat // c))):
            t = time.perf_counter()
            for i in range(c):
                fn(xd, *params[i])
            best = min(best, (time.perf_counter() - t) / c)
        return best * 1e3

    def numpy_baseline_ms(self, repeat: int = 2) -> float:
        """numpy dequantize-then-matmul (w = s (q - z), or s q + m, in float32, then x @ w.T) over min(copies, 4)
        copies of the unpacked codes: what a numpy user does without keeping a float copy of the weights."""
        from compiler.quant.pack import unpack

        packed, scales, zeros = self._host
        a = self._attrs
        g = a["group_size"]
        codes = [unpack(packed, a["bits"], a["layout"], self.k).copy() for _ in range(min(self.copies, 4))]
        mins = bool(a.get("mins"))
        z = np.repeat(zeros.astype(np.float32), g, axis=1)  # the minimums with mins
        s = np.repeat(scales, g, axis=1)
        x = np.random.default_rng(1).standard_normal((1, self.k), dtype=np.float32)
        best = float("inf")
        for _ in range(repeat):
            t = time.perf_counter()
            for c in codes:
                w = c.astype(np.float32) * s + z if mins else (c.astype(np.float32) - z) * s
                _ = x @ w.T
            best = min(best, (time.perf_counter() - t) / len(codes))
        return best * 1e3

    def max_rel_err_vs_ref(self, x: np.ndarray | None = None) -> float:
        """max |y - ref| / max |ref| against compiler.reference.qlinear (the numeric contract)."""
        from compiler.reference import QLinearWeights, qlinear

        if x is None:
            x = np.random.default_rng(2).standard_normal((1, self.k), dtype=np.float32)
        ref = qlinear(x, QLinearWeights(*self._host, self._attrs), self._attrs["act"])
        y = self(x)
        return float(np.abs(y - ref).max() / max(np.abs(ref).max(), 1e-30))


_THREADS_SET: list[int] = []


def _config(threads: int):
    import iree.runtime as rt

    if threads <= 1:
        return rt.Config("local-sync")
    if not _THREADS_SET:
        rt.flags.parse_flags(f"--task_topology_max_group_count={threads}")
        _THREADS_SET.append(threads)
    elif _THREADS_SET[0] != threads:
        raise RuntimeError(f"this process already runs IREE with {_THREADS_SET[0]} threads; measure {threads} in another process")
    return rt.Config("local-task")


def build_gemv(
    n: int, k: int, spec: str = "w4g128", threads: int = 1, rotate: bool = True, seed: int = 0, lanes: int | None = None, mins: bool = False
) -> Gemv:
    """Compile the MLIR qlinear GEMV for an N x K layer of random RTN-quantized weights and load it with
    enough weight copies (rotate=True) that each timed call reads its weights from memory. mins:
    scale-and-minimum groups (the fourth argument is the f32 minimums)."""
    import iree.compiler as ic
    import iree.runtime as rt

    qw, qspec = quantized_layer(n, k, spec, seed, mins)
    attrs = qlinear_attrs(qw, qspec, n, k)
    from compiler.backends.mlir.qlinear import relayout_blocked
    from compiler.knobs import MLIR_LANES

    if lanes is None:
        lanes = MLIR_LANES.get()
    asm = gemv_module(attrs, lanes=lanes)
    t = time.perf_counter()
    vmfb = ic.compile_str(asm, target_backends=["llvm-cpu"], extra_args=list(CPU_FLAGS))
    compile_s = time.perf_counter() - t
    config = _config(threads)
    ctx = rt.SystemContext(config=config)
    ctx.add_vm_module(rt.VmModule.copy_buffer(ctx.instance, vmfb))
    fn = ctx.modules.lowbit_gemv["gemv"]
    from compiler.quant.pack import pack

    offsets = np.ascontiguousarray(qw.mins, np.float32) if qw.has_mins else np.ascontiguousarray(qw.zeros, np.uint8)
    host = [pack(qw.codes, attrs["bits"], attrs["layout"]), np.ascontiguousarray(qw.scales, np.float32), offsets]
    dev_host = list(relayout_blocked(*host, attrs, lanes)) if lanes else host
    weight_bytes = sum(a.nbytes for a in host)
    copies = max(2, -(-4 * llc_bytes() // weight_bytes)) if rotate else 1
    params = [[rt.asdevicearray(config.device, a.copy()) for a in dev_host] for _ in range(copies)]
    name = qspec.name + ("-mins" if mins else "")
    return Gemv(n, k, name, threads, asm, compile_s, weight_bytes, copies, fn, params, host, attrs, config.device)


def read_bandwidth_gbs(nbytes: int, threads: int = 1, repeat: int = 10) -> float:
    """Read bandwidth of this machine measured through IREE itself: a sum over an int32 buffer of nbytes
    (use >= 4x LLC), split in 256 rows (the parallel dim), best of repeat."""
    import iree.compiler as ic
    import iree.runtime as rt
    from iree.compiler import ir
    from iree.compiler.dialects import arith, func

    from compiler.backends.mlir.builder import Builder

    rows = 256
    cols = max(1, nbytes // 4 // rows)
    with ir.Context(), ir.Location.unknown():
        module = ir.Module.create()
        module.operation.attributes["sym_name"] = ir.StringAttr.get("lowbit_bw")
        B = Builder()
        with ir.InsertionPoint(module.body):
            fn = func.FuncOp("sum", ([B.tensor_type((rows, cols), "i32")], [B.tensor_type((rows,), "i32")]))
            entry = fn.add_entry_block()
            with ir.InsertionPoint(entry):
                out = B.fill(0, (rows,), B.i32)
                s = B.generic([entry.arguments[0]], [out], ["(r, c) -> (r, c)", "(r, c) -> (r)"], "pr", lambda v, o: arith.addi(o, v))[0]
                func.ReturnOp([s])
        asm = str(module)
    vmfb = ic.compile_str(asm, target_backends=["llvm-cpu"], extra_args=list(CPU_FLAGS))
    config = _config(threads)
    ctx = rt.SystemContext(config=config)
    ctx.add_vm_module(rt.VmModule.copy_buffer(ctx.instance, vmfb))
    f = ctx.modules.lowbit_bw["sum"]
    buf = rt.asdevicearray(config.device, np.ones((rows, cols), np.int32))
    f(buf)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        f(buf)
        best = min(best, time.perf_counter() - t)
    return rows * cols * 4 / best / 1e9


def time_gemv(n: int, k: int, spec: str = "w4g128", threads: int = 1, repeat: int = 20, mins: bool = False) -> dict:
    """One row for a benchmark table (what benchmarks/gemv_cpu.py can merge as an MLIR column):
    {"ms": time per call with weights out of cache, "weight_bytes", "max_rel_err" vs the contract,
    "compile_s", "copies", "kernel"}. Call it in a process whose IREE thread count is `threads` (the first
    build_gemv of a process fixes it)."""
    g = build_gemv(n, k, spec, threads=threads, mins=mins)
    return {
        "ms": g.time_ms(repeat),
        "weight_bytes": g.weight_bytes,
        "max_rel_err": g.max_rel_err_vs_ref(),
        "compile_s": g.compile_s,
        "copies": g.copies,
        "kernel": "mlir-blocked32",
    }
