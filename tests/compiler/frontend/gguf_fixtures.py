"""Small synthetic llama-architecture GGUF files for tests, written with gguf.GGUFWriter.

`write_llama_gguf(path, ...)` writes a model whose tensors are stored in the GGUF types asked for and returns
the float32 weights the file encodes, under Hugging Face names and in Hugging Face layout (q/k rows in
rotate-half order): exactly what `compiler.frontend.load_model(path)` must put into the graph's consts.
`gguf_layout(path)` reads the file back raw (GGUF names, GGUF row order, gguf's own dequantize) and
`gguf_forward_f64` runs it in float64 for tests that check the import independently of compiler/frontend;
`gpt2_encode` / `spm_encode` are independent implementations of llama.cpp's tokenizers.

Types: anything gguf.quants can quantize (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, TQ1_0, TQ2_0, ...),
Q4_K through a real encoder below, and the other K-quants / IQ types as random blocks with sane fp16 scales
(their values are whatever the blocks decode to). K-quants need row lengths that are multiples of 256.
"""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

import gguf
import numpy as np
import regex
from gguf import GGMLQuantizationType as QT
from gguf.quants import _type_traits

LINEARS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
# the packaged SmolLM2 file's mix: a Q8_0 embedding (tied head) and Q4_1 block linears
DEFAULT_TYPES = {"token_embd": "Q8_0", "output": "Q8_0", **{r: "Q4_1" for r in LINEARS}}

_HF = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}

# byte offsets of the fp16 scale fields inside one block, for types written as random blocks
_FP16_FIELDS = {"Q2_K": (80, 82), "Q3_K": (108,), "Q5_K": (0, 2), "Q6_K": (208,), "Q4_K": (0, 2)}

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# merges of the synthetic byte-level BPE vocabulary, in rank order (each part exists before it is merged)
GPT2_MERGES = (
    "Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "o n", "Ġ s", "r e", "a t", "Ġ w", "o r", "e n", "Ġ c", "i s",
    "Ġ o", "in g", "Ġ f", "Ġ p", "a n", "Ġ b", "e s", "Ġo f", "Ġa n", "an d", "Ġ and", "Ġ 1", "1 2", "Ġ Ċ", "Ċ Ċ",
    "Ġ Ġ", "ĠĠ ĠĠ", "l l", "Ġ h", "Ġh e", "Ġhe ll", "o w", "Ġ 2", "e d", "Ġ is",
)
SPM_PIECES = ("▁t", "he", "▁the", "in", "▁a", "er", "on", "▁s", "re", "at", "▁w", "or", "en", "▁c", "is", "ll", "▁he", "▁hell", "ow", "▁is", "ab", "bc")


def byte_chars() -> list[str]:
    """GPT-2's bytes_to_unicode table: the printable stand-in for each byte 0..255, in byte order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, cs))
    return [chr(table[b]) for b in range(256)]


def gpt2_vocab() -> dict:
    """A byte-level BPE vocabulary: the three ChatML control tokens (ids 0-2), the 256 byte characters, one
    token per merge. Keys are the GGUF tokenizer fields."""
    tokens = [*SPECIALS, *byte_chars()]
    for m in GPT2_MERGES:
        a, b = m.split(" ")
        assert a in tokens and b in tokens, m
        tokens.append(a + b)
    types = [3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS))
    return {"model": "gpt2", "tokens": tokens, "token_type": types, "merges": list(GPT2_MERGES), "bos": 1, "eos": 2, "pad": 2, "pre": "smollm"}


def spm_vocab() -> dict:
    """A SentencePiece (llama) vocabulary: <unk>, <s>, </s>, 256 byte-fallback tokens, the space marker and
    lowercase letters, then merged pieces with decreasing scores (earlier pieces merge first)."""
    tokens = ["<unk>", "<s>", "</s>", *[f"<0x{b:02X}>" for b in range(256)], "▁", *"abcdefghijklmnopqrstuvwxyz", *SPM_PIECES]
    types = [2, 3, 3] + [6] * 256 + [1] * (1 + 26 + len(SPM_PIECES))
    scores = [0.0] * 259 + [-1000.0 - i for i in range(27)] + [-1.0 - i for i in range(len(SPM_PIECES))]
    return {"model": "llama", "tokens": tokens, "token_type": types, "scores": scores, "bos": 1, "eos": 2}


def _add_tokenizer(w: gguf.GGUFWriter, tok: dict, vocab: int, chat_template: str | None) -> None:
    tokens, types = list(tok["tokens"]), list(tok["token_type"])
    scores = list(tok.get("scores", []))
    for i in range(len(tokens), vocab):  # pad to the embedding rows, like a model's reserved tokens
        tokens.append(f"<|reserved_{i}|>")
        types.append(3)
        scores.append(0.0)
    w.add_tokenizer_model(tok["model"])
    if "pre" in tok:
        w.add_tokenizer_pre(tok["pre"])
    w.add_token_list(tokens)
    w.add_token_types(types)
    if tok["model"] == "llama":
        w.add_token_scores(scores)
        w.add_add_space_prefix(tok.get("add_space_prefix", True))
        w.add_add_bos_token(tok.get("add_bos", True))
    else:
        w.add_token_merges(tok["merges"])
        w.add_add_bos_token(tok.get("add_bos", False))
    w.add_bos_token_id(tok["bos"])
    w.add_eos_token_id(tok["eos"])
    if "pad" in tok:
        w.add_pad_token_id(tok["pad"])
    if chat_template:
        w.add_chat_template(chat_template)


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's converter: HF q/k rows -> GGUF rows (interleaved-pair RoPE order)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def encode_q4_k(x: np.ndarray) -> np.ndarray:
    """float32 [R, K] (K % 256 == 0) -> Q4_K blocks uint8 [R, K/256*144]: per 32-weight sub-block a 6-bit scale
    and minimum under one fp16 d / dmin per super-block, nibbles in gguf's order."""
    r, _k = x.shape
    b = x.reshape(-1, 8, 32).astype(np.float32)
    lo = np.minimum(b.min(-1), 0.0)
    scale = (b.max(-1) - lo) / 15.0
    minv = -lo
    d = (scale.max(-1) / 63.0).astype(np.float16)
    dmin = (minv.max(-1) / 63.0).astype(np.float16)
    df, dmf = d.astype(np.float32)[:, None], dmin.astype(np.float32)[:, None]
    sc = np.clip(np.rint(np.divide(scale, df, out=np.zeros_like(scale), where=df > 0)), 0, 63).astype(np.uint8)
    mq = np.clip(np.rint(np.divide(minv, dmf, out=np.zeros_like(minv), where=dmf > 0)), 0, 63).astype(np.uint8)
    step = (df * sc)[..., None]
    q = np.clip(np.rint(np.divide(b + (dmf * mq)[..., None], step, out=np.zeros_like(b), where=step > 0)), 0, 15).astype(np.uint8)
    packed = np.empty((b.shape[0], 12), np.uint8)
    packed[:, 0:4] = (sc[:, :4] & 0x3F) | ((sc[:, 4:] >> 4) << 6)
    packed[:, 4:8] = (mq[:, :4] & 0x3F) | ((mq[:, 4:] >> 4) << 6)
    packed[:, 8:12] = (sc[:, 4:] & 0x0F) | ((mq[:, 4:] & 0x0F) << 4)
    q = q.reshape(-1, 4, 2, 32)  # chunk c holds sub-blocks 2c (low nibbles) and 2c+1 (high nibbles)
    qs = (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(-1, 128)
    blocks = np.concatenate([d[:, None].view(np.uint8), dmin[:, None].view(np.uint8), packed, qs], axis=1)
    return blocks.reshape(r, -1)


def _random_blocks(rows: int, k: int, qt: QT, rng: np.random.Generator) -> np.ndarray:
    block, size = gguf.GGML_QUANT_SIZES[qt]
    if k % block:
        raise ValueError(f"row length {k} is not a multiple of {qt.name}'s block of {block}")
    n = rows * (k // block)
    raw = rng.integers(0, 256, (n, size), dtype=np.uint8)
    for off in _FP16_FIELDS.get(qt.name, (0,)):
        raw[:, off : off + 2] = rng.uniform(1e-4, 3e-4, (n, 1)).astype(np.float16).view(np.uint8)
    return raw.reshape(rows, -1)


def encode(x: np.ndarray, type_name: str, rng: np.random.Generator) -> tuple[np.ndarray, QT | None]:
    """(array to hand GGUFWriter.add_tensor, raw_dtype) for float32 x stored as type_name."""
    qt = QT[type_name]
    if qt == QT.F32:
        return x.astype(np.float32), None
    if qt == QT.F16:
        return x.astype(np.float16), None
    if qt == QT.Q4_K:
        return encode_q4_k(x), qt
    if _has_quantize(qt):
        return gguf.quants.quantize(x, qt), qt
    return _random_blocks(x.shape[0], x.shape[-1], qt, rng), qt


@functools.cache
def _has_quantize(qt: QT) -> bool:
    if qt not in _type_traits:
        return False
    try:
        gguf.quants.quantize(np.zeros((1, gguf.GGML_QUANT_SIZES[qt][0]), np.float32), qt)
        return True
    except NotImplementedError:
        return False


def decoded(stored: np.ndarray, qt: QT | None) -> np.ndarray:
    """The float32 values a stored array encodes, by gguf's own dequantize."""
    if qt is None:
        return stored.astype(np.float32)
    return gguf.quants.dequantize(stored, qt).astype(np.float32)


def write_llama_gguf(
    path,
    *,
    layers: int = 2,
    hidden: int = 64,
    inter: int = 128,
    heads: int = 4,
    kv_heads: int = 2,
    vocab: int | None = None,
    types: dict | None = None,
    seed: int = 0,
    tokenizer: str | dict | None = "gpt2",
    arch: str = "llama",
    tied: bool = True,
    biases: bool | None = None,
    rope_theta: float = 10000.0,
    eps: float = 1e-5,
    context: int = 256,
    chat_template: str | None = CHAT_TEMPLATE,
    metadata: dict | None = None,
    omit: tuple[str, ...] = (),
    extra_tensors: dict[str, np.ndarray] | None = None,
    scale: float = 0.05,
) -> dict[str, np.ndarray]:
    """Write a llama (or qwen2) GGUF; return its float32 weights under Hugging Face names and layout.

    types: GGUF tensor role -> type name ("token_embd", "output", "attn_q", ... "ffn_down"), over DEFAULT_TYPES;
    norms are F32. tokenizer: "gpt2" (gpt2_vocab), "llama" (spm_vocab), a dict like theirs, or None (no
    tokenizer metadata). vocab: embedding rows (default: the tokenizer's size, or 320); the token list is padded
    with reserved control tokens. tied: no output.weight. biases: q/k/v biases (default: arch == "qwen2").
    metadata: extra key -> value (str, bool, int as uint32, float as float32) written as given. omit: GGUF
    tensor names to leave out (for error tests). extra_tensors: GGUF name -> float32 array written as F32 (e.g.
    rope_freqs.weight). scale: standard deviation of the matrices."""
    types = {**DEFAULT_TYPES, **(types or {})}
    tok = {"gpt2": gpt2_vocab, "llama": spm_vocab}[tokenizer]() if isinstance(tokenizer, str) else tokenizer
    if vocab is None:
        vocab = len(tok["tokens"]) if tok else 320
    if tok and vocab < len(tok["tokens"]):
        raise ValueError(f"vocab {vocab} is smaller than the tokenizer's {len(tok['tokens'])} tokens")
    biases = arch == "qwen2" if biases is None else biases
    rng = np.random.default_rng(seed)
    hd = hidden // heads
    w = gguf.GGUFWriter(str(path), arch)
    w.add_type("model")
    w.add_name(f"synthetic-{arch}")
    w.add_block_count(layers)
    w.add_context_length(context)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(inter)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(rope_theta)
    w.add_layer_norm_rms_eps(eps)
    w.add_vocab_size(vocab)
    w.add_rope_dimension_count(hd)
    for key, val in (metadata or {}).items():
        if isinstance(val, bool):
            w.add_bool(key, val)
        elif isinstance(val, int):
            w.add_uint32(key, val)
        elif isinstance(val, float):
            w.add_float32(key, val)
        else:
            w.add_string(key, val)
    if tok:
        _add_tokenizer(w, tok, vocab, chat_template)

    out: dict[str, np.ndarray] = {}

    def put(gname: str, hf: str, x: np.ndarray, type_name: str, n_head: int | None = None):
        """x in HF layout; n_head: permute rows for llama's interleaved RoPE (q: heads, k: KV heads)."""
        if gname in omit:
            return
        g = _permute(x, n_head) if n_head and arch == "llama" else x
        stored, qt = encode(g, type_name, rng)
        w.add_tensor(gname, stored, raw_dtype=qt)
        try:
            back = decoded(stored, qt).reshape(g.shape)
        except NotImplementedError:  # a type gguf cannot decode (for error tests): no float to return
            return
        out[hf] = _unpermute(back, n_head) if n_head and arch == "llama" else back

    def mat(n, k):
        return (scale * rng.standard_normal((n, k))).astype(np.float32)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    put("token_embd.weight", "model.embed_tokens.weight", mat(vocab, hidden), types["token_embd"])
    for i in range(layers):
        p, h = f"blk.{i}.", f"model.layers.{i}."
        put(p + "attn_norm.weight", h + "input_layernorm.weight", norm(hidden), "F32")
        shapes = {
            "attn_q": (heads * hd, hidden),
            "attn_k": (kv_heads * hd, hidden),
            "attn_v": (kv_heads * hd, hidden),
            "attn_output": (hidden, heads * hd),
            "ffn_gate": (inter, hidden),
            "ffn_up": (inter, hidden),
            "ffn_down": (hidden, inter),
        }
        for role, (n, k) in shapes.items():
            nh = {"attn_q": heads, "attn_k": kv_heads}.get(role)
            put(p + role + ".weight", h + _HF[role] + ".weight", mat(n, k), types[role], nh)
            if biases and role in ("attn_q", "attn_k", "attn_v"):
                put(p + role + ".bias", h + _HF[role] + ".bias", (0.1 * rng.standard_normal(n)).astype(np.float32), "F32", nh)
        put(p + "ffn_norm.weight", h + "post_attention_layernorm.weight", norm(hidden), "F32")
    put("output_norm.weight", "model.norm.weight", norm(hidden), "F32")
    if not tied:
        put("output.weight", "lm_head.weight", mat(vocab, hidden), types["output"])
    for name, x in (extra_tensors or {}).items():
        w.add_tensor(name, np.asarray(x, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def gguf_layout(path) -> tuple[dict, dict[str, np.ndarray]]:
    """(metadata key -> value, GGUF tensor name -> float32 array in GGUF row order, numpy shape), read with
    GGUFReader and gguf's dequantize: an independent view of the file for tests."""
    from compiler.frontend.gguf import open_reader  # gguf's reader on a plain array view (faster to open)

    r = open_reader(Path(path))
    meta = {}
    for k, f in r.fields.items():
        try:
            meta[k] = f.contents()
        except (ValueError, IndexError, UnicodeDecodeError, TypeError):
            continue  # exotic field types are not needed by the tests
    tensors = {}
    for t in r.tensors:
        shape = tuple(int(s) for s in reversed(t.shape))
        tensors[t.name] = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(shape)
    return meta, tensors


def gguf_forward_f64(meta: dict, t: dict[str, np.ndarray], ids) -> np.ndarray:
    """Logits [S, V] of a llama / qwen2 GGUF in float64 numpy, straight from the file's tensors in GGUF row
    order: llama's q/k rows stay permuted and RoPE rotates interleaved pairs (llama.cpp's NORM mode); qwen2
    rotates half-split pairs (NEOX mode). RoPE scaling: rope_freqs divisors, or linear position scaling."""
    arch = meta["general.architecture"]
    a = lambda k, d=None: meta.get(f"{arch}.{k}", d)
    nh, nkv, eps, theta = a("attention.head_count"), a("attention.head_count_kv"), a("attention.layer_norm_rms_epsilon"), a("rope.freq_base", 10000.0)
    f = {k: v.astype(np.float64) for k, v in t.items()}
    ids = np.asarray(ids)
    s = len(ids)
    x = f["token_embd.weight"][ids]
    hd = x.shape[1] // nh
    inv = theta ** (-np.arange(0, hd, 2) / hd)
    if "rope_freqs.weight" in f:
        inv = inv / f["rope_freqs.weight"]
    pos = np.arange(s, dtype=np.float64) / (a("rope.scaling.factor", 1.0) if a("rope.scaling.type") == "linear" else 1.0)
    ang = pos[:, None] * inv[None, :]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]

    def rope(v):  # [S, heads, hd]
        if arch == "llama":
            e, o = v[..., 0::2], v[..., 1::2]
            out = np.empty_like(v)
            out[..., 0::2], out[..., 1::2] = e * cos - o * sin, e * sin + o * cos
            return out
        e, o = v[..., : hd // 2], v[..., hd // 2 :]
        return np.concatenate([e * cos - o * sin, e * sin + o * cos], -1)

    def norm(v, w):
        return v / np.sqrt((v * v).mean(-1, keepdims=True) + eps) * w

    def lin(v, name):
        y = v @ f[name + ".weight"].T
        return y + f[name + ".bias"] if name + ".bias" in f else y

    mask = np.tril(np.ones((s, s), bool))
    for i in range(a("block_count")):
        p = f"blk.{i}."
        h = norm(x, f[p + "attn_norm.weight"])
        q = rope(lin(h, p + "attn_q").reshape(s, nh, hd))
        k = rope(lin(h, p + "attn_k").reshape(s, nkv, hd))
        v = lin(h, p + "attn_v").reshape(s, nkv, hd)
        k, v = np.repeat(k, nh // nkv, axis=1), np.repeat(v, nh // nkv, axis=1)
        sc = np.einsum("shd,thd->hst", q, k) / np.sqrt(hd)
        sc = np.where(mask, sc, -np.inf)
        pr = np.exp(sc - sc.max(-1, keepdims=True))
        pr /= pr.sum(-1, keepdims=True)
        o = np.einsum("hst,thd->shd", pr, v).reshape(s, nh * hd)
        x = x + lin(o, p + "attn_output")
        h = norm(x, f[p + "ffn_norm.weight"])
        g = lin(h, p + "ffn_gate")
        x = x + lin(g / (1 + np.exp(-g)) * lin(h, p + "ffn_up"), p + "ffn_down")
    x = norm(x, f["output_norm.weight"])
    return x @ f.get("output.weight", f["token_embd.weight"]).T


# Independent pure-Python tokenizers (llama.cpp's algorithms, written from its description, not from
# compiler/frontend) that the tests compare lowbit's tokenizers with.
# llama.cpp's pre-tokenizer regexes (llama-vocab.cpp), Llama 3's in the case-insensitive form of its tokenizer.json
GPT2_RE = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
LLAMA3_RE = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2_RE = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
PRE_SPLITS = {"smollm": [r"\p{N}", GPT2_RE], "gpt2": [GPT2_RE], "llama-bpe": [LLAMA3_RE], "qwen2": [QWEN2_RE]}


def _split_specials(text: str, specials: list[str]) -> list[tuple[bool, str]]:
    if not specials:
        return [(False, text)] if text else []
    pat = regex.compile("|".join(regex.escape(s) for s in sorted(specials, key=len, reverse=True)))
    out, pos = [], 0
    for m in pat.finditer(text):
        if m.start() > pos:
            out.append((False, text[pos : m.start()]))
        out.append((True, m.group()))
        pos = m.end()
    if pos < len(text):
        out.append((False, text[pos:]))
    return out


def _regex_split(pieces: list[str], pattern: str) -> list[str]:
    """llama.cpp's unicode_regex_split: matches become pieces, and so do the unmatched stretches between them."""
    out = []
    for p in pieces:
        pos = 0
        for m in regex.finditer(pattern, p):
            if m.start() > pos:
                out.append(p[pos : m.start()])
            if m.end() > m.start():
                out.append(m.group())
            pos = m.end()
        if pos < len(p):
            out.append(p[pos:])
    return out


def _bpe(word: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    while len(word) > 1:
        pairs = [(ranks.get((a, b)), i) for i, (a, b) in enumerate(itertools.pairwise(word))]
        best = min((r, i) for r, i in pairs if r is not None) if any(r is not None for r, _ in pairs) else None
        if best is None:
            break
        i = best[1]
        word = [*word[:i], word[i] + word[i + 1], *word[i + 2 :]]
    return word


@functools.lru_cache(maxsize=4)
def _tables(tokens: tuple[str, ...], merges: tuple[str, ...]):
    vocab = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    return vocab, {tuple(m.split(" ", 1)): r for r, m in enumerate(merges)}


def gpt2_encode(text: str, tokens: list[str], merges: list[str], specials: list[str], pre: str) -> list[int]:
    """llama.cpp's byte-level BPE; a byte with no token of its own is dropped, as llama.cpp drops it."""
    vocab, ranks = _tables(tuple(tokens), tuple(merges))
    bc = byte_chars()
    ids = []
    for special, part in _split_specials(text, specials):
        if special:
            ids.append(vocab[part])
            continue
        pieces = [part]
        for pattern in PRE_SPLITS[pre]:
            pieces = _regex_split(pieces, pattern)
        for p in pieces:
            chars = "".join(bc[b] for b in p.encode("utf-8"))
            if pre == "llama-bpe" and chars in vocab:  # llama.cpp's ignore_merges for Llama 3
                ids.append(vocab[chars])
                continue
            ids += [vocab[t] for t in _bpe([c for c in chars if c in vocab], ranks)]
    return ids


def spm_encode(text: str, tokens: list[str], scores: list[float], specials: list[str], add_space_prefix: bool = True) -> list[int]:
    """llama.cpp's SentencePiece tokenizer: a space prefix at the start and after each special token, spaces
    as U+2581, then repeatedly merge the adjacent pair whose joined piece is in the vocabulary with the
    highest score (leftmost on ties); leftover characters not in the vocabulary become <0xNN> byte tokens."""
    vocab = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    ids = []
    prev_special = True
    for special, part in _split_specials(text, specials):
        if special:
            ids.append(vocab[part])
            prev_special = True
            continue
        s = (" " + part if add_space_prefix and prev_special else part).replace(" ", "▁")
        prev_special = False
        sym = list(s)
        while True:
            best = None
            for i in range(len(sym) - 1):
                j = vocab.get(sym[i] + sym[i + 1])
                if j is not None and (best is None or scores[j] > best[0]):
                    best = (scores[j], i)
            if best is None:
                break
            i = best[1]
            sym[i : i + 2] = [sym[i] + sym[i + 1]]
        for t in sym:
            if t in vocab:
                ids.append(vocab[t])
            else:
                ids += [vocab[f"<0x{b:02X}>"] for b in t.encode("utf-8")]
    return ids
