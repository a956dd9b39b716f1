"""cocotb test that streams a compiled layer's real array jobs through a generated array (used by
runtime/backends/rtl.py; not collected by pytest).

LOWBIT_LAYER_TB (JSON): cfg (ArrayConfig fields), jobs (an .npz with a [J, M, KT], codes [J, N, KT],
zeros / mant / d [J, N, NG], da [J, M, NG]), out (an .npz to write: y [J, M, N] as the DUT produced it and
the cycles). Jobs are driven back to back with no idle cycles and no back-pressure (the schedule hwsim
models); cycles run from the first input beat to the last output beat, inclusive. rtl/tb/array_tb.py's
ArrayTB drives the beats and checks every output against hwsim.golden as well.
"""

from __future__ import annotations

import json
import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge

from hwsim import golden as gm
from hwsim.config import ArrayConfig
from rtl.tb.array_tb import PERIOD_NS, ArrayTB, _unpack


@cocotb.test()
async def layer_jobs(dut):
    opts = json.loads(os.environ["LOWBIT_LAYER_TB"])
    cfg = ArrayConfig.from_dict(opts["cfg"])
    data = np.load(opts["jobs"])
    J = data["a"].shape[0]
    Clock(dut.clk, PERIOD_NS, unit="ns").start()
    tb = ArrayTB(dut, cfg)
    dut.in_valid.value = 0
    dut.out_ready.value = 1
    dut.rst_n.value = 0
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst_n.value = 1
    await RisingEdge(dut.clk)
    tb.in_mon.start()
    tb.out_mon.start()
    for j in range(J):
        t = gm.TileInputs(a=data["a"][j], codes=data["codes"][j], zeros=data["zeros"][j], mant=data["mant"][j], d=data["d"][j], da=data["da"][j])
        await tb.drive(tb.beats_of(t))
    ng = data["zeros"].shape[2]
    per_group = cfg.chunks_per_group * cfg.cycles_per_beat + cfg.drain_cycles
    await tb.wait_outputs(100 + 4 * J * ng * per_group)
    for _ in range(2):
        await RisingEdge(dut.clk)
    tb.in_mon.stop()
    tb.out_mon.stop()
    vals = [_unpack(b["out_data"], cfg.y_bits, cfg.lanes, True) for b in tb.out_mon.beats]
    y = np.concatenate(vals).reshape(J, cfg.M, cfg.N) if vals else np.zeros((0, cfg.M, cfg.N), np.int64)
    cycles = tb.out_mon.last_cycle - tb.in_mon.first_cycle + 1
    np.savez(opts["out"], y=y, cycles=np.int64(cycles), input_beats=np.int64(len(tb.in_mon.beats)))
    tb.check()
