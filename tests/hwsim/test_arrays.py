"""hwsim.arrays: values equal golden.tile_y on every job of a layer; timing formulas are consistent."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwsim import golden as gm
from hwsim.config import ArrayConfig
from hwsim.designs import DESIGNS
from hwsim.arrays import (
    LayerRun,
    beat_schedule,
    golden_layer_y,
    simulate_linear,
    simulate_shape,
    stream_cycles,
    tile_cycles,
)
from hwsim.memory import MemoryConfig


def _layer(cfg: ArrayConfig, rng, M: int, N: int, ng: int, kind: str = "random") -> gm.TileInputs:
    """A whole-layer TileInputs: random_tile's value ranges at an arbitrary M x N."""
    big = cfg.with_(M=M, N=N, lanes=1)
    return gm.random_tile(big, rng, n_groups=ng, kind=kind)


@settings(max_examples=40, deadline=None)
@given(
    design=st.sampled_from(list(DESIGNS)),
    bits=st.integers(1, 4),
    act=st.sampled_from(["a8", "a16"]),
    M=st.integers(1, 7),
    N=st.integers(1, 40),
    ng=st.integers(1, 3),
    kind=st.sampled_from(["random", "max", "min", "mixed-extreme", "zeros"]),
    seed=st.integers(0, 2**16),
)
def test_layer_values_equal_golden_per_job(design, bits, act, M, N, ng, kind, seed):
    cfg = ArrayConfig(design=design, M=2, N=8, K=4, bits=bits, act=act, group=16, lanes=4)
    rng = np.random.default_rng(seed)
    t = _layer(cfg, rng, M, N, ng, kind)
    r = simulate_linear(cfg, t)
    assert r.y.dtype == np.int64 and r.y.shape == (M, N)
    np.testing.assert_array_equal(r.y, golden_layer_y(cfg, t))


def test_real_quantized_layer_equals_golden():
    from compiler.quant.rtn import quantize_rtn
    from compiler.quant.spec import QuantSpec

    rng = np.random.default_rng(3)
    for design in DESIGNS:
        for act in ("a8", "a16"):
            cfg = ArrayConfig(design=design, M=2, N=64, K=4, bits=4, act=act, group=32, lanes=8)
            w = rng.standard_normal((96, 128)).astype(np.float32) * 0.05
            x = rng.standard_normal((5, 128)).astype(np.float32)
            qw = quantize_rtn(w, QuantSpec(bits=4, group_size=32, act=act))
            t = gm.prepare_tile(cfg, x, qw)
            r = simulate_linear(cfg, t)
            np.testing.assert_array_equal(r.y, golden_layer_y(cfg, t))
            # and the float output is close to x W^T
            yf = gm.y_to_float(cfg, r.y, t)
            ref = x @ qw.dequantize().T if hasattr(qw, "dequantize") else x @ w.T
            assert np.corrcoef(yf.ravel(), ref.ravel())[0, 1] > 0.999


def test_large_sums_use_exact_float64_path():
    # A16 with a big group: |acc| bound above 2^24, so float32 would not be exact
    cfg = ArrayConfig(design="mixpe", M=2, N=8, K=4, bits=4, act="a16", group=1024, lanes=8)
    assert cfg.acc_bound >= 1 << 24
    rng = np.random.default_rng(1)
    for kind in ("max", "min", "random"):
        t = _layer(cfg, rng, 3, 9, 2, kind)
        np.testing.assert_array_equal(simulate_linear(cfg, t).y, golden_layer_y(cfg, t))


@pytest.mark.parametrize("design,bits", [("lut-tc", 2), ("lut-tc", 4), ("mixpe", 4), ("mac", 4), ("lut-tc", 1)])
def test_stream_formula_matches_beat_schedule(design, bits):
    for N, lanes, group in ((64, 8, 128), (64, 2, 16), (16, 8, 32)):
        cfg = ArrayConfig(design=design, M=2, N=N, K=4, bits=bits, group=group, lanes=lanes)
        for jobs in ([1], [2], [1, 3, 2]):
            ins, outs = beat_schedule(cfg, jobs)
            assert len(ins) == sum(jobs) * cfg.chunks_per_group
            assert len(outs) == len(jobs) * cfg.drain_cycles
            if len(set(jobs)) == 1:
                assert outs[-1] + 1 == stream_cycles(cfg, jobs[0], len(jobs))
        assert tile_cycles(cfg, 1) == beat_schedule(cfg, [1])[1][-1] + 1


def test_known_cycle_counts():
    # the committed RTL measurement: lut-tc W2 M2 N64 K4 G128, 32 jobs x 2 groups: 254.9 MACs/cycle
    cfg = ArrayConfig(design="lut-tc", bits=2, group=128)
    cyc = stream_cycles(cfg, 2, 32)
    assert cyc == 4113
    assert round(32 * 2 * 2 * 64 * 128 / cyc, 1) == 254.9
    assert tile_cycles(cfg, 1) == 32 * 2 + 16 + 1
    m = ArrayConfig(design="mixpe", bits=4, group=128)
    assert tile_cycles(m, 1) == 32 + 16
    assert stream_cycles(m, 2, 32) == 64 * 32 + 16


def test_layer_run_accounting():
    cfg = ArrayConfig(design="mixpe", bits=4, group=128)
    r = simulate_shape(cfg, 128, 2048, 2048)
    assert isinstance(r, LayerRun)
    assert r.cycles == r.compute_cycles + r.stall_cycles
    assert r.tiles == 64 * 32
    assert r.compute_cycles == stream_cycles(cfg, 16, 64 * 32)
    assert 0 < r.utilization <= 1
    a = r.activity
    assert a["dram_bytes"] == a["dram_bytes_weights"] + a["dram_bytes_acts"] + a["dram_bytes_outputs"]
    # weights resident in the weight SRAM: loaded once = codes + (zero, mant, shift) per group
    assert a["dram_bytes_weights"] == 2048 * 2048 * 4 / 8 + 2048 * 16 * (4 + 16 + 5) / 8
    # a slow DRAM turns a decode layer memory-bound
    slow = simulate_shape(cfg, 1, 2048, 2048, MemoryConfig(dram_gbps=8))
    fast = simulate_shape(cfg, 1, 2048, 2048, MemoryConfig(dram_gbps=1000))
    assert slow.stall_cycles > fast.stall_cycles
    assert slow.cycles >= a["dram_bytes_weights"] / 8


def test_memory_config_roundtrip_and_errors():
    m = MemoryConfig(dram_gbps=100, weight_sram_kib=256)
    assert MemoryConfig.from_dict(m.to_dict()) == m
    with pytest.raises(ValueError):
        MemoryConfig(dram_gbps=0)
    with pytest.raises(ValueError):
        MemoryConfig.from_dict({"bogus": 1})


def test_shape_errors():
    cfg = ArrayConfig(design="mac", bits=4, group=128)
    rng = np.random.default_rng(0)
    t = _layer(cfg.with_(group=32), rng, 2, 8, 1)
    with pytest.raises(ValueError, match="multiple of"):
        simulate_linear(cfg, t)


@pytest.mark.parametrize("design", list(DESIGNS))
@pytest.mark.parametrize("dram_gbps", [2.0, 16.0, 1000.0])
def test_dram_model_matches_beat_level_streaming(design, dram_gbps):
    """The chunked double-buffer model of simulate_linear against the RTL's per-beat schedule fed by a DRAM
    stream (each job's weights offered once they have arrived; weights streamed because the weight SRAM is
    small): equal within 5% from compute-bound to DRAM-bound."""
    import math

    from hwsim.memory import weight_block_bits

    cfg = ArrayConfig(design=design, M=2, N=16, K=4, bits=4, group=32, lanes=8)
    M, N, K = 8, 64, 128
    mem = MemoryConfig(weight_sram_kib=1, act_sram_kib=64, dram_gbps=dram_gbps, out_bytes=1)
    r = simulate_shape(cfg, M, N, K, mem)
    bw = mem.dram_bytes_per_cycle
    ng = K // cfg.group
    wb = weight_block_bits(cfg, K)
    job_bytes = (wb["codes"] + wb["fields"]) / 8
    assert job_bytes > 512  # streamed: one job's weights exceed half the weight SRAM
    jobs = (M // cfg.M) * (N // cfg.N)
    pre = M * K / bw  # activations resident, loaded first
    present = []
    for j in range(jobs):  # DRAM streams job after job; a job's beats wait for its whole chunk
        ready = math.ceil(pre + (j + 1) * job_bytes / bw)
        present += [ready] * (ng * cfg.chunks_per_group)
    # the per-beat schedule counts from the first accepted beat: shift by the first chunk's arrival
    t0 = present[0]
    ins, outs = beat_schedule(cfg, [ng] * jobs, [p - t0 for p in present])
    beat_level = t0 + outs[-1] + 1
    assert r.cycles == pytest.approx(beat_level, rel=0.05)
    if dram_gbps >= 1000:
        assert r.stall_cycles < 0.05 * r.compute_cycles
    if dram_gbps <= 2:
        assert r.cycles > 2 * r.compute_cycles


def test_narrow_sram_port_slows_the_array():
    cfg = ArrayConfig(design="mixpe", bits=4, group=128)
    wide = simulate_shape(cfg, 128, 2048, 2048, MemoryConfig(dram_gbps=1e4))
    # mixpe W4 reads per job 64 x 2048 x 4 bits of codes + 64 x 16 x (4+16+5) bits of group fields in
    # 16 groups x 32 cycles: 134.25 bytes per cycle, so a 64-byte weight port slows it by 134.25 / 64
    narrow = simulate_shape(cfg, 128, 2048, 2048, MemoryConfig(dram_gbps=1e4, weight_port_bytes=64))
    assert wide.stall_cycles < 0.01 * wide.cycles
    assert narrow.cycles == pytest.approx(wide.cycles * 134.25 / 64, rel=0.01)
    assert narrow.compute_cycles == wide.compute_cycles


def test_several_arrays_share_dram():
    cfg = ArrayConfig(design="mixpe", bits=4, group=128)
    one = simulate_shape(cfg, 128, 2048, 2048, MemoryConfig())
    four = simulate_shape(cfg, 128, 2048, 2048, MemoryConfig(arrays=4))
    # compute-bound prefill: 32 column blocks dealt to 4 arrays -> a quarter of the stream
    assert four.compute_cycles == stream_cycles(cfg, 16, 64 * 8)
    assert 4 * four.compute_cycles == pytest.approx(one.compute_cycles, rel=0.001)
    assert four.stall_cycles < 0.05 * four.cycles  # the exposed first loads
    assert four.activity["dram_bytes_weights"] == one.activity["dram_bytes_weights"]
    assert four.activity["adds"] == one.activity["adds"]  # same work, spread out
    assert 0.95 * one.utilization < four.utilization <= one.utilization
    # DRAM-bound decode: more arrays do not help
    d1 = simulate_shape(cfg, 1, 8192, 2048, MemoryConfig())
    d8 = simulate_shape(cfg, 1, 8192, 2048, MemoryConfig(arrays=8))
    assert d1.stall_cycles > d1.compute_cycles
    assert d8.cycles == pytest.approx(d1.cycles, rel=0.05)
    # more arrays than column blocks: the extra ones idle
    assert simulate_shape(cfg, 2, 64, 128, MemoryConfig(arrays=4)).compute_cycles == tile_cycles(cfg, 1)
