"""Tokenizers: a model directory's tokenizer.json through the `tokenizers` library, or a byte-level
tokenizer for presets (which have random weights and no vocabulary of their own)."""

from __future__ import annotations

import json
from pathlib import Path


class ByteTokenizer:
    """ids 0/1/2 are pad/bos/eos; byte b is id b + 3. Lossless for any UTF-8 text."""

    kind = "bytes"
    offset = 3

    def __init__(self, add_bos: bool = True):
        self.add_bos = add_bos

    def encode(self, text: str) -> list[int]:
        ids = [b + self.offset for b in text.encode("utf-8")]
        return [1, *ids] if self.add_bos else ids

    def decode(self, ids: list[int]) -> str:
        data = bytes(i - self.offset for i in ids if self.offset <= i < 256 + self.offset)
        return data.decode("utf-8", errors="replace")

    def to_json(self) -> dict:
        return {"kind": self.kind, "add_bos": self.add_bos}


class HFTokenizer:
    """tokenizer.json (any Hugging Face fast tokenizer); special tokens as its post-processor adds them."""

    kind = "hf"

    def __init__(self, path: Path):
        from tokenizers import Tokenizer

        self.path = Path(path)
        self._tok = Tokenizer.from_file(str(self.path))
        self._tok.no_padding()  # one sequence per call: padding would leak pad tokens into mean pooling

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text).ids)

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(list(ids))

    def to_json(self) -> dict:
        return {"kind": self.kind, "file": self.path.name}


def tokenizer_from_json(d: dict, folder: Path):
    if d["kind"] == "bytes":
        return ByteTokenizer(d.get("add_bos", True))
    if d["kind"] == "hf":
        return HFTokenizer(folder / d["file"])
    raise ValueError(f"unknown tokenizer kind {d['kind']}")


def find_tokenizer(model_dir: Path):
    f = model_dir / "tokenizer.json"
    return HFTokenizer(f) if f.is_file() else None


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())
