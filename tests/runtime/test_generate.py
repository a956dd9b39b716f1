"""Generation: greedy unchanged, stop tokens, seeded sampling, top-k / top-p, chat templates, streaming."""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.errors import LowbitError
from compiler.frontend.tokenizer import ByteTokenizer
from runtime.generate import Sampler, Sampling, StreamDecoder, chat_ids, filtered_probs, render_chat, top_p_keep
from runtime.model import CompiledModel
from tests.helpers import run_cli

PROMPT = [1, 2, 3]  # its greedy continuation varies (many prompts give one repeated token on random weights)

# SmolLM2-135M-Instruct's template as its GGUF stores it (tokenizer.chat_template)
CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful AI "
    "assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# Meta-Llama-3-8B-Instruct's template
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
    "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def tiny(llama_tiny):
    return CompiledModel(llama_tiny.graph, llama_tiny.family, llama_tiny.tokenizer, None, "llama-tiny")


def old_greedy(m, ids, n):
    """The greedy loop as it was before sampling and stop tokens: argmax after prefill, then n - 1 steps."""
    logits, cache = m.prefill(ids, capacity=len(ids) + n)
    toks, pos = [int(np.argmax(logits[-1]))], len(ids)
    for _ in range(n - 1):
        out = m.run({"input_ids": np.array([toks[-1]], np.int64), "positions": np.array([pos], np.int64), **cache})
        cache = {k.replace("present_", "past_"): v for k, v in out.items() if k.startswith("present_")}
        toks.append(int(np.argmax(out["logits"][-1])))
        pos += 1
    return toks


@pytest.fixture(scope="module")
def greedy(tiny):
    return old_greedy(tiny, PROMPT, 8)


def test_greedy_default_is_unchanged(tiny, greedy):
    g = tiny.generate(PROMPT, 8, stop_ids=())
    assert g.tokens == greedy and g.stop_id is None and g.seed is None


def test_stops_at_eos_and_not_after(tiny, greedy):
    first = next(i for i, t in enumerate(greedy) if i >= 2 and greedy.index(t) == i)  # a token first generated at step >= 2
    eos = greedy[first]
    g = tiny.generate(PROMPT, 8, stop_ids=[eos])
    assert g.tokens == greedy[:first] and g.stop_id == eos

    tok = ByteTokenizer()
    tok.eos_ids = [eos]  # a tokenizer whose EOS is a token the greedy path reaches
    m = CompiledModel(tiny.graph, tiny.family, tok, None, "llama-tiny")
    seen = []
    g = m.generate(PROMPT, 8, on_token=seen.append)
    assert g.tokens == greedy[:first] == seen and g.stop_id == eos
    assert m.generate(PROMPT, 8, stop_ids=()).tokens == greedy  # stop_ids=() (--ignore-eos) runs to the end


def test_top_k_1_is_greedy(tiny, greedy):
    g = tiny.generate(PROMPT, 8, sampling=Sampling(temperature=0.7, top_k=1, seed=5), stop_ids=())
    assert g.tokens == greedy and g.seed == 5


def test_seeded_sampling_repeats_and_seeds_differ(tiny):
    def draw(seed):
        return tiny.generate(PROMPT, 8, sampling=Sampling(temperature=1.0, seed=seed), stop_ids=()).tokens

    a = draw(1)
    assert draw(1) == a
    assert draw(2) != a  # 8 draws from a near-uniform 512-way distribution: a collision is ~512^-8, and seeds are fixed


def test_sampler_unseeded_reports_its_seed():
    s = Sampler(Sampling(temperature=1.0))
    logits = np.random.default_rng(0).normal(size=64)
    a = [s(logits) for _ in range(20)]
    again = Sampler(Sampling(temperature=1.0, seed=s.seed))
    assert [again(logits) for _ in range(20)] == a


def test_top_k_draws_only_the_top_k():
    logits = np.random.default_rng(1).normal(size=100)
    top3 = set(np.argsort(-logits)[:3].tolist())
    s = Sampler(Sampling(temperature=2.0, top_k=3, seed=0))
    draws = {s(logits) for _ in range(300)}
    assert draws == top3  # 300 draws at T=2 reach each of the 3 (each has probability > 0.2)


@settings(max_examples=30)
@given(st.lists(st.floats(-20, 20, allow_nan=False), min_size=1, max_size=40), st.floats(0.01, 1.0))
def test_top_p_keeps_the_smallest_prefix_reaching_p(logits, p):
    x = np.asarray(logits)
    probs = np.exp(x - x.max())
    probs /= probs.sum()
    keep = top_p_keep(probs, p)
    mass = np.cumsum(probs[keep])
    assert np.all(np.diff(probs[keep]) <= 0)  # most likely first
    rest = np.setdiff1d(np.arange(x.size), keep)
    assert rest.size == 0 or probs[rest].max() <= probs[keep].min()
    # the smallest prefix with mass >= p: the kept set reaches p (or is everything), one fewer does not
    assert mass[-1] >= p or keep.size == x.size
    assert keep.size == 1 or mass[-2] < p
    f = filtered_probs(x, Sampling(temperature=1.0, top_p=p))
    assert set(np.flatnonzero(f).tolist()) <= set(keep.tolist())
    assert abs(f.sum() - 1) < 1e-12
    assert np.allclose(f[keep], probs[keep] / probs[keep].sum(), rtol=1e-12, atol=1e-300)


def test_bad_sampling_options():
    for s in (Sampling(top_k=3), Sampling(top_p=0.5), Sampling(seed=1), Sampling(temperature=-1), Sampling(1.0, top_p=0.0)):
        with pytest.raises(LowbitError):
            Sampler(s)


# ---- chat templates


def test_chatml_template():
    user = [{"role": "user", "content": "What is 2+2?"}]
    assert render_chat(CHATML, user) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    )
    sys_user = [{"role": "system", "content": "Answer in one word."}, *user]
    assert render_chat(CHATML, sys_user) == "<|im_start|>system\nAnswer in one word.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    assert render_chat(CHATML, sys_user, add_generation_prompt=False).endswith("2+2?<|im_end|>\n")


def test_llama3_template():
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "  Hi there \n"}]
    assert render_chat(LLAMA3, msgs, bos_token="<|begin_of_text|>") == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_template_whitespace_control_and_sandbox():
    # trim_blocks + lstrip_blocks, as transformers renders: block tags on their own lines leave no blank lines
    t = "{% for m in messages %}\n    {% if m.role == 'user' %}\n{{ m.content }}\n    {% endif %}\n{% endfor %}"
    assert render_chat(t, [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]) == "a\nb\n"
    with pytest.raises(LowbitError, match="chat template"):
        render_chat("{{ raise_exception('no system role') }}", [])
    with pytest.raises(LowbitError):  # the sandbox refuses attribute access to Python internals
        render_chat("{{ messages.__class__.__mro__ }}", [])


def test_chat_ids_and_refusal():
    class ChatBytes(ByteTokenizer):  # adds BOS and reads a leading "<s>" as BOS, as real tokenizers do
        chat_template = LLAMA3
        bos_id = 1

        def encode(self, text):
            lead = [1] if text.startswith("<s>") else []
            return [1, *lead, *super().encode(text[3:] if lead else text)[1:]]

    tok = ChatBytes(add_bos=True)
    tok.special_tokens = {"<s>": 1}
    body = "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    assert tok.encode("<s>" + body)[:2] == [1, 1]
    assert chat_ids(tok, "m", "hi") == tok.encode(body)  # BOS once, although the template writes one and encode adds one
    with pytest.raises(LowbitError, match="has no chat template"):
        chat_ids(ByteTokenizer(), "llama-tiny", "hi")


# ---- streaming


def test_stream_decoder_keeps_multibyte_characters_whole():
    tok = ByteTokenizer(add_bos=False)
    text = "naïve café ✓ 😀 done"
    ids = tok.encode(text)
    sd = StreamDecoder(tok.decode)
    pieces = [sd.push(i) for i in ids]
    pieces.append(sd.flush())
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)
    assert "😀" in pieces  # the 4-byte character came out in one piece


def test_stream_decoder_sum_equals_text_on_invalid_bytes():
    tok = ByteTokenizer(add_bos=False)
    ids = list(np.random.default_rng(3).integers(3, 259, 60))
    sd = StreamDecoder(tok.decode)
    out = "".join(sd.push(i) for i in ids) + sd.flush()
    assert out == tok.decode(ids)


@pytest.fixture(scope="module")
def tiny_artifact(tmp_path_factory):
    from compiler.compile import compile_model

    out = tmp_path_factory.mktemp("gen") / "w8"
    compile_model("llama-tiny", out, "w8g64", progress=False)
    return out


def test_run_streams_the_generated_text(tiny_artifact, capsys):
    code, so, se = run_cli(["run", tiny_artifact, "--tokens", "6", "--temperature", "0.8", "--seed", "4", "--ignore-eos"], capsys)
    assert code == 0, se
    import ast

    text = ast.literal_eval(re.search(r"^generated text: (.*)$", so, re.MULTILINE).group(1))
    streamed = so.split("\n", 2)[2].split("\ngenerated ids:")[0]  # after the model and prompt lines
    assert streamed == text
    assert "sampled with seed 4" in so
    ids = re.search(r"generated ids: \[([0-9, ]*)\]", so).group(1)
    code2, so2, _ = run_cli(["run", tiny_artifact, "--tokens", "6", "--temperature", "0.8", "--seed", "4", "--ignore-eos", "--no-stream"], capsys)
    assert code2 == 0 and re.search(r"generated ids: \[([0-9, ]*)\]", so2).group(1) == ids


@pytest.mark.parametrize(
    "args,msg",
    [
        (["--chat"], "has no chat template"),
        (["--system", "x"], "--system applies to --chat"),
        (["--top-k", "5"], "apply to sampling"),
        (["--temperature", "1", "--top-p", "1.5"], "outside (0, 1]"),
    ],
)
def test_run_option_errors(tiny_artifact, capsys, args, msg):
    code, _, se = run_cli(["run", tiny_artifact, "--tokens", "2", *args], capsys)
    assert code == 2 and msg in se and len(se.strip().splitlines()) == 1
