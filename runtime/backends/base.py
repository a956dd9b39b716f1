"""The one interface every backend implements: run a graph's feeds to its outputs; and what the backends that
load a compiled target folder (tvm-*, mlir-*) share: finding and checking that folder, and its parameters.

Before native code is loaded into the process its size and sha256 are checked against the artifact's
manifest (compiler.artifact: a damaged library can crash the process); re-laid-out weights by size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from compiler.errors import LowbitError


class Backend:
    name = "?"

    def __init__(self, model):
        """model: a runtime.CompiledModel (graph, artifact directory, manifest)."""
        self.model = model

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    # KV-cached generation: the cache is whatever new_cache returns, passed back unchanged from step to step,
    # so a backend can keep it in its own memory (device tensors written in place) between steps.
    def new_cache(self, arrays: dict[str, np.ndarray]) -> dict:
        """The backend's form of a preallocated KV cache (past_key.i / past_value.i -> arrays)."""
        return arrays

    def step(self, feeds: dict[str, np.ndarray], cache: dict, last: bool = False) -> tuple[np.ndarray, dict]:
        """(logits, the cache after it) for feeds (input_ids, positions) on top of `cache`; last: only the last
        row's logits are wanted ([1, V]; a backend that can skip the other rows' LM head does)."""
        if self.model.kv_inplace:
            check_capacity(feeds, cache)
        out = self.run({**feeds, **cache})
        logits = out["logits"][-1:] if last else out["logits"]
        return logits, {k.replace("present_", "past_"): v for k, v in out.items() if k.startswith("present_")}


def check_capacity(feeds: dict, cache: dict):
    """Refuse positions past a preallocated cache's rows before a native kernel writes out of bounds."""
    rows = {int(v.shape[0]) for k, v in cache.items() if k.startswith(("past_key.", "past_value."))}  # (not the fixed window rings)
    pos = feeds["positions"]
    if rows and len(pos) and int(np.max(pos)) >= min(rows):
        raise LowbitError(f"position {int(np.max(pos))} is past the KV cache's {min(rows)} rows (the context this generation allocated)", "generate fewer --tokens, or use a shorter prompt")


class CompiledTargetBackend(Backend):
    """A backend that runs <artifact>/<name>/: `info_file` (JSON: target, inputs, params, outputs) and `library`."""

    info_file = "?"
    library = "?"

    def check_feeds(self, feeds: dict):
        """Native code writes a preallocated cache without bounds checks: refuse positions past its rows first."""
        if self.model.kv_inplace:
            check_capacity(feeds, {k: v for k, v in feeds.items() if k.startswith(("past_key.", "past_value."))})

    rebuilt = False  # the folder is a build for a run-time --kv (rebuilt_target), not the artifact's own

    def target_folder(self) -> tuple[Path, dict, Path, str]:
        """(folder, info, library path, recompile hint), or a LowbitError naming what is missing or wrong."""
        art = self.model.artifact
        hint = f"recompile with --target {self.name} (e.g. `lowbit compile MODEL -o OUT --target ref,{self.name}`)"
        if art is None:
            raise LowbitError(f"backend {self.name} runs compiled artifacts only, and this model has none", hint)
        if getattr(self.model, "kv_override", None):
            self.rebuilt = True
            folder = rebuilt_target(self.model, self.name, self.info_file)
            return folder, json.loads((folder / self.info_file).read_text()), folder / self.library, hint
        folder = art.target_dir(self.name)
        info_file = folder / self.info_file
        if self.name not in art.manifest.get("targets", {}) or not info_file.is_file():
            raise LowbitError(f"artifact {art.path} was not compiled for {self.name}", hint)
        try:
            info = json.loads(info_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise LowbitError(f"{info_file} is not valid JSON", hint) from None
        g = self.model.graph
        if info.get("target") != self.name or info.get("inputs") != list(g.inputs) or info.get("outputs") != list(g.outputs) or not isinstance(info.get("params"), list):
            raise LowbitError(f"the {self.name} folder of artifact {art.path} does not match its graph", hint)
        lib = folder / self.library
        if not lib.is_file():
            raise LowbitError(f"artifact {art.path} has no {self.name}/{self.library}", hint)
        art.check_file(f"{self.name}/{self.library}", hashed=True, hint=hint)
        return folder, info, lib, hint

    def param_arrays(self, folder: Path, info: dict, hint: str) -> list[np.ndarray]:
        """The library's parameters in call order: graph weights, and the arrays a kernel asked to have re-laid out
        at compile time (<folder>/params.safetensors)."""
        relayout = {}
        if any(p.get("source") == "relayout" for p in info["params"]):
            from safetensors import SafetensorError
            from safetensors.numpy import load_file

            try:
                relayout = load_file(str(folder / "params.safetensors"))
            except (SafetensorError, OSError) as e:
                raise LowbitError(f"the re-laid-out weights {folder / 'params.safetensors'} of the artifact are unreadable ({e})", hint) from None
            if not self.rebuilt:
                self.model.artifact.check_file(f"{self.name}/params.safetensors", hint=hint)
        arrays = {"weights": self.model.graph.consts, "relayout": relayout}
        missing = [p["key"] for p in info["params"] if p["key"] not in arrays.get(p.get("source"), {})]
        if missing:
            raise LowbitError(f"the {self.name} folder of artifact {self.model.artifact.path} does not match its weights (missing {missing[:3]})", hint)
        out = [np.ascontiguousarray(arrays[p["source"]][p["key"]]) for p in info["params"]]
        # the library does not check its weights per call (compiler/backends/tvm/vm_checks.py): checked here, once
        bad = [p["key"] for p, a in zip(info["params"], out) if "shape" in p and (list(a.shape) != p["shape"] or str(a.dtype) != p["dtype"])]
        if bad:
            raise LowbitError(f"the {self.name} folder of artifact {self.model.artifact.path} does not match its weights ({bad[0]}: other shape or dtype)", hint)
        return out


def rebuilt_target(model, name: str, info_file: str) -> Path:
    """The target `name` built for the model's graph with a KV cache format given at run time (runtime.load(..., kv=)):
    the artifact's weights and everything but the cache as compiled, built once per artifact, target, format and lowbit
    version under LOWBIT_CACHE_DIR/kv/ (written whole or not at all, compiler.fsutil.atomic_dir)."""
    import hashlib

    from compiler import __version__
    from compiler.backends import BuildOptions, targets
    from compiler.fsutil import atomic_dir
    from compiler.knobs import CACHE_DIR

    art, fmt = model.artifact, model.graph.meta.get("kv_format", "f32")
    t = targets().get(name)
    if t is None or t.family not in ("tvm", "mlir") or name not in ("tvm-cpu", "mlir-cpu") and fmt not in ("f32", "fp16"):
        raise LowbitError(f"--kv {fmt}: backend {name} reads a float KV cache (f32 or fp16) only, so far", "use --backend tvm-cpu, mlir-cpu or ref, or --kv fp16")
    manifest = json.dumps(art.manifest, sort_keys=True, default=str)
    key = hashlib.sha256(f"{manifest}\n{name}\n{fmt}\n{__version__}".encode()).hexdigest()[:20]
    out = CACHE_DIR.get() / "kv" / f"{art.path.name}-{name}-{fmt}-{key}"
    if not (out / name / info_file).is_file():
        import sys

        print(f"building {name} for --kv {fmt} (once; kept in {out})", file=sys.stderr)
        with atomic_dir(out, ".lowbit-kv-build", "a lowbit --kv build") as tmp:
            t.build(model.graph, name, tmp / name, BuildOptions())
    return out / name
