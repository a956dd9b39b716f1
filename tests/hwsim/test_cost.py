"""Cost model: energy parts sum to the total, area from the yosys reports, the fitted component model,
rooflines (layer tables equal the frontend's graph; scale and zero-point bytes are counted)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hwsim.config import ArrayConfig
from hwsim.designs import DESIGNS
from hwsim.arrays import simulate_shape
from hwsim.cost import area, energy, roofline
from hwsim.memory import MemoryConfig
from runtime import shapes


@given(
    design=st.sampled_from(list(DESIGNS)),
    bits=st.integers(1, 4),
    act=st.sampled_from(["a8", "a16"]),
    M=st.integers(1, 300),
    N=st.sampled_from([64, 512, 2048, 3000]),
    K=st.sampled_from([128, 1024, 4096]),
    node=st.sampled_from(["45nm", "28nm", "7nm"]),
    dram=st.floats(1, 2000),
)
def test_energy_total_is_sum_of_parts(design, bits, act, M, N, K, node, dram):
    cfg = ArrayConfig(design=design, bits=bits, act=act, group=128)
    mem = MemoryConfig(dram_gbps=dram)
    r = simulate_shape(cfg, M, N, K, mem)
    e = energy.layer_energy_pj(cfg, r.activity, node, mem)
    parts = {k: v for k, v in e.items() if k != "total"}
    assert set(parts) == {"adds", "mults", "muxes", "registers", "sram_weight", "sram_act", "sram_out", "dram"}
    assert all(v >= 0 for v in parts.values())
    assert math.isclose(e["total"], sum(parts.values()), rel_tol=1e-12)
    assert r.cycles == r.compute_cycles + r.stall_cycles
    # DRAM energy is exactly bytes x the [HAN16] figure (640 pJ per 32 bits), not node-scaled
    assert math.isclose(e["dram"], r.activity["dram_bytes"] * 160.0, rel_tol=1e-12)


def test_energy_constants_and_scaling():
    assert energy.add_pj(8) == pytest.approx(0.03) and energy.add_pj(32) == pytest.approx(0.1)
    assert energy.mult_pj(8, 8) == pytest.approx(0.2) and energy.mult_pj(32, 32) == pytest.approx(3.1)
    assert energy.sram_pj_per_byte(8192) * 4 == pytest.approx(5.0)
    # the sqrt capacity rule lands within 15% of Horowitz's 32 KB and 1 MB points (20 and 100 pJ per 64 bits)
    assert energy.sram_pj_per_byte(32 * 1024) * 8 == pytest.approx(20, rel=0.15)
    assert energy.sram_pj_per_byte(1024 * 1024) * 8 == pytest.approx(100, rel=0.15)
    cfg = ArrayConfig(design="mac", bits=4, group=128)
    act = simulate_shape(cfg, 16, 256, 256).activity
    e45 = energy.layer_energy_pj(cfg, act, "45nm")
    e28 = energy.layer_energy_pj(cfg, act, "28nm")
    assert e28["mults"] == pytest.approx(e45["mults"] * 28 / 45)
    assert e28["dram"] == e45["dram"]
    with pytest.raises(ValueError):
        energy.layer_energy_pj(cfg, act, "3nm")
    # the datapath ranks as the designs' structure says: mac multiplies, lut-tc and mixpe do not per MAC
    dp = {}
    for d in DESIGNS:
        c = ArrayConfig(design=d, bits=2, group=128)
        e = energy.layer_energy_pj(c, simulate_shape(c, 128, 2048, 2048).activity)
        dp[d] = e["adds"] + e["mults"] + e["muxes"] + e["registers"]
    assert dp["mac"] > 2 * dp["mixpe"] and dp["mac"] > 2 * dp["lut-tc"]


def test_area_from_reports():
    reps = area.load_reports()
    assert len(reps) >= 6
    for r in reps:
        a = area.cells_area_um2(r["cells"], "45nm")
        assert not a["unknown"], f"unmapped yosys cells {a['unknown']}"
        assert a["total_um2"] == pytest.approx(a["logic_um2"] + a["ff_um2"])
        # generic-cell um^2 per CMOS transistor of the same netlist stays in a narrow band (~0.18 um^2 at 45 nm)
        assert 0.15 < a["total_um2"] / r["transistors"] < 0.22
        cfg = ArrayConfig.from_dict(r["config"])
        got = area.array_area(cfg, "28nm")
        assert got["source"].startswith("yosys")
        assert got["total_um2"] == pytest.approx(a["total_um2"] * (28 / 45) ** 2)
    # the measured ordering of our RTL: mac is the largest; W4 is larger than W2 for every design
    by = {(r["design"], r["config"]["bits"]): area.cells_area_um2(r["cells"])["total_um2"] for r in reps}
    for b in (2, 4):
        assert by[("mac", b)] > by[("mixpe", b)] > by[("lut-tc", b)]
    for d in DESIGNS:
        assert by[(d, 4)] > by[(d, 2)]


def test_component_model_fit():
    fit = area.fit_component_model()
    assert fit["max_abs_rel_err"] < 0.06
    for e in fit["errors"]:
        assert abs(e["ff_bits_model"] - e["ff_bits_yosys"]) <= 32  # only control flip-flops uncounted
    # unsynthesized configurations: bigger arrays are bigger, and the source says it is the fit
    small = area.array_area(ArrayConfig(design="mixpe", M=2, N=64, bits=4, group=64))
    big = area.array_area(ArrayConfig(design="mixpe", M=4, N=128, bits=4, group=64))
    assert small["source"] == "component model fit"
    assert big["total_um2"] > 3 * small["total_um2"]


def test_sram_area():
    assert area.sram_area_um2(1, "28nm") == pytest.approx(8192 * 0.127 / 0.7)
    m = area.memory_area(MemoryConfig(), "45nm")
    assert m["total_um2"] == pytest.approx(m["weight_sram_um2"] + m["act_sram_um2"] + m["out_sram_um2"])


@pytest.mark.parametrize("fixture", ["llama_tiny", "bert_tiny"])
def test_model_linears_equal_frontend_graph(request, fixture):
    model = request.getfixturevalue(fixture)
    g = model.graph
    want = {}
    floats = []
    for n in g.nodes:
        if n.op == "linear":
            shape = tuple(g.consts[n.inputs[1]].shape)
            if n.attrs.get("quantize"):
                key = (shapes.role(n.inputs[1]), *shape)
                want[key] = want.get(key, 0) + 1
            else:
                floats.append(shape)
    ml = shapes.model_linears(model.name, "w4g32a8")
    got = {(l.name, l.N, l.K): l.count for l in ml.linears}
    assert got == want
    assert [(n, k) for _, n, k in ml.float_linears] == floats
    assert all(l.bits == 4 and l.group == 32 and l.act == "a8" for l in ml.linears)


def test_artifact_linears(tmp_path):
    from compiler.compile import compile_model

    out = tmp_path / "art"
    compile_model("llama-tiny", out, quant="w2g64a8", targets="ref", progress=False)
    ml = shapes.model_linears(str(out), "w4g128")  # the artifact's own quantization wins
    assert ml.quant.startswith("w2g64")
    assert sum(l.count for l in ml.linears) == 4 * 7
    assert all(l.bits == 2 and l.group == 64 for l in ml.linears)


def test_roofline_counts_scales_and_zeros():
    lin = roofline.Linear("x", N=4096, K=4096, count=1, bits=4, group=128, act="a16")
    b = roofline.kernel_bytes(lin, 1)
    assert b["codes"] == 4096 * 4096 / 2
    assert b["scales"] == 4096 * 32 * 2 and b["zeros"] == 4096 * 32 * 4 / 8
    assert b["total"] == b["codes"] + b["scales"] + b["zeros"] + b["acts"] + b["outs"]
    h100 = roofline.PLATFORMS["h100-sxm"]
    dec = roofline.roofline_time(lin, 1, h100)
    pre = roofline.roofline_time(lin, 4096, h100)
    assert dec["bound"] == "memory" and pre["bound"] == "compute"
    assert dec["time_s"] == pytest.approx(b["total"] / 3.35e12)
    assert pre["time_s"] == pytest.approx(2 * 4096**3 / 989.4e12)


def test_roofline_counts_two_level_scales_as_llama_cpp_stores_them():
    """Q4_K (w4g32k-min): 4 + 12/32 + 32/256 = 4.5 bits per weight of codes, scales and minimums."""
    lin = roofline.Linear("x", N=4096, K=4096, count=1, bits=4, group=32, act="a16", mins=True, sub_bits=6)
    b = roofline.kernel_bytes(lin, 1)
    assert b["scales"] == b["zeros"] == 4096 * (128 * 6 / 8 + 16 * 2)
    assert (b["codes"] + b["scales"] + b["zeros"]) * 8 / (4096 * 4096) == 4.5
    one = roofline.kernel_bytes(roofline.Linear("x", 4096, 4096, 1, 4, 32, "a16", mins=True), 1)
    assert one["scales"] == one["zeros"] == 4096 * 128 * 2  # an fp16 scale and minimum per group: Q4_1's 5.0


def test_roofline_counts_sparse_outliers(tmp_path):
    """4 bytes per outlier (fp16 value, int16 column); an artifact's weight outliers and LLM.int8 features both count."""
    lin = roofline.Linear("x", N=4096, K=4096, count=1, bits=3, group=32, act="a16", sparse=41)
    b = roofline.kernel_bytes(lin, 1)
    assert b["sparse"] == 4096 * 41 * 4 and b["total"] == b["codes"] + b["scales"] + b["zeros"] + b["sparse"] + b["acts"] + b["outs"]
    assert roofline.roofline_time(lin, 1, roofline.PLATFORMS["h100-sxm"])["sparse_bytes"] == b["sparse"]
    from compiler.compile import compile_model

    out = tmp_path / "art"
    compile_model("llama-tiny", out, quant="w4g32a8-sp1", targets="ref", progress=False, act_outliers=2)
    ml = shapes.model_linears(str(out), "w4g128")
    by_k = {l.K: l.sparse for l in ml.linears}
    assert by_k == {256: 3 + 2, 768: 8 + 2}  # round(1% of K), at least one, plus the 2 float features


def test_unknown_model_is_user_error():
    from compiler.errors import LowbitError

    with pytest.raises(LowbitError):
        shapes.model_linears("no-such-model")
    with pytest.raises(LowbitError):
        roofline.platform("tpu-v9")


def test_this_cpu_is_measured():
    p = roofline.measure_this_cpu(0.05)
    assert p.bandwidth > 1e8 and p.int8_ops > 1e8
    assert "measured" in p.source and roofline.platform("this-cpu") is p


def test_component_model_on_held_out_reports():
    ho = area.holdout_errors()
    assert len(ho) >= 4 and {e["design"] for e in ho} == set(DESIGNS)
    for e in ho:
        assert abs(e["rel_err"]) < 0.06, e
        assert abs(e["ff_bits_model"] - e["ff_bits_yosys"]) <= 32


def test_unsymmetrized_lut_variant_is_larger():
    # table symmetrization halves the tables and the read muxes at the cost of one negation per PE
    for b in (1, 2, 4):
        cfg = ArrayConfig(design="lut-tc", bits=b, group=128)
        sym, plain = area.component_counts(cfg), area.component_counts(cfg, variant="unsymmetrized")
        assert plain["ff_bits"] - sym["ff_bits"] == cfg.M * 8 * cfg.table_bits
        mn, tw = cfg.M * cfg.N, cfg.table_bits
        assert plain["mux_bits"] - sym["mux_bits"] == mn * tw * (15 - 7) - (mn * tw + cfg.N * (cfg.K - 1))
        assert 1.05 < area.model_area_um2(cfg, variant="unsymmetrized") / area.model_area_um2(cfg) < 1.5


def test_hf_folder_config(tmp_path):
    import json

    from compiler.errors import LowbitError
    from compiler.frontend.presets import PRESETS

    (tmp_path / "config.json").write_text(json.dumps(PRESETS["llama-tiny"].config))
    ml = shapes.model_linears(str(tmp_path), "w2g64a8")
    assert sum(l.count for l in ml.linears) == 28 and ml.family == "llama"
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    with pytest.raises(LowbitError, match="lacks a field"):
        shapes.model_linears(str(tmp_path))


def test_model_linears_from_config_takes_plain_data():
    from compiler.errors import LowbitError
    from compiler.frontend.presets import PRESETS

    cfg = dict(PRESETS["llama-tiny"].config)
    ml = roofline.model_linears_from_config("m", "llama", cfg, bits=3, group=0, act="a16", quant="w3pc", source="test")
    assert (ml.model, ml.family, ml.quant, ml.source) == ("m", "llama", "w3pc", "test")
    assert all(l.group == l.K and l.bits == 3 and l.act == "a16" and not l.ternary for l in ml.linears)  # group 0: one per row
    assert ml.float_linears == [("lm_head", cfg["vocab_size"], cfg["hidden_size"])]
    assert shapes.model_linears("llama-tiny", "w3pc").linears == ml.linears  # the CLI's path gives the same layers
    tern = roofline.model_linears_from_config("m", "llama", cfg, bits=2, group=64, act="a8", ternary=True)
    assert all(l.ternary and l.bits == 2 and l.group == 64 for l in tern.linears)
    with pytest.raises(LowbitError, match="not a multiple of group 48"):
        roofline.model_linears_from_config("m", "llama", cfg, bits=4, group=48, act="a8")
    with pytest.raises(LowbitError, match="lacks a field"):
        roofline.model_linears_from_config("m", "llama", {"hidden_size": 64}, bits=4, group=64, act="a8")
    with pytest.raises(LowbitError, match="no linear-layer table"):
        roofline.model_linears_from_config("m", "gpt2", cfg, bits=4, group=64, act="a8")


def test_ternary_preset_keeps_ternary_weights():
    from compiler.frontend.presets import PRESETS

    name = next(n for n, p in PRESETS.items() if p.ternary)
    ml = shapes.model_linears(name, "w4g64a8")
    assert ml.quant.startswith("ternary") and all(l.ternary and l.bits == 2 and l.group == 64 and l.act == "a8" for l in ml.linears)


def test_kv_cache_bytes_and_decode_vs_context(tmp_path):
    """The cost model's KV bytes per token are the quantized cache's (compiler.passes.kv_quant), and an artifact
    names its cache's format; a decode step's time grows with the context by exactly those bytes."""
    import runtime
    from compiler.compile import compile_model

    out = tmp_path / "art"
    compile_model("llama-tiny", out, quant="w4g32", targets="ref", progress=False, kv="fp8-w8")
    ml = shapes.model_linears(str(out), "w4g128")
    assert ml.kv == {"layers": 4, "kv_heads": 4, "head_dim": 32, "format": "fp8-w8"}
    rows = roofline.decode_vs_context(ml, roofline.PLATFORMS["h100-sxm"], contexts=(512, 8192))
    by = {(r["kv"], r["context"]): r for r in rows}
    # the artifact's own format is costed beside the common ones, at the bytes its cache arrays take per row
    # (the window's rings are fixed rows: the arrays of a two-row cache less those of a one-row cache)
    m = runtime.load(out)
    per_row = sum(a.nbytes for a in m._cache_feeds(2).values()) - sum(a.nbytes for a in m._cache_feeds(1).values())
    assert by[("fp8-w8", 512)]["kv_bytes_per_token"] == per_row == by[("fp8", 512)]["kv_bytes_per_token"]
    for fmt in (*roofline.KV_FORMATS, "fp8-w8"):
        a, b = by[(fmt, 512)], by[(fmt, 8192)]
        assert b["time_s"] - a["time_s"] == pytest.approx((8192 - 512) * a["kv_bytes_per_token"] / 3.35e12)
    assert by[("fp16", 8192)]["kv_bytes"] / by[("int4", 8192)]["kv_bytes"] >= 3.5


def test_report_says_which_codebook_layers_run_and_which_are_costed(tmp_path, capsys):
    """nvfp4 (E2M1 codes) runs on the arrays' E2M1 weight format; nf4 (a NormalFloat table) is only costed."""
    from compiler.compile import compile_model
    from tests.helpers import run_cli

    for quant, line in (("nf4", "The nf4 layers are costed on the arrays"), ("nvfp4", "The nvfp4 layers run on the arrays' E2M1 weight format")):
        out = tmp_path / quant
        compile_model("llama-tiny", out, quant=quant, targets="ref", progress=False)
        code, _, err = run_cli(["report", out, "-o", tmp_path / f"rep-{quant}", "--no-sweep"], capsys)
        assert code == 0, err
        md = (tmp_path / f"rep-{quant}" / "report.md").read_text()
        assert line in md and md.count("layers are costed on the arrays") == (quant == "nf4")
    ml = shapes.model_linears(str(out), "w4g128")
    assert all(l.fp == "nvfp4" and l.codebook for l in ml.linears)
    lin = ml.linears[0]
    assert roofline.kernel_bytes(lin, 1)["scales"] == lin.N * (lin.K // 16) and roofline.kernel_bytes(lin, 1)["zeros"] == 0  # E4M3 bytes
