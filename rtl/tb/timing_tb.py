"""cocotb testbench for the hwsim agreement tests (tests/hwsim/test_rtl_agreement.py, through
rtl.sim.run_testbench): drives jobs on a planned schedule (input gaps) with a planned out_ready pattern,
and records the cycle of every accepted input beat and every output beat with its payload. The pytest
side compares those with hwsim's beat schedule; ArrayTB's checker compares the values with hwsim.golden
as they come out.

Configuration (rtl.tb.read_config): cfg, designs, tiles (the jobs), out, and
  present     earliest offer cycle per input beat, relative to the first beat (None: all at once)
  out_ready   0/1 per cycle, relative (None or past its end: 1)
Writes to `out`: ins (cycle of each accepted input beat), outs (of each output beat), data (its lanes).
Cycle 0 is the edge at which the first beat is offered (the idle array takes it there).
"""

from __future__ import annotations

import cocotb
from cocotb.triggers import RisingEdge

from rtl.gen.common import config_from_dict
from rtl.tb import load_tiles, read_config, write_output
from rtl.tb.array_tb import ArrayTB


@cocotb.test()
async def hwsim_timing(dut):
    opts = read_config()
    cfg = config_from_dict(opts["cfg"])
    tiles = load_tiles(opts["tiles"])
    tb = ArrayTB(dut, cfg)
    beats = [b for t in tiles for b in tb.beats_of(t)]
    present = opts.get("present") or [0] * len(beats)
    out_ready = opts.get("out_ready") or []
    n_out = len(tiles) * tb.beats_per_job

    await tb.reset()
    tb.start()
    ins, outs, data = [], [], []
    i = 0
    limit = 200 + 50 * (len(beats) * cfg.cycles_per_beat + n_out + len(out_ready) + max(present))
    for cyc in range(limit):
        offer = i < len(beats) and cyc >= present[i]
        if offer:
            for k, v in beats[i].items():
                getattr(dut, k).value = v
        dut.in_valid.value = int(offer)
        dut.out_ready.value = int(out_ready[cyc]) if cyc < len(out_ready) else 1
        await RisingEdge(dut.clk)
        if offer and int(dut.in_ready.value) == 1:
            ins.append(cyc)
            i += 1
        if int(dut.out_valid.value) == 1 and (int(out_ready[cyc]) if cyc < len(out_ready) else 1):
            outs.append(cyc)
            data.append(tb.out_data.unpack(int(dut.out_data.value)).tolist())
        if len(outs) == n_out:
            break
    write_output(opts, {"ins": ins, "outs": outs, "data": data})
    assert len(outs) == n_out, f"{len(outs)} of {n_out} output beats in {limit} cycles"
    await tb.wait_outputs(limit)
    tb.stop()
