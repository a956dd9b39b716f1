"""What generation needs beyond the model loop (runtime/model.py): picking the next token (greedy, or sampling
with temperature, top-k and top-p from a seeded numpy Generator), the stop tokens, chat prompts rendered from
the model's own Jinja chat template, and incremental decoding for printing tokens as they come."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from compiler.errors import LowbitError

# ---- next-token choice ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sampling:
    """temperature 0 is greedy (argmax, the default); otherwise Hugging Face's order: logits / temperature,
    keep the top_k largest (0: all), keep the smallest set of most likely tokens whose probability reaches
    top_p (1: all), renormalize and draw."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def check(self):
        if self.temperature < 0:
            raise LowbitError(f"--temperature {self.temperature} is negative", "use 0 (greedy) or a positive temperature such as 0.8")
        if self.top_k < 0:
            raise LowbitError(f"--top-k {self.top_k} is negative", "use 0 (no limit) or a positive count")
        if not 0 < self.top_p <= 1:
            raise LowbitError(f"--top-p {self.top_p} is outside (0, 1]", "use a probability such as 0.9")
        if self.greedy and (self.top_k or self.top_p < 1 or self.seed is not None):
            raise LowbitError("--top-k, --top-p and --seed apply to sampling, and greedy decoding is the default", "add --temperature (e.g. 0.8) to sample")


def top_p_keep(probs: np.ndarray, p: float) -> np.ndarray:
    """Indices of the smallest set of most likely tokens whose total probability is >= p, most likely first
    (ties: the lower id first). probs sums to 1."""
    order = np.argsort(-probs, kind="stable")
    cum = np.cumsum(probs[order])
    n = int(np.searchsorted(cum, p, side="left")) + 1  # first prefix whose mass reaches p
    return order[: min(n, probs.size)]


def filtered_probs(logits: np.ndarray, s: Sampling) -> np.ndarray:
    """The distribution a sampled token is drawn from (float64, zero outside the kept set)."""
    x = np.asarray(logits, np.float64) / s.temperature
    keep = np.arange(x.size)
    if s.top_k and s.top_k < x.size:
        keep = np.argsort(-x, kind="stable")[: s.top_k]
    z = x[keep] - x[keep].max()
    p = np.exp(z)
    p /= p.sum()
    if s.top_p < 1:
        sub = top_p_keep(p, s.top_p)
        keep, p = keep[sub], p[sub] / p[sub].sum()
    out = np.zeros(x.size)
    out[keep] = p
    return out


class Sampler:
    """Picks next tokens; a seeded sampler draws the same tokens on every run."""

    def __init__(self, sampling: Sampling | None = None):
        self.sampling = sampling or Sampling()
        self.sampling.check()
        self.seed = self.sampling.seed
        if not self.sampling.greedy and self.seed is None:  # draw one and report it, so the run can be repeated
            self.seed = int(np.random.SeedSequence().generate_state(1)[0])
        self.rng = np.random.default_rng(self.seed)

    def __call__(self, logits: np.ndarray) -> int:
        if self.sampling.greedy:
            return int(np.argmax(logits))
        p = filtered_probs(logits, self.sampling)
        return int(self.rng.choice(p.size, p=p))


def stop_ids(tokenizer) -> list[int]:
    """The ids generation stops at: the tokenizer's EOS and end-of-turn tokens (none without a tokenizer)."""
    return list(getattr(tokenizer, "eos_ids", None) or [])


# ---- chat prompts ------------------------------------------------------------------------------------------


def _raise_exception(message):
    from jinja2.exceptions import TemplateError

    raise TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # transformers' override: Jinja's own tojson escapes HTML characters
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def render_chat(template: str, messages: list[dict], add_generation_prompt: bool = True, **extra) -> str:
    """Render a Hugging Face / GGUF chat template the way transformers' apply_chat_template does: a sandboxed
    Jinja environment (templates come with downloaded models and are untrusted), trim_blocks and
    lstrip_blocks, loop controls, tojson / raise_exception / strftime_now; `extra` holds bos_token,
    eos_token and the like."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt, **extra)
    except jinja2.TemplateError as e:
        raise LowbitError(f"the model's chat template failed: {e}", "drop --chat and pass the prompt as plain text") from None


def _token_text(tokenizer, tid: int | None) -> str:
    for text, i in (getattr(tokenizer, "special_tokens", None) or {}).items():
        if i == tid:
            return text
    return ""


def token_name(tokenizer, tid: int) -> str:
    """How to show one id: its special-token text (decode may drop those), else its decoded text."""
    return _token_text(tokenizer, tid) or (tokenizer.decode([tid]) if tokenizer is not None else str(tid))


def chat_messages(prompt: str, system: str | None = None) -> list[dict]:
    return ([{"role": "system", "content": system}] if system is not None else []) + [{"role": "user", "content": prompt}]


def chat_ids(tokenizer, name: str, prompt: str, system: str | None = None) -> list[int]:
    """The token ids of a one-turn chat (system message, user prompt, the assistant's turn opened)."""
    template = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
    if not template:
        raise LowbitError(f"model {name} has no chat template", "drop --chat (and --system) and pass the prompt as plain text")
    bos, eos = getattr(tokenizer, "bos_id", None), stop_ids(tokenizer)
    text = render_chat(template, chat_messages(prompt, system), True, bos_token=_token_text(tokenizer, bos), eos_token=_token_text(tokenizer, eos[0] if eos else None))
    ids = tokenizer.encode(text)
    if bos is not None and len(ids) >= 2 and ids[0] == ids[1] == bos:  # the template wrote BOS and encode added one
        ids = ids[1:]
    return ids


# ---- printing tokens as they come --------------------------------------------------------------------------


class StreamDecoder:
    """Turns ids into printable text one id at a time. Byte-level tokens may split a multi-byte character;
    decoding all ids so far and holding back while the text ends in U+FFFD (an incomplete character, for at
    most 3 tokens: a UTF-8 character has at most 4 bytes) prints whole characters, and the pieces add up to
    the decoded text."""

    HOLD = 3

    def __init__(self, decode):
        self.decode = decode
        self.ids: list[int] = []
        self.printed = ""
        self.held = 0

    def push(self, tid: int) -> str:
        self.ids.append(int(tid))
        text = self.decode(self.ids)
        if text.endswith("\ufffd") and self.held < self.HOLD:
            self.held += 1
            return ""
        return self._emit(text)

    def flush(self) -> str:
        return self._emit(self.decode(self.ids)) if self.ids else ""

    def _emit(self, text: str) -> str:
        self.held = 0
        piece = text[len(self.printed):]
        self.printed = text
        return piece
