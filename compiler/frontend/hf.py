"""Hugging Face model directories: config.json + *.safetensors (single file or sharded with an index),
and tokenizer.json when present. No torch or transformers: safetensors + numpy."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from compiler.errors import LowbitError
from compiler.frontend import bert, llama
from compiler.frontend.prequant import import_prequant
from compiler.frontend.tokenizer import find_tokenizer
from compiler.ir import IRError

FAMILIES = {**{a: "llama" for a in llama.ARCHITECTURES}, **{a: "bert" for a in bert.ARCHITECTURES}}
BUILDERS = {"llama": llama.build_llama, "bert": bert.build_bert}


def read_config(model_dir: Path) -> dict:
    f = model_dir / "config.json"
    if not f.is_file():
        raise LowbitError(f"{model_dir} has no config.json", "point MODEL at a Hugging Face model directory or a preset (see `lowbit models`)")
    try:
        cfg = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise LowbitError(f"{f} is not valid JSON ({e.msg} at line {e.lineno})", "restore the file from the original model") from None
    return cfg


def family_of(cfg: dict, where: Path) -> str:
    archs = cfg.get("architectures") or []
    for a in archs:
        if a in FAMILIES:
            return FAMILIES[a]
    mt = cfg.get("model_type")
    if mt in ("llama", "mistral", "qwen2", "bitnet"):
        return "llama"
    if mt == "bert":
        return "bert"
    raise LowbitError(
        f"unsupported architecture {archs or mt!r} in {where / 'config.json'}",
        f"lowbit imports {', '.join(sorted(FAMILIES))}",
    )


def weight_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            wm = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError):
            raise LowbitError(f"{index} is not a valid safetensors index", "restore it from the original model") from None
        files = [model_dir / f for f in sorted(set(wm.values()))]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise LowbitError(f"shards listed in {index.name} are missing: {', '.join(missing)}", "download every shard of the model")
        return files
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise LowbitError(f"{model_dir} has no .safetensors weights", "convert the checkpoint to safetensors (lowbit never loads pickle files)")
    return files


def _header(path: Path) -> tuple[dict, int]:
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ValueError("file shorter than the 8-byte header length")
        n = struct.unpack("<Q", raw)[0]
        if n > 100_000_000:
            raise ValueError("header length is implausible")
        hdr = f.read(n)
        if len(hdr) < n:
            raise ValueError("file ends inside the header")
    return json.loads(hdr), 8 + n


def _read_bf16(path: Path, info: dict, data_start: int) -> np.ndarray:
    """numpy has no bfloat16: read the raw 16-bit words and widen them to float32 exactly."""
    a, b = info["data_offsets"]
    raw = np.fromfile(path, dtype=np.uint16, count=(b - a) // 2, offset=data_start + a)
    if raw.size * 2 != b - a:
        raise ValueError("file ends inside a tensor")
    return (raw.astype(np.uint32) << 16).view(np.float32).reshape(info["shape"])


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """All tensors of one file as numpy; floating weights become float32. A corrupt or truncated file gives a
    LowbitError naming it."""
    from safetensors import SafetensorError, safe_open

    out = {}
    try:
        header, data_start = _header(path)
        size = path.stat().st_size
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if data_start + end > size:
            raise ValueError(f"file is truncated: tensors need {data_start + end} bytes, file has {size}")
        bf16 = {k for k, v in header.items() if k != "__metadata__" and v["dtype"] == "BF16"}
        with safe_open(str(path), framework="numpy") as f:
            for k in f.keys():
                t = _read_bf16(path, header[k], data_start) if k in bf16 else f.get_tensor(k)
                out[k] = t.astype(np.float32) if t.dtype.kind == "f" and t.dtype != np.float32 else t
    except (SafetensorError, ValueError, json.JSONDecodeError, KeyError, UnicodeDecodeError) as e:
        raise LowbitError(f"{path} is not a readable safetensors file ({e})", "re-download or re-export the weights") from None
    return out


def load_weights(model_dir: Path) -> dict[str, np.ndarray]:
    w: dict[str, np.ndarray] = {}
    for f in weight_files(model_dir):
        w.update(read_safetensors(f))
    return w


def sentence_transformers_normalize(model_dir: Path) -> bool:
    mods = model_dir / "modules.json"
    if not mods.is_file():
        return False
    try:
        return any(m.get("type", "").endswith("Normalize") for m in json.loads(mods.read_text()))
    except json.JSONDecodeError:
        return False


def load_hf(model_dir: Path, progress=None):
    """Import a model directory; returns (family, config, graph, tokenizer, prequant, prequant_types) (the
    last two as in `compiler.frontend.Model`; empty unless config.json has a `quantization_config`)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise LowbitError(f"{model_dir} is not a directory", "pass a Hugging Face model directory or a preset name")
    cfg = read_config(model_dir)
    family = family_of(cfg, model_dir)
    if family == "bert" and sentence_transformers_normalize(model_dir):
        cfg = {**cfg, "normalize_embeddings": True}
    weights = load_weights(model_dir)
    prequant, prequant_types = {}, {}
    if cfg.get("quantization_config") is not None:
        weights, prequant, prequant_types = import_prequant(cfg, weights, model_dir, family)
    try:
        graph = BUILDERS[family](cfg, weights, model_dir.name)
    except KeyError as e:
        raise LowbitError(f"config.json in {model_dir} lacks the key {e}", "use the config.json that came with the weights") from None
    except IRError as e:
        raise LowbitError(f"the weights in {model_dir} do not match its config.json ({e})", "use the config.json that came with the weights") from None
    return family, cfg, graph, find_tokenizer(model_dir), prequant, prequant_types
