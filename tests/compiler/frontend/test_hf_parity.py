"""Parity with Hugging Face transformers (PyTorch), when both happen to be installed. They are not lowbit
dependencies; this check was run when the frontends were written (max abs error ~1e-6 on logits, including
Llama 3 RoPE scaling past the original context) and runs again wherever torch and transformers exist."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (optional parity check)")
transformers = pytest.importorskip("transformers", reason="transformers is not installed (optional parity check)")

from compiler.frontend import load_model  # noqa: E402
from compiler.reference import Interpreter  # noqa: E402
from runtime.model import CompiledModel  # noqa: E402
from tests.helpers import write_hf_dir  # noqa: E402


def test_llama_logits_match_transformers(tmp_path):
    d = tmp_path / "llama"
    write_hf_dir(d, "llama-tiny")
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(rope_theta=500000.0, rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
    (d / "config.json").write_text(json.dumps(cfg))
    ids = np.random.default_rng(0).integers(3, 500, 200)
    tm = transformers.AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        ref = tm(torch.tensor(ids)[None]).logits[0].numpy()
    m = load_model(str(d))
    logits, _ = CompiledModel(m.graph, "llama", m.tokenizer).prefill(list(ids))
    assert np.abs(logits - ref).max() < 1e-4


def test_bert_hidden_states_match_transformers(tmp_path):
    d = tmp_path / "bert"
    write_hf_dir(d, "bert-tiny")
    ids = np.array([1, *range(10, 50), 2])
    bm = transformers.AutoModel.from_pretrained(d).eval()
    with torch.no_grad():
        ref = bm(torch.tensor(ids)[None]).last_hidden_state[0].numpy()
    m = load_model(str(d))
    out = Interpreter(m.graph).run({"input_ids": ids, "positions": np.arange(len(ids))})
    assert np.abs(out[m.graph.outputs[0]] - ref).max() < 1e-4
