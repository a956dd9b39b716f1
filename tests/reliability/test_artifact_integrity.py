"""A damaged artifact is one line naming the file and saying to recompile, never a crash: the manifest records
every file's size and sha256 (compiler.artifact), native code (tvm-cpu model.so, mlir-cpu model.vmfb) is
hashed before it is loaded, weights are checked by size, and a manifest that is not JSON, not an object,
lacks keys or has another format or version is refused on one line. One bert-tiny artifact with ref,
tvm-cpu and mlir-cpu is compiled per module; every case damages a copy. The cases that would load native
code run in a forked child, so a check that let a damaged library through shows up as the child's signal
rather than a dead test run."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from tests.helpers import run_cli
from tests.reliability.fixtures import one_error_line
from tests.reliability.forked import run_cli_forked

pytest.importorskip("tvm")
pytest.importorskip("iree.runtime")

IDS = ["--ids", "1,2,3"]


@pytest.fixture(scope="module")
def art(tmp_path_factory) -> Path:
    from compiler.compile import compile_model

    out = tmp_path_factory.mktemp("integrity") / "bert"
    compile_model("bert-tiny", out, quant="w4g128", targets="ref,tvm-cpu,mlir-cpu", progress=False)
    return out


def tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


# ---- the files --------------------------------------------------------------------------------------------

def truncate(p: Path):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def scramble(p: Path):
    """Same size, different bytes (a flipped block in the middle)."""
    b = bytearray(p.read_bytes())
    mid = len(b) // 2
    b[mid : mid + 64] = bytes(x ^ 0xA5 for x in b[mid : mid + 64])
    p.write_bytes(bytes(b))


def garbage(p: Path):
    p.write_bytes(b"\x7fELF" + b"\xff" * (p.stat().st_size - 4))


def empty(p: Path):
    p.write_bytes(b"")


# backend the case runs, file, damage, what the line says
FILE_CASES = {
    "model.so truncated": ("tvm-cpu", "tvm-cpu/model.so", truncate, "bytes, the manifest records"),
    "model.so scrambled, same size": ("tvm-cpu", "tvm-cpu/model.so", scramble, "sha256 differs"),
    "model.so garbage ELF": ("tvm-cpu", "tvm-cpu/model.so", garbage, "sha256 differs"),
    "model.so empty": ("tvm-cpu", "tvm-cpu/model.so", empty, "0 bytes"),
    "model.so missing": ("tvm-cpu", "tvm-cpu/model.so", Path.unlink, "has no tvm-cpu/model.so"),
    "tvm params truncated": ("tvm-cpu", "tvm-cpu/params.safetensors", truncate, "unreadable"),
    "model.vmfb truncated": ("mlir-cpu", "mlir-cpu/model.vmfb", truncate, "bytes, the manifest records"),
    "model.vmfb scrambled, same size": ("mlir-cpu", "mlir-cpu/model.vmfb", scramble, "sha256 differs"),
    "model.vmfb garbage": ("mlir-cpu", "mlir-cpu/model.vmfb", garbage, "sha256 differs"),
    "weights truncated": ("ref", "weights.safetensors", truncate, "bytes, the manifest records"),
    "weights missing": ("ref", "weights.safetensors", Path.unlink, "is missing its file weights.safetensors"),
    "weights garbage, same size": ("ref", "weights.safetensors", garbage, "unreadable"),
    "weights truncated, on tvm-cpu": ("tvm-cpu", "weights.safetensors", truncate, "bytes, the manifest records"),
}


@pytest.mark.parametrize("case", list(FILE_CASES))
def test_damaged_file_is_one_line(art, tmp_path, case):
    backend, name, damage, expect = FILE_CASES[case]
    bad = tmp_path / "a"
    shutil.copytree(art, bad)
    damage(bad / name)
    before = tree_digest(bad)
    r = run_cli_forked(["run", bad, "--backend", backend, *IDS])
    assert r.signal is None, f"the child died by signal {r.signal}: {r.err}"
    line = one_error_line(r.code, r.err)
    assert expect in line and name.split("/")[-1] in line
    assert "recompile" in line
    assert tree_digest(bad) == before  # a run never touches the artifact


# ---- the manifest -----------------------------------------------------------------------------------------

def edit(fn):
    def apply(mf: Path):
        m = json.loads(mf.read_text())
        fn(m)
        mf.write_text(json.dumps(m))

    return apply


def raw(data: bytes):
    return lambda mf: mf.write_bytes(data)


MANIFEST_CASES = {
    "not JSON": (raw(b'{"format": "lowbit-artifact", "format_ver'), "is not valid JSON"),
    "empty": (raw(b""), "is not valid JSON"),
    "binary": (raw(bytes(range(256))), "is not valid JSON"),
    "a JSON list": (raw(b"[1, 2, 3]"), "holds a JSON list, not the object"),
    "a JSON string": (raw(b'"lowbit-artifact"'), "holds a JSON str"),
    "no format": (edit(lambda m: m.pop("format")), "not a lowbit artifact (manifest format None)"),
    "another format": (edit(lambda m: m.update(format="onnx")), "manifest format 'onnx'"),
    "format version 99": (edit(lambda m: m.update(format_version=99)), "format version 99"),
    "format version a string": (edit(lambda m: m.update(format_version="2")), "format version 2"),
    "no model": (edit(lambda m: m.pop("model")), "'model' is missing or malformed"),
    "model without family": (edit(lambda m: m["model"].pop("family")), "'model.family' is missing"),
    "model name a number": (edit(lambda m: m["model"].update(name=7)), "'model.name' is missing"),
    "no graph": (edit(lambda m: m.pop("graph")), "'graph' is missing"),
    "graph emptied": (edit(lambda m: m.update(graph={})), "is inconsistent"),
    "targets a list": (edit(lambda m: m.update(targets=["ref"])), "'targets' is missing"),
    "no file list": (edit(lambda m: m.pop("files")), "'files' is missing"),
    "file size not a number": (edit(lambda m: m["files"]["weights.safetensors"].update(size="big")), "'files.weights.safetensors'"),
    "file outside the artifact": (edit(lambda m: m["files"].update({"../x": {"size": 1, "sha256": "0" * 64}})), "'files.../x'"),
    "weights an absolute path": (edit(lambda m: m.update(weights="/etc/passwd")), "'weights' is missing or malformed"),
    "tokenizer a list": (edit(lambda m: m.update(tokenizer=[1])), "'tokenizer' is missing"),
    "weights size recorded wrong": (edit(lambda m: m["files"]["weights.safetensors"].update(size=5)), "the manifest records 5"),
}


@pytest.mark.parametrize("case", list(MANIFEST_CASES))
def test_damaged_manifest_is_one_line(art, tmp_path, capsys, case):
    damage, expect = MANIFEST_CASES[case]
    bad = tmp_path / "a"
    shutil.copytree(art, bad)
    damage(bad / "manifest.json")
    before = tree_digest(bad)
    code, _, err = run_cli(["run", bad, *IDS], capsys)
    line = one_error_line(code, err)
    assert expect in line, line
    assert tree_digest(bad) == before


def test_the_manifest_records_every_file(art):
    mf = json.loads((art / "manifest.json").read_text())
    on_disk = {k: v for k, v in tree_digest(art).items() if k != "manifest.json"}
    assert mf["format_version"] == 2
    assert {k: v["sha256"] for k, v in mf["files"].items()} == on_disk
    assert all(mf["files"][k]["size"] == (art / k).stat().st_size for k in on_disk)
    assert {"weights.safetensors", "tvm-cpu/model.so", "mlir-cpu/model.vmfb"} <= set(mf["files"])


@pytest.mark.parametrize("backend", ["ref", "tvm-cpu", "mlir-cpu"])
def test_the_intact_artifact_runs_on_every_backend(art, capsys, backend):
    code, out, err = run_cli(["run", art, "--backend", backend, *IDS], capsys)
    assert code == 0, err
    assert "1 sentence embeddings of size 128" in out


def test_format_1_artifact_loads_with_one_warning(art, tmp_path, capsys):
    """An artifact written before the file list loads unchecked, saying so once."""
    old = tmp_path / "v1"
    shutil.copytree(art, old)
    m = json.loads((old / "manifest.json").read_text())
    m["format_version"] = 1
    del m["files"]
    (old / "manifest.json").write_text(json.dumps(m))
    code, out, err = run_cli(["run", old, *IDS], capsys)
    assert code == 0, err
    lines = err.rstrip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "records no file sizes or hashes" in lines[0] and "recompile" in lines[0]
    assert "1 sentence embeddings" in out
