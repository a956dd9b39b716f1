"""compiler.hostinfo: the physical core count and the TVM thread default it sets (only where none is set)."""

import os
import subprocess
import sys
from pathlib import Path

from compiler.hostinfo import physical_cores

ROOT = Path(__file__).resolve().parents[2]


def test_physical_cores_within_the_usable_cpus():
    n = physical_cores()
    assert 1 <= n <= len(os.sched_getaffinity(0))


def _threads_after_import(env_value):
    env = {k: v for k, v in os.environ.items() if k != "TVM_NUM_THREADS"}
    if env_value is not None:
        env["TVM_NUM_THREADS"] = env_value
    code = "import compiler.backends.tvm, os; print(os.environ['TVM_NUM_THREADS'])"
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    return r.stdout.strip()


def test_tvm_threads_default_to_physical_cores_and_respect_the_user():
    assert _threads_after_import(None) == str(physical_cores())
    assert _threads_after_import("7") == "7"
