"""yosys synthesis reports: cell counts, transistor estimates (flip-flops added), area per MAC/cycle."""

import json
import shutil

import pytest

from rtl.synth import ff_transistors, synthesize, table

pytestmark = pytest.mark.skipif(shutil.which("yosys") is None, reason="yosys not installed (apt-get install -y yosys)")

TINY = dict(M=1, N=4, lanes=4, bits=2, act="a8", group=32)


def test_flip_flop_estimates():
    assert ff_transistors("$_DFF_P_") == 16
    assert ff_transistors("$_DFFE_PP_") == 28
    assert ff_transistors("$_SDFFE_PN0P_") == 34
    assert ff_transistors("$_SDFF_PN0_") == 22
    assert ff_transistors("$_XOR_") is None


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    d = tmp_path_factory.mktemp("synth")
    return {des: synthesize(des, TINY, out_json=d / f"{des}.json") for des in ("lut-tc", "mixpe", "mac")} | {"dir": d}


@pytest.mark.parametrize("design", ["lut-tc", "mixpe", "mac"])
def test_report_fields(reports, design):
    r = reports[design]
    assert json.loads((reports["dir"] / f"{design}.json").read_text()) == r
    assert r["uncounted_cells"] == {}
    # yosys's CMOS number is exactly its gate costs (so the flip-flop addition is the only estimate)
    assert r["transistors_yosys"] == r["transistors_gates_check"]
    assert r["transistors"] == r["transistors_yosys"] + r["ff_transistors"]
    c = r["config"]
    # at least the group accumulators, the shadow bank and Y are flip-flops
    assert r["ff_bits"] >= c["M"] * c["N"] * (2 * 10 + 30)
    assert r["transistors_per_mac_per_cycle"] == r["transistors"] / r["peak_macs_per_cycle"]


def test_mac_baseline_costs_more_per_mac(reports):
    # same shape and formats: dequantize-then-multiply needs wide multipliers in every PE
    assert reports["mac"]["transistors"] > reports["mixpe"]["transistors"]
    t = table([reports["lut-tc"], reports["mixpe"], reports["mac"]])
    assert "| mac |" in t and "1.00x" in t
