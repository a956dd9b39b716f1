"""Simulation of the vector unit (rtl/gen/vector_unit.py) against hwsim.vector: rtl.sim.run_testbench with
rtl/tb/vector_tb.py (a VectorUnitConfig carries what the runner reads from an array configuration).

    run_vector_sim(cfg, rows=..., stall_rows=..., seed=0, corrupt=False, simulator="icarus") -> TestbenchRun
"""

from __future__ import annotations

from hwsim.arrays.vector_unit import VectorUnitConfig
from rtl.sim import TestbenchRun, run_testbench


def run_vector_sim(cfg: VectorUnitConfig, rows: int = 1000, stall_rows: int = 20, seed: int = 0, corrupt: bool = False,
                   simulator: str = "icarus") -> TestbenchRun:
    """Build `cfg`'s unit and check `rows` random rows (after the corner cases) and `stall_rows` rows under
    random back-pressure, bit for bit and cycle for cycle; corrupt: change one expected value (must fail)."""
    opts = {"rows": int(rows), "stall_rows": int(stall_rows), "seed": int(seed), "corrupt": bool(corrupt)}
    return run_testbench(cfg, "rtl.tb.vector_tb", opts, simulator, seed=seed)
