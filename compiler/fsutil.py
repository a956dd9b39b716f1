"""Atomic output folders: everything a command writes goes to a hidden temporary sibling that replaces the
target only when complete, so a failed, interrupted or killed write leaves the previous folder (or nothing).

Beside an output folder OUT, while a write is under way:
  .OUT.lock       held with flock by the one writer (a second writer fails at once, naming the first)
  .OUT.tmp-PID    the folder being written
  .OUT.old-PID    the previous folder, only on filesystems without renameat2(RENAME_EXCHANGE), for the
                  moment between the two renames
The swap is one renameat2(RENAME_EXCHANGE), so OUT never disappears; where the kernel or filesystem lacks it,
two renames, and a writer killed between them leaves `.OUT.old-PID` that the next writer restores. Folders
left by killed writers (PID no longer alive) are removed by the next writer of OUT, under the lock.

Signals: lowbit's main() installs `install_signal_handlers`, which turns SIGINT and SIGTERM into `Interrupted`
(a BaseException, so `except Exception` in a library cannot swallow it); the temporary folder is removed on
the way out, and a signal that a native library swallowed still stops the swap (`interrupt_received`).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import re
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

from compiler.errors import LowbitError

ARTIFACT_FORMAT = "lowbit-artifact"  # the "format" of compiler.artifact's manifest.json (recognized here, see _enclosing_artifact)


# ---- interrupts -------------------------------------------------------------------------------------------

class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived. exit_code: the shell's convention, 128 + the signal number."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_received: list[int] = []  # signals seen since install_signal_handlers (also those a native library swallowed)
_deferred = 0  # > 0: inside a swap or a cleanup, where a signal is only recorded (raised when the step ends)


def _on_signal(signum, frame):
    _received.append(signum)
    if _deferred == 0:
        raise Interrupted(signum)


def install_signal_handlers() -> dict:
    """SIGINT and SIGTERM raise Interrupted; forget signals seen before. Returns the previous handlers (for
    restore_signal_handlers). A signal the process was started ignoring (nohup, a background job) stays
    ignored; only the main thread can install handlers (elsewhere Python's defaults stay)."""
    global _deferred
    _received.clear()
    _deferred = 0
    previous = {}
    with contextlib.suppress(ValueError):
        for s in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(s) is not signal.SIG_IGN:
                previous[s] = signal.signal(s, _on_signal)
    return previous


def restore_signal_handlers(previous: dict) -> None:
    with contextlib.suppress(ValueError, TypeError):
        for s, h in previous.items():
            signal.signal(s, h)


def interrupt_received() -> int | None:
    """The first signal seen since install_signal_handlers, or None."""
    return _received[0] if _received else None


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Run a short critical step (the swap, a cleanup) to its end even when a signal arrives during it."""
    global _deferred
    _deferred += 1
    try:
        yield
    finally:
        _deferred -= 1


def _raise_if_interrupted() -> None:
    if _received and _deferred == 0:
        raise Interrupted(_received[0])


# ---- checks -----------------------------------------------------------------------------------------------

def _enclosing_artifact(out: Path) -> Path | None:
    """The lowbit artifact folder that contains `out`, if any (its manifest names the artifact format)."""
    for d in out.parents:
        mf = d / "manifest.json"
        try:
            if mf.is_file():
                with open(mf, "rb") as f:
                    if f'"{ARTIFACT_FORMAT}"'.encode() in f.read(4096):
                        return d
        except OSError:
            continue
    return None


def check_output_dir(out: Path, marker: str, kind: str) -> None:
    """Refuse `out` unless it is absent, an empty folder, or a folder this kind of command wrote before
    (it holds `marker`), and unless it lies inside a lowbit artifact. kind names it in the message
    ("lowbit artifact", "lowbit report folder")."""
    out = Path(os.path.abspath(out))
    inside = _enclosing_artifact(out)
    if inside is not None:
        raise LowbitError(f"output {out} is inside the lowbit artifact {inside}", "choose a -o folder outside it")
    for p in out.parents:  # the nearest existing folder above `out`: it must be a folder, and writable
        if p.exists():
            if not p.is_dir():
                raise LowbitError(f"cannot write {out}: {p} is a file, not a folder", "choose a -o path whose parent folders are folders")
            if not os.access(p, os.W_OK | os.X_OK):
                raise LowbitError(f"cannot write {out}: permission denied ({p})", "choose a -o folder you can write to")
            break
    try:
        foreign = out.exists() and not (out / marker).is_file() and (not out.is_dir() or any(out.iterdir()))
    except OSError as e:
        raise write_error(out, e) from None
    if foreign:
        raise LowbitError(f"output {out} exists and is not a {kind}", "choose another -o folder or remove it")


def write_error(out: Path, e: OSError) -> LowbitError:
    """One line for an operating-system error met while writing `out`."""
    where = e.filename or out
    for p in [out, *out.parents]:  # -o under a regular file: name that file
        if p.exists() and not p.is_dir() and p != out:
            return LowbitError(f"cannot write {out}: {p} is a file, not a folder", "choose a -o path whose parent folders are folders")
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return LowbitError(f"cannot write {out}: no space left on the device ({where})", "free some disk space or write to another -o folder")
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return LowbitError(f"cannot write {out}: {(e.strerror or 'not permitted').lower()} ({where})", "choose a -o folder you can write to")
    return LowbitError(f"cannot write {out}: {e.strerror or e} ({where})", "choose another -o folder")


# ---- the lock ---------------------------------------------------------------------------------------------

def lock_path(out: Path) -> Path:
    return out.parent / f".{out.name}.lock"


@contextlib.contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold the writer's lock of `out` (flock on .OUT.lock); LowbitError at once when another process holds it.
    The lock file is removed on release; a lock taken on a file that was removed meanwhile is taken again."""
    lock = lock_path(out)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise LowbitError(f"another lowbit{' (pid ' + holder + ')' if holder.isdigit() else ''} is writing {out}",
                              "wait for it to finish, or write to another -o folder") from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed the file between our open and our flock
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)  # while still holding it: a process that opened it meanwhile sees a new file
        os.close(fd)


# ---- debris of killed writers -----------------------------------------------------------------------------

_DEBRIS = re.compile(r"(tmp|old)-(\d+)")


def _alive(pid: int) -> bool:
    if pid == os.getpid():  # under our lock, a folder with our pid is from an earlier process that had it
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


def _remove(p: Path) -> None:
    if p.is_symlink() or not p.is_dir():
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    else:
        shutil.rmtree(p, ignore_errors=True)


def recover(out: Path) -> Path | None:
    """Under the lock of `out`: restore `out` from the .OUT.old-PID a writer killed between its two renames
    left (when `out` is missing), and remove the temporary folders of writers that are no longer alive.
    Returns the folder restored from, if any."""
    prefix = f".{out.name}."
    stale = []
    for p in out.parent.iterdir():
        if p.name.startswith(prefix):
            m = _DEBRIS.fullmatch(p.name[len(prefix):])
            if m and not _alive(int(m.group(2))):
                stale.append((m.group(1), p))
    restored = None
    if not os.path.lexists(out):
        olds = sorted((p for kind, p in stale if kind == "old"), key=lambda p: p.stat().st_mtime)
        if olds:
            os.rename(olds[-1], out)
            restored = olds[-1]
    for _, p in stale:
        if p != restored:
            _remove(p)
    return restored


# ---- the swap ---------------------------------------------------------------------------------------------

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_renameat2 = None


def _libc_renameat2():
    global _renameat2
    if _renameat2 is None:
        try:
            f = ctypes.CDLL(None, use_errno=True).renameat2
            f.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            f.restype = ctypes.c_int
            _renameat2 = f
        except (AttributeError, OSError):  # not glibc >= 2.28, or not Linux
            _renameat2 = False
    return _renameat2 or None


def exchange(a: Path, b: Path) -> bool:
    """Swap the paths a and b in one step (renameat2 RENAME_EXCHANGE); False where the system cannot."""
    f = _libc_renameat2()
    if f is None:
        return False
    if f(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):  # kernel or filesystem without it
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap_in(tmp: Path, out: Path) -> None:
    """Make the complete folder `tmp` the new `out`; the previous `out`, if any, is removed."""
    if not os.path.lexists(out):
        os.rename(tmp, out)
    elif exchange(tmp, out):
        _remove(tmp)  # tmp now names the previous folder
    else:
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.rename(out, old)
        os.rename(tmp, out)  # a kill before this line leaves `old`, which recover() puts back
        _remove(old)


def _disk_full(path: Path) -> bool:
    try:
        return shutil.disk_usage(path).free < (1 << 20)
    except OSError:
        return False


@contextlib.contextmanager
def atomic_dir(out: str | Path, marker: str, kind: str) -> Iterator[Path]:
    """Yield an empty temporary folder beside `out`; when the block ends without an exception it replaces
    `out` in one step, otherwise it is removed. One writer at a time per `out` (output_lock). Operating-system
    errors at `out` (read-only, a file in the way, disk full) become one LowbitError naming it."""
    out = Path(os.path.abspath(out))
    if not out.name:
        raise LowbitError(f"output {out} names no folder", "give -o a folder name")
    check_output_dir(out, marker, kind)
    with contextlib.ExitStack() as stack:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            stack.enter_context(output_lock(out))
            recover(out)
            check_output_dir(out, marker, kind)  # again, now that no one else writes it
            tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
            tmp.mkdir()
        except OSError as e:
            raise write_error(out, e) from None
        try:
            yield tmp
            _raise_if_interrupted()  # a signal that a native library swallowed during the block
            with _signals_deferred():
                _swap_in(tmp, out)
        except BaseException as e:
            with _signals_deferred():
                _remove(tmp)
            if isinstance(e, OSError) and (e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
                                           or str(e.filename or "").startswith(str(tmp))):
                raise write_error(out, e) from None
            if isinstance(e, Exception) and not isinstance(e, LowbitError) and _disk_full(out.parent):
                # a library reports a full disk in its own words (a compiler's, a linker's): name the cause
                raise write_error(out, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out.parent))) from e
            raise
    _raise_if_interrupted()  # a signal that arrived during the swap: the new folder is in place, then stop


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write one file whole or not at all: a hidden temporary sibling, then one rename over `path`
    (a signal during the rename is raised after it; a failed or interrupted write leaves no temporary file)."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:
        tmp.write_text(text)
        with _signals_deferred():
            os.replace(tmp, path)
    except BaseException:
        with _signals_deferred(), contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _raise_if_interrupted()
