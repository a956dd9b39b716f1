"""Writes that cannot be half-done (compiler.fsutil.atomic_dir): a compile killed at any moment leaves the
previous artifact intact or the new one complete, and the next writer removes what the killed one left;
SIGINT / SIGTERM end a compile with 130 / 143, one line "interrupted" and no temporary folder; a second
writer of the same -o fails on one line without touching the first one's artifact; a writer killed between
the two renames of the fallback swap is recovered by the next; operating-system errors at -o are one line
naming the path. Kills use children forked from this process (the compile runs in-process there)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compiler import fsutil
from compiler.artifact import load_artifact
from tests.helpers import run_cli
from tests.reliability import forked
from tests.reliability.fixtures import one_error_line

ROOT = Path(__file__).resolve().parents[2]
MODEL = "llama-tiny"
SPECS = ("w8g128", "w4g64", "w2g32")


def tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def debris(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def verify_complete(out: Path) -> str:
    """`out` loads, every file it records matches by size and hash, and it runs; returns its quant name."""
    import runtime

    art = load_artifact(out)
    for name in art.files:
        art.check_file(name, hashed=True)
    assert len(runtime.load(out).generate([1, 10, 20], 2, stop_ids=()).tokens) == 2
    return art.manifest["quant"]["name"]


@pytest.fixture(scope="module")
def previous(tmp_path_factory) -> Path:
    """A llama-tiny w4g128 artifact: what a -o holds before the write under test."""
    from compiler.compile import compile_model

    out = tmp_path_factory.mktemp("prev") / "art"
    compile_model(MODEL, out, quant="w4g128", progress=False)
    return out


@pytest.fixture
def out(previous, tmp_path) -> Path:
    o = tmp_path / "art"
    shutil.copytree(previous, o)
    return o


def compile_child(out: Path, spec: str):
    def fn():
        from compiler.compile import compile_model

        compile_model(MODEL, out, quant=spec, progress=False)
        return 0, "", ""

    return forked.start(fn)


# ---- (a) SIGKILL at random points -------------------------------------------------------------------------

def test_sigkill_at_random_points_leaves_old_or_new(out, capsys):
    rng = random.Random(15)
    t0 = time.perf_counter()
    pid, r = compile_child(out, SPECS[0])
    assert forked.wait(pid, r).code == 0
    full = time.perf_counter() - t0  # a whole compile in a child, kill delays are drawn around it
    valid = {"w4g128", SPECS[0]}
    killed = 0
    children = set()
    for i in range(24):
        spec = SPECS[i % len(SPECS)]
        valid.add(spec)
        delay = rng.uniform(0, 1.2 * full) if i % 2 else rng.uniform(0.5 * full, 1.1 * full)  # half near the write
        pid, r = compile_child(out, spec)
        children.add(pid)
        time.sleep(delay)
        with_signal = True
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            with_signal = False
        res = forked.wait(pid, r)
        killed += res.signal == signal.SIGKILL and with_signal
        name = verify_complete(out)
        assert name in valid
        if res.code == 0:
            assert name == spec
        # what killed writers may leave (until a next one reaches its write): temporary folders, the lock file
        assert set(debris(out)) <= {f".{out.name}.tmp-{p}" for p in children} | {f".{out.name}.lock"}, debris(out)
    assert killed >= 1
    code, _, err = run_cli(["compile", MODEL, "-o", out, "--quant", "w4g128"], capsys)
    assert code == 0, err
    assert debris(out) == []
    assert verify_complete(out) == "w4g128"


# ---- (b) SIGINT and SIGTERM in a real process ---------------------------------------------------------------

# `lowbit ARGS`; a test run started in the background inherits SIGINT ignored, which lowbit keeps: undo that
LOWBIT = "import signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); from runtime.cli import main; main(sys.argv[1:])"

@pytest.mark.parametrize("sig,code,delay", [(signal.SIGINT, 130, 0.5), (signal.SIGTERM, 143, 0.2)])
def test_signal_during_the_tvm_build_exits_cleanly(out, sig, code, delay):
    """The signal lands inside the TVM build (lowering, whose Python callbacks TVM calls from C++, or the
    LLVM build): exit 130 / 143, one line, the previous artifact as it was, nothing left beside it."""
    pytest.importorskip("tvm")
    before = tree_digest(out)
    for attempt in range(4):  # a fast machine may finish the tiny build within `delay`: then try again sooner
        p = subprocess.Popen([sys.executable, "-c", LOWBIT, "compile", "bert-tiny", "-o", str(out), "--target", "tvm-cpu"],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        t0 = time.monotonic()
        while not list(out.parent.glob(f".{out.name}.tmp-*/tvm-cpu")):  # the TVM build has begun
            assert p.poll() is None and time.monotonic() - t0 < 120, p.communicate()
            time.sleep(0.01)
        time.sleep(delay)
        if p.poll() is None:
            break
        assert p.returncode == 0, p.communicate()
        before = tree_digest(out)  # that compile wrote the artifact: it is now the one to keep
        delay /= 3
    else:
        pytest.fail("the TVM build always ended before the signal could be sent")
    p.send_signal(sig)  # the process is alive: a signal lost in the build shows as exit 0
    _, se = p.communicate(timeout=120)
    assert p.returncode == code, se
    # TVM's C++ logging may add its own warning when the signal unwinds a Relax BlockBuilder mid-block
    # ("[hh:mm:ss] /project/src/relax/ir/block_builder.cc:67: Warning: BlockBuilder destroyed with remaining
    # blocks!"), written by C++ to fd 2; ours is the one line besides it
    ours = [line for line in se.strip().split("\n") if not re.match(r"\[\d\d:\d\d:\d\d\] /\S+\.cc:\d+: Warning: ", line)]
    assert ours == ["interrupted"], se
    assert debris(out) == []
    assert tree_digest(out) == before


def test_a_signal_a_library_swallowed_still_stops_the_swap(out, monkeypatch):
    """TVM turns a KeyboardInterrupt raised inside its callbacks into its own error, which code may catch:
    the recorded signal still keeps the half-finished write from replacing the artifact."""
    before = tree_digest(out)
    monkeypatch.setattr(fsutil, "_received", [signal.SIGINT])
    with pytest.raises(fsutil.Interrupted), fsutil.atomic_dir(out, "manifest.json", "lowbit artifact") as tmp:
        (tmp / "manifest.json").write_text("{}")
    assert tree_digest(out) == before and debris(out) == []


# ---- (c) two writers ---------------------------------------------------------------------------------------

def test_a_second_writer_fails_on_one_line(out, capsys):
    before = tree_digest(out)
    with fsutil.output_lock(out):
        code, _, err = run_cli(["compile", MODEL, "-o", out, "--quant", "w8g128"], capsys)
        line = one_error_line(code, err)
        assert f"another lowbit (pid {os.getpid()}) is writing {out}" in line
        assert tree_digest(out) == before and debris(out) == [f".{out.name}.lock"]
    assert debris(out) == []


def test_concurrent_compiles_to_one_output(out):
    for rnd in range(3):
        children = [forked.start(lambda s=s: forked.cli_main(["compile", MODEL, "-o", out, "--quant", s])) for s in SPECS[:2]]
        results = [forked.wait(pid, r) for pid, r in children]
        for res in results:
            assert res.signal is None
            assert res.code == 0 or (res.code == 2 and "another lowbit" in one_error_line(res.code, res.err)), res.err
        assert any(res.code == 0 for res in results)
        assert verify_complete(out) in SPECS[:2]
        assert debris(out) == []


# ---- (d) a kill between the two renames of the fallback swap ---------------------------------------------------

def kill_between_renames(out: Path, spec: str) -> int:
    """A compile that takes the two-rename path and dies right after the first (out -> .out.old-PID)."""

    def fn():
        from compiler.compile import compile_model

        real = os.rename

        def rename(src, dst):
            real(src, dst)
            if ".old-" in os.fspath(dst):
                os.kill(os.getpid(), signal.SIGKILL)

        fsutil.exchange = lambda a, b: False
        os.rename = rename
        compile_model(MODEL, out, quant=spec, progress=False)
        return 0, "", ""

    pid, r = forked.start(fn)
    res = forked.wait(pid, r)
    assert res.signal == signal.SIGKILL, res
    assert not out.exists()
    assert set(debris(out)) == {f".{out.name}.old-{pid}", f".{out.name}.tmp-{pid}", f".{out.name}.lock"}
    return pid


def test_the_next_writer_restores_the_previous_artifact(out):
    before = tree_digest(out)
    pid = kill_between_renames(out, "w8g128")
    with fsutil.output_lock(out):
        assert fsutil.recover(out) == out.parent / f".{out.name}.old-{pid}"
    assert tree_digest(out) == before and debris(out) == []
    assert verify_complete(out) == "w4g128"


def test_a_compile_after_a_kill_between_renames_completes(out, capsys):
    kill_between_renames(out, "w8g128")
    code, _, err = run_cli(["compile", MODEL, "-o", out, "--quant", "w2g32"], capsys)
    assert code == 0, err
    assert verify_complete(out) == "w2g32" and debris(out) == []


def test_the_fallback_swap_replaces_the_artifact(out, capsys, monkeypatch):
    monkeypatch.setattr(fsutil, "exchange", lambda a, b: False)
    code, _, err = run_cli(["compile", MODEL, "-o", out, "--quant", "w8g128"], capsys)
    assert code == 0, err
    assert verify_complete(out) == "w8g128" and debris(out) == []


def test_exchange_swaps_two_folders_in_one_step(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("in a")
    (b / "y").write_text("in b")
    if not fsutil.exchange(a, b):
        pytest.skip("this kernel or filesystem has no renameat2(RENAME_EXCHANGE)")
    assert [p.name for p in a.iterdir()] == ["y"] and [p.name for p in b.iterdir()] == ["x"]


# ---- (e) operating-system errors at -o ------------------------------------------------------------------------

def test_output_under_a_regular_file(tmp_path, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    code, _, err = run_cli(["compile", MODEL, "-o", f / "art"], capsys)
    assert f"{f} is a file, not a folder" in one_error_line(code, err)
    assert f.read_text() == "mine"


def test_output_is_a_regular_file(tmp_path, capsys):
    f = tmp_path / "art"
    f.write_text("mine")
    code, _, err = run_cli(["compile", MODEL, "-o", f], capsys)
    assert "exists and is not a lowbit artifact" in one_error_line(code, err)
    assert f.read_text() == "mine"


@pytest.mark.parametrize("sub", ["inner", "weights.safetensors/x", "deep/er/folder"])
def test_output_inside_an_artifact(out, capsys, sub):
    before = tree_digest(out)
    code, _, err = run_cli(["compile", MODEL, "-o", out / sub], capsys)
    assert f"is inside the lowbit artifact {out}" in one_error_line(code, err)
    assert tree_digest(out) == before
    verify_complete(out)


def test_report_inside_an_artifact(out, capsys):
    code, _, err = run_cli(["report", "bert-tiny", "-o", out / "report", "--no-sweep"], capsys)
    assert "inside the lowbit artifact" in one_error_line(code, err)


def test_read_only_parent(tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.access(ro, os.W_OK):  # root writes anywhere: the folder reads as read-only to lowbit instead
        real = os.access
        monkeypatch.setattr(fsutil.os, "access", lambda p, mode: False if Path(p) == ro else real(p, mode))
    try:
        code, _, err = run_cli(["compile", MODEL, "-o", ro / "art"], capsys)
        assert f"cannot write {ro / 'art'}: permission denied ({ro})" in one_error_line(code, err)
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_permission_error_while_writing(out, capsys, monkeypatch):
    """The early check passes, and the filesystem refuses later (an ACL, a read-only remount)."""
    before = tree_digest(out)
    real = os.open

    def refuse(path, *a, **k):
        if os.fspath(path).startswith(str(out.parent / f".{out.name}.")):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real(path, *a, **k)

    monkeypatch.setattr(os, "open", refuse)
    code, _, err = run_cli(["compile", MODEL, "-o", out, "--quant", "w8g128"], capsys)
    monkeypatch.undo()
    assert f"cannot write {out}: permission denied" in one_error_line(code, err)
    assert tree_digest(out) == before and debris(out) == []


def test_disk_full_while_writing_weights(out, capsys, monkeypatch):
    import safetensors.numpy
    from safetensors import SafetensorError

    def full(*a, **k):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    before = tree_digest(out)
    monkeypatch.setattr(safetensors.numpy, "save_file", full)
    code, _, err = run_cli(["compile", MODEL, "-o", out, "--quant", "w8g128"], capsys)
    assert f"cannot write {out}: no space left on the device" in one_error_line(code, err)
    assert tree_digest(out) == before and debris(out) == []


def test_disk_full_reported_by_a_library_in_its_own_words(out, capsys, monkeypatch):
    from compiler import artifact

    def linker(*a, **k):
        raise RuntimeError("ld: final link failed")

    before = tree_digest(out)
    monkeypatch.setattr(artifact, "_record_files", linker)
    monkeypatch.setattr(fsutil, "_disk_full", lambda p: True)
    code, _, err = run_cli(["compile", MODEL, "-o", out, "--quant", "w8g128"], capsys)
    assert "no space left on the device" in one_error_line(code, err)
    assert tree_digest(out) == before and debris(out) == []


def test_stale_folders_of_dead_writers_are_removed(out, capsys):
    dead = subprocess.Popen(["true"])
    dead.wait()
    for kind in ("tmp", "old"):
        d = out.parent / f".{out.name}.{kind}-{dead.pid}"
        d.mkdir()
        (d / "manifest.json").write_text(json.dumps({"half": True}))
    alive = out.parent / f".{out.name}.tmp-1"  # pid 1 is alive: another writer's (an older lowbit without the lock)
    alive.mkdir()
    code, _, err = run_cli(["compile", MODEL, "-o", out, "--quant", "w8g128"], capsys)
    assert code == 0, err
    assert debris(out) == [alive.name]
    assert verify_complete(out) == "w8g128"
