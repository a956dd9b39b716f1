"""cocotb testbench for the hwsim agreement tests: drives jobs on a planned schedule (input gaps) with a
planned out_ready pattern, and records the cycle of every accepted input beat and every output beat with
its payload. The checking is done by the pytest side (test_rtl_agreement.py) against hwsim.

LOWBIT_HWSIM_TB (JSON): cfg (ArrayConfig fields), tiles (an .npz with a_i, codes_i, zeros_i, mant_i, d_i,
da_i per job i), present (earliest offer cycle per beat, relative to the first beat), out_ready (list of
0/1 per cycle, relative), out (path of the JSON to write).
Cycle 0 is the edge at which the first beat is offered (the idle array takes it there).
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
from rtl.tb.array_tb import ArrayTB, _unpack


@cocotb.test()
async def hwsim_timing(dut):
    opts = json.loads(os.environ["LOWBIT_HWSIM_TB"])
    cfg = ArrayConfig.from_dict(opts["cfg"])
    z = np.load(opts["tiles"])
    njobs = len([k for k in z.files if k.startswith("a_")])
    tiles = [
        gm.TileInputs(a=z[f"a_{i}"], codes=z[f"codes_{i}"], zeros=z[f"zeros_{i}"], mant=z[f"mant_{i}"], d=z[f"d_{i}"], da=z[f"da_{i}"])
        for i in range(njobs)
    ]
    tb = ArrayTB(dut, cfg)  # only its beat packing is used
    beats = [b for t in tiles for b in tb.beats_of(t)]
    present = opts.get("present") or [0] * len(beats)
    out_ready = opts.get("out_ready") or []
    n_out = njobs * cfg.M * cfg.N // cfg.lanes

    Clock(dut.clk, 10, unit="ns").start()
    dut.in_valid.value = 0
    dut.out_ready.value = 1
    dut.rst_n.value = 0
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst_n.value = 1
    await RisingEdge(dut.clk)

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
            data.append(_unpack(int(dut.out_data.value), cfg.y_bits, cfg.lanes, True).tolist())
        if len(outs) == n_out:
            break
    with open(opts["out"], "w") as f:
        json.dump({"ins": ins, "outs": outs, "data": data}, f)
    assert len(outs) == n_out, f"{len(outs)} of {n_out} output beats in {limit} cycles"
