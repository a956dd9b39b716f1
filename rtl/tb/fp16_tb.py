"""cocotb testbench of the FP16-activation arrays (hwsim/designs/_fp16.py), run by rtl.sim.run_fp16_sim.

One coroutine drives and samples every cycle (inputs set after the falling edge, handshakes read in the
read-only phase before the rising edge), so the cycle of every beat that moves is known exactly; it is
compared with hwsim's cycle model (`simulate`, `simulate_serial`) on the same offer / out_ready patterns, and every output
value with the golden model bit for bit. A stalled output beat must hold its data until taken.

Configuration keys (rtl.tb.read_config) besides cfg and out: vectors (jobs), seed, max_groups, corrupt
(flip one bit of one expected value: the run must then fail), stalls (random idles and back-pressure; off:
offer and out_ready always high). Job order: the corner tiles, then random tiles of every kind (the
configuration's act picks fp16 or bf16 tiles: hwsim/designs/_fp16.py tile_kinds).
"""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from hwsim.designs import _fp16 as fp
from rtl.tb import read_config, write_output

PERIOD_NS = 10


def jobs(cfg: fp.Fp16Config, vectors: int, seed: int, max_groups: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = fp.corner_tiles(cfg, rng)[:vectors]
    while len(out) < vectors:
        kinds = fp.tile_kinds(cfg)
        kind = kinds[int(rng.integers(len(kinds)))]
        out.append(fp.random_tile(cfg, rng, int(rng.integers(1, max_groups + 1)), kind))
    return out


def pack(values, width: int) -> int:
    r = 0
    for i, x in enumerate(values):
        r |= (int(x) & ((1 << width) - 1)) << (i * width)
    return r


def beats(cfg: fp.Fp16Config, t: dict) -> list[dict]:
    """A job's input beats as port values."""
    K, G = cfg.K, cfg.group
    kt = t["x"].shape[1]
    out = []
    for b in range(kt // K):
        k0, j = b * K, (b * K) // G
        out.append(dict(
            in_act=pack(t["x"][:, k0:k0 + K].reshape(-1), 16),
            in_w=pack(t["codes"][:, k0:k0 + K].reshape(-1), cfg.bits),
            in_zero=pack(t["zeros"][:, j], cfg.bits),
            in_scale=pack(t["scales"][:, j], 16),
            in_last=int(b == kt // K - 1),
        ))
    return out


def unpack(word: int, n: int, width: int) -> list[int]:
    return [(word >> (i * width)) & ((1 << width) - 1) for i in range(n)]


@cocotb.test()
async def fp16_array_matches_golden(dut):
    opts = read_config()
    cfg = fp.Fp16Config(**opts["cfg"])
    tiles = jobs(cfg, int(opts["vectors"]), int(opts["seed"]), int(opts.get("max_groups", 2)))
    stream = [bt for t in tiles for bt in beats(cfg, t)]
    nbeats = [t["x"].shape[1] // cfg.K for t in tiles]
    n_pat = 4 * (len(stream) + cfg.drain_beats * len(tiles)) + 64
    offer, ready = fp.stall_patterns(int(opts["seed"]), n_pat) if opts.get("stalls", True) else (np.ones(1, bool), np.ones(1, bool))
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
    dut.rst_n.value = 0
    dut.in_valid.value = 0
    dut.out_ready.value = 0
    for name in ("in_act", "in_w", "in_zero", "in_scale", "in_last"):
        getattr(dut, name).value = 0
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst_n.value = 1
    ins, outs, words, lasts = [], [], [], []
    showing, bi, c, held = False, 0, 0, None
    total_out = cfg.drain_beats * len(tiles)
    limit = 20 * n_pat
    while bi < len(stream) or len(outs) < total_out:
        await FallingEdge(dut.clk)
        if not showing and bi < len(stream) and offer[c % len(offer)]:
            for k, val in stream[bi].items():
                getattr(dut, k).value = val
            dut.in_valid.value = 1
            showing = True
        r = bool(ready[c % len(ready)])
        dut.out_ready.value = int(r)
        await ReadOnly()
        ov = int(dut.out_valid.value)
        data = int(dut.out_data.value) if ov else None
        if held is not None:
            assert ov and data == held, f"cycle {c}: a stalled output beat changed or was withdrawn"
        fired_in = showing and int(dut.in_ready.value)
        if ov and r:
            outs.append(c)
            words.append(data)
            lasts.append(int(dut.out_last.value))
        held = data if ov and not r else None
        await RisingEdge(dut.clk)
        if fired_in:
            ins.append(c)
            bi += 1
            showing = False
            dut.in_valid.value = 0
        c += 1
        assert c < limit, f"timeout: {len(ins)} of {len(stream)} input beats, {len(outs)} of {total_out} output beats moved"
    D = cfg.drain_beats
    mism, first = 0, None
    for j, t in enumerate(tiles):
        want = fp.tile_y(cfg, t).reshape(-1)
        if opts.get("corrupt") and j == 0:
            want = want.copy()
            want[0] ^= 1
        got = [x for w in words[j * D:(j + 1) * D] for x in unpack(w, cfg.lanes, 32)]
        assert lasts[j * D:(j + 1) * D] == [0] * (D - 1) + [1], f"job {j}: out_last not on the job's final beat"
        bad = [s for s in range(len(want)) if got[s] != int(want[s])]
        mism += len(bad)
        if bad and first is None:
            s = bad[0]
            first = f"job {j} slot {s} (m={s // cfg.N}, n={s % cfg.N}): RTL {got[s]:#010x}, golden {int(want[s]):#010x}"
    model_in, model_out = fp.cycle_model(cfg)(cfg, nbeats, offer, ready)
    cycles_equal = model_in == ins and model_out == outs
    macs = sum(cfg.M * cfg.N * t["x"].shape[1] for t in tiles)
    write_output(opts, dict(jobs=len(tiles), cycles=c, macs=macs, macs_per_cycle=macs / c, mismatches=mism,
                            cycles_equal=cycles_equal, input_beats=len(ins), output_beats=len(outs)))
    assert first is None, f"{mism} outputs differ from the golden model; first: {first}"
    assert cycles_equal, "RTL handshake cycles differ from hwsim's cycle model (hwsim/designs/_fp16.py simulate)"
