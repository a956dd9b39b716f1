"""`lowbit report` and `lowbit sweep`: the report renders (HTML parses, PNGs exist and are valid, CSV/JSON
agree with each other), user errors are one line with exit code 2 and leave nothing behind."""

from __future__ import annotations

import csv
import json
from html.parser import HTMLParser

import pytest

from hwsim.report import build_report
from hwsim.report.sweep import pareto_front, run_sweep
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
    build_report("llama-tiny", ["lut-tc", "mixpe", "mac"], out, quant="w4g64a8", prefill=32,
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
    # invalid configurations are reported, not fatal (lanes must divide N; group must divide K)
    bad = run_sweep([{"name": "x", "N": 256, "K": 96, "count": 1}], {**grid, "design": ["mac"]}, jobs=1)
    assert all("error" in r for r in bad)


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
    code, so, se = run_cli(["sweep", "llama-tiny", "-o", sw, "--shapes", "2x64", "--bits", "2,4", "--acts", "a8", "--groups", "64", "-j", "1"], capsys)
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


def test_refuses_to_overwrite_foreign_folder(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    code, so, se = run_cli(["report", "llama-tiny", "-o", out, "--no-sweep"], capsys)
    assert code == 2 and "not a lowbit report folder" in se
    assert (out / "keep.txt").read_text() == "x"
