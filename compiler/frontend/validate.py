"""Checks at the boundary where lowbit reads a user's model files, shared by the frontends.

- Files: `read_bytes` / `read_text` (strict UTF-8) / `read_json` / `read_json_object` turn every OSError, a
  folder where a file belongs, bytes that are not UTF-8 and text that is not JSON (or not an object) into one
  LowbitError naming the file.
- Config fields: `Fields` reads typed values out of a config dict (or GGUF metadata) and names the field and
  what it should be when one is missing, of the wrong type or out of range.
- Tensors: `check_tensors` compares every tensor the graph reads with the shape the config implies, naming
  the tensor, its file, both shapes and the fields the expected shape follows from.
"""

from __future__ import annotations

import json
import math
import numbers
from pathlib import Path

from compiler.errors import LowbitError

RESTORE = "restore the file from the original model"
MATCH = "use the config.json that came with the weights"
FLOAT_DTYPES = "F32, F16, BF16 or F64"
_REQUIRED = object()


def _stored_type(t) -> str:
    """A tensor's dtype as the checkpoint named it (F8_E4M3 codes are read as uint8 that say so)."""
    dt = getattr(t, "dtype", None)
    if dt is None:
        return type(t).__name__
    return (dt.metadata or {}).get("safetensors", str(dt))


def os_error(path, e: OSError, fix: str = "check the path and its permissions") -> LowbitError:
    """One line for an OSError met while reading `path`."""
    if isinstance(e, IsADirectoryError):
        return LowbitError(f"{path} is a folder where a file is expected", fix)
    if isinstance(e, FileNotFoundError):
        return LowbitError(f"{path} does not exist (or vanished while it was read)", fix)
    return LowbitError(f"cannot read {path} ({e.strerror or type(e).__name__})", fix)


def read_bytes(path, fix: str = "check the path and its permissions") -> bytes:
    path = Path(path)
    try:
        with path.open("rb") as f:
            return f.read()
    except OSError as e:
        raise os_error(path, e, fix) from None


def read_text(path, fix: str = RESTORE) -> str:
    data = read_bytes(path)
    try:
        return data.decode("utf-8-sig")  # (a byte-order mark is harmless)
    except UnicodeDecodeError as e:
        raise LowbitError(f"{path} is not UTF-8 text (byte {e.start} is 0x{data[e.start]:02x})", fix) from None


def read_json(path, fix: str = RESTORE):
    text = read_text(path, fix)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise LowbitError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})", fix) from None
    except RecursionError:
        raise LowbitError(f"{path} is JSON nested too deeply to read", fix) from None


def read_json_object(path, fix: str = RESTORE) -> dict:
    v = read_json(path, fix)
    if not isinstance(v, dict):
        raise LowbitError(f"{path} holds a JSON {json_kind(v)}, not an object", fix)
    return v


def json_kind(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, numbers.Number):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, (list, tuple)):
        return "list"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def a_kind(v) -> str:
    """'a string', 'an object', ...: what a value is, for an error line."""
    k = json_kind(v)
    return ("an " if k[0] in "aeiou" else "a ") + k


def show(v) -> str:
    """A value as the user wrote it, cut short."""
    try:
        s = json.dumps(v, allow_nan=True)
    except (TypeError, ValueError):
        s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


def is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


class Fields:
    """Typed reads of a config dict. `where` names the file (and `label` the kind of key) in errors.
    A null value counts as absent, as Hugging Face's loaders treat it."""

    def __init__(self, cfg: dict, where, label: str = "field", fix: str = MATCH):
        self.cfg, self.where, self.label, self.fix = cfg, str(where), label, fix

    def bad(self, key: str, want: str, v=_REQUIRED):
        v = self.cfg.get(key) if v is _REQUIRED else v
        raise LowbitError(f"{self.where}: {self.label} {key} is {show(v)} ({a_kind(v)}), expected {want}", self.fix)

    def _get(self, key: str, default):
        v = self.cfg.get(key)
        if v is None:
            if default is _REQUIRED:
                raise LowbitError(f"{self.where} lacks a {self.label} it needs, '{key}'", self.fix)
            return None, True
        return v, False

    def integer(self, key: str, default=_REQUIRED, minimum: int = 1):
        v, absent = self._get(key, default)
        if absent:
            return default
        if not is_int(v):
            self.bad(key, f"an integer >= {minimum}")
        if v < minimum:
            self.bad(key, f"an integer >= {minimum}")
        return int(v)

    def number(self, key: str, default=_REQUIRED, lo: float = 0.0, hi: float = math.inf):
        """A finite number in (lo, hi)."""
        v, absent = self._get(key, default)
        if absent:
            return default
        want = f"a number in ({lo:g}, {hi:g})" if hi != math.inf else f"a finite number > {lo:g}"
        if not is_real(v) or not math.isfinite(v) or not lo < v < hi:
            self.bad(key, want)
        return float(v)

    def flag(self, key: str, default=_REQUIRED):
        v, absent = self._get(key, default)
        if absent:
            return default
        if not isinstance(v, bool):
            self.bad(key, "true or false")
        return v

    def text(self, key: str, default=_REQUIRED, choices: tuple[str, ...] | None = None):
        v, absent = self._get(key, default)
        if absent:
            return default
        if not isinstance(v, str) or (choices is not None and v not in choices):
            self.bad(key, f"one of {', '.join(choices)}" if choices else "a string")
        return v


def check_rope_scaling(v, where, fix: str = MATCH) -> dict | None:
    """config.json's rope_scaling: null, or a linear / llama3 rule with positive numbers (the rules the
    reference implements; any other rule would silently compute different attention)."""
    if v is None:
        return None
    f = Fields(v, f"{where}: rope_scaling", "field", fix) if isinstance(v, dict) else None
    if f is None:
        raise LowbitError(f"{where}: rope_scaling is {show(v)} ({a_kind(v)}), expected an object or null", fix)
    kind = v.get("rope_type", v.get("type"))
    if kind in (None, "default"):
        return v
    if kind not in ("linear", "llama3"):
        raise LowbitError(f"{where}: RoPE scaling {show(kind)} is not supported", "lowbit's RoPE supports linear and llama3 scaling")
    f.number("factor")
    if kind == "llama3":
        lo, hi = f.number("low_freq_factor", 1.0), f.number("high_freq_factor", 4.0)
        f.number("original_max_position_embeddings", 8192.0)
        if hi <= lo:
            f.bad("high_freq_factor", f"a number above low_freq_factor {lo:g}")
    return v


def check_tensors(weights: dict, top: dict, block: dict, block_prefix: str, n_layers: int, where, origins: dict | None = None,
                  layers_field: str = "num_hidden_layers") -> None:
    """Every tensor the graph reads has a float dtype and the shape the config implies. top: name -> (shape,
    why); block: the name after "<block_prefix><i>." -> (shape, why); a dimension None matches any size; why
    names the config fields the shape follows from. Blocks numbered n_layers or above are an error too."""
    cfg = Path(str(where)).name if str(where).endswith(".json") else str(where)
    blocks = set()
    for name, t in weights.items():
        want = top.get(name)
        if want is None and name.startswith(block_prefix):
            idx, _, rest = name[len(block_prefix):].partition(".")
            if idx.isdigit():
                blocks.add(int(idx))
            if idx.isdigit() and int(idx) >= n_layers:
                raise LowbitError(
                    f"tensor {name}{_in(origins, name)} belongs to block {idx}, but {where} says {layers_field} is {n_layers}", MATCH)
            want = block.get(rest) if idx.isdigit() else None
        if want is None:
            continue  # a tensor the graph does not read
        shape, why = want
        if getattr(t, "dtype", None) is None or t.dtype.kind != "f":
            raise LowbitError(
                f"tensor {name}{_in(origins, name)} is {_stored_type(t)}; lowbit reads float weights ({FLOAT_DTYPES})",
                "convert the weights to float, or keep the config's quantization_config for a pre-quantized checkpoint",
            )
        got = tuple(int(s) for s in t.shape)
        if len(got) != len(shape) or any(w is not None and g != w for g, w in zip(got, shape)):
            exp = ", ".join("any" if s is None else str(s) for s in shape)
            raise LowbitError(f"tensor {name}{_in(origins, name)} has shape {list(got)}; {cfg} implies [{exp}] ({why})", MATCH)
    if blocks and max(blocks) < n_layers - 1:
        raise LowbitError(f"{where} says {layers_field} is {n_layers}, but the weights hold blocks 0-{max(blocks)} only (no {block_prefix}{max(blocks) + 1}.*)", MATCH)


def _in(origins: dict | None, name: str) -> str:
    f = (origins or {}).get(name)
    return f" in {f}" if f else ""
