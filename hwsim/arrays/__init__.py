"""Cycle-level models of the accelerator arrays (every design of hwsim.designs) with their memory hierarchy.

    simulate_linear(cfg, t, memory=None) -> LayerRun     a whole quantized linear layer
    tile_cycles(cfg, n_groups) -> int                     one job alone on the RTL, no stalls
    stream_cycles(cfg, n_groups, jobs) -> int             back-to-back jobs, no stalls

Values: Y of every output equals hwsim.golden.tile_y (the RTL's definition) of the job holding it; the
layer is cut into jobs of cfg.M rows x cfg.N columns with the full K (padding rows/columns are computed
by the hardware and counted in the activity, but not returned). Cycles: the RTL's job timing
(hwsim/arrays/base.py derives it; tests compare it with the cocotb simulation beat by beat) plus the
DRAM stalls of hwsim.memory's double-buffered model. Activity: event counts of the datapath (the design
record's `events`), SRAM and DRAM traffic, for hwsim.cost.energy. Layers with scale-and-minimum groups
(TileInputs with mm, dm; hwsim/golden.py 4b) add the minimum term's events (`min_events`) and move its
fields; their cycles are the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from hwsim import golden as gm
from hwsim.arrays.base import beat_schedule, layer_y, stream_cycles, tile_cycles, timing
from hwsim.config import ArrayConfig
from hwsim.golden import TileInputs
from hwsim.memory import MemoryConfig, act_bits_per_row, weight_block_bits

__all__ = [
    "min_events",
    "ArrayConfig",
    "TileInputs",
    "LayerRun",
    "MemoryConfig",
    "simulate_linear",
    "layer_timing",
    "tile_cycles",
    "stream_cycles",
    "beat_schedule",
    "timing",
    "datapath_events",
]

@dataclass
class LayerRun:
    y: np.ndarray | None  # int64 [M, N] (None when simulate_linear(values=False))
    cycles: int  # total cycles including memory stalls
    compute_cycles: int  # the array's own stream time (no stalls)
    stall_cycles: int
    tiles: int  # jobs (row blocks x column blocks)
    utilization: float  # useful MACs / (cycles * peak MACs per cycle of all memory.arrays arrays)
    activity: dict = field(default_factory=dict)
    macs: int = 0  # useful multiply-accumulates (M * N * K of the layer)
    shape: tuple = ()  # (M, N, K)

    def seconds(self, memory: MemoryConfig | None = None) -> float:
        mem = memory or MemoryConfig()
        return self.cycles / (mem.clock_ghz * 1e9)


def min_events(cfg: ArrayConfig, beats: int, groups: int) -> dict:
    """The extra datapath work of scale-and-minimum groups (hwsim/golden.py docstring 4b), in the design
    records' `events` format: per group and output the minimum term (Pm = S * mm, an SUMW x (MW+1)
    multiply; its rounding add and shift, PMW+1 bits; one more Y add); per group the minimum fields
    (mm, dm: MW+1+SW bits per column, into the group registers and the epilogue's) and the row sums' shadow
    (SUMW bits per row); arrays whose datapath does not already form S (record `row_sums` False) add the
    row sums themselves: K adds of SUMW bits per row and beat, and the row-sum register."""
    M, N, K = cfg.M, cfg.N, cfg.K
    MW, SW, SUMW, YW = cfg.mant_bits, cfg.shift_bits, cfg.sum_bits, cfg.y_bits
    PMW = gm.min_prod_bits(cfg)
    mn = M * N
    own = not cfg.design_record.row_sums
    adds = {PMW + 1: groups * mn, YW: groups * mn}
    if own:
        adds[SUMW] = beats * M * K
    return {
        "adds": adds,
        "mults": {(SUMW, MW + 1): groups * mn},
        "shifts": {PMW + 1: groups * mn},
        "reg_bit_writes": groups * (2 * N * (MW + 1 + SW) + M * SUMW) + (beats * M * SUMW if own else 0),
        "epilogue_ops": groups * mn,
    }


def _merge_events(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, dict):
            d = dict(out.get(k, {}))
            for kk, c in v.items():
                d[kk] = d.get(kk, 0) + c
            out[k] = d
        else:
            out[k] = out.get(k, 0) + v
    return out


def datapath_events(cfg: ArrayConfig, beats: int, groups: int, mins: bool = False) -> dict:
    """Flat event counts of `beats` input beats and `groups` group drains of `cfg`'s datapath (mins: with
    the minimum term of scale-and-minimum groups, `min_events`).

    Keys: adds, mults, lookups, table_builds, shifts, epilogue_ops (counts); add_bits (sum of adder
    widths), mult_bits2 (sum of a_bits * b_bits over multiplies), mux_bits (2:1 mux bit selections of
    the table lookups and negations), reg_bit_writes."""
    ev = cfg.design_record.events(cfg, beats, groups)
    if mins:
        ev = _merge_events(ev, min_events(cfg, beats, groups))
    out = {
        "adds": sum(ev["adds"].values()),
        "add_bits": sum(w * c for w, c in ev["adds"].items()),
        "mults": sum(ev.get("mults", {}).values()),
        "mult_bits2": sum(a * b * c for (a, b), c in ev.get("mults", {}).items()),
        "lookups": sum(ev.get("lookups", {}).values()),
        "table_builds": ev.get("table_builds", 0),
        "shifts": sum(ev.get("shifts", {}).values()),
        "epilogue_ops": ev["epilogue_ops"],
        "reg_bit_writes": ev["reg_bit_writes"],
    }
    mux = 0
    for (w, entries), c in ev.get("lookups", {}).items():
        mux += c * w * (entries - 1)  # a 2^(K-1):1 mux is entries-1 2:1 muxes per bit
    for w, c in ev.get("negations", {}).items():
        mux += c * w  # conditional negation: one select per bit (the +1 rides on the next add)
        out["add_bits"] += c * w
    out["mux_bits"] = mux
    return out


def _weight_bits(cfg: ArrayConfig, K: int, mins: bool) -> dict:
    """hwsim.memory.weight_block_bits, plus the minimum fields (mm, dm: MW+1+SW bits per column and group)."""
    wb = dict(weight_block_bits(cfg, K))
    if mins:
        wb["fields"] += cfg.N * (K // cfg.group) * (cfg.mant_bits + 1 + cfg.shift_bits)
    return wb


def layer_timing(cfg: ArrayConfig, M: int, N: int, K: int, memory: MemoryConfig | None = None, mins: bool = False) -> dict:
    """Cycles, stalls and traffic of a layer y[M,N] = x[M,K] W[N,K]^T on `cfg` (no values computed); mins:
    the weights carry minimum fields (scale-and-minimum groups), which the SRAM and DRAM move too."""
    mem = memory or MemoryConfig()
    if K % cfg.group:
        raise ValueError(f"K={K} is not a multiple of the group size {cfg.group}")
    ng = K // cfg.group
    rb, cb = math.ceil(M / cfg.M), math.ceil(N / cfg.N)
    jobs = rb * cb
    groups = jobs * ng
    beats = groups * cfg.chunks_per_group
    A = min(mem.arrays, cb)  # arrays that get work: column blocks are dealt out to the arrays
    cb_arr = math.ceil(cb / A)  # column blocks of the busiest array
    compute = stream_cycles(cfg, ng, rb * cb_arr)

    # SRAM port limits: per-cycle demand of each buffer while the array streams
    tm = timing(cfg)
    wb = _weight_bits(cfg, K, mins)
    w_block_bytes = (wb["codes"] + wb["fields"]) / 8
    a_block_bytes = cfg.M * act_bits_per_row(cfg, K) / 8
    job_cycles = ng * tm.period
    demand_w = w_block_bytes / job_cycles
    demand_a = a_block_bytes / job_cycles
    demand_o = cfg.M * cfg.N * mem.out_bytes / job_cycles
    port_slow = max(1.0, demand_w / mem.weight_port_bytes, demand_a / mem.act_port_bytes, demand_o / mem.out_port_bytes)

    # DRAM: the layer is consumed in chunks, each loaded into one half of the double buffer while the
    # previous chunk computes. Resident weights: a chunk is a column block (loaded once, used by all row
    # blocks). Streamed weights (a block larger than half the weight SRAM): a chunk is one job's weights.
    # Activations: loaded once up front when the layer's rows fit the activation SRAM, else re-read with
    # every chunk. Outputs of a chunk drain to DRAM during the next chunk and share the bus with its load.
    half_w = mem.weight_sram_kib * 1024 / (2 if mem.double_buffer else 1)
    w_resident = w_block_bytes <= half_w
    act_bytes_layer = M * act_bits_per_row(cfg, K) / 8
    a_resident = act_bytes_layer <= mem.act_sram_kib * 1024
    wb_real = _weight_bits(cfg.with_(N=1, lanes=1), K, mins)
    w_bytes_layer = N * (wb_real["codes"] + wb_real["fields"]) / 8  # real columns only
    bw = mem.dram_bytes_per_cycle
    # with several arrays, a "chunk" below is one round: every busy array loads / computes / drains its own
    # chunk at the same time, and the arrays share the DRAM bus (bytes of a round = A chunks)
    if w_resident:
        n_chunks = cb_arr
        chunk_w = A * w_bytes_layer / cb
        chunk_a = 0.0 if a_resident else act_bytes_layer  # broadcast to the busy arrays
        chunk_c = rb * ng * tm.period * port_slow
    else:
        n_chunks = cb_arr * rb
        chunk_w = A * w_bytes_layer / cb
        chunk_a = 0.0 if a_resident else act_bytes_layer / rb  # the round's row block, broadcast
        chunk_c = ng * tm.period * port_slow
    chunk_o = M * N * mem.out_bytes / (cb_arr * (1 if w_resident else rb))
    load = (chunk_w + chunk_a) / bw
    pre = act_bytes_layer / bw if a_resident else 0.0  # broadcast: one DRAM read fills every array's SRAM
    out_t = chunk_o / bw
    if mem.double_buffer:
        # chunk i computes while chunk i+1 loads and chunk i-1's outputs drain; the last outputs drain after
        if n_chunks == 1:
            t = pre + load + chunk_c + out_t
        else:
            t = (pre + load + max(chunk_c, load) + (n_chunks - 2) * max(chunk_c, load + out_t)
                 + max(chunk_c, out_t) + out_t)
    else:
        t = pre + n_chunks * (load + chunk_c + chunk_o / bw)
    fill_drain = tm.first + tm.drain + 1 - tm.period  # the stream's head and tail (stream_cycles - groups * P)
    total = max(compute, int(math.ceil(t + fill_drain)))
    dram_w = w_bytes_layer * (1 if w_resident else rb)
    dram_a = act_bytes_layer * (1 if a_resident else cb_arr)
    dram_o = M * N * mem.out_bytes
    return {
        "jobs": jobs,
        "groups": groups,
        "beats": beats,
        "compute_cycles": compute,
        "cycles": total,
        "stall_cycles": total - compute,
        "arrays_busy": A,
        "weights_resident": w_resident,
        "acts_resident": a_resident,
        "sram_port_slowdown": port_slow,
        "dram_bytes_weights": dram_w,
        "dram_bytes_acts": dram_a,
        "dram_bytes_outputs": dram_o,
        "w_block_bytes": w_block_bytes,
        "job_in_bytes": (w_block_bytes + a_block_bytes),
    }


def _activity(cfg: ArrayConfig, lt: dict, M: int, N: int, K: int, mem: MemoryConfig, mins: bool = False) -> dict:
    ng = K // cfg.group
    act = datapath_events(cfg, lt["beats"], lt["groups"], mins)
    jobs = lt["jobs"]
    wb = _weight_bits(cfg, K, mins)
    # SRAM reads: every job reads its column block's weights and fields and its row block's activations
    act["sram_read_bytes_weight"] = jobs * (wb["codes"] + wb["fields"]) / 8
    act["sram_read_bytes_act"] = jobs * cfg.M * act_bits_per_row(cfg, K) / 8
    act["sram_write_bytes_out"] = jobs * cfg.M * cfg.N * mem.out_bytes
    act["sram_read_bytes_out"] = M * N * mem.out_bytes
    # SRAM writes: what DRAM brings in
    act["sram_write_bytes_weight"] = lt["dram_bytes_weights"]
    act["sram_write_bytes_act"] = lt["dram_bytes_acts"] * lt["arrays_busy"]  # broadcast into every busy array
    act["dram_bytes_weights"] = lt["dram_bytes_weights"]
    act["dram_bytes_acts"] = lt["dram_bytes_acts"]
    act["dram_bytes_outputs"] = lt["dram_bytes_outputs"]
    act["dram_bytes"] = lt["dram_bytes_weights"] + lt["dram_bytes_acts"] + lt["dram_bytes_outputs"]
    act["cycles"] = lt["cycles"]
    act["groups"] = lt["groups"]
    act["beats"] = lt["beats"]
    act["n_groups_per_job"] = ng
    return act


def simulate_linear(cfg: ArrayConfig, t: TileInputs, memory: MemoryConfig | None = None, values: bool = True) -> LayerRun:
    """Run a whole quantized linear layer on `cfg`'s array.

    t: the layer's integer inputs as golden.prepare_tile makes them: a [M, K], codes [N, K],
    zeros/mant/d [N, K/G], da [M, K/G]. Returns Y [M, N] (bit-identical to golden.tile_y of each job),
    the cycle count with DRAM stalls, utilization and the activity counts."""
    mem = memory or MemoryConfig()
    a = np.asarray(t.a)
    M, K = a.shape
    N = np.asarray(t.codes).shape[0]
    if np.asarray(t.codes).shape[1] != K:
        raise ValueError(f"codes have K={np.asarray(t.codes).shape[1]}, activations K={K}")
    if K % cfg.group:
        raise ValueError(f"K={K} is not a multiple of the array's group size {cfg.group}")
    ng = K // cfg.group
    fields_ = [("zeros", t.zeros, (N, ng)), ("mant", t.mant, (N, ng)), ("d", t.d, (N, ng)), ("da", t.da, (M, ng))]
    if t.has_mins:
        fields_ += [("mm", t.mm, (N, ng)), ("dm", t.dm, (N, ng))]
    for name, arr, shp in fields_:
        if np.asarray(arr).shape != shp:
            raise ValueError(f"{name} has shape {np.asarray(arr).shape}, expected {shp}")
    return _layer_run(cfg, M, N, K, mem, layer_y(cfg, t) if values else None, t.has_mins)


def simulate_shape(cfg: ArrayConfig, M: int, N: int, K: int, memory: MemoryConfig | None = None, mins: bool = False) -> LayerRun:
    """Timing and activity of a layer shape without values (for reports and sweeps)."""
    return _layer_run(cfg, M, N, K, memory or MemoryConfig(), None, mins)


def _layer_run(cfg: ArrayConfig, M: int, N: int, K: int, mem: MemoryConfig, y, mins: bool = False) -> LayerRun:
    lt = layer_timing(cfg, M, N, K, mem, mins)
    macs = M * N * K
    peak = mem.arrays * cfg.macs_per_beat / cfg.cycles_per_beat
    return LayerRun(
        y=y,
        cycles=int(lt["cycles"]),
        compute_cycles=int(lt["compute_cycles"]),
        stall_cycles=int(lt["stall_cycles"]),
        tiles=int(lt["jobs"]),
        utilization=macs / (lt["cycles"] * peak),
        activity=_activity(cfg, lt, M, N, K, mem, mins),
        macs=macs,
        shape=(M, N, K),
    )


def golden_layer_y(cfg: ArrayConfig, t: TileInputs) -> np.ndarray:
    """Y by golden.tile_y on every job (slow; for tests): rows/columns cut into cfg.M x cfg.N tiles."""
    a = np.asarray(t.a)
    M, N = a.shape[0], np.asarray(t.codes).shape[0]
    y = np.empty((M, N), dtype=np.int64)
    for r0 in range(0, M, cfg.M):
        for c0 in range(0, N, cfg.N):
            r1, c1 = min(M, r0 + cfg.M), min(N, c0 + cfg.N)
            mm = None if t.mm is None else t.mm[c0:c1]
            dm = None if t.dm is None else t.dm[c0:c1]
            y[r0:r1, c0:c1] = gm.tile_y(cfg, a[r0:r1], t.codes[c0:c1], t.zeros[c0:c1], t.mant[c0:c1], t.d[c0:c1], t.da[r0:r1], mm, dm)
    return y
