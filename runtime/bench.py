"""`lowbit bench`: prefill and decode tokens/s of an artifact on this machine, the share of the bandwidth
roofline each decode reaches, and (with ops=True) where one decode step's time goes.

Per thread count, in one process whose thread pools have that many threads (TVM_NUM_THREADS, LOWBIT_MLIR_THREADS
and the BLAS variables are read once, at start-up: a count other than this process's runs in a child process):
- read bandwidth: a parallel TVM sum over a buffer of 4x the last-level cache, best of a few passes;
- prefill: `prompt` random ids from an empty cache, best of two runs, after one warm-up call;
- decode: `tokens` single-token steps after a KV cache of `ctx` positions (filled with random values: speed
  does not depend on what the cache holds), timed together;
- roofline: bandwidth / bytes one decode step reads (every weight once, one embedding row, the KV cache at the
  middle of the decode run); share = measured tok/s / roofline tok/s.
The per-op breakdown times one decode step at the same context: `ref` times every graph node (the interpreter's
on_node hook) and sums them by op; `tvm-cpu` times every call the Relax VM makes (its instrument hook: the
compiled kernels by name, and the VM's own shape / allocation builtins as one row); the remainder of the step
(Python and VM dispatch between calls) is its own row. TVM 0.27's VM has no profiler (`profile=` is gone) and
IREE runs the whole model as one call, so mlir-cpu has no breakdown.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from compiler.errors import LowbitError
from compiler.kvformat import cache_rows, row_share
from compiler.ir import DTYPES

BACKENDS = ("ref", "tvm-cpu", "mlir-cpu")
MAX_THREADS = 1024
BLAS_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


# ---- the machine ---------------------------------------------------------------------------------------------


def machine() -> str:
    """CPU model, cores and memory of this machine, one line."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        mem = f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"
    except (ValueError, OSError):
        mem = "? GiB"
    return f"{cpu}, {os.cpu_count()} cores, {mem}"


def bandwidth_gbs(nbytes: int | None = None, repeat: int = 5) -> float:
    """Read bandwidth in GB/s at this process's TVM thread count: a parallel sum over an int32 buffer of nbytes
    (default 4x the last-level cache, so it streams from memory), best of `repeat`."""
    import tvm
    from tvm import te

    from compiler.backends.tvm.target import cpu_target
    from compiler.hostinfo import llc_bytes

    n = (nbytes or 4 * llc_bytes()) // 4
    chunks = 256
    n -= n % chunks
    a = te.placeholder((chunks, n // chunks), "int32", name="a")
    r = te.reduce_axis((0, n // chunks), name="r")
    s = te.compute((chunks,), lambda c: te.sum(a[c, r], axis=r), name="s")
    sch = tvm.s_tir.Schedule(te.create_prim_func([a, s]))
    c, _ = sch.get_loops(sch.get_sblock("s"))
    sch.parallel(c)  # the inner reduction loop is left to LLVM's vectorizer
    lib = tvm.compile(sch.mod, target=cpu_target())
    buf = tvm.runtime.tensor(np.ones((chunks, n // chunks), np.int32))
    out = tvm.runtime.tensor(np.zeros(chunks, np.int32))
    lib(buf, out)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        lib(buf, out)
        best = min(best, time.perf_counter() - t)
    return n * 4 / best / 1e9


def library_arrays(info: dict) -> list[tuple[str, int, int]] | None:
    """(graph constant, bytes, rows) of each array a compiled library reads (tvm.json's params with their shapes and
    the constant each holds, `of`): its re-laid-out copies are what a step streams, e.g. ternary at five trits per byte
    or scales in fp16, not the artifact's storage; a stacked layer's arrays count under its first layer's constant."""
    params = info.get("params") or []
    if not params or any("shape" not in p or "of" not in p for p in params):
        return None
    out = []
    for p in params:
        shape = p["shape"] or [1]
        out.append((p["of"], int(np.prod(shape)) * np.dtype(p["dtype"]).itemsize, int(shape[0])))
    return out


def step_bytes(graph, context: int, arrays: list[tuple[str, int, int]] | None = None) -> dict:
    """Bytes one decode step reads: quantized weights (codes, scales, zero points / minimums), float weights,
    one embedding row, and the KV cache traffic at `context` positions before the step (graph meta `kv` says the
    form: in place, the context + 1 rows attention reads; concat, the copy too). arrays: (graph constant, bytes,
    rows) of what the backend's library reads instead of the graph's constants (library_arrays)."""
    users: dict[str, set] = {}
    for node in graph.nodes:
        for name in node.inputs:
            users.setdefault(name, set()).add(node.op)
    if arrays is None:
        arrays = [(name, arr.nbytes, arr.shape[0] if arr.ndim else 1) for name, arr in graph.consts.items()]
    quant = flt = emb = 0
    for name, nbytes, rows in arrays:
        ops = users.get(name, set())
        if ops and ops <= {"embedding", "qembedding"}:
            emb += nbytes // rows  # one row (of codes, scales, ...) per token
        elif ops & {"qlinear", "qembedding"}:
            quant += nbytes
        else:
            flt += nbytes
    # one position of K and V, every layer: the cache inputs' bytes per row (float32, or a quantized cache's codes and scales)
    past = {k: t for k, t in graph.inputs.items() if k.startswith("past_")}
    row = sum(row_share(t.shape[0]) * int(np.prod(t.shape[1:])) * np.dtype(DTYPES[t.dtype]).itemsize for t in past.values())
    if graph.meta.get("kv") == "inplace":
        # the step's row is written, then attention reads rows 0..context (tvm-cpu's kernel reads no more), and a
        # quantized cache's float window rings (a fixed number of rows) whole
        kv = row * (context + 1) + sum(int(np.prod(t.shape)) * np.dtype(DTYPES[t.dtype]).itemsize for t in past.values() if isinstance(t.shape[0], int))
    else:
        # concat: the past is read and the grown copy written (context + 1 rows), then attention reads that copy
        kv = row * (3 * context + 2)
    return {"quantized": quant, "float": flt, "embedding": emb, "kv": kv, "total": quant + flt + emb + kv}


# ---- inputs --------------------------------------------------------------------------------------------------


def parse_threads(text: str | None) -> list[int]:
    """'1,2' -> [1, 2]; None -> [cores]."""
    if text is None:
        return [os.cpu_count() or 1]
    out = []
    for part in str(text).split(","):
        part = part.strip()
        if not part.isdigit() or not 1 <= int(part) <= MAX_THREADS:
            raise LowbitError(f"--threads {text}: '{part}' is not a thread count from 1 to {MAX_THREADS}", "pass counts such as --threads 1,2")
        if int(part) not in out:
            out.append(int(part))
    return out


def check(m, backend: str, prompt: int, ctx: int, tokens: int):
    """Refuse what cannot be measured, before anything is timed."""
    if backend not in BACKENDS:
        raise LowbitError(f"--backend {backend}: lowbit bench measures the CPU backends", f"use one of: {', '.join(BACKENDS)}")
    if backend != "ref" and backend not in m.artifact.manifest.get("targets", {}):
        built = ", ".join(sorted({"ref", *m.artifact.manifest.get("targets", {})}))
        raise LowbitError(f"artifact {m.path} has no {backend} build (built: {built})", f"recompile it with `lowbit compile ... --target {backend}`")
    if prompt < 1:
        raise LowbitError(f"--prompt {prompt} measures no prefill", "pass --prompt 1 or more")
    if not m.causal and (tokens or ctx):
        raise LowbitError(f"model {m.name} is an encoder ({m.family}); it has no decode to measure", "pass --tokens 0 (and no --ctx) to measure its prefill only")
    limit = m.context_length
    if limit and prompt > limit:
        raise LowbitError(f"--prompt {prompt} is more than the model's context of {limit} positions", f"pass --prompt {limit} or less")
    if limit and ctx + tokens > limit:
        raise LowbitError(f"--ctx {ctx} and --tokens {tokens} make {ctx + tokens} positions, more than the model's context of {limit}",
                          f"pass --ctx {max(limit - tokens, 0)} or less" if tokens < limit else f"pass --tokens {limit} or less")


def _cache(m, b, filled: int, rows: int, rng) -> dict:
    """A KV cache holding `filled` positions of random values, in the backend's form: `filled` rows (the
    concat form), or a preallocated cache of `rows` rows (the in-place form, written where the model goes)."""
    inplace = getattr(m, "kv_inplace", False)
    n = m.cache_capacity(rows) if inplace else filled
    arrays = {}
    for k, t in m.graph.inputs.items():
        if not k.startswith("past_"):
            continue
        shape, dt = (cache_rows(t.shape[0], n), *t.shape[1:]), np.dtype(DTYPES[t.dtype])  # (window rings: fixed rows)
        if dt == np.float32:
            arrays[k] = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.1)
        elif dt == np.float16:  # a quantized cache's scales
            arrays[k] = rng.uniform(0.001, 0.01, shape).astype(np.float16)
        else:  # its codes
            info = np.iinfo(dt)
            arrays[k] = rng.integers(info.min, info.max, shape, endpoint=True).astype(dt)
    return b.new_cache(arrays) if inplace else arrays


def _pos(ids: list[int], start: int) -> dict:
    return {"input_ids": np.asarray(ids, np.int64), "positions": np.arange(start, start + len(ids), dtype=np.int64)}


def _step(m, b, ids: list[int], start: int, cache: dict | None) -> dict | None:
    """One call (prefill or decode step); returns the cache after it."""
    if not m.causal:
        b.run(_pos(ids, start))
        return None
    if hasattr(b, "step"):  # the backend keeps its cache in its own form between steps
        return b.step(_pos(ids, start), cache, last=True)[1]  # (the logits generation needs: the last row's)
    out = b.run({**_pos(ids, start), **cache})
    return {k.replace("present_", "past_"): v for k, v in out.items() if k.startswith("present_")}


# ---- measuring, in this process ------------------------------------------------------------------------------


def measure(path: str | Path, backend: str, threads: int, prompt: int, ctx: int, tokens: int, ops: bool, model=None, kv: str | None = None) -> dict:
    """One thread count's figures, measured in this process (whose thread pools must already have `threads`);
    model: the artifact already loaded; kv: its KV cache in another format (runtime.load)."""
    import runtime

    m = model or runtime.load(path, kv)
    check(m, backend, prompt, ctx, tokens)
    g = m.graph
    rng = np.random.default_rng(0)
    vocab = g.meta["hparams"]["vocab"]
    b = m.backend(backend)  # libraries loaded, weights copied: not timed
    try:
        bw = bandwidth_gbs()
    except ImportError:  # runtime-only TVM or none: no roofline
        bw = None
    empty = _cache(m, b, 0, prompt, rng) if m.causal else None
    ids = [int(i) for i in rng.integers(1, vocab, prompt)]
    _step(m, b, ids[:1], 0, empty)  # warm-up: first-call costs (page faults, lazy init) are not prefill
    best = float("inf")
    for _ in range(2):
        t = time.perf_counter()
        _step(m, b, ids, 0, empty)
        best = min(best, time.perf_counter() - t)
    row = {"threads": threads, "prompt": prompt, "prefill_s": best, "prefill_tok_s": prompt / best, "bandwidth_gbs": bw}
    if m.causal and tokens:
        cache = _cache(m, b, ctx, ctx + tokens, rng)
        tok = int(rng.integers(1, vocab))
        _step(m, b, [tok], ctx, cache)  # warm-up at this context (its cache is dropped; in place, row ctx is rewritten)
        t = time.perf_counter()
        for i in range(tokens):
            cache = _step(m, b, [tok], ctx + i, cache)
        dt = time.perf_counter() - t
        nbytes = step_bytes(g, ctx + tokens // 2, library_arrays(getattr(b, "info", None) or {}))
        row.update(ctx=ctx, tokens=tokens, decode_s=dt, decode_tok_s=tokens / dt, step_bytes=nbytes["total"], step_float_bytes=nbytes["float"])
        if bw:
            row.update(roofline_tok_s=bw * 1e9 / nbytes["total"], roofline_share=tokens / dt * nbytes["total"] / (bw * 1e9))
        if ops:
            row["ops"] = op_breakdown(m, backend, b, _cache(m, b, ctx, ctx + 1, rng), _pos([tok], ctx))
            row["prefill_ops"] = op_breakdown(m, backend, b, _cache(m, b, 0, prompt, rng), _pos(ids, 0), last=True)
    return row


def op_breakdown(m, backend: str, b, cache: dict, feeds: dict, steps: int = 3, last: bool = False) -> dict:
    """Where one call's time goes (a decode step, or the prefill of `feeds`; last: as generation calls it, for the
    last row's logits): {"step_s", "ops": [{"op", "calls", "s"}], "what"}; the fastest of `steps` calls, with the
    time between timed calls as the row "(between calls)"."""
    if backend == "ref":
        timer, what = _ref_step(b, {**feeds, **cache}), "every graph node, by op (compiler.reference kernels)"
    elif backend == "tvm-cpu":
        timer, what = _tvm_step(b, feeds, cache, last), "every Relax VM call: compiled kernels by name, VM builtins together"
    else:
        return {"step_s": None, "ops": [], "what": f"{backend} runs the model as one IREE call; no per-op breakdown"}
    best = None
    for _ in range(steps):
        step_s, times = timer()
        if best is None or step_s < best[0]:
            best = (step_s, times)
    step_s, times = best
    rows = sorted(({"op": k, "calls": n, "s": s} for k, (n, s) in times.items()), key=lambda r: -r["s"])
    rows.append({"op": "(between calls)", "calls": 0, "s": max(step_s - sum(r["s"] for r in rows), 0.0)})
    return {"step_s": step_s, "ops": rows, "what": what}


def _ref_step(b, feeds):
    interp = b.interp

    def run():
        times: dict[str, list] = {}
        last = [None, 0.0]  # the node running, when it started

        def on_node(i, node, ins):
            now = time.perf_counter()
            if last[0] is not None:
                _add(times, last[0], now - last[1])
            last[0], last[1] = node.op, time.perf_counter()

        t = time.perf_counter()
        env = interp.start(feeds)
        interp.run_nodes(env, range(len(interp.graph.nodes)), on_node=on_node)
        end = time.perf_counter()
        if last[0] is not None:
            _add(times, last[0], end - last[1])
        return end - t, times

    return run


def _tvm_step(b, feeds, cache, last: bool = False):
    from compiler.ir import DTYPES

    tvm = b.tvm
    given = {**feeds, **cache}  # (an in-place cache is already device tensors)
    args = [v if not isinstance(v := given[k], np.ndarray) else tvm.runtime.tensor(np.ascontiguousarray(v, DTYPES[b.input_dtypes[k]]), b.dev)
            for k in b.info["inputs"]]

    def run():
        times: dict[str, list] = {}
        started: dict[str, float] = {}

        def instrument(func, name, before, ret, *rest):
            if before:
                started[name] = time.perf_counter()
            else:
                _add(times, "vm.builtin (shapes, allocation)" if name.startswith("vm.builtin.") else name, time.perf_counter() - started.pop(name))
            return 0  # VMInstrumentReturnKind.NO_OP

        b.vm.set_instrument(instrument)
        try:
            t = time.perf_counter()
            (b.main_last if last and b.main_last is not None else b.main)(*args, *b.params)
            dt = time.perf_counter() - t
        finally:
            b.vm.set_instrument(None)  # (None removes the hook)
        return dt, times

    return run


def _add(times: dict, key: str, s: float):
    n, tot = times.get(key, (0, 0.0))
    times[key] = (n + 1, tot + s)


# ---- one run per thread count --------------------------------------------------------------------------------


def process_threads(backend: str) -> int | None:
    """The thread count this process's pools already have for `backend` (None: unknown, measure in a child)."""
    try:
        import tvm

        tvm_threads = tvm.runtime.num_threads()
    except ImportError:
        tvm_threads = os.cpu_count()
    if backend == "mlir-cpu":
        from compiler.knobs import MLIR_THREADS

        mlir = MLIR_THREADS.get() or os.cpu_count()
        return tvm_threads if mlir == tvm_threads else None
    return tvm_threads


def thread_env(threads: int) -> dict:
    from compiler.knobs import MLIR_THREADS

    return dict(os.environ, TVM_NUM_THREADS=str(threads), **{MLIR_THREADS.name: str(threads)}, **dict.fromkeys(BLAS_VARS, str(threads)))


def bench(path: str | Path, backend: str = "ref", threads: list[int] | None = None, prompt: int = 128, ctx: int = 0, tokens: int = 32,
          ops: bool = False, kv: str | None = None) -> dict:
    """Every thread count's figures: in this process where its pools have that count, else in a child."""
    import runtime

    m = runtime.load(path, kv)  # errors (not an artifact, bad options) before any child starts
    check(m, backend, prompt, ctx, tokens)
    if ops and not tokens:
        raise LowbitError("--ops times one decode step, and --tokens 0 measures no decode", "pass --tokens 1 or more")
    threads = threads or [os.cpu_count() or 1]
    here = process_threads(backend)
    runs = []
    for t in threads:
        if t == here:
            runs.append(measure(path, backend, t, prompt, ctx, tokens, ops, model=m))
            continue
        job = json.dumps({"path": str(Path(path).resolve()), "backend": backend, "threads": t, "prompt": prompt, "ctx": ctx, "tokens": tokens, "ops": ops, "kv": kv})
        r = subprocess.run([sys.executable, "-m", "runtime.bench", job], env=thread_env(t), capture_output=True, text=True, check=False,
                           cwd=str(Path(__file__).resolve().parents[1]))
        if r.returncode != 0:
            last = (r.stderr.strip().splitlines() or ["no output"])[-1].removeprefix("error: ")
            raise LowbitError(f"the {t}-thread measurement (a child process) failed: {last}", f"run it alone with --threads {t}")
        runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
    q = m.artifact.manifest.get("quant") or {}
    return {"artifact": str(path), "model": m.name, "quant": q.get("name"), "kv": m.graph.meta.get("kv_format"), "backend": backend, "machine": machine(), "runs": runs}


def check_json_path(path: str | Path):
    folder = Path(path).resolve().parent
    if not folder.is_dir():
        raise LowbitError(f"--json {path}: the folder {folder} does not exist", "create it or write the JSON elsewhere")


def write_json(result: dict, path: str | Path):
    """Whole or not at all."""
    p = Path(path)
    check_json_path(p)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(p)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise LowbitError(f"cannot write --json {path}: {e.strerror}", "choose a path you can write to") from None


# ---- printing ------------------------------------------------------------------------------------------------


def _f(v, fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


def print_result(con, result: dict):
    from rich.table import Table

    runs = result["runs"]
    first = runs[0]
    dec = f", decode tg{first['tokens']} at ctx {first['ctx']}" if "tokens" in first else ""
    t = Table(title=f"{result['model']} {result['quant'] or ''} on {result['backend']}: prefill pp{first['prompt']}{dec}; {result['machine']}")
    for col in ("threads", "pp tok/s", "tg tok/s", "MB/step", "GB/s", "roofline", "share"):
        t.add_column(col, justify="right")
    for r in runs:
        share = r.get("roofline_share")
        t.add_row(str(r["threads"]), f"{r['prefill_tok_s']:.1f}", _f(r.get("decode_tok_s"), ".2f"), _f(r.get("step_bytes") and r["step_bytes"] / 1e6, ".2f"),
                  _f(r["bandwidth_gbs"], ".1f"), _f(r.get("roofline_tok_s"), ".1f"), "n/a" if share is None else f"{100 * share:.0f}%")
    con.print(t)
    con.print("pp tok/s: prompt tokens per second of a prefill that returns the last position's logits (as a generation's and "
              "llama-bench's do); tg tok/s: decode steps per second; MB/step: bytes one decode step reads (weights, one embedding row, KV cache); "
              "GB/s: read bandwidth measured in the same process (a parallel sum over 4x the last-level cache); "
              "roofline: GB/s / MB/step in tok/s; share: tg tok/s / roofline")
    for r in runs:
        for key, what, timed in (("ops", f"one decode step at ctx {r.get('ctx')}", r.get("decode_tok_s") and 1 / r["decode_tok_s"]),
                                 ("prefill_ops", f"the prefill of {r['prompt']} tokens", r["prefill_s"])):
            if key not in r:
                continue
            o = r[key]
            if not o["ops"]:
                con.print(o["what"])
                break
            ot = Table(title=f"{what}, {r['threads']} thread(s): {o['step_s'] * 1e3:.3f} ms with the timing hooks "
                             f"(timed without them: {timed * 1e3:.3f} ms); timed: {o['what']}")
            for col in ("op", "calls", "ms", "share"):
                ot.add_column(col, justify="left" if col == "op" else "right")
            for row in o["ops"]:
                ot.add_row(row["op"], str(row["calls"]), f"{row['s'] * 1e3:.3f}", f"{100 * row['s'] / o['step_s']:.1f}%")
            con.print(ot)


def _worker(job: str):
    a = json.loads(job)
    try:
        print(json.dumps(measure(a["path"], a["backend"], a["threads"], a["prompt"], a["ctx"], a["tokens"], a["ops"], kv=a.get("kv"))))
    except LowbitError as e:
        print(e.line(), file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    _worker(sys.argv[1])
