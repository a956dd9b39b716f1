"""Compiled artifacts: a directory with manifest.json (versioned), weights.safetensors, the tokenizer, and
one sub-folder per built target. Writes are atomic (compiler.fsutil.atomic_dir): everything goes to a
temporary sibling directory that replaces the old one in one step only when complete, so a failed or killed
compile leaves the previous artifact or nothing, never half of one.

Integrity: the manifest's "files" lists every other file of the artifact with its size and sha256. Loading
checks the size of the shared files (weights, tokenizer) before reading them; a backend checks its target's
files before it loads them, and hashes the native code it would map into the process (a truncated or
overwritten model.so / model.vmfb can kill the process with SIGBUS or worse, and hashing even a 100 MB
library costs ~0.1 s), while weights are checked by size only (safetensors validates their layout itself,
and hashing gigabytes at every load would dominate it). Format version 1 (before the file list) still loads,
unchecked, with a one-line warning; other versions are refused with "recompile".
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from compiler import __version__
from compiler.errors import LowbitError
from compiler.fsutil import ARTIFACT_FORMAT, atomic_dir
from compiler.ir import Graph, IRError
from compiler.quant import twolevel

FORMAT = ARTIFACT_FORMAT
FORMAT_VERSION = 2  # 2: the manifest lists the artifact's files with sizes and hashes
READABLE_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
RECOMPILE = "recompile the artifact with `lowbit compile`"


class ArtifactWarning(UserWarning):
    """Something about an artifact the user should know, that does not stop it from loading."""


@dataclass
class Artifact:
    path: Path
    manifest: dict
    graph: Graph

    @property
    def family(self) -> str:
        return self.manifest["model"]["family"]

    @property
    def causal(self) -> bool:
        return self.family == "llama"

    @property
    def quant(self) -> dict | None:
        return self.manifest.get("quant")

    @property
    def files(self) -> dict | None:
        """name -> {"size", "sha256"} of every file but the manifest; None for a format 1 artifact."""
        return self.manifest.get("files")

    def tokenizer(self):
        from compiler.frontend.tokenizer import tokenizer_from_json

        t = self.manifest.get("tokenizer")
        return tokenizer_from_json(t, self.path) if t else None

    def target_dir(self, target: str) -> Path:
        return self.path / target

    def check_file(self, name: str, hashed: bool = False, hint: str = RECOMPILE) -> Path:
        """The path of the artifact's file `name` (relative, with /), after checking it against the manifest:
        present, of the recorded size, and (hashed) of the recorded sha256. A format 1 artifact records no
        files; its files are returned unchecked."""
        p = self.path / name
        if self.files is None:
            return p
        rec = self.files.get(name)
        if rec is None:
            raise LowbitError(f"artifact {self.path} does not record a file {name} in its manifest", hint)
        try:
            size = p.stat().st_size if p.is_file() else None
        except OSError:
            size = None
        if size is None:
            raise LowbitError(f"artifact {self.path} is missing its file {name}", hint)
        if size != rec["size"]:
            raise LowbitError(f"artifact file {p} is damaged: {size} bytes, the manifest records {rec['size']}", hint)
        if hashed and file_sha256(p) != rec["sha256"]:
            raise LowbitError(f"artifact file {p} is damaged: its sha256 differs from the one the manifest records", hint)
        return p

    def check_files(self, folder: str | None = None, hashed: tuple[str, ...] = (), hint: str = RECOMPILE) -> None:
        """check_file for every recorded file in `folder` (a target's sub-folder, recursively), or with None
        for the shared files (those outside every target's folder); the names in `hashed` by hash too."""
        targets = set(self.manifest.get("targets") or {})
        for name in sorted(self.files or {}):
            top = name.split("/", 1)[0] if "/" in name else None
            if (folder is None and top not in targets) or (folder is not None and top == folder):
                self.check_file(name, name in hashed, hint)


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _record_files(root: Path) -> dict:
    """name -> {"size", "sha256"} of every regular file under root but the manifest."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            name = p.relative_to(root).as_posix()
            if name != MANIFEST:
                out[name] = {"size": p.stat().st_size, "sha256": file_sha256(p)}
    return out


def _save_weights(consts: dict, path: Path) -> None:
    from safetensors import SafetensorError
    from safetensors.numpy import save_file

    try:
        save_file({k: np.ascontiguousarray(v) for k, v in consts.items()}, str(path))
    except SafetensorError as e:  # safetensors reports I/O errors as text: "... (os error 28)"
        m = re.search(r"os error (\d+)", str(e))
        if m:
            n = int(m.group(1))
            raise OSError(n, os.strerror(n), str(path)) from None
        raise


def write_artifact(out: Path, manifest: dict, graph: Graph, files: dict[str, Path] | None = None, build_targets=None) -> Path:
    """Write atomically. files: extra files to copy in (name -> source path, or the bytes to write). build_targets(tmp_dir) may
    write each target's sub-folder into the temporary directory before it is moved into place."""
    with atomic_dir(out, MANIFEST, "lowbit artifact") as tmp:
        tensors, packed = twolevel.pack_consts(graph)
        _save_weights(tensors, tmp / WEIGHTS)
        for name, src in (files or {}).items():
            if isinstance(src, bytes):  # made in memory (e.g. a tokenizer built from GGUF metadata)
                (tmp / name).write_bytes(src)
            else:
                shutil.copyfile(src, tmp / name)
        if build_targets is not None:
            build_targets(tmp)
        full = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "lowbit_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **manifest,
            "graph": graph.to_json(),
            "weights": WEIGHTS,
            **({"two_level_scales": packed} if packed else {}),
            "files": _record_files(tmp),
        }
        (tmp / MANIFEST).write_text(json.dumps(full, indent=1))
    return Path(out)


def _plain_name(name) -> bool:
    """A relative path inside the artifact (no absolute path, no '..')."""
    if not isinstance(name, str) or not name or "\\" in name:
        return False
    p = PurePosixPath(name)
    return not p.is_absolute() and ".." not in p.parts and "." not in p.parts


def _check_manifest(path: Path, m: dict) -> None:
    """Refuse, in one line naming the key, a manifest whose keys the loaders rely on are missing or malformed."""

    def bad(key: str):
        raise LowbitError(f"the manifest of artifact {path} is damaged: '{key}' is missing or malformed", RECOMPILE)

    model = m.get("model")
    if not isinstance(model, dict):
        bad("model")
    for k in ("name", "family"):
        if not isinstance(model.get(k), str) or not model.get(k):
            bad(f"model.{k}")
    if not isinstance(model.get("config", {}) or {}, dict):
        bad("model.config")
    if not isinstance(m.get("graph"), dict):
        bad("graph")
    targets = m.get("targets")
    if not isinstance(targets, dict) or not all(_plain_name(t) and "/" not in t for t in targets):
        bad("targets")
    for k in ("quant", "tokenizer"):
        if m.get(k) is not None and not isinstance(m[k], dict):
            bad(k)
    if not _plain_name(m.get("weights", WEIGHTS)):
        bad("weights")
    if m["format_version"] >= 2:
        files = m.get("files")
        if not isinstance(files, dict):
            bad("files")
        for name, rec in files.items():
            if not (_plain_name(name) and isinstance(rec, dict) and isinstance(rec.get("size"), int) and rec["size"] >= 0
                    and isinstance(rec.get("sha256"), str) and len(rec["sha256"]) == 64):
                bad(f"files.{name}")
        if m.get("weights", WEIGHTS) not in files:
            bad("files")


def load_artifact(path: str | Path) -> Artifact:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.exists():
        raise LowbitError(f"artifact {path} does not exist", "compile one with `lowbit compile MODEL -o OUT`")
    mf = path / MANIFEST
    if not mf.is_file():
        raise LowbitError(f"{path} is not a lowbit artifact (no {MANIFEST})", "pass the -o directory of `lowbit compile`")
    try:
        manifest = json.loads(mf.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise LowbitError(f"{mf} is not valid JSON", RECOMPILE) from None
    except OSError as e:
        raise LowbitError(f"{mf} is unreadable ({e.strerror})", "check its permissions, or recompile the artifact") from None
    if not isinstance(manifest, dict):
        raise LowbitError(f"{mf} holds a JSON {type(manifest).__name__}, not the object of a lowbit manifest", RECOMPILE)
    if manifest.get("format") != FORMAT:
        raise LowbitError(f"{path} is not a lowbit artifact (manifest format {manifest.get('format')!r})", "pass the -o directory of `lowbit compile`")
    v = manifest.get("format_version")
    if isinstance(v, bool) or v not in READABLE_VERSIONS:
        raise LowbitError(
            f"artifact {path} has format version {v} (written by lowbit {manifest.get('lowbit_version', '?')}); this lowbit {__version__} reads versions {', '.join(map(str, READABLE_VERSIONS))}",
            "recompile it with this lowbit: `lowbit compile ...`",
        )
    _check_manifest(path, manifest)
    art = Artifact(path, manifest, None)  # type: ignore[arg-type]
    if art.files is None:
        warnings.warn(f"artifact {path} (format version {v}) records no file sizes or hashes, so its files are loaded unchecked; "
                      "recompile it to have them checked", ArtifactWarning, stacklevel=2)
    art.check_files()  # the shared files (weights, tokenizer): sizes, before anything reads them
    wf = path / manifest.get("weights", WEIGHTS)
    try:
        consts = load_file(str(wf))
    except (SafetensorError, OSError) as e:
        raise LowbitError(f"the weights {wf} of the artifact are unreadable ({e})", RECOMPILE) from None
    try:
        consts = twolevel.unpack_consts(consts, manifest.get("two_level_scales") or {})
        graph = Graph.from_json(manifest["graph"], consts)
    except (IRError, KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise LowbitError(f"artifact {path} is inconsistent ({type(e).__name__}: {e})", RECOMPILE) from None
    art.graph = graph
    return art
