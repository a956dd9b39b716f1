"""Model import: Hugging Face directories (single file, sharded, bf16) equal the presets they were written
from; presets and the model argument; bad model files give LowbitError naming the file."""

import json

import numpy as np
import pytest

from compiler.errors import LowbitError
from compiler.frontend import list_models, load_model
from compiler.frontend.llama import empty_cache
from compiler.reference import Interpreter
from tests.helpers import write_hf_dir


def logits(model, ids):
    feeds = {"input_ids": np.asarray(ids, np.int64), "positions": np.arange(len(ids))}
    if model.causal:
        feeds.update(empty_cache(model.graph, len(ids)))
    return Interpreter(model.graph).run(feeds)[model.graph.outputs[0 if model.causal else 1]]


@pytest.mark.parametrize("preset,shards", [("llama-tiny", 1), ("llama-tiny", 3), ("bert-tiny", 2)])
def test_hf_directory_equals_preset(tmp_path, preset, shards):
    write_hf_dir(tmp_path / "m", preset, shards=shards)
    a, b = load_model(str(tmp_path / "m")), load_model(preset)
    assert a.family == b.family
    ids = [1, 50, 60, 70, 80]
    np.testing.assert_array_equal(logits(a, ids), logits(b, ids))


def test_bf16_weights_are_widened_exactly(tmp_path):
    w = write_hf_dir(tmp_path / "m", "llama-tiny", bf16=True)
    m = load_model(str(tmp_path / "m"))
    key = "model.layers.0.self_attn.q_proj.weight"
    assert m.graph.consts[key].dtype == np.float32
    np.testing.assert_array_equal(m.graph.consts[key], w[key])


def test_model_list_and_presets():
    names = list_models()
    assert {"llama-tiny", "bert-tiny", "bitnet-tiny", "llama-1b", "all-minilm-l6-v2"} <= set(names)
    m = load_model("bitnet-tiny")
    w = m.graph.consts["model.layers.0.mlp.up_proj.weight"]
    # ternary x per-row scale: at most 3 distinct values per row
    assert max(len(np.unique(r)) for r in w) <= 3


def test_llama_1b_shapes_are_llama_3_2_1b():
    from compiler.frontend.presets import PRESETS

    c = PRESETS["llama-1b"].config
    assert (c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["num_attention_heads"], c["num_key_value_heads"], c["vocab_size"]) == (2048, 8192, 16, 32, 8, 128256)


def test_errors_name_the_input(tmp_path):
    with pytest.raises(LowbitError, match="does not exist"):
        load_model(str(tmp_path / "nope" / "model"))
    with pytest.raises(LowbitError, match="neither an existing path nor a known model"):
        load_model("llama-huge")
    d = tmp_path / "noconf"
    d.mkdir()
    with pytest.raises(LowbitError, match="no config.json"):
        load_model(str(d))
    d = tmp_path / "gpt"
    write_hf_dir(d, "llama-tiny")
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(architectures=["GPT2LMHeadModel"], model_type="gpt2")
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(LowbitError, match="unsupported architecture.*GPT2LMHeadModel"):
        load_model(str(d))


def test_corrupt_and_truncated_safetensors(tmp_path):
    d = tmp_path / "m"
    write_hf_dir(d, "bert-tiny")
    f = d / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(LowbitError, match="model.safetensors.*truncated"):
        load_model(str(d))
    f.write_bytes(b"\x07\x00\x00\x00\x00\x00\x00\x00garbage")
    with pytest.raises(LowbitError, match="not a readable safetensors file"):
        load_model(str(d))


def test_missing_shard_and_missing_weight(tmp_path):
    d = tmp_path / "m"
    write_hf_dir(d, "llama-tiny", shards=2)
    (d / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(LowbitError, match="missing: model-00002-of-00002"):
        load_model(str(d))
    d2 = tmp_path / "m2"
    write_hf_dir(d2, "llama-tiny")
    cfg = json.loads((d2 / "config.json").read_text())
    cfg["num_hidden_layers"] = 5  # one more layer than the weights have
    (d2 / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(LowbitError, match="model.layers.4"):
        load_model(str(d2))
