"""The compile command's per-layer options (`--quant-layer`, `--quant keep`, the group rule's note), `lowbit show`'s
summary, and `lowbit report` / `lowbit sweep` on a model whose hidden size (576, as SmolLM2) the group 128 does
not divide."""

from __future__ import annotations

import json

import pytest

from tests.helpers import run_cli

# SmolLM2-135M's layer widths (hidden 576 = 9 * 64, FFN 1536), one layer: the cost model reads only the config
SMOL = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
        "num_hidden_layers": 1, "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64, "vocab_size": 512,
        "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "max_position_embeddings": 2048, "tie_word_embeddings": True}


@pytest.fixture(scope="module")
def smol_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("smol")
    (d / "config.json").write_text(json.dumps(SMOL))
    return d


def test_model_linears_take_the_group_rule(smol_dir):
    from runtime.shapes import model_linears

    groups = {(lin.name, lin.K): lin.group for lin in model_linears(str(smol_dir), "w4g128a8").linears}
    assert groups[("self_attn.q_proj", 576)] == 64 and groups[("mlp.down_proj", 1536)] == 128


def test_report_with_hidden_576(smol_dir, tmp_path, capsys):
    code, so, se = run_cli(["report", smol_dir, "-o", tmp_path / "r", "--quant", "w4g64a8", "--no-sweep", "--designs", "mac", "--platforms", "h100-sxm"], capsys)
    assert code == 0, se
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    assert {(lin["K"], lin["group"]) for lin in data["linears"]} == {(576, 64), (1536, 64)}


def test_sweep_with_hidden_576(smol_dir, tmp_path, capsys):
    code, so, se = run_cli(["sweep", smol_dir, "-o", tmp_path / "s", "--designs", "mac", "--shapes", "2x64", "--bits", "4", "--acts", "a8", "--groups", "128", "-j", "1"], capsys)
    assert code == 0, se
    assert "1 configurations (0 invalid)" in so  # K=576 layers run at g64 inside the g128 point, not an error


def test_compile_quant_layer_note_and_show(tmp_path, capsys):
    from tests.helpers import write_hf_dir

    d = tmp_path / "m"
    write_hf_dir(d, "llama-tiny")
    cfg = json.loads((d / "config.json").read_text())
    cfg["intermediate_size"] = 720  # down_proj K=720: no supported group divides it -> per-channel
    (d / "config.json").write_text(json.dumps(cfg))
    from safetensors.numpy import save_file

    from compiler.frontend.presets import Preset, preset_weights

    save_file(preset_weights(Preset("x", "llama", cfg, ""), 0), str(d / "model.safetensors"))
    out = tmp_path / "a"
    code, so, se = run_cli(["compile", d, "-o", out, "--quant", "w4g128", "--quant-layer", "o_proj=w8g32,lm_head=w8pc"], capsys)
    assert code == 0, se
    notes = [line for line in so.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "K=720" in notes[0] and "per-channel" in notes[0]
    mf = json.loads((out / "manifest.json").read_text())
    assert mf["quant"]["overrides"] == {"o_proj": "w8g32", "lm_head": "w8pc"}
    assert mf["quant"]["layers"]["model.layers.0.mlp.down_proj.weight"]["as"] == "w4pc"
    code, so, se = run_cli(["show", out], capsys)
    assert code == 0 and "4 x override o_proj -> w8g32" in so and "1 x override lm_head -> w8pc" in so


@pytest.mark.parametrize("args,expect", [
    (["--quant", "keep"], "stores no quantized weights"),
    (["--quant", "w4g128", "--quant-layer", "nothing=w8pc"], "match no layer"),
    (["--quant", "w4g128a8", "--quant-layer", "down_proj=w8pca16"], "activation mode"),
    (["--quant", "w4g32-min", "--target", "mac", "--quant-layer", "down_proj=ternary-min"], "always symmetric"),
])
def test_compile_quant_errors_are_one_line(tmp_path, capsys, args, expect):
    code, so, se = run_cli(["compile", "llama-tiny", "-o", tmp_path / "o", *args], capsys)
    lines = [line for line in se.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and expect in lines[0], se
    assert not (tmp_path / "o").exists()


def test_compile_keep_from_a_gguf_and_show(tmp_path, capsys):
    from tests.compiler.frontend.gguf_fixtures import write_llama_gguf

    f = tmp_path / "t.gguf"
    write_llama_gguf(f, types={"ffn_down": "Q6_K"}, hidden=64, inter=256)  # Q4_1 linears, Q8_0 tied table
    out = tmp_path / "a"
    code, so, se = run_cli(["compile", f, "-o", out, "--quant", "keep", "--act", "a8"], capsys)
    assert code == 0, se
    mf = json.loads((out / "manifest.json").read_text())
    assert mf["quant"]["summary"] == {"kept Q4_1 as w4g32a8-min": 12, "kept Q6_K as w8g16k8a8": 2, "kept Q8_0 as w8g32a8": 1}
    ops = [n["op"] for n in mf["graph"]["nodes"]]
    assert "qembedding" in ops and "embedding" not in ops
    code, so, se = run_cli(["show", out], capsys)
    assert code == 0 and "12 x kept Q4_1 as w4g32a8-min" in so and "2 x kept Q6_K as w8g16k8a8" in so
