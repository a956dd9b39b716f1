"""The vector unit's RTL (rtl/gen/vector_unit.py) on Icarus against hwsim.vector, bit for bit, and against
hwsim.arrays.vector_unit, cycle for cycle (rtl/tb/vector_tb.py checks both; these tests also read its
report). Default runs drive >= 10,000 random values per unit (1,250 rows of 8) after the corner cases;
the slow suite drives 10,000 rows per unit. The elementwise units (requant, add, mul, rope) first drive every
corner row with every corner field (saturation both ways, shift 0 and 63, mant 0 and 0xFFFF, ties)."""

import pytest

from hwsim.arrays.vector_unit import EPS_PORT, VectorUnitConfig
from rtl.gen.vector_unit import generate
from rtl.tb.vector_tb import n_rows, stimulus
from rtl.vector_sim import run_vector_sim
from tests.rtl.simulators import icarus


CONFIGS = [
    VectorUnitConfig("rmsnorm", L=8),
    VectorUnitConfig("layernorm", L=8),
    VectorUnitConfig("silu", L=8),
    VectorUnitConfig("gelu", L=8),
    VectorUnitConfig("shiftmax", L=8),
    VectorUnitConfig("shiftmax", L=8, in_bits=32),
    VectorUnitConfig("rmsnorm", L=8, in_bits=16, eps_max=EPS_PORT[16]),  # a residual stream at int16 (--vector-unit norm16)
    VectorUnitConfig("layernorm", L=8, in_bits=16, eps_max=EPS_PORT[16]),
    VectorUnitConfig("requant", L=8, in_bits=32, out_bits=8),  # PV's rescale of its int32 accumulators
    VectorUnitConfig("requant", L=8, in_bits=16, out_bits=8),  # the KV cache write
    VectorUnitConfig("requant", L=8, in_bits=32, out_bits=16),
    VectorUnitConfig("add", L=8, in_bits=32, out_bits=32),  # the residual adds (the stream at int32)
    VectorUnitConfig("add", L=8, in_bits=16, out_bits=16),
    VectorUnitConfig("mul", L=8),  # SwiGLU's product
    VectorUnitConfig("rope", L=8, in_bits=16),
]
STALL_ROWS = 30


def _check(cfg: VectorUnitConfig, rows: int, seed: int = 0):
    r = run_vector_sim(cfg, rows=rows, stall_rows=STALL_ROWS, seed=seed)
    assert r.passed, r.message + "\n" + r.log_tail
    out = r.output
    corners = n_rows(stimulus(cfg, 0, seed))
    assert out["rows"] == corners + rows + STALL_ROWS and out["values"] == out["rows"] * cfg.L
    assert out["mismatches"] == 0
    assert out["latency"] == [cfg.latency] and out["interval"] == [cfg.interval]
    assert len(out["outputs"]) == STALL_ROWS and out["outputs"][-1] > STALL_ROWS * cfg.interval  # back-pressure did stall
    return r


@icarus
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.name)
def test_vector_unit_matches_golden(cfg):
    _check(cfg, rows=1250)


@icarus
@pytest.mark.slow
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.name)
def test_vector_unit_matches_golden_10k_rows(cfg):
    _check(cfg, rows=10000, seed=1)


@icarus
@pytest.mark.parametrize("cfg", [VectorUnitConfig("rmsnorm", L=3), VectorUnitConfig("layernorm", L=5, eps_max=0),
                                 VectorUnitConfig("layernorm", L=13, in_bits=16, eps_max=EPS_PORT[16]),
                                 VectorUnitConfig("shiftmax", L=1), VectorUnitConfig("silu", L=1), VectorUnitConfig("shiftmax", L=13, F=12),
                                 VectorUnitConfig("add", L=13, in_bits=16), VectorUnitConfig("add", L=1, in_bits=8, out_bits=8),
                                 VectorUnitConfig("requant", L=3, in_bits=8), VectorUnitConfig("rope", L=64, in_bits=16),
                                 VectorUnitConfig("rope", L=2, in_bits=8)],
                         ids=lambda c: c.name)
def test_other_row_lengths(cfg):
    _check(cfg, rows=200, seed=2)


@icarus
@pytest.mark.parametrize("unit, bits", [("rmsnorm", 8), ("shiftmax", 8), ("silu", 8), ("layernorm", 16),
                                        ("requant", 32), ("add", 16), ("mul", 8), ("rope", 16)])
def test_checker_reports_a_corrupted_golden(unit, bits):
    cfg = VectorUnitConfig(unit, L=8, in_bits=bits, eps_max=EPS_PORT.get(bits, EPS_PORT[8]))
    r = run_vector_sim(cfg, rows=20, stall_rows=5, corrupt=True)
    assert not r.passed
    assert "1 mismatches against hwsim.vector" in r.message and "row 0 value 0" in r.message
    assert r.output["mismatches"] == 1


def test_generated_text_states_the_cycles():
    for cfg in CONFIGS:
        text = generate(cfg)
        assert f"module {cfg.name} (" in text and f"{cfg.latency} cycles" in text and text.rstrip().endswith("endmodule")
