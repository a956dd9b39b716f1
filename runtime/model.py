"""CompiledModel: an artifact (or an in-memory float model) plus the model-level loops that drive a backend:
causal-LM prefill and greedy decode with a KV cache, and sentence embeddings."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from compiler.artifact import Artifact, load_artifact
from compiler.errors import LowbitError
from compiler.ir import Graph

CACHE_ROUND = 256  # a preallocated KV cache's rows are a multiple of this (fewer shapes for backends to see)


@dataclass
class Generation:
    prompt: list[int]
    tokens: list[int]  # generated ids, without the stop token
    prompt_logits: np.ndarray  # [S, V] logits over the prompt positions ([1, V], the last one's, unless asked for)
    prefill_s: float
    decode_s: float  # time for the decode steps (one per generated token after the first, and the stop token's)
    stop_id: int | None = None  # the EOS / end-of-turn id generation stopped at; None: it ran to max_new_tokens
    seed: int | None = None  # the sampling seed (None: greedy)

    @property
    def decode_tokens_per_s(self) -> float:
        n = len(self.tokens) - (1 if self.stop_id is None else 0)
        return n / self.decode_s if n > 0 and self.decode_s > 0 else float("nan")


@dataclass
class CompiledModel:
    graph: Graph
    family: str
    tokenizer: object | None = None
    artifact: Artifact | None = None
    name: str = ""
    max_positions: int | None = None  # the model's context length, where its config states one
    kv_override: str | None = None  # a KV cache format given at run time (load(..., kv=)), other than the artifact's
    _backends: dict = field(default_factory=dict, repr=False)
    _backend_options: dict = field(default_factory=dict, repr=False)

    @property
    def causal(self) -> bool:
        return self.family == "llama"

    @property
    def path(self) -> Path | None:
        return self.artifact.path if self.artifact else None

    def backend(self, name: str):
        from runtime.backends import make_backend

        if name not in self._backends:
            self._backends[name] = make_backend(name, self, **self._backend_options.get(name, {}))
        return self._backends[name]

    def set_backend_options(self, name: str, **options):
        """Options for backend `name` (rtl:*: simulator), used when it is first made."""
        if name in self._backends:
            raise ValueError(f"backend {name} was already made")
        self._backend_options[name] = options

    # inputs ----------------------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        if self.tokenizer is None:
            raise LowbitError(f"model {self.name} has no tokenizer", "pass token ids with --ids 1,2,3")
        return self.tokenizer.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids) if self.tokenizer is not None else " ".join(map(str, ids))

    def check_ids(self, ids: list[int]):
        vocab = self.graph.meta["hparams"]["vocab"]
        bad = [i for i in ids if not 0 <= i < vocab]
        if bad:
            raise LowbitError(f"token ids {bad[:5]} are outside the vocabulary [0, {vocab})", "pass ids below the vocabulary size")
        if not ids:
            raise LowbitError("the input has no tokens", "pass a non-empty --prompt or --ids")
        limit = self.context_length
        if limit and len(ids) > limit:
            raise LowbitError(f"the input has {len(ids)} tokens, more than the model's {limit} positions", "shorten the input")

    @property
    def context_length(self) -> int | None:
        """Positions the model was trained for (its config's max_position_embeddings), or None when it states none."""
        return self.graph.meta.get("hparams", {}).get("max_positions") or self.max_positions

    def check_room(self, prompt_tokens: int, max_new_tokens: int):
        """Refuse a generation whose prompt and new tokens together pass the model's context length."""
        limit = self.context_length
        if limit and prompt_tokens + max_new_tokens > limit:
            raise LowbitError(
                f"the prompt's {prompt_tokens} tokens and --tokens {max_new_tokens} make {prompt_tokens + max_new_tokens}, more than the model's context of {limit} positions",
                f"pass --tokens {max(limit - prompt_tokens, 1)} or less" if prompt_tokens < limit else "shorten the prompt",
            )

    # execution -------------------------------------------------------------------------------------------
    def run(self, feeds: dict, backend: str = "ref") -> dict[str, np.ndarray]:
        return self.backend(backend).run(feeds)

    def _cache_feeds(self, capacity: int = 0) -> dict:
        from compiler.frontend.llama import empty_cache

        return empty_cache(self.graph, capacity)

    @property
    def kv_inplace(self) -> bool:
        """The graph keeps a preallocated KV cache written in place (compiler.frontend.llama's "inplace" form)."""
        return self.graph.meta.get("kv") == "inplace"

    def cache_capacity(self, tokens: int) -> int:
        """Rows of a preallocated KV cache for `tokens` positions: rounded up to a multiple of CACHE_ROUND, never
        past the model's context length."""
        rows = -(-tokens // CACHE_ROUND) * CACHE_ROUND
        limit = self.context_length
        return max(tokens, min(rows, limit)) if limit else rows

    def prefill(self, ids: list[int], backend: str = "ref", capacity: int | None = None, last: bool = False) -> tuple[np.ndarray, dict]:
        """Logits [S, V] for the prompt (last: [1, V], the last position's, with the LM head skipped for the others
        where the backend can) and the KV cache after it (in-place form: a cache of `capacity` rows, default the
        prompt's length, held as the backend keeps it)."""
        self.check_ids(ids)
        b = self.backend(backend)
        feeds = {"input_ids": np.asarray(ids, np.int64), "positions": np.arange(len(ids), dtype=np.int64)}
        if self.kv_inplace:
            return b.step(feeds, b.new_cache(self._cache_feeds(capacity or len(ids))), last)
        return b.step(feeds, self._cache_feeds(), last)

    def generate(self, ids: list[int], max_new_tokens: int, backend: str = "ref", sampling=None, stop_ids=None, on_token=None,
                 prompt_logits: bool = True) -> Generation:
        """Decoding with a KV cache: one prefill, then one single-token step per new token. sampling: a
        runtime.generate.Sampling (default greedy: argmax); stop_ids: the ids that end generation (default: the
        tokenizer's EOS and end-of-turn ids; () never stops early); on_token(id) is called for each generated id;
        prompt_logits=False keeps only the last prompt position's logits (the prefill skips the others' LM head)."""
        from runtime.generate import Sampler
        from runtime.generate import stop_ids as default_stop_ids

        if not self.causal:
            raise LowbitError(f"model {self.name} is an encoder ({self.family}); it does not generate", "drop --tokens")
        if max_new_tokens < 1:
            raise LowbitError(f"--tokens {max_new_tokens} generates nothing", "pass --tokens 1 or more")
        self.check_room(len(ids), max_new_tokens)
        pick = Sampler(sampling)
        stops = set(default_stop_ids(self.tokenizer) if stop_ids is None else stop_ids)
        b = self.backend(backend)  # made (libraries loaded, weights copied) before the clock starts
        t0 = time.perf_counter()
        logits, cache = self.prefill(ids, backend, self.cache_capacity(len(ids) + max_new_tokens) if self.kv_inplace else None, not prompt_logits)
        t1 = time.perf_counter()
        tokens: list[int] = []
        stop = None
        nxt = pick(logits[-1])
        pos = len(ids)
        while True:
            if nxt in stops:
                stop = nxt
                break
            tokens.append(nxt)
            if on_token is not None:
                on_token(nxt)
            if len(tokens) == max_new_tokens:
                break
            feeds = {"input_ids": np.array([nxt], np.int64), "positions": np.array([pos], np.int64)}
            step_logits, cache = b.step(feeds, cache)
            nxt = pick(step_logits[-1])
            pos += 1
        t2 = time.perf_counter()
        return Generation(list(ids), tokens, logits, t1 - t0, t2 - t1, stop, pick.seed)

    def embed(self, ids: list[int], backend: str = "ref") -> np.ndarray:
        """Sentence embedding [H] of one sequence (encoders)."""
        if self.causal:
            raise LowbitError(f"model {self.name} is a causal LM; it has no sentence embedding", "use generation instead")
        self.check_ids(ids)
        feeds = {"input_ids": np.asarray(ids, np.int64), "positions": np.arange(len(ids), dtype=np.int64)}
        return self.run(feeds, backend)[self.graph.meta["outputs"]["embedding"]]


def load(path: str | Path, kv: str | None = None) -> CompiledModel:
    """The artifact at path; kv (a --kv spec, compiler.kvformat) stores the KV cache in another format than the one
    it was compiled with: the graph's cache is rewritten (ref and the accelerators' host ops read it at once, tvm-cpu
    and mlir-cpu build their library for it once, runtime.backends.base.rebuilt_target)."""
    art = load_artifact(path)
    ctx = _context_length(art.graph, art.manifest["model"].get("config") or {})
    graph, override = art.graph, None
    if kv is not None:
        graph, override = kv_override(art, kv)
    return CompiledModel(graph, art.family, art.tokenizer(), art, art.manifest["model"]["name"], ctx, kv_override=override)


def kv_override(art: Artifact, kv: str) -> tuple[Graph, str | None]:
    """(the graph with its KV cache in format kv, the format), or (the artifact's graph, None) when it already is."""
    from compiler.passes.kv_quant import float_cache_graph, kv_quant_graph, parse_kv

    spec = parse_kv(kv)
    if str(spec) == str(parse_kv(art.graph.meta.get("kv_format", "f32"))):
        return art.graph, None
    if not art.graph.meta.get("causal") or art.graph.meta.get("kv") != "inplace":
        raise LowbitError(f"--kv {kv}: artifact {art.path} has no in-place KV cache to store otherwise", "drop --kv")
    return kv_quant_graph(float_cache_graph(art.graph), str(spec)), str(spec)


def float_model(art: Artifact) -> CompiledModel:
    """The float model an artifact was compiled from, rebuilt from its recorded source."""
    from compiler.frontend import reload_source

    source = art.manifest["model"].get("source")
    if not isinstance(source, dict):
        raise LowbitError(f"artifact {art.path} does not record the model it was compiled from", "recompile the artifact with `lowbit compile`")
    m = reload_source(source)
    return CompiledModel(m.graph, m.family, m.tokenizer, None, m.name + " (float)", _context_length(m.graph, m.config))


def _context_length(graph: Graph, config: dict) -> int | None:
    n = graph.meta.get("hparams", {}).get("max_positions") or config.get("max_position_embeddings")
    return int(n) if n else None
