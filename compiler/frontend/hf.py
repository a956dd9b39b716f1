"""Hugging Face model directories: config.json + *.safetensors (single file or sharded with an index),
and tokenizer.json when present. No torch or transformers: safetensors + numpy.

Every file is checked where it is read (compiler/frontend/validate.py): config.json's fields for type and
range, each safetensors header entry against the file, and every tensor the graph reads against the shape
config.json implies, before anything is built."""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

import numpy as np

from compiler.errors import LowbitError
from compiler.frontend import bert, llama
from compiler.frontend.prequant import import_prequant
from compiler.frontend.tokenizer import find_tokenizer
from compiler.frontend.validate import MATCH, RESTORE, is_int, json_kind, os_error, read_json, read_json_object, show
from compiler.ir import IRError

FAMILIES = {**{a: "llama" for a in llama.ARCHITECTURES}, **{a: "bert" for a in bert.ARCHITECTURES}}
BUILDERS = {"llama": llama.build_llama, "bert": bert.build_bert}
MODULES = {"llama": llama, "bert": bert}
INDEX = "model.safetensors.index.json"
# safetensors dtype -> bytes per element, for what lowbit reads: float weights, and the integer codes,
# indices and zero points of pre-quantized checkpoints (int32 words, int64 shapes, int8 zero points)
DTYPES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "I8": 1, "F8_E4M3": 1}  # F8_E4M3: read as its uint8 codes
REEXPORT = "re-download or re-export the weights"


def read_config(model_dir: Path) -> dict:
    f = model_dir / "config.json"
    if not f.exists():
        raise LowbitError(f"{model_dir} has no config.json", "point MODEL at a Hugging Face model directory or a preset (see `lowbit models`)")
    return read_json_object(f, "restore config.json from the original model")


def family_of(cfg: dict, where: Path) -> str:
    archs = cfg.get("architectures") or []
    if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
        raise LowbitError(f"{where / 'config.json'}: architectures is {show(archs)}, expected a list of class names", MATCH)
    for a in archs:
        if a in FAMILIES:
            return FAMILIES[a]
    mt = cfg.get("model_type")
    if mt in ("llama", "mistral", "qwen2", "bitnet"):
        return "llama"
    if mt == "bert":
        return "bert"
    raise LowbitError(
        f"unsupported architecture {show(archs or mt)} in {where / 'config.json'}",
        f"lowbit imports {', '.join(sorted(FAMILIES))}",
    )


def weight_files(model_dir: Path) -> list[Path]:
    index = model_dir / INDEX
    if index.exists():
        wm = read_json_object(index).get("weight_map")
        if not isinstance(wm, dict) or not wm or not all(isinstance(v, str) and v for v in wm.values()):
            raise LowbitError(f"{index}: weight_map is {show(wm)}, expected an object of tensor name -> shard file name", RESTORE)
        files = [model_dir / f for f in sorted(set(wm.values()))]
        missing = [f.name for f in files if not f.exists()]
        if missing:
            raise LowbitError(f"shards listed in {index.name} are missing: {', '.join(missing)}", "download every shard of the model")
        return files
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise LowbitError(f"{model_dir} has no .safetensors weights", "convert the checkpoint to safetensors (lowbit never loads pickle files)")
    return files


class _Bad(ValueError):
    """A safetensors file that breaks its format: the reason, for one LowbitError naming the file."""


def _header(path: Path) -> tuple[dict, int]:
    """The header of a safetensors file, every tensor entry checked against the format and the file's size;
    returns (header, offset of the data)."""
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            raw = f.read(8)
            if len(raw) < 8:
                raise _Bad("the file is shorter than the 8-byte header length")
            n = struct.unpack("<Q", raw)[0]
            if n > size - 8:
                raise _Bad(f"the header length {n} runs past the end of the file ({size} bytes): truncated or not safetensors")
            if n > 100_000_000:
                raise _Bad(f"the header length {n} is implausible")
            hdr = f.read(n)
    except OSError as e:
        raise os_error(path, e, REEXPORT) from None
    if len(hdr) < n:
        raise _Bad("the file ends inside the header")
    try:
        header = json.loads(hdr.decode("utf-8"))
    except UnicodeDecodeError:
        raise _Bad("its header is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise _Bad(f"its header is not JSON ({e.msg})") from None
    except RecursionError:
        raise _Bad("its header is JSON nested too deeply") from None
    if not isinstance(header, dict):
        raise _Bad(f"its header is a JSON {json_kind(header)}, not an object")
    meta = header.get("__metadata__")
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise _Bad("its __metadata__ is not an object of strings")
    start = 8 + n
    for name, info in header.items():
        if name != "__metadata__":
            _check_entry(path, name, info, size - start)
    return header, start


def _check_entry(path: Path, name: str, info, data_size: int) -> None:
    if not isinstance(info, dict):
        raise _Bad(f"the header entry of tensor {name} is {show(info)}, not an object")
    dtype, shape, offs = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str):
        raise _Bad(f"tensor {name} has dtype {show(dtype)}")
    if dtype not in DTYPES:
        raise LowbitError(
            f"{path}: tensor {name} is stored as {dtype}, which lowbit cannot read",
            "lowbit reads F32, F16, BF16 and F64 weights (and I64, I32, I8, F8_E4M3 for the codes of pre-quantized checkpoints); convert the weights to F16 or F32",
        )
    if not isinstance(shape, list) or not all(is_int(s) and s >= 0 for s in shape):
        raise _Bad(f"tensor {name} has shape {show(shape)}, expected a list of sizes")
    if not (isinstance(offs, list) and len(offs) == 2 and all(is_int(o) for o in offs) and 0 <= offs[0] <= offs[1]):
        raise _Bad(f"tensor {name} has data_offsets {show(offs)}, expected [begin, end]")
    if offs[1] > data_size:
        raise _Bad(f"the file is truncated: tensor {name} ends at byte {offs[1]} of a {data_size}-byte data section")
    if offs[1] - offs[0] != math.prod(shape) * DTYPES[dtype]:
        raise _Bad(f"tensor {name} holds {offs[1] - offs[0]} bytes, its shape {shape} of {dtype} needs {math.prod(shape) * DTYPES[dtype]}")


def _read_bf16(path: Path, info: dict, data_start: int) -> np.ndarray:
    """numpy has no bfloat16: read the raw 16-bit words and widen them to float32 exactly."""
    a, b = info["data_offsets"]
    raw = np.fromfile(path, dtype=np.uint16, count=(b - a) // 2, offset=data_start + a)
    if raw.size * 2 != b - a:
        raise _Bad("the file ends inside a tensor")
    return (raw.astype(np.uint32) << 16).view(np.float32).reshape(info["shape"])


F8_CODES = np.dtype(np.uint8, metadata={"safetensors": "F8_E4M3"})  # uint8 that remembers its stored type (for errors)


def _read_raw_u8(path: Path, info: dict, data_start: int) -> np.ndarray:
    """FP8 E4M3 tensors as their bytes (uint8): the E4M3 codes the fp8 importers keep (numpy has no float8)."""
    a, b = info["data_offsets"]
    raw = np.fromfile(path, dtype=np.uint8, count=b - a, offset=data_start + a)
    if raw.size != b - a:
        raise _Bad("the file ends inside a tensor")
    return raw.view(F8_CODES).reshape(info["shape"])


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """All tensors of one file as numpy; floating weights become float32. A corrupt or truncated file gives a
    LowbitError naming it."""
    from safetensors import SafetensorError, safe_open

    out = {}
    try:
        header, data_start = _header(path)
        raw = {k: v["dtype"] for k, v in header.items() if k != "__metadata__" and v["dtype"] in ("BF16", "F8_E4M3")}
        with safe_open(str(path), framework="numpy") as f:
            for k in f.keys():  # noqa: SIM118 (a safe_open handle is not a mapping)
                if k in raw:
                    t = (_read_bf16 if raw[k] == "BF16" else _read_raw_u8)(path, header[k], data_start)
                else:
                    t = f.get_tensor(k)
                out[k] = t.astype(np.float32) if t.dtype.kind == "f" and t.dtype != np.float32 else t
    except (SafetensorError, ValueError) as e:
        raise LowbitError(f"{path} is not a readable safetensors file: {e}", REEXPORT) from None
    except OSError as e:
        raise os_error(path, e, REEXPORT) from None
    return out


def load_weights(model_dir: Path, origins: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """Every tensor of the model's safetensors files; `origins` (when given) gets tensor name -> file name."""
    w: dict[str, np.ndarray] = {}
    for f in weight_files(model_dir):
        part = read_safetensors(f)
        w.update(part)
        if origins is not None:
            origins.update(dict.fromkeys(part, f.name))
    return w


def sentence_transformers_normalize(model_dir: Path) -> bool:
    mods = model_dir / "modules.json"
    if not mods.exists():
        return False
    v = read_json(mods)
    if not isinstance(v, list) or not all(isinstance(m, dict) for m in v):
        raise LowbitError(f"{mods} holds {show(v)}, expected a list of module objects", RESTORE)
    return any(str(m.get("type", "")).endswith("Normalize") for m in v)


class _TensorInfo:
    """What check_tensors reads of a tensor (dtype, shape), from a safetensors header."""

    def __init__(self, info: dict):
        self.shape = tuple(info["shape"])
        self.dtype = np.dtype({"BF16": "float32", "I64": "int64", "I32": "int32", "I8": "int8", "F8_E4M3": "uint8"}.get(info["dtype"], info["dtype"].replace("F", "float")))


def checked_config(model_dir: Path) -> dict:
    """config.json of a model folder, checked as `load_hf` checks it (fields, and the shapes of the tensors
    the graph reads, from the safetensors headers when the folder has weights) without reading any weights:
    for `lowbit report`."""
    model_dir = Path(model_dir)
    cfg = read_config(model_dir)
    family = family_of(cfg, model_dir)
    where = model_dir / "config.json"
    hp = MODULES[family].hparams(cfg, where)
    has_weights = (model_dir / INDEX).exists() or any(model_dir.glob("*.safetensors"))
    infos, origins = {}, {}
    for f in weight_files(model_dir) if has_weights else []:
        try:
            header, _ = _header(f)
        except _Bad as e:
            raise LowbitError(f"{f} is not a readable safetensors file: {e}", REEXPORT) from None
        infos.update({k: _TensorInfo(v) for k, v in header.items() if k != "__metadata__"})
        origins.update(dict.fromkeys(header, f.name))
    if cfg.get("quantization_config") is None:  # (a pre-quantized checkpoint's float shapes are checked on import)
        MODULES[family].check_weights(hp, cfg, infos, where, origins)
    return cfg


def load_hf(model_dir: Path, progress=None):
    """Import a model directory; returns (family, config, graph, tokenizer, prequant, prequant_types) (the
    last two as in `compiler.frontend.Model`; empty unless config.json has a `quantization_config`)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise LowbitError(f"{model_dir} is not a directory", "pass a Hugging Face model directory or a preset name")
    cfg = read_config(model_dir)
    where = model_dir / "config.json"
    family = family_of(cfg, model_dir)
    if family == "bert" and sentence_transformers_normalize(model_dir):
        cfg = {**cfg, "normalize_embeddings": True}
    fam = MODULES[family]
    hp = fam.hparams(cfg, where)  # every field checked before the weights are read
    origins: dict[str, str] = {}
    weights = load_weights(model_dir, origins)
    prequant, prequant_types = {}, {}
    if cfg.get("quantization_config") is not None:
        weights, prequant, prequant_types = import_prequant(cfg, weights, model_dir, family)
    fam.check_weights(hp, cfg, weights, where, origins)
    tok = find_tokenizer(model_dir)
    try:
        graph = BUILDERS[family](cfg, weights, model_dir.name)
    except IRError as e:
        raise LowbitError(f"the weights in {model_dir} do not match its config.json ({e})", MATCH) from None
    return family, cfg, graph, tok, prequant, prequant_types
