"""`lowbit report` and `lowbit sweep`: the report renders (HTML parses, PNGs exist and are valid, CSV/JSON
agree with each other), user errors are one line with exit code 2 and leave nothing behind."""

from __future__ import annotations

import csv
import json
from html.parser import HTMLParser

import pytest

from hwsim.report import build_report
from hwsim.report.sweep import pareto_front, run_sweep
from runtime.shapes import model_linears
from tests.helpers import run_cli

PNG = b"\x89PNG\r\n\x1a\n"


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: dict[str, int] = {}
        self.imgs: list[str] = []
        self.stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if tag == "img":
            self.imgs.append(dict(attrs)["src"])
        if tag not in ("img", "meta", "br"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}> (open: {self.stack[-3:]})"
        self.stack.pop()


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("rep") / "llama-tiny"
    stages = []
    build_report(model_linears("llama-tiny", "w4g64a8"), ["lut-tc", "mixpe", "mac"], out, prefill=32,
                 platforms=("h100-sxm",), jobs=2, progress=lambda s, d, t: stages.append(s))
    assert {"simulate layers", "sweep", "write"} <= set(stages)
    return out


def test_report_files_render(report_dir):
    for name in ("roofline.png", "layer_time.png", "area_energy.png", "pareto.png"):
        data = (report_dir / name).read_bytes()
        assert data[:8] == PNG and len(data) > 5000, name
    p = _Collect()
    p.feed((report_dir / "report.html").read_text())
    p.close()
    assert not p.stack
    assert p.tags.get("table", 0) >= 6 and p.tags.get("h2", 0) >= 5
    assert len(p.imgs) == 4 and all(s.startswith("data:image/png;base64,") for s in p.imgs)  # self-contained
    md = (report_dir / "report.md").read_text()
    for name in ("roofline.png", "layer_time.png", "area_energy.png", "pareto.png"):
        assert f"]({name})" in md
    assert "| LUT-TC vs MAC, compute density (W2A8) | >10x |" in md
    assert not list(report_dir.parent.glob(".llama-tiny.tmp-*"))


def test_report_numbers_are_consistent(report_dir):
    data = json.loads((report_dir / "report.json").read_text())
    assert data["model"] == "llama-tiny" and data["quant"] == "w4g64a8"
    layers = list(csv.DictReader(open(report_dir / "layers.csv")))
    for d in ("lut-tc", "mixpe", "mac"):
        x = data["designs"][d]
        for ph in ("prefill", "decode"):
            rows = [r for r in layers if r["design"] == d and r["phase"] == ph]
            assert len(rows) == 7
            t = sum(float(r["time_us"]) * int(r["count"]) for r in rows) / 1e6
            assert t == pytest.approx(x[f"{ph}_s"], rel=1e-9)
            e = x["energy_uj"][ph]
            assert e["total"] == pytest.approx(sum(v for k, v in e.items() if k != "total"), rel=1e-12)
            assert sum(float(r["energy_uj"]) * int(r["count"]) for r in rows) == pytest.approx(e["total"], rel=1e-9)
        assert 0 < x["prefill_utilization"] <= 1
    # same beats per cycle at the same array shape: mixpe and mac take the same cycles
    assert data["designs"]["mixpe"]["prefill_cycles"] == data["designs"]["mac"]["prefill_cycles"]
    paper = list(csv.DictReader(open(report_dir / "paper_vs_ours.csv")))
    dens = {r["claim"]: r for r in paper}
    assert float(dens["MixPE vs dequantize baseline (mac), speed at equal array shape (W4A8)"]["ours"]) == pytest.approx(1.0)
    assert float(dens["LUT-TC vs MAC, compute density (W2A8)"]["ours"]) > 1.0
    sweep = list(csv.DictReader(open(report_dir / "sweep.csv")))
    assert len(sweep) == 3 * 4 * 2 * 2 * 2
    assert any(r["pareto"] == "True" for r in sweep)


def test_pareto_front():
    rows = [{"a": 1, "b": 5}, {"a": 2, "b": 3}, {"a": 3, "b": 4}, {"a": 4, "b": 1}, {"a": 2, "b": 6}]
    assert sorted(pareto_front(rows, "a", "b")) == [0, 1, 3]


def test_sweep_serial_equals_parallel():
    lin = [{"name": "x", "N": 256, "K": 256, "count": 2}]
    grid = {"design": ["lut-tc", "mixpe"], "shape": ["2x64", "4x32"], "bits": [2], "act": ["a8"], "group": [64]}
    a = run_sweep(lin, grid, prefill=8, jobs=1)
    b = run_sweep(lin, grid, prefill=8, jobs=2)
    assert a == b and len(a) == 4
    # a group that does not divide K falls back to the largest that does (K=96: g32); a layer whose group
    # (per-channel K=90) is not a multiple of the array's K is reported, not fatal
    ok = run_sweep([{"name": "x", "N": 256, "K": 96, "count": 1}], {**grid, "design": ["mac"]}, jobs=1)
    assert all("error" not in r for r in ok)
    bad = run_sweep([{"name": "x", "N": 256, "K": 90, "count": 1}], {**grid, "design": ["mac"]}, jobs=1)
    assert all("not a multiple of the array's K" in r["error"] for r in bad)


def test_cli_report_and_sweep(tmp_path, capsys):
    out = tmp_path / "r"
    code, so, se = run_cli(["report", "bert-tiny", "-o", out, "--no-sweep", "--platforms", "h100-sxm", "--prefill", "16"], capsys)
    assert code == 0, se
    assert (out / "report.html").is_file() and not (out / "pareto.png").exists()
    assert "wrote" in so
    # rerun into the same report folder replaces it
    one = json.loads((out / "report.json").read_text())["designs"]["mixpe"]
    code, so, se = run_cli(["report", "bert-tiny", "-o", out, "--no-sweep", "--platforms", "h100-sxm", "--designs", "mixpe",
                            "--arrays", "4", "--prefill", "16"], capsys)
    assert code == 0, se
    d = json.loads((out / "report.json").read_text())["designs"]
    assert list(d) == ["mixpe"] and d["mixpe"]["arrays"] == 4
    assert d["mixpe"]["area"]["array_mm2"] == pytest.approx(4 * one["area"]["array_mm2"])
    assert d["mixpe"]["peak_tops"] == pytest.approx(4 * one["peak_tops"])
    assert d["mixpe"]["prefill_s"] < one["prefill_s"]
    sw = tmp_path / "s"
    code, so, se = run_cli(["sweep", "llama-tiny", "-o", sw, "--shapes", "2x64", "--bits", "2,4", "--acts", "a8", "--groups", "64", "-j", "1"],
                           capsys)
    assert code == 0, se
    assert len(list(csv.DictReader(open(sw / "sweep.csv")))) == 3 * 2
    assert (sw / "pareto.png").read_bytes()[:8] == PNG
    assert "component model" in so and json.loads((sw / "area_fit.json").read_text())["max_abs_rel_err"] < 0.06


@pytest.mark.parametrize(
    "args,msg",
    [
        (["report", "no-such-model", "--no-sweep"], "is not a preset"),
        (["report", "llama-tiny", "--designs", "lut-tc,tpu"], "unknown designs"),
        (["report", "llama-tiny", "--platforms", "tpu"], "unknown platform"),
        (["report", "llama-tiny", "--dram-gbps", "0"], "invalid memory"),
        (["report", "llama-tiny", "--quant", "none"], "float model"),
        (["report", "llama-tiny", "--quant", "w8g32"], "does not fit the lut-tc array: weight bits must be 1..4, got 8"),
        (["report", "llama-tiny", "--quant", "w4g32afp8"], "does not fit the lut-tc array: act must be a8 or a16"),
        (["sweep", "llama-tiny", "--shapes", "2by64"], "is not MxN"),
        (["sweep", "llama-tiny", "--bits", "two"], "not a comma-separated list"),
    ],
)
def test_cli_user_errors(tmp_path, capsys, args, msg):
    out = tmp_path / "o"
    code, so, se = run_cli(args + ["-o", out], capsys)
    assert code == 2
    assert se.count("\n") == 1 and msg in se and "Traceback" not in se
    assert not out.exists() and not list(tmp_path.glob(".o.*"))


def test_fp4_layers_run_on_the_e2m1_weight_format(tmp_path, capsys):
    """mxfp4 / nvfp4 are costed on the arrays' E2M1 configuration (what `lowbit compile --target D` builds), not as
    4-bit integer codes: lut-tc reads five bit-planes (more cycles than INT4), mixpe and mac no zero points."""
    runs = {}
    for quant in ("mxfp4", "w4g32"):
        out = tmp_path / quant
        code, so, se = run_cli(["report", "llama-tiny", "-o", out, "--quant", quant, "--no-sweep", "--platforms", "h100-sxm", "--prefill", "16"], capsys)
        assert code == 0, se
        runs[quant] = json.loads((out / "report.json").read_text())["designs"]
    md = (tmp_path / "mxfp4" / "report.md").read_text()
    assert "E2M1 weight format" in md and "as integer codes of their width" not in md
    assert runs["mxfp4"]["lut-tc"]["config"]["weight_format"] == "e2m1" and runs["w4g32"]["lut-tc"]["config"]["weight_format"] == "int"
    assert runs["mxfp4"]["lut-tc"]["prefill_s"] > runs["w4g32"]["lut-tc"]["prefill_s"]  # five planes against four


def test_sweep_takes_fp4_weights(tmp_path, capsys):
    """`--bits 4,fp4`: the E2M1 arrays beside the INT4 ones in one CSV (lut-tc's five planes: 4/5 of the MACs per
    cycle; mixpe and mac: the same rate, no zero points)."""
    sw = tmp_path / "s"
    code, so, se = run_cli(["sweep", "llama-tiny", "-o", sw, "--shapes", "2x64", "--bits", "4,fp4", "--acts", "a8", "--groups", "32", "-j", "1"], capsys)
    assert code == 0, se
    rows = {(r["design"], r["weight_format"]): r for r in csv.DictReader(open(sw / "sweep.csv"))}
    assert len(rows) == 6 and {r["bits"] for r in rows.values()} == {"4"}
    assert float(rows[("lut-tc", "e2m1")]["peak_macs_per_cycle"]) == 0.8 * float(rows[("lut-tc", "int")]["peak_macs_per_cycle"])
    assert rows[("mixpe", "e2m1")]["peak_macs_per_cycle"] == rows[("mixpe", "int")]["peak_macs_per_cycle"]
    code, so, se = run_cli(["sweep", "llama-tiny", "-o", tmp_path / "t", "--bits", "4,fp5"], capsys)
    assert code == 2 and "--bits '4,fp5' is not a comma-separated list of integers and fp4" in se


def test_refuses_to_overwrite_foreign_folder(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    code, so, se = run_cli(["report", "llama-tiny", "-o", out, "--no-sweep"], capsys)
    assert code == 2 and "not a lowbit report folder" in se
    assert (out / "keep.txt").read_text() == "x"


def _small_linears():
    from hwsim.cost.roofline import Linear, ModelLinears

    return ModelLinears("small", "llama", "w4g128a8", [Linear("x", N=256, K=256, count=2, bits=4, group=128, act="a8")])


def test_paper_rows_follow_the_registry():
    """Claim rows come from the design records: a registered design's claims join the table, a claim against
    a design that is not registered is skipped, an unmeasured claim has no number, the published rows stay."""
    from dataclasses import replace

    from hwsim import designs
    from hwsim.designs import DESIGNS, Claim
    from hwsim.memory import MemoryConfig
    from hwsim.report.analyze import paper_comparison

    ml, mem = _small_linears(), MemoryConfig()
    base = paper_comparison(ml, 8, mem, "28nm")
    claims = (Claim("density", "mac", "2x", "test"), Claim("energy", "no-such-array", "1x", "test"),
              Claim("unmeasured", "an older array", "3x", "test"))
    with designs.registered(replace(DESIGNS["mac"], name="mac-claims", label="mac-claims", order=99, claims=claims)):
        got = paper_comparison(ml, 8, mem, "28nm")
    rows = {r["claim"]: r for r in got["rows"]}
    assert all(rows[r["claim"]] == r for r in base["rows"])  # the published designs' rows are unchanged
    assert set(got["per_design"]["w2"]) == set(base["per_design"]["w2"]) | {"mac-claims"}
    for w in ("W2A8", "W4A8"):
        r = rows[f"mac-claims vs MAC, compute density ({w})"]
        assert r["paper"] == "2x" and r["ours"] > 0
    assert rows["mac-claims vs an older array"]["ours"] is None
    assert not [c for c in rows if "no-such-array" in c]
    assert len(got["rows"]) == len(base["rows"]) + 3
    assert got["reasons"] == base["reasons"]


def test_paper_rows_of_a_derived_design_use_its_papers_words():
    from hwsim import designs
    from hwsim.designs import DESIGNS
    from hwsim.memory import MemoryConfig
    from hwsim.report.analyze import paper_comparison

    with designs.registered(DESIGNS["mixpe"].derive("mixpe-wide", order=25)):
        got = paper_comparison(_small_linears(), 8, MemoryConfig(), "28nm")
    claims = [r["claim"] for r in got["rows"]]
    assert "mixpe-wide vs dequantize baseline (mac), speed at equal array shape (W4A8)" in claims
    assert "mixpe-wide vs dequantize baseline (mac), energy (W2A8, datapath)" in claims


def test_reasons_name_only_the_designs_in_the_data():
    from hwsim.memory import MemoryConfig
    from hwsim.report.analyze import _reasons, paper_comparison

    per = paper_comparison(_small_linears(), 8, MemoryConfig(), "28nm")["per_design"]
    assert len(_reasons(per)) == 5
    no_lut = {w: {d: x for d, x in p.items() if d != "lut-tc"} for w, p in per.items()}
    texts = _reasons(no_lut)
    assert len(texts) == 3 and not any("lut-tc" in t for t in texts)
    only_lut = {w: {d: x for d, x in p.items() if d == "lut-tc"} for w, p in per.items()}
    assert len(_reasons(only_lut)) == 1


def test_plot_colours_and_sweep_designs_come_from_the_registry():
    from hwsim import designs
    from hwsim.designs import DESIGNS
    from hwsim.report import plots
    from hwsim.report.sweep import default_grid

    assert default_grid()["design"] == list(DESIGNS)
    assert {d: plots.design_color(d) for d in DESIGNS} == {d: r.color for d, r in DESIGNS.items()}
    with designs.registered(DESIGNS["mac"].derive("mac-tmp", order=99, color="#123456")):
        assert default_grid()["design"][-1] == "mac-tmp" and plots.design_color("mac-tmp") == "#123456"
    assert plots.design_color("h100-sxm", "#000000") == "#000000"


def test_write_sweep_replaces_the_folder_atomically(tmp_path):
    from compiler.errors import LowbitError
    from hwsim.report.sweep import write_sweep

    lin = [{"name": "x", "N": 256, "K": 256, "count": 1}]
    grid = {"design": ["mac"], "shape": ["2x64"], "bits": [2, 4], "act": ["a8"], "group": [64]}
    rows = run_sweep(lin, grid, prefill=8, jobs=1)
    out = tmp_path / "sw"
    sm = write_sweep(out, rows, "t")
    assert sm["configurations"] == 2 and sm["invalid"] == 0 and sm["front"]
    assert {p.name for p in out.iterdir()} == {"sweep.csv", "area_fit.json", "pareto.png"}
    sm = write_sweep(out, rows[:1], "t")
    assert len(list(csv.DictReader(open(out / "sweep.csv")))) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["sw"]  # no temporary or old folder left
    # only invalid configurations: the CSV and the fit, no plot
    bad = run_sweep([{"name": "x", "N": 256, "K": 90, "count": 1}], grid, jobs=1)
    assert write_sweep(out, bad, "t")["configurations"] == 0 and not (out / "pareto.png").exists()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    with pytest.raises(LowbitError, match="not a sweep folder"):
        write_sweep(foreign, rows, "t")
    assert [p.name for p in foreign.iterdir()] == ["keep.txt"]


def test_report_splits_a_block_into_linears_attention_and_vector_unit(report_dir):
    data = json.loads((report_dir / "report.json").read_text())
    bl = data["blocks"]
    assert bl["block"]["hidden"] == 256 and bl["block"]["layers"] == 4
    rows = {(r["design"], r["phase"]): r for r in bl["rows"]}
    assert set(rows) == {(d, ph) for d in ("lut-tc", "mixpe", "mac") for ph in ("prefill", "decode")}
    for (d, ph), r in rows.items():
        assert r["total_cycles"] == pytest.approx(r["linears_cycles"] + r["attn_matmul_cycles"] + r["vector_cycles"])
        assert r["total_uj"] == pytest.approx(r["linears_uj"] + r["attn_matmul_uj"] + r["vector_uj"])
        assert min(r["linears_uj"], r["attn_matmul_uj"], r["vector_uj"]) > 0
        # each role once: the design's per-phase linears over the 4 blocks
        assert r["linears_cycles"] == pytest.approx(data["designs"][d][f"{ph}_cycles"] / 4)
    # decode against 33 keys (tests/hwsim/test_vector_cost.py's block by hand): mac's 8 lanes, lut-tc's 16
    # norms, adds (64 rows of 8 each), rope (q 16 rows, k 8 rows of 16 pairs), KV writes (16 rows of 8 each), gate,
    # Shiftmax, PV's rescale (64 rows of 8), SwiGLU's product (192 rows of 8)
    assert rows[("mac", "decode")]["vector_cycles"] == 2 * 567 + 2 * 8 * 10 + (2 * 18 + 18) + 2 * 2 * 10 + (23 * 154 + 154) + (3 * 33 + 17 + 2) + 8 * 10 + 24 * 10
    assert rows[("lut-tc", "decode")]["vector_cycles"] == 2 * 567 + 2 * 4 * 10 + (18 + 18) + 2 * 10 + (11 * 154 + 154) + (3 * 33 + 17 + 2) + 4 * 10 + 12 * 10
    assert bl["vector_area"]["lut-tc"]["lanes"] == 16 and bl["vector_area"]["mac"]["lanes"] == 8
    md = (report_dir / "report.md").read_text()
    assert "## One transformer block: linears, attention matmuls, vector unit" in md
    assert len(list(csv.DictReader(open(report_dir / "blocks.csv")))) == 6


def test_table_variant_gains_come_from_the_committed_netlists():
    """lut-tc's symmetrization and fusion rows: cell-area ratios of the variant netlists (docs/hwsim/lut_tc_variants.md:
    1.077x / 1.069x and 1.008x / 1.007x), beside the component model's estimate of symmetrization."""
    from hwsim.cost.area import variant_netlist_ratio
    from hwsim.memory import MemoryConfig
    from hwsim.report.analyze import paper_comparison

    rows = {r["claim"]: r for r in paper_comparison(_small_linears(), 8, MemoryConfig(), "28nm")["rows"]}
    sym = {w: rows[f"LUT-TC vs the same array without table symmetrization ({w}, netlists)"] for w in ("W2A8", "W4A8")}
    assert round(sym["W2A8"]["ours"], 3) == 1.077 and round(sym["W4A8"]["ours"], 3) == 1.069
    assert sym["W2A8"]["how"].startswith("measured: yosys netlists build-16 / build-sym")
    est = rows["LUT-TC vs the same array without table symmetrization (W2A8)"]
    assert est["how"].startswith("estimate") and est["ours"] > sym["W2A8"]["ours"]  # the model overstates the gain
    fused = rows["LUT-TC vs the array building its tables per column tile instead of reading the fused precompute (W4A8, netlists)"]
    assert round(fused["ours"], 3) == 1.007
    assert variant_netlist_ratio("lut-tc", 2, "build-16", "no-such-variant") is None
