"""A corpus of bad user inputs: every file lowbit reads (config.json, safetensors and their index, tokenizer
files, GGUF metadata and tensors, pre-quantized checkpoints, the --calib text) broken one way at a time, each
compiled with `lowbit compile CASE -o OUT --target ref`: exit code 2, one stderr line `error: ...` naming the
file or field, no traceback, OUT not created. A corrupt tvm kernel cache must not fail a compile at all."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from gguf import GGUFValueType as VT

from tests.helpers import run_cli
from tests.reliability.fixtures import (
    assert_one_line_error,
    compile_cli,
    refuse,
    st_read,
    st_tensors,
    st_write,
    write_gguf,
    write_tiny_bert,
    write_tiny_hf,
)

Q = "model.layers.0.self_attn.q_proj.weight"


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """The valid models every case copies: a llama HF folder, a BERT folder and pre-quantized folders."""
    from tests.compiler.frontend.prequant_writers import write_prequant_dir

    root = tmp_path_factory.mktemp("valid")
    out = {"hf": write_tiny_hf(root / "hf"), "bert": write_tiny_bert(root / "bert")}
    for method in ("gptq", "awq", "compressed-tensors"):
        write_prequant_dir(root / method, method)
        out[method] = root / method
    return out


def edit_json(path, change):
    d = json.loads(path.read_text())
    change(d)
    path.write_text(json.dumps(d))


def cfg(**fields):
    """A case that sets config.json fields (None: delete the field)."""
    def change(d):
        for k, v in fields.items():
            if v is None:
                d.pop(k, None)
            else:
                d[k] = v

    return lambda m: edit_json(m / "config.json", change)


def write(name: str, data):
    """A case that replaces one file (bytes or text)."""
    return lambda m: (m / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def folder(name: str):
    def case(m):
        p = m / name
        p.unlink() if p.exists() else None
        p.mkdir()

    return case


def header(change):
    """A case that edits model.safetensors' header (JSON), keeping the data."""
    def case(m):
        h, data = st_read(m / "model.safetensors")
        st_write(m / "model.safetensors", change(h) or h, data)

    return case


def entry(name: str, **fields):
    return header(lambda h: h[name].update(fields))


def tensors(change):
    return lambda m: st_tensors(m / "model.safetensors", change)


def sharded(index):
    """A case that splits the weights over an index file holding `index` (a dict, or raw text)."""
    def case(m):
        (m / "model.safetensors").rename(m / "model-00001-of-00001.safetensors")
        (m / "model.safetensors.index.json").write_text(index if isinstance(index, str) else json.dumps(index))

    return case


def qconfig(**fields):
    return lambda m: edit_json(m / "config.json", lambda d: d["quantization_config"].update(fields))


HF = [
    # config.json: the file itself
    ("config-not-utf8", write("config.json", b'{"hidden_size": 64, "name": "\xff\xfe"}'), "config.json"),
    ("config-not-json", write("config.json", '{"hidden_size": 64,'), "config.json"),
    ("config-is-a-list", write("config.json", "[1, 2, 3]"), "config.json"),
    ("config-is-a-string", write("config.json", '"llama"'), "config.json"),
    ("config-is-null", write("config.json", "null"), "config.json"),
    ("config-is-a-folder", folder("config.json"), "config.json"),
    ("config-missing", lambda m: (m / "config.json").unlink(), "config.json"),
    # config.json: field types and ranges
    ("hidden-size-missing", cfg(hidden_size=None), "hidden_size"),
    ("hidden-size-string", cfg(hidden_size="64"), "hidden_size"),
    ("hidden-size-float", cfg(hidden_size=64.0), "hidden_size"),
    ("hidden-size-zero", cfg(hidden_size=0), "hidden_size"),
    ("hidden-size-negative", cfg(hidden_size=-64), "hidden_size"),
    ("hidden-size-bool", cfg(hidden_size=True), "hidden_size"),
    ("heads-list", cfg(num_attention_heads=[4]), "num_attention_heads"),
    ("heads-not-dividing-hidden", cfg(num_attention_heads=5, head_dim=None), "num_attention_heads"),
    ("kv-heads-not-dividing-heads", cfg(num_key_value_heads=3), "num_key_value_heads"),
    ("kv-heads-zero", cfg(num_key_value_heads=0), "num_key_value_heads"),
    ("intermediate-size-string", cfg(intermediate_size="128"), "intermediate_size"),
    ("vocab-size-missing", cfg(vocab_size=None), "vocab_size"),
    ("layers-object", cfg(num_hidden_layers={"n": 2}), "num_hidden_layers"),
    ("max-positions-negative", cfg(max_position_embeddings=-1), "max_position_embeddings"),
    ("rms-eps-string", cfg(rms_norm_eps="1e-5"), "rms_norm_eps"),
    ("rms-eps-zero", cfg(rms_norm_eps=0), "rms_norm_eps"),
    ("rms-eps-nan", cfg(rms_norm_eps=float("nan")), "rms_norm_eps"),
    ("rope-theta-negative", cfg(rope_theta=-10000.0), "rope_theta"),
    ("rope-theta-infinite", cfg(rope_theta=1e999), "rope_theta"),
    ("tie-embeddings-string", cfg(tie_word_embeddings="false"), "tie_word_embeddings"),
    ("head-dim-odd", cfg(head_dim=15), "head"),
    ("rope-scaling-string", cfg(rope_scaling="linear"), "rope_scaling"),
    ("rope-scaling-yarn", cfg(rope_scaling={"rope_type": "yarn", "factor": 4.0}), "yarn"),
    ("rope-scaling-no-factor", cfg(rope_scaling={"rope_type": "linear"}), "factor"),
    ("architectures-string", cfg(architectures="LlamaForCausalLM"), "architectures"),
    ("architectures-nested", cfg(architectures=[["LlamaForCausalLM"]]), "architectures"),
    ("architecture-unsupported", cfg(architectures=["GPT2LMHeadModel"], model_type="gpt2"), "GPT2LMHeadModel"),
    ("quant-config-list", cfg(quantization_config=[4]), "quantization_config"),
    ("quant-config-unknown-method", cfg(quantization_config={"quant_method": "bitsandbytes"}), "quant_method"),
    # config.json against the tensors
    ("vocab-size-wrong", cfg(vocab_size=321), "vocab_size 321"),
    ("hidden-size-wrong", cfg(hidden_size=128, head_dim=32), "hidden_size 128"),
    ("intermediate-size-wrong", cfg(intermediate_size=256), "intermediate_size 256"),
    ("heads-wrong", cfg(num_attention_heads=2, num_key_value_heads=2), "num_attention_heads 2"),
    ("fewer-layers-than-weights", cfg(num_hidden_layers=1), "num_hidden_layers"),
    ("more-layers-than-weights", cfg(num_hidden_layers=3), "num_hidden_layers is 3"),
    ("a-billion-layers", cfg(num_hidden_layers=10**9), "num_hidden_layers is 1000000000"),
    ("q-proj-wrong-shape", tensors(lambda t: t.update({Q: t[Q][:32]})), "q_proj"),
    ("down-proj-transposed", tensors(lambda t: t.update({"model.layers.1.mlp.down_proj.weight": t["model.layers.1.mlp.down_proj.weight"].T})), "down_proj"),
    ("norm-wrong-length", tensors(lambda t: t.update({"model.norm.weight": np.ones(65, np.float32)})), "model.norm.weight"),
    ("embedding-1d", tensors(lambda t: t.update({"model.embed_tokens.weight": t["model.embed_tokens.weight"][:, 0].copy()})), "embed_tokens"),
    ("lm-head-wrong-rows", tensors(lambda t: t.update({"lm_head.weight": t["lm_head.weight"][:300]})), "lm_head"),
    ("weight-i16", tensors(lambda t: t.update({Q: (t[Q] * 1000).astype(np.int16)})), "I16"),
    ("weight-u8", tensors(lambda t: t.update({Q: np.zeros(t[Q].shape, np.uint8)})), "U8"),
    ("weight-i32-without-quant-config", tensors(lambda t: t.update({Q: np.zeros(t[Q].shape, np.int32)})), "q_proj"),
    ("weight-missing", tensors(lambda t: t.pop("model.layers.1.self_attn.k_proj.weight")), "k_proj"),
    ("weight-of-an-extra-block", tensors(lambda t: t.update({"model.layers.7.mlp.up_proj.weight": t["model.layers.0.mlp.up_proj.weight"]})), "block 7"),
    # safetensors files
    ("st-shorter-than-8-bytes", write("model.safetensors", b"\x01\x02"), "model.safetensors"),
    ("st-header-past-the-end", write("model.safetensors", b"\xff\xff\x00\x00\x00\x00\x00\x00{}"), "model.safetensors"),
    ("st-header-not-utf8", header(lambda h: b'{"a\xff": 1}'), "model.safetensors"),
    ("st-header-not-json", header(lambda h: b"{not json"), "model.safetensors"),
    ("st-header-a-list", header(lambda h: b"[1, 2]"), "model.safetensors"),
    ("st-entry-not-an-object", header(lambda h: h.update({Q: [1, 2]})), "q_proj"),
    ("st-dtype-not-a-string", entry(Q, dtype=5), "q_proj"),
    ("st-dtype-f8", header(lambda h: h["model.norm.weight"].update(dtype="F8_E4M3", shape=[256])), "F8_E4M3"),
    ("st-dtype-unknown", entry(Q, dtype="Q4"), "Q4"),
    ("st-shape-not-a-list", entry(Q, shape="64x64"), "q_proj"),
    ("st-shape-negative", entry(Q, shape=[-64, -64]), "q_proj"),
    ("st-offsets-past-the-end", entry(Q, data_offsets=[0, 10**9]), "model.safetensors"),
    ("st-offsets-reversed", entry(Q, data_offsets=[100, 0]), "q_proj"),
    ("st-shape-offsets-mismatch", entry(Q, shape=[64, 65]), "q_proj"),
    ("st-metadata-not-strings", header(lambda h: h.update({"__metadata__": {"format": 1}})), "__metadata__"),
    ("st-truncated", lambda m: (m / "model.safetensors").write_bytes((m / "model.safetensors").read_bytes()[:-1000]), "model.safetensors"),
    ("st-is-a-folder", folder("model.safetensors"), "model.safetensors"),
    ("st-none-only-pickle", lambda m: (m / "model.safetensors").rename(m / "pytorch_model.bin"), ".safetensors"),
    # the shards index
    ("index-not-json", sharded("{weight_map"), "model.safetensors.index.json"),
    ("index-a-list", sharded([1]), "model.safetensors.index.json"),
    ("index-no-weight-map", sharded({"metadata": {}}), "weight_map"),
    ("index-weight-map-not-names", sharded({"weight_map": {Q: 1}}), "weight_map"),
    ("index-shard-missing", sharded({"weight_map": {Q: "model-00002-of-00002.safetensors"}}), "model-00002-of-00002"),
    ("index-is-a-folder", folder("model.safetensors.index.json"), "model.safetensors.index.json"),
    # tokenizer files
    ("tokenizer-not-json", write("tokenizer.json", '{"model": '), "tokenizer.json"),
    ("tokenizer-not-utf8", write("tokenizer.json", b'{"version": "\xc3\x28"}'), "tokenizer.json"),
    ("tokenizer-not-a-tokenizer", write("tokenizer.json", '{"version": "1.0"}'), "tokenizer.json"),
    ("tokenizer-is-a-folder", folder("tokenizer.json"), "tokenizer.json"),
    ("tokenizer-config-a-list", write("tokenizer_config.json", "[]"), "tokenizer_config.json"),
    ("tokenizer-config-not-json", write("tokenizer_config.json", "{'bos': 1}"), "tokenizer_config.json"),
    ("chat-template-a-number", lambda m: edit_json(m / "tokenizer_config.json", lambda d: d.update(chat_template=5)), "chat_template"),
    ("chat-template-list-of-strings", lambda m: edit_json(m / "tokenizer_config.json", lambda d: d.update(chat_template=["a"])), "chat_template"),
    ("chat-template-jinja-not-utf8", lambda m: (edit_json(m / "tokenizer_config.json", lambda d: d.pop("chat_template")),
                                                (m / "chat_template.jinja").write_bytes(b"{{ \xff }}")), "chat_template.jinja"),
    ("bos-token-a-number", lambda m: (edit_json(m / "tokenizer_config.json", lambda d: d.update(bos_token=7)),
                                      (m / "generation_config.json").unlink()), "bos_token"),
    ("add-bos-token-a-string", lambda m: edit_json(m / "tokenizer_config.json", lambda d: d.update(add_bos_token="yes")), "add_bos_token"),
    ("eos-id-a-string", write("generation_config.json", '{"eos_token_id": "2"}'), "eos_token_id"),
    ("generation-config-a-string", write("generation_config.json", '"greedy"'), "generation_config.json"),
    ("pad-id-a-string", cfg(pad_token_id="0"), "pad_token_id"),
    ("bos-id-outside-the-vocabulary", lambda m: (write("generation_config.json", '{"bos_token_id": 5000}')(m),
                                                 edit_json(m / "tokenizer_config.json", lambda d: d.update(add_bos_token=True))), "bos_token_id"),
]

BERT = [
    ("bert-modules-not-a-list", write("modules.json", '{"type": "Normalize"}'), "modules.json"),
    ("bert-relative-positions", cfg(position_embedding_type="relative_key"), "position_embedding_type"),
    ("bert-positions-mismatch", cfg(max_position_embeddings=256), "position_embeddings"),
    ("bert-activation-relu", cfg(hidden_act="relu"), "relu"),
    ("bert-heads-not-dividing", cfg(num_attention_heads=3), "num_attention_heads"),
    ("bert-type-vocab-mismatch", cfg(type_vocab_size=3), "token_type_embeddings"),
]

PREQUANT = [
    ("gptq-layer-disagrees-with-config", "gptq", cfg(intermediate_size=96), "intermediate_size"),
    ("gptq-bits-string", "gptq", qconfig(bits="4"), "bit"),
    ("gptq-group-size-string", "gptq", qconfig(group_size="32"), "group size '32'"),
    ("gptq-sym-string", "gptq", qconfig(sym="true"), "sym"),
    ("gptq-qweight-not-int32", "gptq", tensors(lambda t: t.update({"model.layers.0.self_attn.q_proj.qweight": t["model.layers.0.self_attn.q_proj.qweight"].astype(np.int64)})), "qweight"),
    ("awq-zero-point-string", "awq", qconfig(zero_point="yes"), "zero_point"),
    ("ct-config-groups-a-list", "compressed-tensors", qconfig(config_groups=[1]), "config_groups"),
    ("ct-targets-not-a-list", "compressed-tensors", lambda m: edit_json(m / "config.json", lambda d: d["quantization_config"]["config_groups"]["group_0"].update(targets="Linear")), "group_0"),
]

GGUF = [
    ("gguf-head-count-string", {"llama.attention.head_count": ("four", VT.STRING)}, "llama.attention.head_count"),
    ("gguf-head-count-zero", {"llama.attention.head_count": (0, VT.UINT32)}, "llama.attention.head_count"),
    ("gguf-head-count-negative", {"llama.attention.head_count": (-4, VT.INT32)}, "llama.attention.head_count"),
    ("gguf-head-count-float", {"llama.attention.head_count": (4.0, VT.FLOAT32)}, "llama.attention.head_count"),
    ("gguf-head-count-bool", {"llama.attention.head_count": (True, VT.BOOL)}, "llama.attention.head_count"),
    ("gguf-kv-heads-not-dividing", {"llama.attention.head_count_kv": (3, VT.UINT32)}, "head_count_kv"),
    ("gguf-hidden-disagrees-with-tensors", {"llama.embedding_length": (32, VT.UINT32), "llama.rope.dimension_count": (8, VT.UINT32)}, "token_embd.weight"),
    ("gguf-hidden-not-dividing", {"llama.embedding_length": (63, VT.UINT32)}, "llama.embedding_length"),
    ("gguf-block-count-low", {"llama.block_count": (1, VT.UINT32)}, "llama.block_count"),
    ("gguf-block-count-high", {"llama.block_count": (3, VT.UINT32)}, "blk.2"),
    ("gguf-block-count-4-billion", {"llama.block_count": (2**32 - 1, VT.UINT32)}, "llama.block_count is 4294967295"),
    ("gguf-block-count-string", {"llama.block_count": ("2", VT.STRING)}, "llama.block_count"),
    ("gguf-ffn-per-layer-differs", {"llama.feed_forward_length": ([128, 64], VT.ARRAY, VT.UINT32)}, "llama.feed_forward_length"),
    ("gguf-ffn-list-of-strings", {"llama.feed_forward_length": (["128", "128"], VT.ARRAY, VT.STRING)}, "llama.feed_forward_length"),
    ("gguf-eps-string", {"llama.attention.layer_norm_rms_epsilon": ("1e-5", VT.STRING)}, "layer_norm_rms_epsilon"),
    ("gguf-eps-nan", {"llama.attention.layer_norm_rms_epsilon": (float("nan"), VT.FLOAT32)}, "layer_norm_rms_epsilon"),
    ("gguf-freq-base-negative", {"llama.rope.freq_base": (-1.0, VT.FLOAT32)}, "llama.rope.freq_base"),
    ("gguf-context-zero", {"llama.context_length": (0, VT.UINT32)}, "llama.context_length"),
    ("gguf-rope-factor-string", {"llama.rope.scaling.factor": ("2", VT.STRING)}, "llama.rope.scaling.factor"),
    ("gguf-architecture-array", {"general.architecture": (["llama"], VT.ARRAY, VT.STRING)}, "architecture"),
    ("gguf-architecture-missing", {"general.architecture": None}, "general.architecture"),
    ("gguf-split-count-string", {"split.count": ("2", VT.STRING)}, "split.count"),
    ("gguf-tokens-a-string", {"tokenizer.ggml.tokens": ("abc", VT.STRING)}, "tokenizer.ggml.tokens"),
    ("gguf-token-types-strings", {"tokenizer.ggml.token_type": (["1"] * 299, VT.ARRAY, VT.STRING)}, "tokenizer.ggml.token_type"),
    ("gguf-merges-ints", {"tokenizer.ggml.merges": ([1, 2], VT.ARRAY, VT.INT32)}, "tokenizer.ggml.merges"),
    ("gguf-pre-an-int", {"tokenizer.ggml.pre": (7, VT.UINT32)}, "tokenizer.ggml.pre"),
    ("gguf-model-an-array", {"tokenizer.ggml.model": (["gpt2"], VT.ARRAY, VT.STRING)}, "tokenizer.ggml.model"),
    ("gguf-bos-id-a-string", {"tokenizer.ggml.bos_token_id": ("1", VT.STRING)}, "tokenizer.ggml.bos_token_id"),
    ("gguf-add-bos-an-int", {"tokenizer.ggml.add_bos_token": (1, VT.UINT8)}, "tokenizer.ggml.add_bos_token"),
    ("gguf-chat-template-an-int", {"tokenizer.chat_template": (5, VT.UINT32)}, "tokenizer.chat_template"),
]


def run_case(base, mutate, tmp_path, capsys, names, *extra):
    model = tmp_path / "model"
    shutil.copytree(base, model)
    mutate(model)
    out = tmp_path / "out"
    code, _, err = compile_cli(model, out, capsys, *extra)
    return assert_one_line_error(code, err, out, names)


@pytest.mark.parametrize("mutate,names", [pytest.param(m, n, id=i) for i, m, n in HF])
def test_bad_hf_folder(bases, tmp_path, capsys, mutate, names):
    run_case(bases["hf"], mutate, tmp_path, capsys, names)


@pytest.mark.parametrize("mutate,names", [pytest.param(m, n, id=i) for i, m, n in BERT])
def test_bad_bert_folder(bases, tmp_path, capsys, mutate, names):
    run_case(bases["bert"], mutate, tmp_path, capsys, names)


@pytest.mark.parametrize("base,mutate,names", [pytest.param(b, m, n, id=i) for i, b, m, n in PREQUANT])
def test_bad_prequantized_checkpoint(bases, tmp_path, capsys, base, mutate, names):
    run_case(bases[base], mutate, tmp_path, capsys, names)


@pytest.mark.parametrize("override,names", [pytest.param(o, n, id=i) for i, o, n in GGUF])
def test_bad_gguf_metadata(tmp_path, capsys, override, names):
    path = write_gguf(tmp_path / "m.gguf", override)
    out = tmp_path / "out"
    code, _, err = compile_cli(path, out, capsys)
    assert_one_line_error(code, err, out, names)


@pytest.mark.parametrize(
    "kw,names",
    [
        pytest.param({"omit": ("blk.1.ffn_up.weight",)}, "blk.1.ffn_up.weight", id="gguf-tensor-missing"),
        pytest.param({"extra_tensors": {"blk.x.attn_rot_embd": np.zeros(4, np.float32)}}, "blk.x", id="gguf-block-not-a-number"),
        pytest.param({"extra_tensors": {"rope_freqs.weight": np.full(8, 3.0, np.float32)}}, "rope_freqs", id="gguf-rope-freqs-unknown-rule"),
    ],
)
def test_bad_gguf_tensors(tmp_path, capsys, kw, names):
    path = write_gguf(tmp_path / "m.gguf", **kw)
    out = tmp_path / "out"
    code, _, err = compile_cli(path, out, capsys)
    assert_one_line_error(code, err, out, names)


def test_truncated_and_foreign_gguf(tmp_path, capsys):
    path = write_gguf(tmp_path / "m.gguf")
    data = path.read_bytes()
    for name, content in (("cut.gguf", data[: len(data) // 3]), ("head.gguf", data[:40]), ("text.gguf", b"not a model at all")):
        (tmp_path / name).write_bytes(content)
        out = tmp_path / f"out-{name}"
        code, _, err = compile_cli(tmp_path / name, out, capsys)
        assert_one_line_error(code, err, out, name)


CALIB = [
    ("calib-missing", lambda d: d / "nope.txt", "nope.txt"),
    ("calib-a-folder", lambda d: (d / "texts").mkdir() or d / "texts", "texts"),
    ("calib-not-utf8", lambda d: (d / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1")) and d / "latin1.txt", "latin1.txt"),
    ("calib-empty", lambda d: (d / "empty.txt").write_text("") or d / "empty.txt", "empty.txt"),
    ("calib-whitespace", lambda d: (d / "blank.txt").write_text(" \n\t\n") and d / "blank.txt", "blank.txt"),
]


@pytest.mark.parametrize("make,names", [pytest.param(m, n, id=i) for i, m, n in CALIB])
def test_bad_calibration_text(bases, tmp_path, capsys, make, names):
    text = make(tmp_path)
    out = tmp_path / "out"
    code, _, err = compile_cli(bases["hf"], out, capsys, "--method", "gptq", "--calib", str(text), "--calib-samples", "2")
    assert_one_line_error(code, err, out, names)


@pytest.mark.parametrize(
    "target,error,names",
    [
        pytest.param("config.json", PermissionError, "Permission denied", id="config-unreadable"),
        pytest.param("model.safetensors", PermissionError, "model.safetensors", id="weights-unreadable"),
        pytest.param("model.safetensors", FileNotFoundError, "model.safetensors", id="weights-vanish"),
        pytest.param("tokenizer_config.json", PermissionError, "tokenizer_config.json", id="tokenizer-config-unreadable"),
        pytest.param("calib.txt", PermissionError, "calib.txt", id="calib-unreadable"),
    ],
)
def test_os_errors_name_the_file(bases, tmp_path, capsys, target, error, names):
    model = tmp_path / "model"
    shutil.copytree(bases["hf"], model)
    (tmp_path / "calib.txt").write_text("some ordinary calibration text " * 20)
    path = tmp_path / target if target == "calib.txt" else model / target
    out = tmp_path / "out"
    with refuse(path, error):
        code, _, err = compile_cli(model, out, capsys, "--method", "gptq", "--calib", str(tmp_path / "calib.txt"), "--calib-samples", "2")
    assert_one_line_error(code, err, out, names)


def test_unreadable_gguf_names_the_file(tmp_path, capsys):
    path = write_gguf(tmp_path / "m.gguf")
    out = tmp_path / "out"
    with refuse(path):
        code, _, err = compile_cli(path, out, capsys)
    assert "Permission denied" in assert_one_line_error(code, err, out, "m.gguf")


def test_the_valid_bases_compile(bases, tmp_path, capsys):
    """The corpus's starting points are valid: each error above comes from its one change."""
    text = tmp_path / "calib.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 40)
    for name, base in bases.items():
        extra = ("--method", "gptq", "--calib", str(text), "--calib-samples", "2", "--calib-seqlen", "16") if name == "hf" else ()
        code, _, err = compile_cli(base, tmp_path / f"out-{name}", capsys, *extra)
        assert code == 0 and not err, err
        assert (tmp_path / f"out-{name}" / "manifest.json").is_file()
    code, _, err = compile_cli(write_gguf(tmp_path / "m.gguf"), tmp_path / "out-gguf", capsys)
    assert code == 0 and not err, err


# ---- the tvm-cpu kernel cache: a broken cache costs measurements, never a compile


@pytest.fixture
def tune(tmp_path, monkeypatch):
    """tune.py with its cache under tmp_path and measurements replaced by fixed times (what is tested here is
    the cache file, not the timing)."""
    pytest.importorskip("tvm", reason="Apache TVM (apache-tvm) is not installed")
    from compiler.backends.tvm import tune

    monkeypatch.setenv("LOWBIT_CACHE_DIR", str(tmp_path / "cache"))
    calls = []
    monkeypatch.setattr(tune, "measure_all", lambda cands, shape, rounds=5: calls.append(shape) or {k.name: 1.0 + i for i, k in enumerate(cands)})
    monkeypatch.setattr(tune, "calls", calls, raising=False)
    return tune


class _Kernel:
    def __init__(self, name):
        self.name = name


class _Shape:
    n, k, bits, group, ternary, mins, f16_params, act, layout, bias, fp = 128, 256, 4, 64, False, False, False, "a16", "nibble", False, ""


CORRUPT = {
    "not-json": b'{"key": [1, 2',
    "not-utf8": b"\xff\xfe\x00{",
    "a-list": b"[1, 2, 3]",
    "entry-a-string": b'{"k": "fast"}',
    "entry-times-strings": b'{"k": {"lut-cpu": "1 ms"}}',
    "entry-times-negative": b'{"k": {"lut-cpu": -1.0}}',
    "empty-file": b"",
}


@pytest.mark.parametrize("content", list(CORRUPT.values()), ids=list(CORRUPT))
def test_corrupt_kernel_cache_is_ignored_and_rebuilt(tune, tmp_path, capsys, content):
    f = tmp_path / "cache" / "tvm-kernels.json"
    f.parent.mkdir()
    f.write_bytes(content)
    cands = [_Kernel("lut-cpu"), _Kernel("blocked-cpu")]
    assert tune.pick(_Shape(), cands).name == "lut-cpu"  # measured (1.0 < 2.0) instead of read from the cache
    assert tune.pick(_Shape(), cands).name == "lut-cpu" and len(tune.calls) == 1  # the rebuilt cache answers
    err = capsys.readouterr().err
    assert err.count("warning: ") == 1 and str(f) in err, err
    saved = json.loads(f.read_text())
    assert saved[tune.cache_key(_Shape())] == {"lut-cpu": 1.0, "blocked-cpu": 2.0}


def test_unwritable_kernel_cache_warns(tune, tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("a file where the cache folder should be")
    monkeypatch.setenv("LOWBIT_CACHE_DIR", str(tmp_path / "file"))
    cands = [_Kernel("lut-cpu"), _Kernel("blocked-cpu")]
    assert tune.pick(_Shape(), cands).name == "lut-cpu"
    err = capsys.readouterr().err
    assert "cannot write the kernel cache" in err and str(tmp_path / "file") in err, err
    assert "Traceback" not in err


def test_tuned_compile_survives_a_corrupt_cache(tune, tmp_path, capsys):
    from compiler.backends.tvm import kernels_lut

    if not kernels_lut.host_has_avx512bw():
        pytest.skip("needs two fast CPU kernels for one shape (AVX-512BW)")
    f = tmp_path / "cache" / "tvm-kernels.json"
    f.parent.mkdir()
    f.write_text('{"half a cache": {"lut-cpu": 0.1')
    model = write_gguf(tmp_path / "m.gguf", layers=1)
    out = tmp_path / "out"
    capsys.readouterr()
    code, _, err = run_cli(["compile", model, "-o", out, "--target", "tvm-cpu", "--tune", "--quant", "w4g32"], capsys)
    assert code == 0, err
    assert err.count("warning: ") == 1 and str(f) in err and "Traceback" not in err, err
    assert (out / "manifest.json").is_file() and tune.calls
    assert all(tune._valid_entry(v) for v in json.loads(f.read_text()).values())  # rebuilt from the measurements


@pytest.mark.parametrize(
    "mutate,names",
    [
        pytest.param(cfg(hidden_size="64"), "hidden_size", id="report-hidden-size-string"),
        pytest.param(cfg(vocab_size=321), "vocab_size 321", id="report-vocab-disagrees-with-header"),
        pytest.param(write("config.json", "[]"), "config.json", id="report-config-a-list"),
    ],
)
def test_report_checks_the_config(bases, tmp_path, capsys, mutate, names):
    """`lowbit report` reads no weights, but the config it costs is checked as compile checks it (the tensor
    shapes from the safetensors headers)."""
    model = tmp_path / "model"
    shutil.copytree(bases["hf"], model)
    mutate(model)
    out = tmp_path / "out"
    capsys.readouterr()
    code, _, err = run_cli(["report", model, "-o", out, "--no-sweep", "--designs", "mac", "--platforms", "h100-sxm"], capsys)
    assert_one_line_error(code, err, out, names)
