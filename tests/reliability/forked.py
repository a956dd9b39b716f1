"""Run `lowbit ARGS` (main() semantics) or any function in a child forked from the test process, which has
imported everything already (milliseconds instead of a fresh interpreter's seconds). A child that dies by a
signal (SIGBUS from a damaged library, SIGKILL from a test) is reported as such instead of taking the test
process down with it."""

from __future__ import annotations

import io
import os
import signal
import sys
import time
from dataclasses import dataclass


@dataclass
class ChildResult:
    code: int | None  # exit status; None when a signal ended the child
    signal: int | None
    out: str
    err: str


def start(fn) -> tuple[int, int]:
    """Fork; the child runs fn() -> (exit code, stdout, stderr) and reports on a pipe. Returns (pid, read fd)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            os.close(r)
            out, err = "", ""
            code, out, err = fn()
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            err = f"child raised {type(e).__name__}: {e}"
        finally:
            try:
                os.write(w, repr((out, err)).encode())
            finally:
                os._exit(code if isinstance(code, int) else 1)
    os.close(w)
    return pid, r


def wait(pid: int, r: int, timeout: float = 120.0) -> ChildResult:
    t0 = time.monotonic()
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() - t0 > timeout:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(r)
            raise AssertionError(f"child {pid} ran past {timeout} s")
        time.sleep(0.005)
    data = b""
    while chunk := os.read(r, 1 << 16):
        data += chunk
    os.close(r)
    out, err = eval(data.decode()) if data else ("", "")  # our own repr() of two strings
    if os.WIFSIGNALED(status):
        return ChildResult(None, os.WTERMSIG(status), out, err)
    return ChildResult(os.WEXITSTATUS(status), None, out, err)


def cli_main(args: list) -> tuple[int, str, str]:
    """runtime.cli.main(args) with stdout/stderr captured (in this process; used inside a child)."""
    from runtime.cli import main

    so, se = io.StringIO(), io.StringIO()
    old = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = so, se
    code = 0
    try:
        main([str(a) for a in args])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.stdout, sys.stderr = old
    return code, so.getvalue(), se.getvalue()


def run_cli_forked(args: list, timeout: float = 120.0) -> ChildResult:
    pid, r = start(lambda: cli_main(args))
    return wait(pid, r, timeout)
