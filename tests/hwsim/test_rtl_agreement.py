"""hwsim vs the RTL (cocotb + Icarus): every output value bit for bit and every input and output beat
cycle for cycle, on random jobs of each design, with and without input gaps and output back-pressure.

The RTL is the generated Verilog (rtl/gen) simulated by the cocotb testbench rtl/tb/timing_tb.py, which
records the cycle of each handshake; the model side is hwsim.arrays.beat_schedule (the per-beat
schedule), stream_cycles / tile_cycles (closed forms used by simulate_linear) and simulate_linear's Y.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from hwsim import golden as gm
from hwsim.config import ArrayConfig
from hwsim.arrays import beat_schedule, simulate_linear, stream_cycles, tile_cycles

pytestmark = pytest.mark.skipif(not (shutil.which("iverilog") and shutil.which("vvp")), reason="Icarus Verilog not installed")

# small arrays so Icarus builds and runs in seconds; bit-serial lut-tc at B=1..4, drain longer and shorter
# than a group's compute (the epilogue-bound case), A8 and A16
FAST = [
    dict(design="lut-tc", M=2, N=8, K=4, bits=2, act="a8", group=16, lanes=2),
    dict(design="mixpe", M=2, N=8, K=4, bits=4, act="a16", group=16, lanes=2),
    dict(design="mac", M=2, N=8, K=4, bits=3, act="a8", group=16, lanes=4),
    # E2M1 codes: lut-tc's five planes a beat, mixpe's two-shift PEs
    dict(design="lut-tc", M=2, N=8, K=4, bits=4, act="a8", group=16, lanes=2, weight_format="e2m1"),
    dict(design="mixpe", M=2, N=8, K=4, bits=4, act="a8", group=16, lanes=4, weight_format="e2m1"),
    # lut-tc's table variants: streamed (precomputed) tables, full 2^K-entry tables, both
    dict(design="lut-tc", M=2, N=8, K=4, bits=2, act="a8", group=16, lanes=2, table="stream"),
    dict(design="lut-tc", M=2, N=8, K=4, bits=3, act="a16", group=16, lanes=4, sym=False),
    dict(design="lut-tc", M=2, N=8, K=4, bits=4, act="a8", group=16, lanes=2, weight_format="e2m1", table="stream", sym=False),
]
SLOW = [
    dict(design="lut-tc", M=2, N=8, K=4, bits=4, act="a16", group=32, lanes=8),
    dict(design="lut-tc", M=2, N=8, K=2, bits=1, act="a8", group=8, lanes=1),
    dict(design="mixpe", M=2, N=8, K=4, bits=2, act="a8", group=32, lanes=1),
    dict(design="mac", M=1, N=8, K=2, bits=4, act="a16", group=8, lanes=8),
    dict(design="lut-tc", M=2, N=64, K=4, bits=2, act="a8", group=128, lanes=8),
]


def run_rtl(cfg: ArrayConfig, tiles: list[gm.TileInputs], present=None, out_ready=None) -> dict:
    from rtl.sim import run_testbench

    run = run_testbench(cfg, "rtl.tb.timing_tb", dict(present=present, out_ready=out_ready), "icarus", tiles=tiles)
    assert run.tests == 1 and run.failed == 0, f"cocotb run failed ({run.message}); see {run.work_dir / 'sim.log'}"
    return run.output


def check(cfg: ArrayConfig, rng, groups: list[int], gaps: bool, backpressure: bool):
    tiles = [gm.random_tile(cfg, rng, n_groups=g, kind=str(rng.choice(["random", "random", "max", "min", "mixed-extreme", "codes"]))) for g in groups]
    nbeats = sum(groups) * cfg.chunks_per_group
    present = None
    if gaps:  # bursts of late beats, as a DRAM-starved input stream would look
        steps = rng.integers(0, 2, nbeats) * rng.integers(0, 6, nbeats)
        steps[0] = 0
        present = np.cumsum(steps).tolist()
    out_ready = None
    if backpressure:
        out_ready = (rng.random(4 * nbeats * cfg.cycles_per_beat + 200) > 0.4).astype(int).tolist()
    got = run_rtl(cfg, tiles, present, out_ready)
    ins, outs = beat_schedule(cfg, groups, present, out_ready)
    c0 = got["ins"][0]
    assert c0 == 0
    assert got["ins"] == ins.tolist(), "input beat cycles differ from hwsim"
    assert got["outs"] == outs.tolist(), "output beat cycles differ from hwsim"
    if not gaps and not backpressure:
        assert got["outs"][-1] + 1 == stream_cycles(cfg, groups[0], len(groups)) if len(set(groups)) == 1 else True
        if len(groups) == 1:
            assert got["outs"][-1] + 1 == tile_cycles(cfg, groups[0])
    # values: hwsim's layer Y of each job, in the array's output order
    nb = cfg.M * cfg.N // cfg.lanes
    for j, t in enumerate(tiles):
        y = simulate_linear(cfg, t).y
        want = np.asarray(gm.output_beats(cfg, y))
        np.testing.assert_array_equal(np.asarray(got["data"][j * nb : (j + 1) * nb]), want)
        np.testing.assert_array_equal(y, gm.tile_y(cfg, t.a, t.codes, t.zeros, t.mant, t.d, t.da))


def _fast_id(p: dict) -> str:
    variant = ("-stream" if p.get("table") == "stream" else "") + ("-nosym" if p.get("sym") is False else "")
    return f"{p['design']}-{p.get('weight_format', 'int')}{p['bits']}{p['act']}g{p['group']}{variant}"


@pytest.mark.parametrize("params", FAST, ids=_fast_id)
def test_rtl_equals_hwsim(params):
    cfg = ArrayConfig(**params)
    rng = np.random.default_rng(7)
    check(cfg, rng, [1], gaps=False, backpressure=False)
    check(cfg, rng, [2, 2, 2], gaps=False, backpressure=False)
    check(cfg, rng, [1, 3, 2], gaps=True, backpressure=True)


@pytest.mark.slow
@pytest.mark.parametrize("params", SLOW, ids=lambda p: f"{p['design']}-w{p['bits']}{p['act']}g{p['group']}-n{p['N']}l{p['lanes']}")
def test_rtl_equals_hwsim_more(params):
    cfg = ArrayConfig(**params)
    rng = np.random.default_rng(11)
    check(cfg, rng, [2, 2], gaps=False, backpressure=False)
    check(cfg, rng, [3, 1, 2], gaps=True, backpressure=False)
    check(cfg, rng, [2, 1, 2], gaps=False, backpressure=True)
    check(cfg, rng, [1, 2, 3], gaps=True, backpressure=True)
