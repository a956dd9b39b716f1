"""The cost of the minimum term (scale-and-minimum groups): hwsim's event counts, memory traffic, energy
and area include the extra epilogue work, and nothing else changes (cycles, values of plain layers)."""

import numpy as np
import pytest

from hwsim import golden as g
from hwsim.arrays import datapath_events, min_events, simulate_linear, simulate_shape
from hwsim.config import ArrayConfig
from hwsim.cost import area, energy
from hwsim.designs import DESIGNS


def _cfg(design, act="a8"):
    return ArrayConfig(design=design, M=2, N=16, K=4, bits=4, act=act, group=32, lanes=8)


@pytest.mark.parametrize("design", list(DESIGNS))
def test_events_add_exactly_the_minimum_term(design):
    cfg = _cfg(design)
    beats, groups = 40, 5
    base, mins = datapath_events(cfg, beats, groups), datapath_events(cfg, beats, groups, mins=True)
    extra = min_events(cfg, beats, groups)
    mn = cfg.M * cfg.N
    assert mins["mults"] - base["mults"] == groups * mn  # one S * mm multiply per output and group
    assert mins["mult_bits2"] - base["mult_bits2"] == groups * mn * cfg.sum_bits * (cfg.mant_bits + 1)
    assert mins["shifts"] - base["shifts"] == groups * mn
    row_sum_adds = 0 if DESIGNS[design].row_sums else beats * cfg.M * cfg.K  # lut-tc's table unit already forms S
    assert mins["adds"] - base["adds"] == 2 * groups * mn + row_sum_adds
    assert mins["add_bits"] - base["add_bits"] == sum(w * c for w, c in extra["adds"].items())
    assert mins["reg_bit_writes"] - base["reg_bit_writes"] == extra["reg_bit_writes"] > 0
    assert mins["lookups"] == base["lookups"] and mins["table_builds"] == base["table_builds"]


@pytest.mark.parametrize("design", list(DESIGNS))
def test_a_minimum_layer_costs_more_energy_and_moves_its_fields(design):
    cfg = _cfg(design)
    t = g.random_tile(cfg.with_(M=4), np.random.default_rng(1), n_groups=4, mins=True)
    t0 = g.TileInputs(t.a, t.codes, t.zeros, t.mant, t.d, t.da)
    run, run0 = simulate_linear(cfg, t), simulate_linear(cfg, t0)
    # the lanes add the term in the same cycle (the array's stream time is unchanged); the extra fields
    # are more DRAM bytes, so the stalls may grow
    assert run.compute_cycles == run0.compute_cycles and run.cycles >= run0.cycles
    fields = cfg.N * 4 * (cfg.mant_bits + 1 + cfg.shift_bits) / 8  # mm, dm per column and group
    assert run.activity["dram_bytes_weights"] - run0.activity["dram_bytes_weights"] == pytest.approx(fields)
    e, e0 = energy.layer_energy_pj(cfg, run.activity), energy.layer_energy_pj(cfg, run0.activity)
    for part in ("adds", "mults", "registers", "sram_weight", "dram"):
        assert e[part] > e0[part], part
    assert e["muxes"] == e0["muxes"] and e["total"] == pytest.approx(sum(v for k, v in e.items() if k != "total"))
    assert simulate_shape(cfg, 4, 16, 128, mins=True).activity == run.activity


@pytest.mark.parametrize("design", list(DESIGNS))
def test_area_includes_the_minimum_term(design):
    cfg = ArrayConfig(design=design, **{**DESIGNS[design].sim_defaults, "group": 128})
    base, mins = area.component_counts(cfg), area.component_counts(cfg, mins=True)
    extra = area.min_counts(cfg)
    assert {k: mins[k] - base[k] for k in base} == extra
    assert extra["mult_bits2"] == cfg.lanes * cfg.sum_bits * (cfg.mant_bits + 1)
    assert area.model_area_um2(cfg, mins=True) > area.model_area_um2(cfg)
    a, a0 = area.array_area(cfg, mins=True), area.array_area(cfg)
    assert a["total_um2"] > a0["total_um2"] and "minimum term" in a["source"]
    # the term is small next to the array it joins
    assert a["total_um2"] < 1.5 * a0["total_um2"]
