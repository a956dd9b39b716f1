"""cocotb test that streams a compiled layer's array jobs through a generated array (run by
runtime/backends/rtl.py `simulate_jobs` through rtl.sim.run_testbench).

Configuration (rtl.tb.read_config): cfg, designs, tiles (the jobs, in program order), out. Jobs are driven
back to back with no idle cycles and no back-pressure (the schedule hwsim models); ArrayTB's checker
compares every output with hwsim.golden as well. Writes to `out`: y (the DUT's outputs, [J][M][N]), cycles
(from the first input beat to the last output beat, inclusive) and input_beats.
"""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge

from rtl.gen.common import config_from_dict
from rtl.tb import load_tiles, read_config, write_output
from rtl.tb.array_tb import ArrayTB


@cocotb.test()
async def layer_jobs(dut):
    opts = read_config()
    cfg = config_from_dict(opts["cfg"])
    tiles = load_tiles(opts["tiles"])
    tb = ArrayTB(dut, cfg)
    await tb.reset()
    tb.start()
    for t in tiles:
        await tb.drive(tb.beats_of(t))
    per_group = cfg.chunks_per_group * cfg.cycles_per_beat + cfg.drain_cycles
    await tb.wait_outputs(100 + 4 * sum(t.n_groups for t in tiles) * per_group)
    for _ in range(2):
        await RisingEdge(dut.clk)
    tb.stop()
    y = [v for b in tb.out_mon.beats for v in tb.out_data.unpack(b[tb.out_data.name]).tolist()]
    y = np.asarray(y, np.int64).reshape(len(tiles), cfg.M, cfg.N).tolist()
    cycles = tb.out_mon.last_cycle - tb.in_mon.first_cycle + 1
    write_output(opts, {"y": y, "cycles": int(cycles), "input_beats": len(tb.in_mon.beats)})
