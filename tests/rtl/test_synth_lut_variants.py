"""The synthesis reports of lut-tc's table variants (rtl/reports/synth/lut-tc-variants, `python -m rtl.synth
--lut-variants`): of the arrays they name, counted like the others, and what they measure: full tables cost area,
streamed tables save the table-build adders (docs/hwsim/lut_tc_variants.md)."""

import json
import shutil

import pytest

from hwsim.config import ArrayConfig
from hwsim.cost.area import cells_area_um2, component_counts, load_reports
from rtl.gen.common import module_name
from rtl.synth import LUT_VARIANTS, lut_variant_report_path, lut_variant_table, report_path, synthesize, table_variant_design

BITS = (2, 4)


def _reports(bits: int) -> dict:
    return {v: json.loads(lut_variant_report_path(v, bits).read_text()) for v in LUT_VARIANTS}


def _um2(r: dict) -> float:
    return cells_area_um2(r["cells"])["total_um2"]


@pytest.mark.parametrize("bits", BITS)
def test_committed_reports_are_of_the_variant_arrays(bits):
    design = table_variant_design()
    for v, r in _reports(bits).items():
        cfg = ArrayConfig(design=design, M=2, N=64, K=4, lanes=8, bits=bits, act="a8", group=128, **LUT_VARIANTS[v])
        assert ArrayConfig.from_dict(r["config"]) == cfg and r["module"] == module_name(cfg)
        assert r["uncounted_cells"] == {} and r["transistors"] == r["transistors_yosys"] + r["ff_transistors"]
        assert abs(component_counts(cfg)["ff_bits"] - r["ff_bits"]) <= 32
    # today's array is the committed report of the design itself, re-synthesized: the same netlist
    assert _reports(bits)["build-sym"]["cells"] == json.loads(report_path(design, bits).read_text())["cells"]


@pytest.mark.parametrize("bits", BITS)
def test_what_the_netlists_measure(bits):
    r = _reports(bits)
    assert _um2(r["build-16"]) > _um2(r["build-sym"])  # symmetrization saves area
    assert _um2(r["stream-16"]) > _um2(r["stream-sym"])
    assert _um2(r["stream-sym"]) < _um2(r["build-sym"])  # so does fusion (no table-build adders)
    assert _um2(r["stream-16"]) < _um2(r["build-16"])
    rows = lut_variant_table(r).splitlines()[2:]
    assert rows[0].endswith("| 1.000x |") and rows[1].endswith(f"| {_um2(r['build-16']) / _um2(r['build-sym']):.3f}x |")


def test_variant_reports_stay_out_of_the_area_fit():
    assert not [d for d in load_reports() if "table" in d["config"] or "sym" in d["config"]]


@pytest.mark.skipif(shutil.which("yosys") is None, reason="yosys not installed (apt-get install -y yosys)")
def test_tiny_variants_synthesize(tmp_path):
    tiny = dict(M=1, N=4, lanes=4, bits=2, act="a8", group=32)
    r = {v: synthesize(table_variant_design(), {**tiny, **kw}, out_json=tmp_path / f"{v}.json") for v, kw in LUT_VARIANTS.items()}
    assert all(x["uncounted_cells"] == {} for x in r.values())
    # with 4 columns the table unit is a large share: both effects show plainly
    assert _um2(r["build-16"]) > 1.05 * _um2(r["build-sym"])  # 1.09x measured
    assert _um2(r["stream-sym"]) < 0.97 * _um2(r["build-sym"])  # 0.95x measured
