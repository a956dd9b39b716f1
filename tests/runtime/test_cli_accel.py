"""The accelerator path from the command line: compile, run with --compare, and the user errors."""

import re

import pytest

from tests.helpers import run_cli


@pytest.fixture(scope="module")
def bert_art(tmp_path_factory):
    from compiler.compile import compile_model

    out = tmp_path_factory.mktemp("acc") / "bert"
    compile_model("bert-tiny", out, "w4g128a8", targets="ref,lut-tc,mixpe", progress=False)
    return out


def test_compile_then_run_hwsim_compare_ref(tmp_path, capsys):
    out = tmp_path / "l"
    code, so, se = run_cli(["compile", "llama-tiny", "-o", out, "--quant", "w4g128a8", "--target", "lut-tc,mixpe"], capsys)
    assert code == 0, se
    assert (out / "lut-tc" / "program.json").is_file() and (out / "mixpe" / "weights.safetensors").is_file()
    v = out / "mixpe" / "rtl" / "mixpe_w4a8g128_m4n64k4.v"  # the array the program runs on
    assert v.is_file() and "module mixpe_w4a8g128_m4n64k4" in v.read_text()
    code, so, se = run_cli(["run", out, "--backend", "hwsim:lut-tc", "--compare", "ref", "--tokens", "3", "--verbose"], capsys)
    assert code == 0, se
    cos = float(re.search(r"cosine similarity \(logits\)\s*\S\s*([0-9.]+)", so).group(1))
    assert cos > 0.9999
    m = re.search(r"hwsim:lut-tc \(4x128 PEs, K=4\): (\d+) layer runs, ([\d,]+) cycles \(([\d,]+) DRAM stall\), ([\d.]+) uJ \(28 nm\)", so)
    assert m, so
    runs, cycles, energy = int(m.group(1)), int(m.group(2).replace(",", "")), float(m.group(4))
    assert runs == 28 * 3 and cycles > 0 and energy > 0  # a prefill and two decode steps, 28 layers each
    # the per-layer table (--verbose) lists every layer; its cycles add up to the total
    rows = re.findall(r"│ (l\d\.\w+)\s*│\s*(\d+)\s*│\s*(\d+)\s*│\s*(\d+)\s*│\s*([\d,]+)", so)
    assert len(rows) == 28 and sum(int(r[4].replace(",", "")) for r in rows) == cycles


def test_run_encoder_on_mixpe_prints_totals(bert_art, capsys):
    code, so, se = run_cli(["run", bert_art, "--backend", "hwsim:mixpe", "--compare", "ref"], capsys)
    assert code == 0, se
    assert float(re.search(r"cosine similarity, min\s*\S\s*([0-9.]+)", so).group(1)) > 0.9999
    assert 0 < float(re.search(r"max abs error \(embedding\)\s*\S\s*([0-9.e-]+)", so).group(1)) < 1e-3
    assert re.search(r"hwsim:mixpe \(4x64 PEs, K=4\): 60 layer runs, [\d,]+ cycles", so)  # 5 sentences x 12 layers


@pytest.mark.parametrize(
    "args, words",
    [
        (["compile", "llama-tiny", "-o", "{tmp}/a", "--quant", "w8g128", "--target", "lut-tc"], "8-bit weights"),
        (["compile", "llama-tiny", "-o", "{tmp}/a", "--quant", "w4g128", "--target", "mixpe", "--array", "K=3"], "not a multiple of the mixpe array's K=3"),
        (["compile", "llama-tiny", "-o", "{tmp}/a", "--quant", "none", "--target", "mac"], "needs quantized weights"),
        (["compile", "llama-tiny", "-o", "{tmp}/a", "--target", "mac", "--array", "Q=3"], "unknown --array key 'Q'"),
        (["compile", "llama-tiny", "-o", "{tmp}/a", "--target", "mixpe", "--array", "N=20"], "lanes=8 must divide N=20"),
        (["run", "{art}", "--backend", "hwsim:mac"], "was not compiled for the mac accelerator"),
        (["sim", "{art}", "--layer", "l9.q"], "'l9.q' is not a compiled accelerator layer"),
        (["sim", "{art}", "--layer", "l0.q", "--design", "mac"], "was not compiled for the mac accelerator"),
        (["sim", "--layer", "l0.q"], "--layer needs a compiled ARTIFACT"),
    ],
)
def test_user_errors_exit_2_with_one_line(tmp_path, bert_art, capsys, args, words):
    code, so, se = run_cli([a.format(tmp=tmp_path, art=bert_art) for a in args], capsys)
    assert code == 2
    assert so == "" and se.count("\n") == 1 and se.startswith("error: ") and words in se, (so, se)
    assert not (tmp_path / "a").exists()  # nothing half-written
