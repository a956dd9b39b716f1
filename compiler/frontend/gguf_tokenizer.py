"""A GGUF file's vocabulary (`tokenizer.ggml.*` metadata) as a `tokenizers.Tokenizer`, so an artifact stores it
as tokenizer.json and reloads it without the GGUF.

- `gpt2`: byte-level BPE (tokens + merges) behind the pre-tokenizer `tokenizer.ggml.pre` names, with
  llama.cpp's regexes: smollm / starcoder-like (each digit alone, then the GPT-2 regex), llama-bpe (Llama 3;
  whole-vocabulary words skip the merges, as llama.cpp does), qwen2, and gpt2 / default.
- `llama`: SentencePiece BPE (tokens + scores): merges ranked by the merged piece's score (the order
  SentencePiece's greedy merging takes), byte-fallback <0xNN> tokens, the U+2581 space marker, a space prefix
  after the start and after every special token when add_space_prefix (llama.cpp's behaviour).
Control and user-defined tokens (token_type 3 / 4) are added tokens, never split by the pre-tokenizer.
"""

from __future__ import annotations

from compiler.errors import LowbitError
from compiler.frontend.tokenizer import END_TOKENS, HFTokenizer, dedup_ids
from compiler.frontend.validate import a_kind, is_int, is_real, show

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
GPT2_RE = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_RE = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2_RE = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
# tokenizer.ggml.pre -> pre-tokenizer family (llama.cpp groups the names the same way)
PRE = {
    **{k: "gpt2" for k in ("default", "gpt2", "gpt-2", "olmo", "jais")},
    **{k: "digits" for k in ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva")},
    **{k: "llama3" for k in ("llama-bpe", "llama3", "falcon3", "pixtral", "dbrx", "smaug-bpe")},
    **{k: "qwen2" for k in ("qwen2", "deepseek-r1-qwen", "megrez")},
}


def _pre_tokenizer(pre: str, where: str):
    from tokenizers import Regex, pre_tokenizers

    fam = PRE.get(pre)
    if fam is None:
        raise LowbitError(f"{where}: unsupported pre-tokenizer '{pre}' (tokenizer.ggml.pre)", f"lowbit reads {', '.join(sorted(PRE))}")
    if fam == "gpt2":
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if fam == "digits":
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    regex = LLAMA3_RE if fam == "llama3" else QWEN2_RE
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(regex), behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def _vocab(tokens: list[str]) -> dict[str, int]:
    v: dict[str, int] = {}
    for i, t in enumerate(tokens):
        v.setdefault(t, i)  # a duplicated text keeps its first id, as llama.cpp's text -> id map does
    return v


def _split_merge(m: str, where: str) -> tuple[str, str]:
    pos = m.find(" ", 1)  # llama.cpp's rule: the separator is the first space after the first character
    if pos < 0:
        raise LowbitError(f"{where}: malformed merge {m!r} in tokenizer.ggml.merges", "re-convert the model")
    return m[:pos], m[pos + 1 :]


def spm_merges(tokens: list[str], scores: list[float], types: list[int]) -> list[tuple[str, str]]:
    """Merges that make BPE follow SentencePiece's greedy rule (merge the adjacent pair whose joined piece
    scores highest): every split of a normal piece into two vocabulary pieces, ranked by the piece's score."""
    vocab = _vocab(tokens)
    merges = []
    for i, (piece, score) in enumerate(zip(tokens, scores)):
        if types[i] not in (NORMAL, USER_DEFINED) or len(piece) < 2:
            continue
        local = [(piece[:j], piece[j:]) for j in range(1, len(piece)) if piece[:j] in vocab and piece[j:] in vocab]
        local.sort(key=lambda lr: (vocab[lr[0]], vocab[lr[1]]))
        merges += [(score, i, lr) for lr in local]
    merges.sort(key=lambda m: (-m[0], m[1]))
    return [lr for _, _, lr in merges]


def _bpe(vocab: dict, merges: list, where: str, **kw):
    from tokenizers import models

    try:
        return models.BPE(vocab, merges, **kw)
    except Exception as e:  # noqa: BLE001 - tokenizers raises plain Exception for a merge outside the vocabulary
        raise LowbitError(f"{where}: the vocabulary is inconsistent ({e})", "re-convert the model") from None


def _typed(meta: dict, key: str, where: str, ok, want: str, default=None):
    """meta[key] (default when absent), which must pass `ok`; else one line naming the key."""
    v = meta.get(key)
    if v is None:
        return default
    if not ok(v):
        raise LowbitError(f"{where}: metadata key {key} is {show(v)} ({a_kind(v)}), expected {want}", "re-convert the model")
    return v


def _list_of(check):
    return lambda v: isinstance(v, list) and all(check(x) for x in v)


def _is_str(v) -> bool:
    return isinstance(v, str)


def _is_bool(v) -> bool:
    return isinstance(v, bool)


def build_tokenizer(meta: dict, where: str) -> HFTokenizer | None:
    """meta: the GGUF metadata (key -> decoded value). None when the file has no vocabulary. Every
    tokenizer.ggml.* value is checked for its type first."""
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, processors

    model = _typed(meta, "tokenizer.ggml.model", where, _is_str, "a string")
    if model is None:
        return None
    tokens = list(_typed(meta, "tokenizer.ggml.tokens", where, _list_of(_is_str), "a list of strings", []))
    if not tokens:
        raise LowbitError(f"{where}: tokenizer.ggml.tokens is missing or empty", "use a GGUF with its vocabulary")
    types = _typed(meta, "tokenizer.ggml.token_type", where, _list_of(is_int), "a list of integers", [NORMAL] * len(tokens))
    if len(types) != len(tokens):
        raise LowbitError(f"{where}: {len(types)} token types for {len(tokens)} tokens", "re-convert the model")
    vocab = _vocab(tokens)
    if model == "gpt2":
        merges = [_split_merge(m, where) for m in _typed(meta, "tokenizer.ggml.merges", where, _list_of(_is_str), "a list of strings", [])]
        pre = _typed(meta, "tokenizer.ggml.pre", where, _is_str, "a string") or "default"
        tok = Tokenizer(_bpe(vocab, merges, where, ignore_merges=PRE.get(pre) == "llama3"))
        tok.pre_tokenizer = _pre_tokenizer(pre, where)
        tok.decoder = decoders.ByteLevel()
        add_bos_default = False
    elif model == "llama":
        scores = [float(s) for s in _typed(meta, "tokenizer.ggml.scores", where, _list_of(is_real), "a list of numbers", [0.0] * len(tokens))]
        if len(scores) != len(tokens):
            raise LowbitError(f"{where}: {len(scores)} token scores for {len(tokens)} tokens", "re-convert the model")
        unk = next((tokens[i] for i, t in enumerate(types) if t == UNKNOWN), None)
        tok = Tokenizer(_bpe(vocab, spm_merges(tokens, scores, types), where, unk_token=unk, fuse_unk=True, byte_fallback=True))
        prefix = _typed(meta, "tokenizer.ggml.add_space_prefix", where, _is_bool, "true or false", True)
        steps = [normalizers.Prepend("▁")] if prefix else []
        tok.normalizer = normalizers.Sequence([*steps, normalizers.Replace(" ", "▁")])
        dec = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
        tok.decoder = decoders.Sequence([*dec, decoders.Strip(" ", 1, 0)] if prefix else dec)
        add_bos_default = True
    else:
        raise LowbitError(f"{where}: unsupported tokenizer model '{model}' (tokenizer.ggml.model)", "lowbit reads gpt2 (byte-level BPE) and llama (SentencePiece) vocabularies")
    special = [AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types) if ty in (CONTROL, UNKNOWN)]
    user = [AddedToken(t, special=False, normalized=False) for t, ty in zip(tokens, types) if ty == USER_DEFINED]
    tok.add_special_tokens(special)
    tok.add_tokens(user)
    specials = {t: vocab[t] for t, ty in zip(tokens, types) if ty in (CONTROL, UNKNOWN)}

    def tid(key):  # an id outside the vocabulary is ignored, as llama.cpp does
        v = _typed(meta, key, where, is_int, "a token id")
        return int(v) if v is not None and 0 <= v < len(tokens) else None

    bos, eos = tid("tokenizer.ggml.bos_token_id"), tid("tokenizer.ggml.eos_token_id")
    add_bos = _typed(meta, "tokenizer.ggml.add_bos_token", where, _is_bool, "true or false", add_bos_default) and bos is not None
    add_eos = _typed(meta, "tokenizer.ggml.add_eos_token", where, _is_bool, "true or false", False) and eos is not None
    if add_bos or add_eos:
        b, e = (f"{tokens[bos]} " if add_bos else ""), (f" {tokens[eos]}" if add_eos else "")
        pairs = [(tokens[i], i) for i in {*([bos] if add_bos else []), *([eos] if add_eos else [])}]
        try:
            tok.post_processor = processors.TemplateProcessing(single=f"{b}$A{e}", pair=f"{b}$A{e} {b}$B{e}", special_tokens=pairs)
        except Exception as e:  # noqa: BLE001 - tokenizers raises plain Exception for a token text it cannot template
            raise LowbitError(f"{where}: the BOS / EOS tokens {show(tokens[bos] if add_bos else tokens[eos])} cannot start or end a sequence ({e})", "re-convert the model") from None
    eog = [eos, tid("tokenizer.ggml.eot_token_id"), tid("tokenizer.ggml.eom_token_id"), *(specials[t] for t in END_TOKENS if t in specials)]
    template = _typed(meta, "tokenizer.chat_template", where, _is_str, "text (a Jinja template)")
    return HFTokenizer(
        tokenizer=tok,
        bos_id=bos,
        eos_ids=dedup_ids(eog),
        add_bos=add_bos,
        chat_template=template,
        special_tokens=specials,
        pad_id=tid("tokenizer.ggml.padding_token_id"),
    )
