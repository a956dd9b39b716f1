"""Shared by the benchmark scripts: a description of the machine and a table printer."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = float("nan")
    import numpy as np

    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, Python {platform.python_version()}, numpy {np.__version__}"


def timeit(fn, repeat: int = 3) -> float:
    """Best of `repeat` wall-clock runs, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def print_table(title: str, header: list[str], rows: list[list], save: str | None = None):
    from rich.console import Console
    from rich.table import Table

    t = Table(*header, title=title)
    for r in rows:
        t.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v) for v in r])
    Console(width=max(200, Console().width), soft_wrap=True).print(t)
    if save:
        Path(save).parent.mkdir(parents=True, exist_ok=True)
        Path(save).write_text(json.dumps({"title": title, "header": header, "rows": rows, "machine": machine()}, indent=1, default=str))


def run_workers(script: str, threads: str, worker_args) -> list[dict]:
    """Run `script --worker --threads T ...` once per thread count in `threads` ('1,2'), each in its own process
    (TVM's, IREE's and BLAS's thread pools are sized at start-up), and collect the JSON rows each prints last.
    worker_args(t) gives the rest of the worker's command line."""
    import subprocess
    import sys

    from compiler.knobs import MLIR_THREADS

    rows = []
    for t in threads.split(","):
        env = dict(os.environ, TVM_NUM_THREADS=t, OPENBLAS_NUM_THREADS=t, OMP_NUM_THREADS=t, MKL_NUM_THREADS=t, **{MLIR_THREADS.name: t})
        cmd = [sys.executable, script, "--worker", "--threads", t, *worker_args(t)]
        out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=True).stdout
        rows += json.loads(out.strip().splitlines()[-1])
    return rows
