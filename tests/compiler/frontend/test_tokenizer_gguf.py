"""Tokenizers from GGUF metadata and Hugging Face folders: ids equal an independent implementation of
llama.cpp's algorithms (tests/compiler/frontend/gguf_fixtures.py) for byte-level BPE behind each pre-tokenizer
and for SentencePiece; decode(encode(s)) == s; control tokens are never split; BOS / EOS / end-of-turn ids,
add_bos and the chat template survive the artifact manifest and tokenizer.json."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.errors import LowbitError
from compiler.frontend.gguf_tokenizer import build_tokenizer
from compiler.frontend.tokenizer import ByteTokenizer, HFTokenizer, find_tokenizer, tokenizer_from_json
from tests.compiler.frontend.gguf_fixtures import CHAT_TEMPLATE, SPECIALS, gpt2_encode, gpt2_vocab, spm_encode, spm_vocab

PIECES = ["the", " the", "hello", " hell", " is", "12", "2024", " 7", "  ", "\n", "\n\n", " \n ", "'s", "'LL", "é", "🙂", "中文", "ß",
          "<|im_start|>", "<|im_end|>", "tHe", "!?", " ...", "\t", "x"]
TEXT = st.lists(st.sampled_from(PIECES) | st.text(alphabet="ab hel12\n'é🙂.", max_size=4), max_size=10).map("".join)


def gguf_meta(v: dict, **extra) -> dict:
    m = {"tokenizer.ggml.model": v["model"], "tokenizer.ggml.tokens": v["tokens"], "tokenizer.ggml.token_type": v["token_type"],
         "tokenizer.ggml.bos_token_id": v["bos"], "tokenizer.ggml.eos_token_id": v["eos"]}
    if "merges" in v:
        m["tokenizer.ggml.merges"] = v["merges"]
    if "pad" in v:
        m["tokenizer.ggml.padding_token_id"] = v["pad"]
    if "scores" in v:
        m["tokenizer.ggml.scores"] = v["scores"]
    return {**m, **extra}


@pytest.fixture(scope="module")
def bpe():
    v = gpt2_vocab()
    return {pre: build_tokenizer(gguf_meta(v, **{"tokenizer.ggml.pre": pre, "tokenizer.chat_template": CHAT_TEMPLATE}), "t.gguf") for pre in ("smollm", "gpt2", "llama-bpe", "qwen2")}


@pytest.fixture(scope="module")
def spm():
    return build_tokenizer(gguf_meta(spm_vocab()), "s.gguf")


@settings(max_examples=40, deadline=None)
@given(TEXT, st.sampled_from(["smollm", "gpt2", "llama-bpe", "qwen2"]))
def test_byte_level_bpe_matches_llama_cpp_algorithm(bpe, text, pre):
    v = gpt2_vocab()
    tok = bpe[pre]
    ids = tok.encode(text)
    assert ids == gpt2_encode(text, v["tokens"], v["merges"], list(SPECIALS), pre)
    assert tok.decode(ids, skip_special=False) == text


def test_pre_tokenizers_differ_where_llama_cpp_does(bpe):
    v = gpt2_vocab()
    digits = {pre: [v["tokens"][i] for i in bpe[pre].encode(" 2024")] for pre in bpe}
    assert digits["smollm"] == ["Ġ", "2", "0", "2", "4"]  # each digit alone
    assert digits["qwen2"] == ["Ġ", "2", "0", "2", "4"]
    assert digits["gpt2"] == ["Ġ2", "0", "2", "4"]  # " 2024" is one pre-token; only the merge "Ġ 2" applies
    assert digits["llama-bpe"] == ["Ġ", "2", "0", "2", "4"]  # groups of three digits, no leading space
    assert [v["tokens"][i] for i in bpe["llama-bpe"].encode("2024")][:3] == ["2", "0", "2"]


def test_special_tokens_and_attributes(bpe):
    tok = bpe["smollm"]
    assert tok.encode("<|im_start|>user<|im_end|>")[0] == 1 and tok.encode("<|im_start|>user<|im_end|>")[-1] == 2
    assert tok.encode("<|im_start") != [1]  # a prefix of a control token is text
    assert (tok.bos_id, tok.eos_ids, tok.pad_id, tok.add_bos) == (1, [2, 0], 2, False)  # <|endoftext|> also ends generation
    assert tok.special_tokens == {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2}
    assert tok.chat_template == CHAT_TEMPLATE
    assert tok.decode(tok.encode("<|im_start|>hi")) == "hi"  # special tokens are skipped by default


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(["the", " the", "hello", "hell", " is", "on", "a", " ", "  ", "x", "é", "🙂", "<s>", "\n", "ab", "abc", "bc"]), max_size=10).map("".join))
def test_sentencepiece_matches_llama_cpp_algorithm(spm, text):
    v = spm_vocab()
    body = spm.encode(text)
    assert body[0] == 1  # add_bos defaults to true for SentencePiece vocabularies
    assert body[1:] == spm_encode(text, v["tokens"], v["scores"], ["<unk>", "<s>", "</s>"])
    if "<s>" not in text:  # llama.cpp puts a space prefix after every special token: only plain text round-trips
        assert spm.decode(body) == text


def test_sentencepiece_details(spm):
    v = spm_vocab()
    names = [v["tokens"][i] for i in spm.encode("the hello", add_special=False)]
    assert names == ["▁the", "▁hell", "o"]
    assert [v["tokens"][i] for i in spm.encode("é", add_special=False)] == ["▁", "<0xC3>", "<0xA9>"]  # byte fallback
    no_prefix = build_tokenizer(gguf_meta(v, **{"tokenizer.ggml.add_space_prefix": False, "tokenizer.ggml.add_bos_token": False}), "s.gguf")
    assert [v["tokens"][i] for i in no_prefix.encode("the")] == ["t", "he"]
    assert [v["tokens"][i] for i in no_prefix.encode("abc")] == ["ab", "c"]  # "ab" outscores "bc"
    assert no_prefix.decode(no_prefix.encode(" the")) == " the"
    assert (spm.bos_id, spm.eos_ids, spm.add_bos) == (1, [2], True)


def test_round_trip_through_json(tmp_path, bpe):
    tok = bpe["llama-bpe"]
    for name, data in tok.artifact_files().items():
        (tmp_path / name).write_bytes(data)
    d = json.loads(json.dumps(tok.to_json()))
    back = tokenizer_from_json(d, tmp_path)
    for attr in ("bos_id", "eos_ids", "pad_id", "add_bos", "chat_template", "special_tokens"):
        assert getattr(back, attr) == getattr(tok, attr), attr
    text = "<|im_start|>user\nhello 2024 🙂<|im_end|>"
    assert back.encode(text) == tok.encode(text)
    b = tokenizer_from_json(ByteTokenizer(add_bos=False).to_json(), tmp_path)
    assert (b.add_bos, b.bos_id, b.eos_ids, b.chat_template) == (False, 1, [], None)


def test_add_bos_post_processor():
    v = gpt2_vocab()
    tok = build_tokenizer(gguf_meta(v, **{"tokenizer.ggml.add_bos_token": True}), "t.gguf")
    assert tok.add_bos and tok.encode("hi")[0] == 1 and tok.encode("hi", add_special=False)[0] != 1


def test_bad_vocabularies_are_one_line():
    v = gpt2_vocab()
    with pytest.raises(LowbitError, match=r"t\.gguf: unsupported pre-tokenizer 'mystery'"):
        build_tokenizer(gguf_meta(v, **{"tokenizer.ggml.pre": "mystery"}), "t.gguf")
    with pytest.raises(LowbitError, match="unsupported tokenizer model 'rwkv'"):
        build_tokenizer(gguf_meta(v, **{"tokenizer.ggml.model": "rwkv"}), "t.gguf")
    with pytest.raises(LowbitError, match="malformed merge"):
        build_tokenizer(gguf_meta(v, **{"tokenizer.ggml.merges": ["nospace"]}), "t.gguf")
    with pytest.raises(LowbitError, match=r"vocabulary is inconsistent .*out of vocabulary"):
        build_tokenizer(gguf_meta(v, **{"tokenizer.ggml.merges": ["Ġ zzz"]}), "t.gguf")
    assert build_tokenizer({}, "t.gguf") is None


def test_hf_folder_attributes(tmp_path, bpe):
    (tmp_path / "tokenizer.json").write_text(bpe["smollm"].to_str())
    (tmp_path / "config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 0, "pad_token_id": 2}))
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 0]}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": {"content": "<|im_end|>"}, "chat_template": [{"name": "default", "template": "T"}]}))
    tok = find_tokenizer(tmp_path)
    assert (tok.bos_id, tok.eos_ids, tok.pad_id, tok.add_bos, tok.chat_template) == (1, [2, 0], 2, False, "T")
    assert tok.special_tokens == {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": True, "bos_token": "<|im_start|>"}))
    (tmp_path / "chat_template.jinja").write_text("J")
    (tmp_path / "generation_config.json").unlink()
    tok = find_tokenizer(tmp_path)
    assert tok.chat_template == "J" and tok.add_bos and tok.encode("hi")[0] == 1
    assert tok.eos_ids == [0, 2]  # config.json's EOS first, then the end-of-turn tokens of the vocabulary
    assert "tokenizer.json" in tok.artifact_files() and isinstance(tok.artifact_files()["tokenizer.json"], bytes)  # BOS rule added: stored from memory
    assert isinstance(HFTokenizer(tmp_path / "tokenizer.json").artifact_files()["tokenizer.json"], type(tmp_path))
