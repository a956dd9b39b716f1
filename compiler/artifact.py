"""Compiled artifacts: a directory with manifest.json (versioned), weights.safetensors, the tokenizer, and
one sub-folder per built target. Writes are atomic: everything goes to a temporary sibling directory that
is renamed into place only when complete, so a failed compile leaves nothing half-written."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compiler import __version__
from compiler.errors import LowbitError
from compiler.fsutil import atomic_dir
from compiler.ir import Graph, IRError

FORMAT = "lowbit-artifact"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"


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

    def tokenizer(self):
        from compiler.frontend.tokenizer import tokenizer_from_json

        t = self.manifest.get("tokenizer")
        return tokenizer_from_json(t, self.path) if t else None

    def target_dir(self, target: str) -> Path:
        return self.path / target


def write_artifact(out: Path, manifest: dict, graph: Graph, files: dict[str, Path] | None = None, build_targets=None) -> Path:
    """Write atomically. files: extra files to copy in (name -> source path, or the bytes to write). build_targets(tmp_dir) may
    write each target's sub-folder into the temporary directory before it is moved into place."""
    from safetensors.numpy import save_file

    with atomic_dir(out, MANIFEST, "lowbit artifact") as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in graph.consts.items()}, str(tmp / WEIGHTS))
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
        }
        (tmp / MANIFEST).write_text(json.dumps(full, indent=1))
    return Path(out)


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
        manifest = json.loads(mf.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise LowbitError(f"{mf} is not valid JSON", "recompile the artifact with `lowbit compile`") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise LowbitError(f"{path} is not a lowbit artifact (manifest format {manifest.get('format') if isinstance(manifest, dict) else None!r})", "pass the -o directory of `lowbit compile`")
    v = manifest.get("format_version")
    if v != FORMAT_VERSION:
        raise LowbitError(
            f"artifact {path} has format version {v} (written by lowbit {manifest.get('lowbit_version', '?')}); this lowbit {__version__} reads version {FORMAT_VERSION}",
            "recompile it with this lowbit: `lowbit compile ...`",
        )
    wf = path / manifest.get("weights", WEIGHTS)
    try:
        consts = load_file(str(wf))
    except (SafetensorError, OSError) as e:
        raise LowbitError(f"weights of artifact {path} are unreadable ({e})", "recompile the artifact with `lowbit compile`") from None
    try:
        graph = Graph.from_json(manifest["graph"], consts)
    except (IRError, KeyError, TypeError) as e:
        raise LowbitError(f"artifact {path} is inconsistent ({e})", "recompile the artifact with `lowbit compile`") from None
    return Artifact(path, manifest, graph)
