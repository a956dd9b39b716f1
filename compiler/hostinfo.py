"""Facts about the host CPU that benchmarks and kernel timing need (read from sysfs, no dependencies)."""

from __future__ import annotations

from pathlib import Path


def llc_bytes() -> int:
    """Size of the largest CPU cache (sysfs), 32 MiB when unknown."""
    best = 0
    for idx in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (idx / "size").read_text().strip()
        except OSError:
            continue
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1], 1)
        best = max(best, int(text.rstrip("KMG")) * mult)
    return best or 32 << 20


def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on: distinct (package, core) pairs in sysfs; the CPU
    count when sysfs does not say."""
    import os

    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
    cores = set()
    for c in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{c}/topology")
        try:
            cores.add((topo / "physical_package_id").read_text().strip() + ":" + (topo / "core_id").read_text().strip())
        except OSError:
            return len(cpus)
    return len(cores) or len(cpus)


def default_tvm_threads() -> None:
    """Give TVM's thread pool one thread per physical core unless TVM_NUM_THREADS says otherwise. TVM's own
    default on x86 is half the hardware threads, on the assumption of two per core: on a VM or a machine
    without SMT that halves the cores used, and on the 2-core EPYC VM its one-thread pool decoded at 60-75
    tok/s where TVM_NUM_THREADS=1 gave 89-97 and =2 gave 95-104 (smollm2-135m w4g32). The pool reads the
    variable when it first starts, so this runs before any TVM kernel does."""
    import os

    os.environ.setdefault("TVM_NUM_THREADS", str(physical_cores()))
