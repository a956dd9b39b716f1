"""The FP4 (E2M1) vs INT4 synthesis reports (rtl/reports/synth/fp4, `python -m rtl.synth --fp4`): of the arrays
they name, counted like the others, and tabulated against the MAC baseline of the same weight format."""

import json
import shutil

import pytest

from hwsim.config import ArrayConfig
from hwsim.cost.area import component_counts
from rtl.gen.common import module_name
from rtl.synth import FP4_FORMATS, FP4_SHAPE, fp4_report_path, synthesize, table

DESIGNS = ("lut-tc", "mixpe", "mac")


def _reports():
    return {(d, f): json.loads(fp4_report_path(d, f).read_text()) for d in DESIGNS for f in FP4_FORMATS}


def test_committed_reports_are_of_the_fp4_arrays():
    for (d, f), r in _reports().items():
        cfg = ArrayConfig(design=d, **{**FP4_SHAPE, **FP4_FORMATS[f]})
        assert ArrayConfig.from_dict(r["config"]) == cfg and r["module"] == module_name(cfg)
        assert r["uncounted_cells"] == {} and r["transistors"] == r["transistors_yosys"] + r["ff_transistors"]
        # the area model's flip-flop count reads the same datapath (only control flip-flops uncounted)
        assert abs(component_counts(cfg)["ff_bits"] - r["ff_bits"]) <= 32
        assert r["peak_macs_per_cycle"] == cfg.macs_per_beat / cfg.cycles_per_beat


def test_fp4_arrays_against_int4():
    r = _reports()
    # mixpe: two shifted copies and a negation per product are smaller than W4's five-term shift-and-add
    assert r["mixpe", "e2m1"]["transistors"] < r["mixpe", "w4"]["transistors"]
    # lut-tc: a fifth plane a beat, so fewer MACs per cycle from about the same hardware
    assert r["lut-tc", "e2m1"]["peak_macs_per_cycle"] * 5 == r["lut-tc", "w4"]["peak_macs_per_cycle"] * 4
    assert r["lut-tc", "e2m1"]["transistors_per_mac_per_cycle"] > r["lut-tc", "w4"]["transistors_per_mac_per_cycle"]
    t = table(list(r.values()))
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): line for line in t.splitlines()[2:]}
    assert rows["mac", "e2m1a8g32 M2 N16 K4"].endswith("| 1.00x |") and rows["mac", "w4a8g32 M2 N16 K4"].endswith("| 1.00x |")
    ratio = r["mixpe", "e2m1"]["transistors_per_mac_per_cycle"] / r["mac", "e2m1"]["transistors_per_mac_per_cycle"]
    assert rows["mixpe", "e2m1a8g32 M2 N16 K4"].endswith(f"| {ratio:.2f}x |")


@pytest.mark.skipif(shutil.which("yosys") is None, reason="yosys not installed (apt-get install -y yosys)")
def test_a_tiny_e2m1_array_synthesizes(tmp_path):
    r = synthesize("mixpe", dict(M=1, N=4, lanes=4, group=32, act="a8", weight_format="e2m1"), out_json=tmp_path / "r.json")
    assert r["config"]["weight_format"] == "e2m1" and r["uncounted_cells"] == {}
    assert r["transistors"] > 0 and json.loads((tmp_path / "r.json").read_text()) == r
