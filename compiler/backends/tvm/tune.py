"""A small measured search over the CPU qlinear kernels whose rules match a layer, cached by shape.

The rule table (kernels.rules()) picks a kernel by what usually wins; where several fast kernels apply (e.g. A16
W4: lut-cpu and blocked-cpu; A8 W2: vnni-cpu and lut-cpu) the winner depends on the machine. With tuning on
(`lowbit compile --tune`, or LOWBIT_TVM_TUNE=1) each candidate is compiled alone for the layer's shape and timed
at M = 1 (decode) on random weights rotated out of cache, and the fastest is used. Results are cached in
$LOWBIT_CACHE_DIR/tvm-kernels.json (default ~/.cache/lowbit) under a key made of the host CPU, the TVM thread
count, the shape, the quantization and the kernel sources' hash, so a second compile of the same shapes
measures nothing. (A few candidates, not a schedule space: TVM's meta_schedule tuner crashes in the 0.27
wheel.)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from compiler.backends.tvm.target import cpu_target, host_cpu
from compiler.knobs import CACHE_DIR

ROTATE_BYTES = 256 << 20  # weights copies per timing: enough to fall out of a 36-100 MiB last-level cache


def cache_file() -> Path:
    return CACHE_DIR.get() / "tvm-kernels.json"


def _sources_hash() -> str:
    here = Path(__file__).parent
    h = hashlib.sha256()
    for name in ("qlinear_te.py", "kernels.py", "kernels_cpu.py", "kernels_lut.py", "epilogue.py", "tune.py"):  # (tune.py: the weights it times)
        h.update((here / name).read_bytes())
    return h.hexdigest()[:12]


def cache_key(shape) -> str:
    threads = os.environ.get("TVM_NUM_THREADS", "default")
    quant = f"w{shape.bits}{'t' if shape.ternary else ''}g{shape.group}{'m' if shape.mins else ''}{'h' if shape.f16_params else ''}{shape.fp}"
    return f"{host_cpu()[0]}|t{threads}|{shape.n}x{shape.k}|{quant}|{shape.act}|{shape.layout}|b{int(shape.bias)}|{_sources_hash()}"


_warned: set = set()


def _warn(key, msg: str) -> None:
    """One warning line on stderr per cache file state: a cache problem costs measurements, never a compile."""
    if key not in _warned:
        _warned.add(key)
        print(f"warning: {msg}", file=sys.stderr)


def _valid_entry(v) -> bool:
    return isinstance(v, dict) and bool(v) and all(
        isinstance(k, str) and isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) and t >= 0 for k, t in v.items()
    )


def load_cache() -> dict:
    """The cached kernel times (key -> {kernel: ms}). A file that is not such a JSON object, or entries of the
    wrong shape, are ignored with a warning naming the file; the next measurement rewrites it."""
    f = cache_file()
    try:
        data = f.read_bytes()
        stamp = (str(f), f.stat().st_mtime_ns, len(data))
    except FileNotFoundError:
        return {}
    except OSError as e:
        _warn((str(f), "read"), f"cannot read the kernel cache {f} ({e.strerror or type(e).__name__}); tuning measures again")
        return {}
    try:
        cache = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        _warn(stamp, f"the kernel cache {f} is not valid JSON; ignoring it (it is rewritten after the next measurement)")
        return {}
    if not isinstance(cache, dict):
        _warn(stamp, f"the kernel cache {f} is not a JSON object; ignoring it (it is rewritten after the next measurement)")
        return {}
    good = {k: v for k, v in cache.items() if _valid_entry(v)}
    if len(good) != len(cache):
        _warn(stamp, f"the kernel cache {f} has {len(cache) - len(good)} malformed entries; ignoring them")
    return good


def save_cache(cache: dict) -> None:
    f = cache_file()
    tmp = f.with_suffix(f".{os.getpid()}.tmp")
    try:
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
        tmp.replace(f)  # atomic: a concurrent compile sees the old or the new file, never half of one
    except OSError as e:  # a read-only home only costs the next compile its measurements
        _warn((str(f), "write"), f"cannot write the kernel cache {f} ({e.strerror or type(e).__name__}); tuning results are not kept")
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


def pick(shape, candidates: list, log: dict | None = None):
    """The fastest of `candidates` (QLinearKernels whose rules match `shape`) at M = 1, cached."""
    if len(candidates) < 2:
        return candidates[0]
    cache = load_cache()
    key = cache_key(shape)
    times = cache.get(key)
    if not times or not all(k.name in times for k in candidates):
        times = measure_all(candidates, shape)
        cache = load_cache()
        cache[key] = times
        save_cache(cache)
        if log is not None:
            log[key] = {"measured_ms": times}
    elif log is not None:
        log.setdefault(key, {"cached_ms": times})
    return min(candidates, key=lambda k: times[k.name])


def measure_all(candidates: list, shape, rounds: int = 5) -> dict[str, float]:
    """ms per call of each candidate at M = 1, best of `rounds`; the candidates' rounds alternate, so a change
    in the machine's load during the search hits all of them alike."""
    runs = {k.name: _runner(k, shape) for k in candidates}
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(rounds):
        for name, run in runs.items():
            best[name] = min(best[name], run())
    return {name: round(t * 1e3, 4) for name, t in best.items()}


def _runner(kern, shape, m: int = 1):
    """Compile `kern` alone for the shape on random codes; returns a function timing one pass over weight
    copies rotated out of cache (seconds per call)."""
    import tvm
    from tvm import te, tirx

    from compiler.quant.pack import pack

    rng = np.random.default_rng(0)
    n, k, g, bits = shape.n, shape.k, shape.group, shape.bits
    codes = rng.integers(0, 3 if shape.ternary else 1 << bits, (n, k), dtype=np.uint8)
    scales = (rng.random((n, k // g), dtype=np.float32) * 0.01 + 0.001).astype(np.float32)
    if shape.mins:  # scale-and-minimum groups: float minimums (about -s * 2^(b-1), as RTN-min gives centred weights)
        zeros = (-scales * (1 << (bits - 1)) * (1 + 0.1 * rng.standard_normal((n, k // g), dtype=np.float32))).astype(np.float32)
    else:
        zeros = np.full((n, k // g), 1 if shape.ternary else 1 << (bits - 1), np.uint8)
    packed = pack(codes, bits, shape.layout)
    arrays = kern.relayout(packed, scales, zeros, shape) if kern.relayout else {"packed": packed, "scales": scales, "zeros": zeros}
    w = [arrays["packed"], arrays["scales"], arrays["zeros"]]
    s = tirx.Var("S", "int64")
    a8 = shape.act == "a8"
    ins = [te.placeholder((s, k), "int32" if a8 else "float32", name="x")]
    ins += [te.placeholder(a.shape, str(a.dtype), name=f"w{i}") for i, a in enumerate(w)]
    ins += [te.placeholder((s,), "float32", name="sa")] if a8 else []
    ins += [te.placeholder((n,), "float32", name="bias")] if shape.bias else []
    out = kern.te_func(shape)(*ins)
    func = kern.schedule(te.create_prim_func([*ins, out]))
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=cpu_target())
    copies = max(2, -(-ROTATE_BYTES // sum(a.nbytes for a in w)))
    wt = [[tvm.runtime.tensor(a.copy()) for a in w] for _ in range(copies)]
    x = tvm.runtime.tensor(rng.integers(-127, 128, (m, k)).astype(np.int32) if a8 else rng.standard_normal((m, k), dtype=np.float32))
    extra = ([tvm.runtime.tensor(np.ones(m, np.float32))] if a8 else []) + ([tvm.runtime.tensor(np.zeros(n, np.float32))] if shape.bias else [])
    y = tvm.runtime.tensor(np.zeros((m, n), np.float32))
    def one_pass() -> float:
        t = time.perf_counter()
        for i in range(copies):
            lib(x, *wt[i], *extra, y)
        return (time.perf_counter() - t) / copies

    one_pass()  # warm-up: first-touch of the copies, code in cache
    return one_pass
