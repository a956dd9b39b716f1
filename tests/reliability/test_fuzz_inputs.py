"""Fuzzing the model files lowbit reads: random JSON values in the fields of config.json (and of
tokenizer_config.json / generation_config.json), random bytes or JSON in a safetensors header, random GGUF types and values for the llama and tokenizer metadata keys. Each example is
compiled with `lowbit compile MODEL -o OUT --target ref` in-process; the only outcomes allowed are a compile
(exit 0, the artifact written, nothing on stderr) or a LowbitError (exit 2, one `error: ...` line, no output).
Any other exception escapes main() and fails the test."""

from __future__ import annotations

import itertools
import json
import os
import struct

import pytest
from gguf import GGUFValueType as VT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability.fixtures import compile_cli, st_read, write_gguf, write_tiny_hf

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
_ids = itertools.count()

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8)
NUMBERS = st.sampled_from([0, 1, 2, 3, 4, 15, 16, 32, 64, 128, 320, -1, 10**12]) | st.integers(-(2**70), 2**70) | st.floats()
JSON = st.recursive(
    st.none() | st.booleans() | NUMBERS | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
CONFIG_FIELDS = (
    "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim", "intermediate_size", "vocab_size", "num_hidden_layers",
    "max_position_embeddings", "rms_norm_eps", "rope_theta", "rope_scaling", "tie_word_embeddings", "architectures", "model_type",
    "quantization_config", "bos_token_id", "eos_token_id", "pad_token_id", "torch_dtype",
)
DELETE = object()


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    return write_tiny_hf(tmp_path_factory.mktemp("fuzz") / "hf")


def fresh(tmp_path, base=None):
    """A new case folder; with base, one that links to every file of the valid model but config.json."""
    d = tmp_path / f"case{next(_ids)}"
    d.mkdir()
    if base is not None:
        for f in base.iterdir():
            if f.name not in ("config.json", "model.safetensors"):
                os.symlink(f, d / f.name)
    return d


def assert_allowed(code: int, err: str, out) -> None:
    assert "Traceback" not in err, err
    if code == 0:
        assert (out / "manifest.json").is_file() and not err.strip(), err
        return
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert not out.exists()


TOKENIZER_FIELDS = ("bos_token", "eos_token", "pad_token", "chat_template", "add_bos_token")
GENERATION_FIELDS = ("bos_token_id", "eos_token_id")


def changes(fields):
    return st.dictionaries(st.sampled_from(fields) | TEXT, JSON | st.just(DELETE), min_size=1, max_size=3)


@FUZZ
@given(file_changes=st.one_of(
    st.tuples(st.just("config.json"), changes(CONFIG_FIELDS)),
    st.tuples(st.just("tokenizer_config.json"), changes(TOKENIZER_FIELDS)),
    st.tuples(st.just("generation_config.json"), changes(GENERATION_FIELDS)),
))
def test_fuzz_config_fields(hf, tmp_path, capsys, file_changes):
    name, fields = file_changes
    d = fresh(tmp_path, hf)
    for f in ("config.json", "model.safetensors", "tokenizer_config.json", "generation_config.json"):
        if f != name and not (d / f).exists():
            os.symlink(hf / f, d / f)
    (d / name).unlink(missing_ok=True)
    cfg = json.loads((hf / name).read_text())
    for k, v in fields.items():
        if v is DELETE:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (d / name).write_text(json.dumps(cfg))
    code, _, err = compile_cli(d, d / "out", capsys)
    assert_allowed(code, err, d / "out")


DTYPES = st.sampled_from(["F32", "F16", "BF16", "F64", "I64", "I32", "I8", "I16", "U8", "BOOL", "F8_E4M3", "f32", ""])
SIZES = st.lists(st.integers(-2, 70) | st.sampled_from([320, 4096, 2**40]), max_size=3)
ENTRY_FIELD = st.one_of(
    st.tuples(st.just("dtype"), DTYPES | JSON),
    st.tuples(st.just("shape"), SIZES | JSON),
    st.tuples(st.just("data_offsets"), st.lists(st.integers(-5, 2**33), min_size=0, max_size=3) | JSON),
    st.tuples(st.just(None), JSON),  # the whole entry
)


@FUZZ
@given(data=st.data())
def test_fuzz_safetensors_header(hf, tmp_path, capsys, data):
    header, blob = st_read(hf / "model.safetensors")
    d = fresh(tmp_path, hf)
    os.symlink(hf / "config.json", d / "config.json")
    if data.draw(st.booleans(), label="raw bytes"):
        raw = data.draw(st.binary(max_size=80), label="header bytes")
        length = data.draw(st.just(len(raw)) | st.integers(0, 2**64 - 1), label="length field")
        (d / "model.safetensors").write_bytes(struct.pack("<Q", length) + raw + blob)
    else:
        for _ in range(data.draw(st.integers(1, 3), label="edits")):
            name = data.draw(st.sampled_from(sorted(header)) | st.just("__metadata__") | TEXT, label="tensor")
            field, value = data.draw(ENTRY_FIELD, label="edit")
            if field is None or not isinstance(header.get(name), dict):
                header[name] = value
            else:
                header[name][field] = value
        h = json.dumps(header).encode()
        (d / "model.safetensors").write_bytes(struct.pack("<Q", len(h)) + h + blob)
    code, _, err = compile_cli(d, d / "out", capsys)
    assert_allowed(code, err, d / "out")


LLAMA_KEYS = (
    "general.architecture", "llama.block_count", "llama.context_length", "llama.embedding_length", "llama.feed_forward_length",
    "llama.attention.head_count", "llama.attention.head_count_kv", "llama.attention.key_length", "llama.attention.value_length",
    "llama.rope.freq_base", "llama.rope.dimension_count", "llama.attention.layer_norm_rms_epsilon", "llama.rope.scaling.type",
    "llama.rope.scaling.factor", "llama.expert_count", "split.count", "general.type", "tokenizer.ggml.model", "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id", "tokenizer.ggml.add_bos_token", "tokenizer.chat_template",
)
GTEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=6)
SCALARS = st.one_of(
    st.tuples(st.integers(0, 255), st.just(VT.UINT8)),
    st.tuples(st.integers(-(2**31), 2**31 - 1) | st.sampled_from([0, 1, 2, 3, 4, 16, 64, 128]), st.just(VT.INT32)),
    st.tuples(st.integers(0, 2**32 - 1) | st.sampled_from([0, 1, 2, 3, 4, 16, 32, 64, 128, 256]), st.just(VT.UINT32)),
    st.tuples(st.integers(-(2**63), 2**63 - 1), st.just(VT.INT64)),
    st.tuples(st.floats(width=32), st.just(VT.FLOAT32)),
    st.tuples(st.floats(), st.just(VT.FLOAT64)),
    st.tuples(st.booleans(), st.just(VT.BOOL)),
    st.tuples(GTEXT | st.sampled_from(["llama", "qwen2", "gpt2", "linear", "none", "smollm"]), st.just(VT.STRING)),
)
ARRAYS = st.one_of(
    st.tuples(st.lists(st.integers(0, 300), min_size=1, max_size=4), st.just(VT.ARRAY), st.just(VT.UINT32)),
    st.tuples(st.lists(GTEXT, min_size=1, max_size=4), st.just(VT.ARRAY), st.just(VT.STRING)),
    st.tuples(st.lists(st.floats(width=32), min_size=1, max_size=3), st.just(VT.ARRAY), st.just(VT.FLOAT32)),
)


@FUZZ
@given(override=st.dictionaries(st.sampled_from(LLAMA_KEYS), SCALARS | ARRAYS | st.none(), min_size=1, max_size=2))
def test_fuzz_gguf_metadata(tmp_path, capsys, override):
    d = fresh(tmp_path)
    path = write_gguf(d / "m.gguf", override)
    code, _, err = compile_cli(path, d / "out", capsys)
    assert_allowed(code, err, d / "out")
