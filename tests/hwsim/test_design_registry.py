"""The design registry: every package reads hwsim.designs, so a new design needs no edit elsewhere.

A variant is registered here, inside the test only (`mixpe-wide`: the mixpe record with another default
array and colour), and runs through `lowbit compile --target`, the hwsim backend, the RTL generator, an RTL
simulation in its own process, `lowbit report` and `lowbit sweep`, with no other file changed.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from click.testing import CliRunner

import runtime
from compiler.backends import parse_targets, targets
from compiler.backends.accel.program import load_program
from compiler.backends.accel.reference import ProgramExecutor
from compiler.compile import compile_model
from hwsim import designs
from hwsim.config import ArrayConfig
from hwsim.designs import DESIGNS
from rtl.gen.common import generate
from runtime.backends import names as backend_names
from runtime.cli import cli

WIDE = dict(M=2, N=128, K=4, lanes=16)


@pytest.fixture
def wide():
    with designs.registered(DESIGNS["mixpe"].derive("mixpe-wide", default_array=WIDE, color="#9467bd", order=25,
                                                     title="MixPE-style array, 2 x 128 PEs")) as d:
        yield d


def test_discovery_finds_every_design_file():
    from pathlib import Path

    files = {p.stem.replace("_", "-") for p in (Path(designs.__file__).parent).glob("*.py") if p.stem != "base" and not p.stem.startswith("_")}  # as _discover: _modules are not designs
    assert set(DESIGNS) == files
    assert list(DESIGNS) == sorted(DESIGNS, key=lambda n: DESIGNS[n].order)
    for d in DESIGNS.values():
        assert d.base is None and d.derivation() is None
        assert re.fullmatch(r"#[0-9a-f]{6}", d.color)


def test_a_variant_is_a_target_a_backend_and_a_cli_choice(wide):
    assert targets()["mixpe-wide"].family == "accel"
    assert [t.name for t in parse_targets("ref,mixpe-wide")] == ["ref", "mixpe-wide"]
    assert {"hwsim:mixpe-wide", "rtl:mixpe-wide"} <= set(backend_names())
    assert list(DESIGNS).index("mixpe-wide") == list(DESIGNS).index("mixpe") + 1  # order 25
    r = CliRunner().invoke(cli, ["sim", "--help"])
    assert "mixpe-wide" in r.output


def test_a_variant_leaves_the_registry_with_its_block():
    with designs.registered(DESIGNS["mac"].derive("mac-tmp", order=99)):
        assert "mac-tmp" in targets() and list(DESIGNS)[-1] == "mac-tmp"
    assert "mac-tmp" not in DESIGNS and "mac-tmp" not in targets()
    with pytest.raises(ValueError, match="already registered"):
        designs.register(DESIGNS["mac"].derive("mixpe"))


def test_derived_designs_may_change_data_only():
    with pytest.raises(ValueError, match="may change only"):
        DESIGNS["mac"].derive("mac-fast", bit_serial=True)
    with pytest.raises(ValueError, match="unknown design"):
        ArrayConfig(design="no-such-array")


def test_variant_compiles_and_runs_on_hwsim(wide, tmp_path):
    out = tmp_path / "lt"
    compile_model("llama-tiny", out, "w4g128a8", targets="ref,mixpe,mixpe-wide", progress=False)
    m = runtime.load(out)
    prog, tensors = load_program(m.artifact, "mixpe-wide")
    assert {k: prog.array[k] for k in WIDE} == WIDE  # the variant's default array
    assert all(c.op != "PRECOMPUTE_TABLE" for c in prog.commands) and any(c.op == "SHIFT_ADD_MMA" for c in prog.commands)
    feeds = {"input_ids": np.arange(3, 10, dtype=np.int64), "positions": np.arange(7, dtype=np.int64), **m._cache_feeds(7)}
    got = m.backend("hwsim:mixpe-wide").run(feeds)
    want = ProgramExecutor(m.graph, prog, tensors).run(feeds)
    for k in m.graph.outputs:
        assert np.array_equal(got[k], want[k]), k
    # the same arithmetic as mixpe: per-tile sums do not depend on the tiling, so the logits are identical
    base = m.backend("hwsim:mixpe").run(feeds)
    assert np.array_equal(got["logits"], base["logits"])
    # but the other array shape takes other cycles
    assert m.backend("hwsim:mixpe-wide").summary()["cycles"] != m.backend("hwsim:mixpe").summary()["cycles"]
    # the artifact holds the variant's Verilog
    verilog = m.artifact.manifest["targets"]["mixpe-wide"]["verilog"]
    assert verilog and all((out / v).is_file() for v in verilog)


def test_variant_generates_the_base_datapath(wide):
    cfg_w = ArrayConfig(design="mixpe-wide", **WIDE)
    cfg_b = ArrayConfig(design="mixpe", **WIDE)
    text_w, text_b = generate(cfg_w), generate(cfg_b)
    assert cfg_w.name.startswith("mixpewide_") and f"module {cfg_w.name}" in text_w

    def body(t):
        return [ln for ln in t.splitlines() if not ln.startswith("//") and not ln.startswith("module ")]

    assert body(text_w) == body(text_b)


def test_variant_cli_run_on_hwsim(wide, tmp_path):
    out = tmp_path / "bt"
    r = CliRunner().invoke(cli, ["compile", "bert-tiny", "-o", str(out), "--quant", "w4g128a8", "--target", "ref,mixpe-wide"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["run", str(out), "--backend", "hwsim:mixpe-wide", "--compare", "ref"])
    assert r.exit_code == 0, r.output
    assert "hwsim:mixpe-wide (2x128 PEs, K=4)" in r.output


def test_no_code_outside_a_design_names_it():
    """Per-design branches and literal lists read the registry: outside hwsim/designs and each design's own
    generator, no string constant in the packages equals a design name (docstrings and messages that only
    mention one are prose, not constants equal to it). The report's analysis of the papers' claims explains
    the three designs' numbers by name; it is the one exception and says so."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    own = {Path(DESIGNS[d].generator.replace(".", "/") + ".py") for d in DESIGNS}
    allowed = {Path("hwsim/report/analyze.py")}
    found = []
    for pkg in ("compiler", "hwsim", "rtl", "runtime"):
        for f in sorted((root / pkg).rglob("*.py")):
            rel = f.relative_to(root)
            if rel.parts[:2] == ("hwsim", "designs") or rel in own or rel in allowed:
                continue
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in DESIGNS:
                    found.append(f"{rel}:{node.lineno} {node.value!r}")
    assert not found, "design names outside the registry: " + ", ".join(found)


def test_variant_simulates_on_the_rtl_in_its_own_process(wide):
    """The cocotb process did not register the variant: the runner describes it (Design.derivation)."""
    from rtl.sim import run_sim

    r = run_sim("mixpe-wide", {"M": 2, "N": 16, "lanes": 8, "group": 32}, vectors=12, seed=3)
    assert r.passed, r.message
    assert r.design == "mixpe-wide" and r.config["design"] == "mixpe-wide" and r.vectors == 12


def test_variant_in_the_report_and_the_sweep(wide, tmp_path):
    import json

    r = CliRunner().invoke(cli, ["report", "llama-tiny", "-o", str(tmp_path / "rep"), "--designs", "mixpe,mixpe-wide,mac",
                                 "--platforms", "h100-sxm", "--no-sweep"])
    assert r.exit_code == 0, r.output
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert list(data["designs"]) == ["mixpe", "mixpe-wide", "mac"]
    assert data["designs"]["mixpe-wide"]["config"]["design"] == "mixpe-wide"
    assert "mixpe-wide" in (tmp_path / "rep" / "report.md").read_text()
    assert "mixpe-wide" in data["paper"]["per_design"]["w4"]  # the derived design's claims are measured too
    r = CliRunner().invoke(cli, ["sweep", "llama-tiny", "-o", str(tmp_path / "sw"), "--designs", "mixpe-wide", "--shapes", "2x64",
                                 "--bits", "2", "--acts", "a8", "--groups", "64", "-j", "1"])
    assert r.exit_code == 0, r.output
    rows = (tmp_path / "sw" / "sweep.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("mixpe-wide,")
