"""Parity with Hugging Face transformers (PyTorch, CPU build `torch==2.13.0` in the dev extra): the frontends'
graphs, run by the reference interpreter, against transformers' own modules on the same weights. Logits and
hidden states agree to 1e-4 (float32 both sides; measured max abs error ~1e-6)."""

import dataclasses
import json

import numpy as np
import pytest
import torch
import transformers

from compiler.frontend import MINILM, load_model, minilm_dir
from compiler.frontend.presets import PRESETS
from compiler.reference import Interpreter
from runtime.model import CompiledModel
from tests.helpers import write_hf_dir

TOL = 1e-4


def _llama_logits(d, ids):
    tm = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    with torch.no_grad():
        return tm(torch.tensor(ids)[None]).logits[0].numpy()


def _our_logits(arg, ids):
    m = load_model(str(arg))
    logits, _ = CompiledModel(m.graph, "llama", m.tokenizer).prefill(list(ids))
    return logits


@pytest.mark.parametrize("preset", [p for p in PRESETS if PRESETS[p].family == "llama" and p != "llama-1b"])
def test_llama_presets_match_transformers(tmp_path, preset):
    d = tmp_path / preset
    write_hf_dir(d, preset)
    ids = np.random.default_rng(0).integers(3, 500, 64)
    assert np.abs(_our_logits(d, ids) - _llama_logits(d, ids)).max() < TOL


def test_llama_1b_preset_architecture_matches_transformers(tmp_path, monkeypatch):
    """llama-1b's architecture (GQA 32/8, tied head, Llama 3 RoPE scaling) on one block and a smaller vocabulary,
    positions past the original context so the scaled frequencies matter."""
    p = PRESETS["llama-1b"]
    cfg = {**p.config, "num_hidden_layers": 1, "vocab_size": 1024, "rope_scaling": {**p.config["rope_scaling"], "original_max_position_embeddings": 64}}
    monkeypatch.setitem(PRESETS, "llama-1b-parity", dataclasses.replace(p, name="llama-1b-parity", config=cfg))
    d = tmp_path / "llama-1b"
    write_hf_dir(d, "llama-1b-parity")
    ids = np.random.default_rng(1).integers(3, 1000, 160)
    assert np.abs(_our_logits(d, ids) - _llama_logits(d, ids)).max() < TOL


def test_llama3_rope_scaling_matches_transformers(tmp_path):
    d = tmp_path / "llama"
    write_hf_dir(d, "llama-tiny")
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(rope_theta=500000.0, rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
    (d / "config.json").write_text(json.dumps(cfg))
    ids = np.random.default_rng(0).integers(3, 500, 200)
    assert np.abs(_our_logits(d, ids) - _llama_logits(d, ids)).max() < TOL


def _bert_hidden(d, ids):
    bm = transformers.AutoModel.from_pretrained(d).eval()
    with torch.no_grad():
        return bm(torch.tensor(ids)[None]).last_hidden_state[0].numpy()


def test_bert_preset_hidden_states_match_transformers(tmp_path):
    d = tmp_path / "bert"
    write_hf_dir(d, "bert-tiny")
    ids = np.array([1, *range(10, 50), 2])
    m = load_model(str(d))
    out = Interpreter(m.graph).run({"input_ids": ids, "positions": np.arange(len(ids))})
    assert np.abs(out[m.graph.outputs[0]] - _bert_hidden(d, ids)).max() < TOL


def test_minilm_matches_transformers_and_sentence_transformers_pooling():
    """The packaged all-MiniLM-L6-v2: hidden states, and the embedding (mean pooling, L2 norm) that
    sentence-transformers computes from them."""
    m = load_model(MINILM)
    ids = np.array(m.tokenizer.encode("A man is playing a guitar on the street."))
    out = Interpreter(m.graph).run({"input_ids": ids, "positions": np.arange(len(ids))})
    ref = _bert_hidden(minilm_dir(), ids)
    assert np.abs(out[m.graph.outputs[0]] - ref).max() < TOL
    pooled = ref.mean(axis=0)
    np.testing.assert_allclose(out[m.graph.outputs[1]], pooled / np.linalg.norm(pooled), atol=TOL)


@pytest.mark.slow
def test_smollm2_gguf_import_matches_transformers_llama():
    """The packaged SmolLM2-135M GGUF as imported (q/k rows un-permuted, tied head, the float of its Q4_1/Q8_0
    weights): transformers' LlamaForCausalLM on the same weights gives the same logits."""
    from compiler.frontend import SMOLLM2

    m = load_model(SMOLLM2)
    cfg = transformers.LlamaConfig(**{k: v for k, v in m.config.items() if k not in ("architectures", "model_type")})
    tm = transformers.LlamaForCausalLM(cfg).eval()
    state = {k: torch.from_numpy(v) for k, v in m.graph.consts.items()}
    missing, unexpected = tm.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}  # tied: the head is the embedding
    ids = m.tokenizer.encode("The capital of France is")
    with torch.no_grad():
        ref = tm(torch.tensor(ids)[None]).logits[0].numpy()
    ours, _ = CompiledModel(m.graph, "llama", m.tokenizer).prefill(list(ids))
    # 30 float32 blocks summed in different orders: 1e-4 of the largest logit (measured 9.1e-5 absolute, logits up to 27)
    assert np.abs(ours - ref).max() < TOL * np.abs(ref).max()
    assert m.tokenizer.decode([int(ref[-1].argmax())]).strip() == "Paris"
