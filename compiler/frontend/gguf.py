"""GGUF files (llama.cpp's format, read with the PyPI `gguf` package, memory-mapped): architectures `llama`
(Llama 2/3, SmolLM, Mistral) and `qwen2` (q/k/v biases) become the Llama graph (compiler/frontend/llama.py)
under Hugging Face weight names and an HF-style config made from the `<arch>.*` metadata.

Every tensor is dequantized to float32 for the graph (gguf.quants.dequantize). Tensors stored in a type that
maps exactly onto lowbit's formats also become `QuantizedWeight`s decoded from their blocks
(compiler/frontend/gguf_quant.py); every quantized tensor's type is named in `prequant_types`.

llama.cpp's converter permutes the q / k projection rows of `llama` models for its interleaved-pair RoPE;
the import undoes it so the graph keeps rotate-half RoPE (qwen2 uses rotate-half in llama.cpp too and is
stored unpermuted). Llama 3's RoPE scaling arrives as a `rope_freqs` tensor of per-frequency divisors, and
is mapped back to the llama3 rule when it reproduces them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from compiler.errors import LowbitError
from compiler.frontend import gguf_quant, llama
from compiler.frontend.gguf_tokenizer import build_tokenizer
from compiler.frontend.validate import a_kind, is_int, is_real, os_error, show
from compiler.ir import IRError

MAGIC = b"GGUF"
ARCHS = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}
PERMUTED = ("llama",)  # architectures whose q/k rows llama.cpp stores permuted
BLOCK = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
OPTIONAL = {"attn_q.bias": "self_attn.q_proj.bias", "attn_k.bias": "self_attn.k_proj.bias", "attn_v.bias": "self_attn.v_proj.bias", "attn_output.bias": "self_attn.o_proj.bias"}
TOP = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight", "output.weight": "lm_head.weight"}
IGNORED = ("rope_freqs.weight",)  # read for the RoPE scaling
IGNORED_BLOCK = ("attn_rot_embd",)  # old converters' precomputed RoPE tables, unused by llama.cpp too
CONSISTENT = "use a consistent GGUF model file"


def is_gguf(path: Path) -> bool:
    """Whether the file starts with GGUF's magic (an OSError is the caller's to name)."""
    with Path(path).open("rb") as f:
        return f.read(4) == MAGIC


def _reader_class():
    from gguf import GGUFReader

    class ArrayReader(GGUFReader):
        """GGUFReader over a plain ndarray view of its memory map: slicing a np.memmap costs a Python-level
        __array_finalize__ per slice, and the reader slices once per metadata string (100k for a 49k
        vocabulary): 3x faster to open, tensors still paged in lazily from the same map."""

        @property
        def data(self):
            return self._array

        @data.setter
        def data(self, v):
            self._array = np.asarray(v) if isinstance(v, np.memmap) else v

    return ArrayReader


def open_reader(path: Path):
    """GGUFReader, with any failure of a truncated or corrupt file as one LowbitError naming it."""
    import struct

    try:
        return _reader_class()(str(path), "r")
    except OSError as e:
        raise os_error(path, e, "check the path and its permissions") from None
    except (ValueError, IndexError, KeyError, struct.error, UnicodeDecodeError, TypeError, OverflowError, AssertionError, MemoryError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise LowbitError(f"{path} is not a readable GGUF file: truncated or corrupt ({msg[:160]})", "re-download or re-convert the model") from None


def read_metadata(reader) -> dict:
    meta = {}
    for key, f in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        try:
            meta[key] = f.contents()
        except (ValueError, IndexError, UnicodeDecodeError, TypeError):
            continue  # a field lowbit does not read and cannot decode
    return meta


def _hf_name(name: str) -> str | None:
    if name in TOP:
        return TOP[name]
    parts = name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit():
        rest = BLOCK.get(parts[2]) or OPTIONAL.get(parts[2])
        if rest:
            return f"model.layers.{parts[1]}.{rest}"
    return None


def _ignored(name: str) -> bool:
    return name in IGNORED or (name.startswith("blk.") and name.split(".")[2:3] and name.split(".")[2] in IGNORED_BLOCK)


def _num(meta: dict, key: str, where: Path, default=None, kind=int):
    """A positive count (kind int) or a positive finite number (kind float) from the metadata."""
    v = meta.get(key, default)
    if v is None:
        raise LowbitError(f"{where} lacks the metadata key '{key}'", "use a complete GGUF model file (re-convert it with llama.cpp's convert_hf_to_gguf.py)")
    ok = is_int if kind is int else is_real
    want = "a positive integer" if kind is int else "a positive finite number"
    if isinstance(v, list):  # per-layer lists: lowbit's graph has one value for every layer
        if not v or not all(ok(x) for x in v):
            raise LowbitError(f"{where}: metadata key {key} is {show(v)}, expected {want} (or one per layer)", CONSISTENT)
        if len(set(v)) != 1:
            raise LowbitError(f"{where}: '{key}' differs between layers ({sorted(set(v))})", "lowbit imports models whose layers all have the same shape")
        v = v[0]
    if not ok(v) or not math.isfinite(v) or v <= 0:
        raise LowbitError(f"{where}: metadata key {key} is {show(v)} ({a_kind(v)}), expected {want}", CONSISTENT)
    return kind(v)


def _rope_divisors(scaling: dict, head_dim: int, theta: float) -> np.ndarray:
    """The llama3 rule as divisors of the inverse frequencies (the reference's rope_inv_freq, in float64)."""
    inv = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    factor, lo, hi, old = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"], scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv
    smooth = (old / wavelen - lo) / (hi - lo)
    scaled = np.where(wavelen > old / lo, inv / factor, inv)
    mid = (wavelen <= old / lo) & (wavelen >= old / hi)
    new = np.where(mid, (1 - smooth) * inv / factor + smooth * inv, scaled)
    return inv / new


def rope_scaling(meta: dict, arch: str, freqs: np.ndarray | None, head_dim: int, theta: float, where: Path) -> dict | None:
    kind = meta.get(f"{arch}.rope.scaling.type")
    if kind is not None and not isinstance(kind, str):
        raise LowbitError(f"{where}: metadata key {arch}.rope.scaling.type is {show(kind)}, expected a string", CONSISTENT)
    fkey = f"{arch}.rope.scaling.factor" if meta.get(f"{arch}.rope.scaling.factor") is not None else f"{arch}.rope.scale_linear"
    factor = _num(meta, fkey, where, 0.0, float) if meta.get(fkey) is not None else None
    if freqs is not None:
        freqs = np.asarray(freqs, np.float64).ravel()
        if np.all(freqs == 1.0):
            return None
        for old in (8192, 4096, 2048, 16384, 32768, 131072):
            for lo, hi in ((1.0, 4.0), (1.0, 2.0), (2.0, 4.0), (1.0, 8.0)):
                s = {"rope_type": "llama3", "factor": float(freqs.max()), "low_freq_factor": lo, "high_freq_factor": hi, "original_max_position_embeddings": old}
                if freqs.shape == (head_dim // 2,) and np.allclose(_rope_divisors(s, head_dim, theta), freqs, rtol=1e-5, atol=0):
                    return s
        raise LowbitError(f"{where}: the rope_freqs tensor is not Llama 3's RoPE scaling rule", "lowbit's RoPE supports linear and llama3 scaling")
    if kind in (None, "none") and not factor:
        return None
    if kind in (None, "linear") and factor:
        return None if float(factor) == 1.0 else {"rope_type": "linear", "factor": float(factor)}
    raise LowbitError(f"{where}: RoPE scaling '{kind}' is not supported", "lowbit's RoPE supports linear and llama3 scaling")


def hf_config(meta: dict, arch: str, embd_rows: int, tied: bool, freqs, where: Path) -> dict:
    a = arch
    if meta.get(f"{a}.expert_count"):
        raise LowbitError(f"{where} is a mixture-of-experts model ({meta[f'{a}.expert_count']} experts)", "lowbit imports dense llama-architecture models")
    hidden = _num(meta, f"{a}.embedding_length", where)
    heads = _num(meta, f"{a}.attention.head_count", where)
    kv = _num(meta, f"{a}.attention.head_count_kv", where, heads)
    if heads % kv:
        raise LowbitError(f"{where}: {a}.attention.head_count_kv {kv} does not divide {a}.attention.head_count {heads}", CONSISTENT)
    if meta.get(f"{a}.attention.key_length") is None and hidden % heads:
        raise LowbitError(f"{where}: {a}.embedding_length {hidden} is not divisible by {a}.attention.head_count {heads}", CONSISTENT)
    hd = _num(meta, f"{a}.attention.key_length", where, hidden // heads)
    if _num(meta, f"{a}.attention.value_length", where, hd) != hd:
        raise LowbitError(f"{where}: key and value head sizes differ", "lowbit imports models with one head size")
    if _num(meta, f"{a}.rope.dimension_count", where, hd) != hd:
        raise LowbitError(f"{where}: RoPE rotates {meta[f'{a}.rope.dimension_count']} of {hd} head dimensions (partial rotary)", "lowbit's RoPE rotates whole heads")
    theta = _num(meta, f"{a}.rope.freq_base", where, 10000.0, float)
    return {
        "architectures": [ARCHS[arch]],
        "model_type": arch,
        "hidden_size": hidden,
        "intermediate_size": _num(meta, f"{a}.feed_forward_length", where),
        "num_hidden_layers": _num(meta, f"{a}.block_count", where),
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "head_dim": hd,
        "vocab_size": embd_rows,
        "rms_norm_eps": _num(meta, f"{a}.attention.layer_norm_rms_epsilon", where, 1e-5, float),
        "rope_theta": theta,
        "rope_scaling": rope_scaling(meta, a, freqs, hd, theta, where),
        "max_position_embeddings": _num(meta, f"{a}.context_length", where, 2048),
        "tie_word_embeddings": tied,
    }


def expected_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """GGUF tensor role -> its shape in numpy (HF) order under the config."""
    h, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    q, kv = cfg["num_attention_heads"] * cfg["head_dim"], cfg["num_key_value_heads"] * cfg["head_dim"]
    return {
        "token_embd.weight": (v, h), "output.weight": (v, h), "output_norm.weight": (h,), "attn_norm.weight": (h,), "ffn_norm.weight": (h,),
        "attn_q.weight": (q, h), "attn_k.weight": (kv, h), "attn_v.weight": (kv, h), "attn_output.weight": (h, q),
        "attn_q.bias": (q,), "attn_k.bias": (kv,), "attn_v.bias": (kv,), "attn_output.bias": (h,),
        "ffn_gate.weight": (i, h), "ffn_up.weight": (i, h), "ffn_down.weight": (h, i),
    }


def unpermute_index(rows: int, n_head: int) -> np.ndarray:
    """HF row r is GGUF row idx[r] (the inverse of llama.cpp's permute)."""
    return np.arange(rows).reshape(n_head, rows // n_head // 2, 2).swapaxes(1, 2).reshape(-1)


def _dequantize(t, where: Path) -> np.ndarray:
    from gguf.quants import dequantize

    try:
        w = dequantize(t.data, t.tensor_type)
    except NotImplementedError:
        raise LowbitError(
            f"{where}: tensor {t.name} is stored as {t.tensor_type.name}, which the gguf library cannot dequantize",
            "re-quantize the model with llama.cpp to another type (e.g. Q8_0, Q4_K, Q6_K)",
        ) from None
    except ValueError as e:  # a block array cut short by a truncated file
        raise LowbitError(f"{where}: tensor {t.name} is unreadable ({e})", "re-download or re-convert the model") from None
    shape = tuple(int(s) for s in reversed(t.shape))
    w = np.ascontiguousarray(w, dtype=np.float32).reshape(shape)
    # F32 tensors come back as read-only views of the file's memory map: own them, so passes may rewrite
    # consts and the map closes with the reader
    return w if w.flags.writeable else w.copy()


def load_gguf(path: Path):
    """Import a GGUF model file; returns (family, config, graph, tokenizer, prequant, prequant_types)."""
    path = Path(path)
    reader = open_reader(path)
    meta = read_metadata(reader)
    arch = meta.get("general.architecture")
    tensors = {t.name: t for t in reader.tensors}
    split = meta.get("split.count")
    if split is not None and (not is_int(split) or split < 0):
        raise LowbitError(f"{path}: metadata key split.count is {show(split)}, expected a count", CONSISTENT)
    if (split or 1) > 1:
        raise LowbitError(f"{path} is one of {meta['split.count']} split GGUF files", "merge them first: `llama-gguf-split --merge FIRST.gguf OUT.gguf`")
    if meta.get("general.type") == "vocab" or not tensors:
        raise LowbitError(f"{path} holds no weights (a vocabulary-only GGUF)", "pass the GGUF of the model itself")
    if arch is None:
        raise LowbitError(f"{path} lacks the metadata key general.architecture", "re-convert the model with llama.cpp's convert_hf_to_gguf.py")
    if not isinstance(arch, str) or arch not in ARCHS:
        raise LowbitError(f"{path}: unsupported GGUF architecture {arch!r}", f"lowbit imports the GGUF architectures {', '.join(ARCHS)}")
    unknown = [n for n in tensors if _hf_name(n) is None and not _ignored(n)]
    if unknown:
        raise LowbitError(f"{path}: tensors this {arch} import does not know: {', '.join(sorted(unknown)[:6])}", "lowbit imports plain llama / qwen2 models")
    if "token_embd.weight" not in tensors:
        raise LowbitError(f"{path} lacks the tensor token_embd.weight", "use a complete GGUF model file")
    if len(tensors["token_embd.weight"].shape) != 2:
        raise LowbitError(f"{path}: tensor token_embd.weight has shape {[int(s) for s in reversed(tensors['token_embd.weight'].shape)]}, expected [vocab, hidden]", CONSISTENT)
    embd_rows = int(tensors["token_embd.weight"].shape[1])
    freqs = _dequantize(tensors["rope_freqs.weight"], path) if "rope_freqs.weight" in tensors else None
    cfg = hf_config(meta, arch, embd_rows, "output.weight" not in tensors, freqs, path)
    llama.hparams(cfg, f"{path} (its metadata)")
    n_layers = cfg["num_hidden_layers"]
    odd = sorted(n for n in tensors if n.startswith("blk.") and not n.split(".")[1].isdigit())
    if odd:
        raise LowbitError(f"{path}: tensor {odd[0]} names a block that is not a number", CONSISTENT)
    blocks = {int(n.split(".")[1]) for n in tensors if n.startswith("blk.")}
    if n_layers > max(blocks, default=-1) + 1:  # (before listing the tensors of n_layers blocks: it may be 4e9)
        top = max(blocks, default=-1) + 1
        raise LowbitError(f"{path}: {arch}.block_count is {n_layers}, but the file has no tensors of block {top} (blk.{top}.*)", "use a complete GGUF model file")
    need = ["token_embd.weight", "output_norm.weight", *(f"blk.{i}.{s}" for i in range(n_layers) for s in BLOCK)]
    missing = [n for n in need if n not in tensors]
    if missing:
        more = f" and {len(missing) - 6} more" if len(missing) > 6 else ""
        raise LowbitError(f"{path} lacks the tensors {', '.join(missing[:6])}{more}", "use a complete GGUF model file")
    extra = sorted(blocks - set(range(n_layers)))
    if extra:
        raise LowbitError(f"{path} has tensors of block {extra[0]} but {arch}.block_count is {n_layers}", CONSISTENT)

    shapes = expected_shapes(cfg)
    for name, t in tensors.items():
        want = shapes.get(name.split(".", 2)[2] if name.startswith("blk.") else name)
        got = tuple(int(s) for s in reversed(t.shape))
        if want is not None and got != want:
            raise LowbitError(f"{path}: tensor {name} has shape {list(got)}, its metadata says {list(want)}", CONSISTENT)

    weights: dict[str, np.ndarray] = {}
    prequant: dict = {}
    prequant_types: dict[str, str] = {}
    heads = {"attn_q": cfg["num_attention_heads"], "attn_k": cfg["num_key_value_heads"]}
    for name, t in tensors.items():
        hf = _hf_name(name)
        if hf is None:
            continue
        w = _dequantize(t, path)
        tname = t.tensor_type.name
        qw = None
        if tname not in gguf_quant.FLOAT_TYPES:
            prequant_types[hf] = tname
            if w.ndim == 2:
                qw = gguf_quant.decode_quantized(t.data, tname, *w.shape)
        role = name.split(".")[2] if name.startswith("blk.") else None
        if arch in PERMUTED and role in heads:
            rows, nh = w.shape[0], heads[role]
            if rows % (2 * nh):
                raise LowbitError(f"{path}: tensor {name} has {rows} rows, not a multiple of 2 x {nh} heads", CONSISTENT)
            idx = unpermute_index(rows, nh)
            w = w[idx]
            qw = gguf_quant.permute_rows(qw, idx) if qw is not None else None
        weights[hf] = w
        if qw is not None:
            prequant[hf] = qw
    tok = build_tokenizer(meta, str(path))
    del reader, tensors
    try:
        graph = llama.build_llama(cfg, weights, path.stem)
    except IRError as e:
        raise LowbitError(f"the tensors in {path} do not match its metadata ({e})", CONSISTENT) from None
    return "llama", cfg, graph, tok, prequant, prequant_types
