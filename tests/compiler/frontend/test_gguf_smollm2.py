"""The packaged SmolLM2-135M-Instruct GGUF (preset smollm2-135m): ref logits equal an independent float64
forward of the file, greedy decoding says Paris, its tokenizer equals llama.cpp's algorithm on the real
vocabulary, and its special tokens are where the model card puts them. One load per module (float graph,
reference interpreter; nothing is compiled)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.frontend import load_model, smollm2_path
from compiler.frontend.llama import empty_cache
from compiler.reference import Interpreter
from tests.compiler.frontend.gguf_fixtures import byte_chars, gguf_forward_f64, gguf_layout, gpt2_encode

pytestmark = pytest.mark.slow

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def model():
    return load_model("smollm2-135m")


@pytest.fixture(scope="module")
def layout():
    return gguf_layout(smollm2_path())


def test_model_and_special_tokens(model):
    assert model.source == {"kind": "package", "name": "smollm2-135m"}
    c = model.config
    assert (c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"], c["num_key_value_heads"], c["vocab_size"]) == (576, 30, 9, 3, 49152)
    assert c["tie_word_embeddings"] and c["rope_theta"] == 100000.0 and c["rope_scaling"] is None
    assert set(model.prequant_types.values()) == {"Q4_1", "Q8_0"} and len(model.prequant) == 211  # 210 linears + the embedding
    tok = model.tokenizer
    assert (tok.bos_id, tok.eos_ids, tok.pad_id, tok.add_bos) == (1, [2, 0], 2, False)
    assert {k: tok.special_tokens[k] for k in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")} == {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2}
    assert len(tok.special_tokens) == 17 and "<|im_start|>" in tok.chat_template


def test_ref_logits_match_float64_forward_and_greedy_says_paris(model, layout):
    tok = model.tokenizer
    ids = tok.encode(PROMPT)
    meta, tensors = layout
    want = gguf_forward_f64(meta, tensors, ids)
    it = Interpreter(model.graph)
    g = model.graph
    feeds = {"input_ids": np.asarray(ids, np.int64), "positions": np.arange(len(ids)), **empty_cache(g, len(ids) + 8)}
    out = it.run(feeds)
    got = out[g.outputs[0]]
    # float32 reference vs float64 over 30 layers: measured 3.7e-6 of the largest logit; 1e-4 is the contract's float bound
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    assert (got.argmax(-1) == want.argmax(-1)).all()
    gen = []
    nxt = int(got[-1].argmax())
    for _ in range(8):  # greedy with the KV cache
        gen.append(nxt)
        pos = len(ids) + len(gen) - 1
        feeds = {"input_ids": np.asarray([nxt], np.int64), "positions": np.asarray([pos])}
        feeds.update({k: out[k.replace("past_", "present_")] for k in g.inputs if k.startswith("past_")})
        out = it.run(feeds)
        nxt = int(out[g.outputs[0]][-1].argmax())
    assert "Paris" in tok.decode(gen)


KNOWN = {
    # ids checked against the independent BPE below (llama.cpp's smollm pre-tokenizer on the file's merges)
    PROMPT: [504, 3575, 282, 4649, 314],
    "<|im_start|>user\nHi 12345<|im_end|>": [1, 4093, 198, 26843, 216, 33, 34, 35, 36, 37, 2],
    "  two  spaces, café 🙂": [216, 827, 216, 5600, 28, 37366, 47526],
    "x = 3.14159\n\n\tend": [104, 446, 216, 35, 30, 33, 36, 33, 37, 41, 1116, 197, 486],
}


def test_known_ids_and_llama_cpp_algorithm(model, layout):
    meta = layout[0]
    tokens, merges = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.merges"]
    specials = list(model.tokenizer.special_tokens)
    vocab, bc = set(tokens), byte_chars()
    for text, ids in KNOWN.items():
        assert model.tokenizer.encode(text) == ids
        assert gpt2_encode(text, tokens, merges, specials, "smollm") == ids

    @settings(max_examples=25, deadline=None)
    @given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=24) | st.sampled_from(["  two  spaces", "x\n\n y", "année 1999 🙂", "<|im_end|>ok"]))
    def check(text):
        ids = model.tokenizer.encode(text)
        assert ids == gpt2_encode(text, tokens, merges, specials, "smollm")
        if all(bc[b] in vocab for b in text.encode("utf-8")):  # the vocabulary lacks 21 byte tokens (0x04, 0xF1, ...)
            assert model.tokenizer.decode(ids, skip_special=False) == text

    check()
