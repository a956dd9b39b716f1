"""Atomic output folders: everything a command writes goes to a hidden temporary sibling that replaces the
target only when complete, so a failed or interrupted write leaves the previous folder (or nothing)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from compiler.errors import LowbitError


def check_output_dir(out: Path, marker: str, kind: str) -> None:
    """Refuse `out` unless it is absent, an empty folder, or a folder this kind of command wrote before
    (it holds `marker`). kind names it in the message ("lowbit artifact", "lowbit report folder")."""
    if out.exists() and not (out / marker).is_file() and (not out.is_dir() or any(out.iterdir())):
        raise LowbitError(f"output {out} exists and is not a {kind}", "choose another -o folder or remove it")


@contextlib.contextmanager
def atomic_dir(out: str | Path, marker: str, kind: str) -> Iterator[Path]:
    """Yield an empty temporary folder beside `out`; when the block ends without an exception it replaces
    `out` (the old folder is moved aside first and removed after the rename), otherwise it is removed."""
    out = Path(out)
    check_output_dir(out, marker, kind)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
