"""Valid tiny models the reliability tests mutate, and the one-line-error check they share.

`write_tiny_hf` writes a 2-layer llama (hidden 64) as a Hugging Face folder with a byte-level BPE
tokenizer.json, tokenizer_config.json and generation_config.json; `write_tiny_bert` a BERT folder;
`write_gguf` the tiny GGUF of tests/compiler/frontend/gguf_fixtures.py with metadata values replaced by
any GGUF type. `compile_cli` runs `lowbit compile` in-process (main() semantics: LowbitError -> exit 2)."""

from __future__ import annotations

import builtins
import contextlib
import io
import json
import struct
from pathlib import Path
from unittest import mock

import gguf
import numpy as np
from safetensors.numpy import save_file

from tests.compiler.frontend.gguf_fixtures import CHAT_TEMPLATE, gpt2_vocab, write_llama_gguf
from tests.compiler.frontend.prequant_writers import tiny_config
from tests.helpers import run_cli, write_hf_dir

VOCAB = 320  # the BPE vocabulary has 299 tokens; the embedding has spare rows, as real models do


def llama_weights(cfg: dict, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    h, i, v, hd = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"], cfg["head_dim"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd

    def mat(n, k):
        return (0.05 * rng.standard_normal((n, k))).astype(np.float32)

    w = {"model.embed_tokens.weight": mat(v, h), "lm_head.weight": mat(v, h), "model.norm.weight": np.ones(h, np.float32)}
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        w[p + "input_layernorm.weight"] = w[p + "post_attention_layernorm.weight"] = np.ones(h, np.float32)
        for name, shape in {"self_attn.q_proj": (q, h), "self_attn.k_proj": (kv, h), "self_attn.v_proj": (kv, h), "self_attn.o_proj": (h, q),
                            "mlp.gate_proj": (i, h), "mlp.up_proj": (i, h), "mlp.down_proj": (h, i)}.items():
            w[p + name + ".weight"] = mat(*shape)
    return {k: v.copy() for k, v in w.items()}


def tokenizer_json() -> str:
    from compiler.frontend.gguf_tokenizer import build_tokenizer

    v = gpt2_vocab()
    meta = {
        "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": v["tokens"], "tokenizer.ggml.token_type": v["token_type"],
        "tokenizer.ggml.merges": v["merges"], "tokenizer.ggml.pre": v["pre"], "tokenizer.ggml.bos_token_id": v["bos"],
        "tokenizer.ggml.eos_token_id": v["eos"],
    }
    return build_tokenizer(meta, "fixture").to_str()


def write_tiny_hf(path: Path) -> Path:
    path.mkdir(parents=True)
    cfg = tiny_config(vocab_size=VOCAB)
    (path / "config.json").write_text(json.dumps(cfg))
    save_file(llama_weights(cfg), str(path / "model.safetensors"))
    (path / "tokenizer.json").write_text(tokenizer_json())
    tcfg = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "chat_template": CHAT_TEMPLATE, "add_bos_token": False}
    (path / "tokenizer_config.json").write_text(json.dumps(tcfg))
    (path / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))
    return path


def write_tiny_bert(path: Path) -> Path:
    write_hf_dir(path, "bert-tiny")
    (path / "modules.json").write_text(json.dumps([{"idx": 0, "type": "sentence_transformers.models.Transformer"}]))
    return path


def write_gguf(path: Path, override: dict | None = None, **kw) -> Path:
    """write_llama_gguf with metadata replaced: key -> (value, GGUFValueType[, array item type]), or None to
    leave the key out. Values are written exactly as given, whatever the key should hold."""
    override = override or {}
    orig = gguf.GGUFWriter.write_header_to_file

    def header(self, *a, **k):
        kv = self.kv_data[0]
        for key, o in override.items():
            if o is None:
                kv.pop(key, None)
            else:
                kv[key] = gguf.GGUFValue(value=o[0], type=o[1], sub_type=o[2] if len(o) > 2 else None)
        return orig(self, *a, **k)

    with mock.patch.object(gguf.GGUFWriter, "write_header_to_file", header):
        write_llama_gguf(path, **kw)
    return path


# ---- safetensors surgery


def st_read(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def st_write(path: Path, header, data: bytes) -> None:
    """A safetensors file with this header (an object, or raw bytes written as they are) over `data`."""
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + data)


def st_tensors(path: Path, change) -> None:
    """Rewrite model.safetensors with change(tensors) applied (a dict of numpy arrays, edited in place)."""
    from safetensors.numpy import load_file

    t = load_file(str(path))
    change(t)
    save_file({k: np.ascontiguousarray(v) for k, v in t.items()}, str(path))


# ---- an OS that refuses one file


@contextlib.contextmanager
def refuse(path: Path, error: type[OSError] = PermissionError):
    """Opening `path` fails with `error` (as for a file without read permission, or one deleted while it is
    read): the tests run as root too, where chmod cannot take read access away."""
    target = str(Path(path))
    real_io, real_builtin = io.open, builtins.open

    def make(real):
        def fake(file, *a, **k):
            if isinstance(file, (str, Path)) and str(file) == target:
                raise error(13 if error is PermissionError else 2, "Permission denied" if error is PermissionError else "No such file or directory", target)
            return real(file, *a, **k)

        return fake

    with mock.patch.object(io, "open", make(real_io)), mock.patch.object(builtins, "open", make(real_builtin)):
        yield


# ---- the CLI


def compile_cli(model, out: Path, capsys, *extra) -> tuple[int, str, str]:
    capsys.readouterr()  # nothing written before the command counts as its output
    return run_cli(["compile", str(model), "-o", str(out), "--target", "ref", *extra], capsys)


def one_error_line(code: int, err: str) -> str:
    """Exit code 2 and exactly one stderr line 'error: ...' (no traceback, no usage block); returns the line."""
    assert code == 2, err
    assert "Traceback" not in err and "Usage:" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def assert_one_line_error(code: int, err: str, out: Path, names: str) -> str:
    """Exit code 2, exactly one stderr line 'error: ...' naming `names`, no traceback, OUT not created."""
    line = one_error_line(code, err)
    assert names.lower() in line.lower(), f"{names!r} not named in: {line}"
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if out.name in p.name], "a half-written output was left behind"
    return line
