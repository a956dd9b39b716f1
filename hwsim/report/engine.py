"""Many independent jobs (sweep points, yosys syntheses, RTL regressions) run on local processes or on a Ray
cluster, each result cached under a hash of its inputs, so an interrupted run resumes and a repeated one is free.

    Job(kind, label, fn, kwargs, versions)   fn: a module-level function of kwargs returning a JSON-able dict;
                                             versions: what else the result depends on (tool versions, a hash
                                             of the source that computes it); job.key hashes all of it
    JobCache(root)                           one JSON file per key under root/<kind>/, written atomically
    make_engine("local" | "ray", workers, address) -> LocalEngine | RayEngine   (context managers)
    engine.run(jobs, cache, on_status, batch) -> [Outcome]   in the order of `jobs`; a job that raises is an
                                             Outcome with its error (the others still run), never cached
    source_hash(*paths), tool_version(cmd), lowbit_version()

Results go through JSON before they are returned, fresh or cached alike, so a run's output does not depend on
where a result came from. Workers ignore SIGINT; the driver stops them and writes cache entries whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from compiler.errors import LowbitError
from compiler.fsutil import atomic_write_text

ENGINES = ("local", "ray")
RAY_INSTALL = 'pip install "lowbit[ray]"'  # or: pip install "ray>=2.9"
ROOT = Path(__file__).resolve().parents[2]  # the folder holding the lowbit packages


@dataclass(frozen=True)
class Job:
    kind: str  # "hwsim", "synth", "sim", "layer": the cache's sub-folder and the progress line's name
    label: str  # what a failure names
    fn: Callable[..., dict]
    kwargs: dict
    versions: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        blob = json.dumps({"kind": self.kind, "fn": f"{self.fn.__module__}.{self.fn.__qualname__}", "kwargs": self.kwargs,
                           "versions": self.versions}, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class Outcome:
    job: Job
    result: dict | None  # None when the job failed
    error: str = ""
    cached: bool = False


@dataclass
class Status:
    """What a progress display shows; passed to on_status after every change."""

    total: int
    done: int = 0  # finished, successfully or not, cached ones included
    cached: int = 0
    running: int = 0
    failed: int = 0


@lru_cache(maxsize=None)
def source_hash(*paths: str) -> str:
    """sha256 over the .py and .json files under `paths` (relative to the lowbit source root), names included."""
    h = hashlib.sha256()
    for rel in paths:
        p = ROOT / rel
        files = sorted(f for f in p.rglob("*") if f.suffix in (".py", ".json") and "__pycache__" not in f.parts) if p.is_dir() else [p]
        for f in files:
            if f.is_file():
                h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


@lru_cache(maxsize=None)
def tool_version(*cmd: str) -> str:
    """The first line a tool prints for its version (e.g. tool_version("yosys", "-V")); "missing" if it is absent."""
    try:
        r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return "missing"
    return ((r.stdout or r.stderr).strip().splitlines() or ["unknown"])[0]


@lru_cache(maxsize=1)
def lowbit_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lowbit")
    except PackageNotFoundError:
        return "unknown"


class JobCache:
    """Results by job key: root/<kind>/<key[:2]>/<key>.json holding {"key", "label", "result"}."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @classmethod
    def default(cls) -> JobCache:
        from compiler.knobs import CACHE_DIR

        return cls(CACHE_DIR.get() / "jobs")

    def check(self) -> None:
        """Fail early, in one line, when the cache cannot be written."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            ok = os.access(self.root, os.W_OK | os.X_OK)
        except OSError as e:
            raise LowbitError(f"cannot use the job cache {self.root}: {e.strerror or e}", "set LOWBIT_CACHE_DIR to a writable folder, or pass --no-cache") from None
        if not ok:
            raise LowbitError(f"cannot write the job cache {self.root}: permission denied", "set LOWBIT_CACHE_DIR to a writable folder, or pass --no-cache")

    def path(self, job: Job) -> Path:
        k = job.key
        return self.root / job.kind / k[:2] / f"{k}.json"

    def get(self, job: Job) -> dict | None:
        try:
            d = json.loads(self.path(job).read_text())
        except (OSError, ValueError):
            return None
        return d["result"] if isinstance(d, dict) and d.get("key") == job.key and isinstance(d.get("result"), dict) else None

    def put(self, job: Job, result: dict) -> None:
        p = self.path(job)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(p, json.dumps({"key": job.key, "label": job.label, "result": result}))
        except OSError as e:
            raise LowbitError(f"cannot write the job cache {self.root}: {e.strerror or e}", "set LOWBIT_CACHE_DIR to a writable folder, or pass --no-cache") from None

    def entries(self, kind: str | None = None) -> list[Path]:
        base = self.root / kind if kind else self.root
        return sorted(base.rglob("*.json")) if base.is_dir() else []


def run_batch(items: list[tuple[Callable, dict]]) -> list[tuple[bool, object]]:
    """Run (fn, kwargs) pairs in a worker: (True, result as JSON text) or (False, the error in one line)."""
    out = []
    for fn, kwargs in items:
        try:
            out.append((True, json.dumps(fn(**kwargs), default=str)))
        except Exception as e:  # noqa: BLE001 - a job's failure is its outcome; the other jobs go on
            msg = str(e) if isinstance(e, LowbitError) else f"{type(e).__name__}: {e}"
            out.append((False, " ".join(msg.split())[:500]))
    return out


def _ignore_interrupts():
    """Workers leave Ctrl-C and SIGTERM to the driver, which stops them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class _Engine:
    workers = 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        pass

    def run(self, jobs: list[Job], cache: JobCache | None = None, on_status: Callable[[Status], None] | None = None,
            batch: int | None = None) -> list[Outcome]:
        """Every job's Outcome, in the order of `jobs`. batch: jobs per task (None: about eight tasks per worker,
        for many short jobs; give 1 for long ones)."""
        st = Status(total=len(jobs))
        outcomes: list[Outcome | None] = [None] * len(jobs)
        todo = []
        for i, j in enumerate(jobs):
            hit = cache.get(j) if cache is not None else None
            if hit is not None:
                outcomes[i] = Outcome(j, hit, cached=True)
                st.cached += 1
                st.done += 1
            else:
                todo.append(i)
        if batch is None:
            batch = max(1, min(64, -(-len(todo) // (8 * self.workers))))
        batches = [todo[k:k + batch] for k in range(0, len(todo), batch)]
        left = len(todo)
        st.running = min(left, self.workers * batch)
        if on_status:
            on_status(st)
        for b, results in self._execute([[(jobs[i].fn, jobs[i].kwargs) for i in idx] for idx in batches]):
            for i, (ok, payload) in zip(batches[b], results):
                j = jobs[i]
                if ok:
                    result = json.loads(payload)
                    if cache is not None:
                        cache.put(j, result)
                    outcomes[i] = Outcome(j, result)
                else:
                    outcomes[i] = Outcome(j, None, error=str(payload))
                    st.failed += 1
                st.done += 1
                left -= 1
            st.running = min(left, self.workers * batch)
            if on_status:
                on_status(st)
        return outcomes  # type: ignore[return-value]

    def _execute(self, batches: list[list]) -> Iterator[tuple[int, list]]:
        raise NotImplementedError


class LocalEngine(_Engine):
    """Local processes (ProcessPoolExecutor); one worker runs the jobs in this process."""

    name = "local"

    def __init__(self, workers: int | None = None):
        self.workers = max(1, workers or os.cpu_count() or 1)

    def _execute(self, batches):
        from concurrent.futures import ProcessPoolExecutor, as_completed

        if self.workers == 1 or len(batches) <= 1:
            for b, items in enumerate(batches):
                yield b, run_batch(items)
            return
        ex = ProcessPoolExecutor(max_workers=min(self.workers, len(batches)), initializer=_ignore_interrupts)
        try:
            futs = {ex.submit(run_batch, items): b for b, items in enumerate(batches)}
            for f in as_completed(futs):
                yield futs[f], f.result()
        except BaseException:  # an interrupt: drop the queued batches and stop the workers, not wait for them
            for w in list(getattr(ex, "_processes", {}).values()):
                w.terminate()
            ex.shutdown(wait=False, cancel_futures=True)
            raise
        ex.shutdown()


class RayEngine(_Engine):
    """Ray tasks on the cluster at `address`, on the Ray this process already joined, or on a local Ray started
    here with `workers` CPUs (stopped again by close())."""

    name = "ray"

    def __init__(self, workers: int | None = None, address: str | None = None):
        try:
            import ray
        except ImportError:
            raise LowbitError("--engine ray needs Ray, which is not installed", f"install it with `{RAY_INSTALL}`") from None
        self.ray = ray
        self.owned = False
        if address:
            _check_reachable(address)  # ray.init retries an unreachable head for minutes
        if not ray.is_initialized():
            self._start(workers, address)
        self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.task = ray.remote(num_cpus=1, max_retries=0)(run_batch)

    def _start(self, workers, address):
        ray = self.ray
        saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}  # lowbit's handlers stay in charge
        quiet = dict(log_to_driver=False, logging_level="ERROR", configure_logging=True)
        try:
            if address:
                ray.init(address=address, **quiet)
            else:
                ray.init(address="local", num_cpus=workers or os.cpu_count() or 1, include_dashboard=False, object_store_memory=200 << 20, **quiet)
        except (ConnectionError, TimeoutError, RuntimeError, ValueError) as e:
            with contextlib.suppress(Exception):
                ray.shutdown()
            where = f"the Ray cluster at {address}" if address else "a local Ray"
            raise LowbitError(f"cannot start or join {where}: {' '.join(str(e).split())[:200]}",
                              "start the head with `ray start --head --port 6379` and pass --address HOST:6379" if address
                              else "check that `ray start --head` works on this machine") from None
        finally:
            for s, h in saved.items():
                signal.signal(s, h)
        self.owned = True

    def close(self) -> None:
        if self.owned:
            self.owned = False
            self.ray.shutdown()

    def _execute(self, batches):
        ray = self.ray
        refs = {self.task.remote(items): b for b, items in enumerate(batches)}
        pending = list(refs)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=len(pending), timeout=0.2)
                for r in ready:
                    try:
                        res = ray.get(r)
                    except ray.exceptions.RayError as e:  # the worker died (killed, out of memory): its jobs failed
                        res = [(False, f"ray task failed: {' '.join(str(e).split())[:300]}")] * len(batches[refs[r]])
                    yield refs[r], res
                if not ready:
                    time.sleep(0)  # let a pending signal handler run
        except BaseException:
            for r in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(r, force=True)
            raise


def _check_reachable(address: str) -> None:
    import socket

    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise LowbitError(f"--address '{address}' is not HOST:PORT", "give the head's address, e.g. --address 10.0.0.5:6379 (`ray start --head --port 6379`)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as e:
        raise LowbitError(f"cannot reach the Ray cluster at {address} ({e.strerror or e})",
                          f"start it with `ray start --head --port {port}` on {host}, or correct --address") from None


def make_engine(name: str, workers: int | None = None, address: str | None = None) -> _Engine:
    if name not in ENGINES:
        raise LowbitError(f"unknown engine '{name}'", f"use {' or '.join(ENGINES)}")
    if name == "local":
        if address:
            raise LowbitError("--address names a Ray cluster, but the engine is local", "add --engine ray, or drop --address")
        return LocalEngine(workers)
    return RayEngine(workers, address)
