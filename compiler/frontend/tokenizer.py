"""Tokenizers: a `tokenizers.Tokenizer` (a model directory's tokenizer.json, or one built from a GGUF file's
vocabulary by compiler.frontend.gguf_tokenizer), or a byte-level tokenizer for presets (which have random
weights and no vocabulary of their own).

Every tokenizer carries what generation needs beside the ids: `bos_id`, `eos_ids` (EOS and the end-of-turn
tokens generation stops at, EOS first), `pad_id`, `add_bos` (whether `encode` prepends BOS), `chat_template`
(Jinja source as Hugging Face / GGUF store it) and `special_tokens` (text -> id of the control tokens, which
the pre-tokenizer never splits). `to_json()` / `tokenizer_from_json()` carry them through an artifact's manifest,
so an artifact reloads them without its source model.
"""

from __future__ import annotations

from pathlib import Path

from compiler.errors import LowbitError
from compiler.frontend.validate import a_kind, is_int, read_json_object, read_text, show

TOKENIZER_FILE = "tokenizer.json"
# end-of-turn / end-of-generation token texts (llama.cpp's list): generation stops at any that is a special token
END_TOKENS = (
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|endoftext|>", "<|eom_id|>", "<end_of_turn>", "<EOT>", "_<EOT>",
    "<|end_of_text|>", "<｜end▁of▁sentence｜>", "<end_of_utterance>", "<|return|>",
)


def dedup_ids(ids) -> list[int]:
    out: list[int] = []
    for i in ids:
        if i is not None and int(i) not in out:
            out.append(int(i))
    return out


class ByteTokenizer:
    """ids 0/1/2 are pad/bos/eos; byte b is id b + 3. Lossless for any UTF-8 text. Presets have random
    weights and no trained end token, so `eos_ids` is empty: generation runs its full length."""

    kind = "bytes"
    offset = 3
    chat_template = None

    def __init__(self, add_bos: bool = True):
        self.add_bos = add_bos
        self.eos_ids: list[int] = []
        self.bos_id = 1
        self.pad_id = 0
        self.special_tokens: dict[str, int] = {}  # ids 0-2 have no text form: any text encodes as bytes

    def encode(self, text: str, add_special: bool = True) -> list[int]:
        ids = [b + self.offset for b in text.encode("utf-8")]
        return [1, *ids] if self.add_bos and add_special else ids

    def decode(self, ids: list[int], skip_special: bool = True) -> str:
        data = bytes(i - self.offset for i in ids if self.offset <= i < 256 + self.offset)
        return data.decode("utf-8", errors="replace")

    bos_token = None
    eos_token = None

    def to_json(self) -> dict:
        return {"kind": self.kind, "add_bos": self.add_bos}


class HFTokenizer:
    """A Hugging Face fast tokenizer (tokenizer.json); special tokens as its post-processor adds them.
    Made from a file (`path`) or in memory (`tokenizer`, e.g. built from GGUF metadata; saved into an
    artifact as tokenizer.json)."""

    kind = "hf"

    def __init__(
        self,
        path: Path | None = None,
        *,
        tokenizer=None,
        bos_id: int | None = None,
        eos_ids=(),
        add_bos: bool | None = None,
        chat_template: str | None = None,
        special_tokens: dict[str, int] | None = None,
        pad_id: int | None = None,
    ):
        self.path = Path(path) if path is not None else None
        self._tok = tokenizer if tokenizer is not None else _load(self.path)
        self._tok.no_padding()  # one sequence per call: padding would leak pad tokens into mean pooling
        if special_tokens is None:
            special_tokens = {t.content: i for i, t in self._tok.get_added_tokens_decoder().items() if t.special}
        self.special_tokens = {str(k): int(v) for k, v in special_tokens.items()}
        self.bos_id = None if bos_id is None else int(bos_id)
        self.pad_id = None if pad_id is None else int(pad_id)
        self.eos_ids = dedup_ids(eos_ids)
        self.chat_template = chat_template
        self.add_bos = self._adds_bos() if add_bos is None else bool(add_bos)

    @property
    def file_name(self) -> str:
        return self.path.name if self.path is not None else TOKENIZER_FILE

    def _adds_bos(self) -> bool:
        ids = self._tok.encode("a").ids
        return self.bos_id is not None and bool(ids) and ids[0] == self.bos_id

    def encode(self, text: str, add_special: bool = True) -> list[int]:
        """add_special=False: no BOS (e.g. for a rendered chat template that already starts with it)."""
        return list(self._tok.encode(text, add_special_tokens=add_special).ids)

    def decode(self, ids: list[int], skip_special: bool = True) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special)

    def id_to_token(self, i: int) -> str | None:
        return self._tok.id_to_token(int(i))

    def token_to_id(self, text: str) -> int | None:
        return self._tok.token_to_id(text)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def bos_token(self) -> str | None:
        return None if self.bos_id is None else self.id_to_token(self.bos_id)

    @property
    def eos_token(self) -> str | None:
        return self.id_to_token(self.eos_ids[0]) if self.eos_ids else None

    def to_str(self) -> str:
        return self._tok.to_str()

    def artifact_files(self) -> dict[str, Path | bytes]:
        """What an artifact stores for this tokenizer: file name -> source path, or the bytes to write."""
        return {self.file_name: self.path if self.path is not None else self.to_str().encode("utf-8")}

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "file": self.file_name,
            "bos_id": self.bos_id,
            "eos_ids": self.eos_ids,
            "add_bos": self.add_bos,
            "chat_template": self.chat_template,
            "special_tokens": self.special_tokens,
            "pad_id": self.pad_id,
        }


def _load(path: Path):
    """A tokenizer.json as a tokenizers.Tokenizer; a file it cannot read is one line naming it."""
    from tokenizers import Tokenizer

    text = read_text(path, "restore tokenizer.json from the original model")
    try:
        return Tokenizer.from_str(text)
    except Exception as e:  # noqa: BLE001 - tokenizers raises plain Exception for a malformed file
        msg = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise LowbitError(f"{path} is not a tokenizer file the tokenizers library can read ({msg})", "restore tokenizer.json from the original model") from None


def tokenizer_from_json(d: dict, folder: Path):
    if d["kind"] == "bytes":
        return ByteTokenizer(d.get("add_bos", True))
    if d["kind"] == "hf":
        return HFTokenizer(
            Path(folder) / d["file"],
            bos_id=d.get("bos_id"),
            eos_ids=d.get("eos_ids", ()),
            add_bos=d.get("add_bos"),
            chat_template=d.get("chat_template"),
            special_tokens=d.get("special_tokens"),
            pad_id=d.get("pad_id"),
        )
    raise ValueError(f"unknown tokenizer kind {d['kind']}")


def _object_if_present(path: Path) -> dict:
    """A JSON object file the model may have ({} when absent); anything else in its place is an error."""
    return read_json_object(path) if path.exists() else {}


def _bad_field(path: Path, key: str, v, want: str):
    raise LowbitError(f"{path}: {key} is {show(v)} ({a_kind(v)}), expected {want}", "restore the file from the original model")


def _token_text(path: Path, tcfg: dict, key: str) -> str | None:
    """tokenizer_config.json writes a token as a string or as an AddedToken dict."""
    v = tcfg.get(key)
    text = v.get("content") if isinstance(v, dict) else v
    if text is not None and not isinstance(text, str):
        _bad_field(path, key, v, "a token's text or an AddedToken object")
    return text


def _id_list(path: Path, cfg: dict, key: str) -> list[int]:
    """A token id or a list of them (generation_config.json / config.json); a negative id means none."""
    v = cfg.get(key)
    ids = [] if v is None else v if isinstance(v, list) else [v]
    if not all(is_int(i) for i in ids):
        _bad_field(path, key, v, "a token id or a list of token ids")
    return [int(i) for i in ids if i >= 0]


def _chat_template(model_dir: Path, tcfg: dict) -> str | None:
    where = model_dir / "tokenizer_config.json"
    t = tcfg.get("chat_template")
    if isinstance(t, list):  # [{"name": "default", "template": ...}, ...]
        if not all(isinstance(x, dict) and isinstance(x.get("template"), str) for x in t):
            _bad_field(where, "chat_template", t, "text, or a list of {name, template} objects")
        named = {x.get("name"): x["template"] for x in t}
        t = named.get("default") or next(iter(named.values()), None)
    if t is not None and not isinstance(t, str):
        _bad_field(where, "chat_template", t, "text (a Jinja template)")
    if t is not None:
        return t
    jinja = model_dir / "chat_template.jinja"
    if jinja.exists():
        return read_text(jinja)
    path = model_dir / "chat_template.json"
    t = _object_if_present(path).get("chat_template")
    if t is not None and not isinstance(t, str):
        _bad_field(path, "chat_template", t, "text (a Jinja template)")
    return t


def end_token_ids(special_tokens: dict[str, int]) -> list[int]:
    return [special_tokens[t] for t in END_TOKENS if t in special_tokens]


def find_tokenizer(model_dir: Path):
    """tokenizer.json of a Hugging Face folder, with BOS/EOS, end-of-turn tokens and the chat template read
    from tokenizer_config.json, generation_config.json, config.json and chat_template.jinja."""
    model_dir = Path(model_dir)
    f = model_dir / TOKENIZER_FILE
    if not f.exists():
        return None
    tok = HFTokenizer(f)
    tpath, gpath, cpath = model_dir / "tokenizer_config.json", model_dir / "generation_config.json", model_dir / "config.json"
    tcfg, gcfg, cfg = _object_if_present(tpath), _object_if_present(gpath), _object_if_present(cpath)

    def id_of(text):
        return tok.token_to_id(text) if text else None

    bos_path = gpath if gcfg.get("bos_token_id") is not None else cpath
    bos_ids = _id_list(bos_path, gcfg if bos_path == gpath else cfg, "bos_token_id")
    bos = bos_ids[0] if bos_ids else id_of(_token_text(tpath, tcfg, "bos_token"))
    eos = [*_id_list(gpath, gcfg, "eos_token_id"), *_id_list(cpath, cfg, "eos_token_id")]
    eos.append(id_of(_token_text(tpath, tcfg, "eos_token")))
    tok.bos_id = None if bos is None else int(bos)
    pad = _id_list(cpath, cfg, "pad_token_id")
    tok.pad_id = pad[0] if pad else id_of(_token_text(tpath, tcfg, "pad_token"))
    tok.eos_ids = dedup_ids([*eos, *end_token_ids(tok.special_tokens)])
    tok.chat_template = _chat_template(model_dir, tcfg)
    tok.add_bos = tok._adds_bos()
    add_bos = tcfg.get("add_bos_token")
    if add_bos is not None and not isinstance(add_bos, bool):
        _bad_field(tpath, "add_bos_token", add_bos, "true or false")
    if add_bos and not tok.add_bos and tok.bos_id is not None:
        if tok.bos_token is None:
            _bad_field(bos_path if bos_ids else tpath, "bos_token_id" if bos_ids else "bos_token", bos, f"a token of tokenizer.json ({tok.vocab_size} tokens)")
        # transformers' fast Llama tokenizers install this post-processor from tokenizer_config.json
        from tokenizers import processors

        b = tok.bos_token
        tok._tok.post_processor = processors.TemplateProcessing(single=f"{b} $A", pair=f"{b} $A {b} $B", special_tokens=[(b, tok.bos_id)])
        tok.path = None  # the tokenizer now differs from the file: the artifact stores this one
        tok.add_bos = True
    return tok
