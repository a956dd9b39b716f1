"""hwsim.cost.vector: the vector unit's cycles (the RTL's schedule per lane), energy and area, and the attention
matmuls as two exact W4 passes on the arrays."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.errors import LowbitError
from hwsim import golden
from hwsim.arrays import simulate_shape
from hwsim.arrays.base import stream_cycles as array_stream_cycles
from hwsim.arrays.vector_unit import VectorUnitConfig, row_steps, rows_cycles, schedule, stream_cycles
from hwsim.config import ArrayConfig
from hwsim.cost import vector as cv
from hwsim.cost.roofline import block_of
from hwsim.designs import DESIGNS

MAC = ArrayConfig(design="mac", M=4, N=64, K=4, lanes=8, bits=4, act="a8", group=128)


@settings(max_examples=90, deadline=None)
@given(st.sampled_from(["rmsnorm", "layernorm", "silu", "gelu", "shiftmax", "requant", "add", "mul", "rope"]), st.integers(1, 64), st.integers(1, 40),
       st.integers(1, 9))
def test_rows_cycles_is_the_rtl_schedule_per_lane(unit, L, rows, lanes):
    L += L % 2 if unit == "rope" else 0  # rope pairs x_j with x_(j+L/2)
    cfg = VectorUnitConfig(unit, L, in_bits=32 if unit in ("shiftmax", "requant") else 8)
    assert row_steps(unit, L) == cfg.steps
    assert rows_cycles(unit, L, rows) == stream_cycles(cfg, rows) == schedule(cfg, rows)[1][-1] + 1
    busiest = -(-rows // lanes)
    assert rows_cycles(unit, L, rows, lanes) == stream_cycles(cfg, busiest)


def test_row_steps_by_hand():
    # the table of docs/hwsim/vector_unit.md at L = 8, and RMSNorm over 256: ss < 2^23 -> TW 40, 20 root steps,
    # RB 40, 33 quotient bits
    assert [row_steps(u, 8) for u in ("rmsnorm", "layernorm", "silu", "shiftmax")] == [63, 79, 152, 41]
    assert row_steps("rmsnorm", 256) == 256 + 20 + 33 + 256
    assert row_steps("rmsnorm", 2048) > 2 * 2048  # past the generator's 1024: the same phases
    # the elementwise units: one value a step (rope: one rotation pair)
    assert [row_steps(u, 8) for u in ("requant", "add", "mul", "rope")] == [8, 8, 8, 4]
    assert row_steps("rope", 64) == 32 and row_steps("add", 576) == 576
    with pytest.raises(LowbitError, match="unknown vector unit"):
        row_steps("softmax", 8)
    with pytest.raises(LowbitError, match="even L"):
        row_steps("rope", 7)


def test_command_cycles_by_hand():
    vu = cv.VectorUnit(4)
    norm = cv.command_costs({"op": "VEC_NORM", "kind": "rmsnorm", "L": 8, "rows": 3, "passes": 2}, vu, MAC)
    assert [c["cycles"] for c in norm] == [65 + 63 + 2]  # 6 rows on 4 lanes: 2 on the busiest, interval 65
    gate = cv.command_costs({"op": "VEC_GATE", "kind": "silu", "rows": 1, "width": 20, "passes": 2}, cv.VectorUnit(8), MAC)
    assert gate[0]["cycles"] == 152 + 2  # 3 rows of 8 values x 2 passes = 6 rows, one per lane
    sm = cv.command_costs({"op": "VEC_SOFTMAX", "heads": 2, "S": 3, "T": 5, "in_bits": 32}, vu, MAC)
    assert sm[0]["cycles"] == 34 + 32 + 2  # 6 rows of 5 scores: 3 * 5 + 17 steps
    pv = cv.command_costs({"op": "VEC_PV", "heads": 2, "S": 3, "T": 5, "D": 4, "passes": 2}, vu, MAC)
    # the rescale: 2 passes x 2 heads x 3 rows = 12 rows of D = 4, each one row of the built requant unit's 8 values,
    # 3 a lane at 8 + 2 cycles
    assert [c["part"] for c in pv] == ["attn_matmul", "vector"] and [c["op"] for c in pv] == ["VEC_PV", "REQUANT"]
    assert pv[1]["cycles"] == 3 * (8 + 2)
    assert pv[1]["energy_pj"] == pytest.approx(12 * cv.events_energy_pj(cv.row_events("requant", 8, 32, out_bits=8)))
    # energy: rows times one row's
    assert norm[0]["energy_pj"] == pytest.approx(6 * cv.row_energy_pj("rmsnorm", 8))


def test_elementwise_command_cycles_by_hand():
    vu = cv.VectorUnit(4)
    add = cv.command_costs({"op": "VEC_ADD", "rows": 3, "L": 20, "passes": 2, "in_bits": 16, "out_bits": 16}, vu, MAC)[0]
    assert (add["op"], add["cycles"]) == ("VEC_ADD", 5 * (8 + 2))  # 3 x ceil(20 / 8) x 2 = 18 rows of 8 on 4 lanes: 5 on the busiest
    assert add["energy_pj"] == pytest.approx(18 * cv.row_energy_pj("add", 8, 16, out_bits=16))
    mul = cv.command_costs({"op": "VEC_MUL", "rows": 3, "L": 20, "passes": 2}, vu, MAC)[0]
    assert mul["cycles"] == 5 * (8 + 2)  # 3 x ceil(20 / 8) x 2 = 18 rows of 8: 5 on the busiest lane
    assert mul["energy_pj"] == pytest.approx(18 * cv.row_energy_pj("mul", 8))
    rope = cv.command_costs({"op": "VEC_ROPE", "rows": 5, "L": 64, "passes": 2, "in_bits": 16}, vu, MAC)[0]
    assert rope["cycles"] == 3 * (32 + 2)  # 10 rows, 32 pairs each
    kv8 = cv.command_costs({"op": "VEC_KV", "rows": 5, "L": 64, "in_bits": 8}, vu, MAC)[0]
    kv16 = cv.command_costs({"op": "VEC_KV", "rows": 5, "L": 64, "in_bits": 16}, vu, MAC)[0]
    assert kv8["cycles"] == kv16["cycles"] == 10 * (8 + 2)  # one pass: 5 x 64 / 8 = 40 rows of 8, 10 a lane
    assert 0 < kv8["energy_pj"] < kv16["energy_pj"]


def test_attention_matmul_is_two_w4_passes_on_the_array():
    # QK^T of 4 rows, 64 keys, head_dim 32 on mac M4 N64 K4: one job, one group of 32 (8 beats), drain 4 * 64 / 8 = 32
    acfg, kp = cv.attn_array_config(MAC, 32)
    assert (acfg.bits, acfg.group, kp) == (4, 32, 32)
    assert array_stream_cycles(acfg, 1, 1) == 7 + 32 + 1
    r = simulate_shape(acfg, 4, 64, 32)
    assert r.compute_cycles == 40
    c = cv.attn_matmul_cost(MAC, 3, 4, 64, 32)
    assert c["cycles"] == 2 * 3 * r.cycles and c["macs"] == 3 * 4 * 64 * 32
    # lut-tc: each W4 pass is 4 bit-serial planes a beat
    lcfg, _ = cv.attn_array_config(ArrayConfig(design="lut-tc", M=4, N=64, K=4, lanes=8, bits=2, act="a16", group=64), 30)
    assert (lcfg.bits, lcfg.act, lcfg.group, lcfg.cycles_per_beat) == (4, "a8", 32, 4)


@pytest.mark.parametrize("design", list(DESIGNS))
@pytest.mark.parametrize("unsigned", [False, True])
def test_two_nibble_passes_give_the_exact_int8_product(design, unsigned):
    """The claim the cycle model rests on: codes h, l of the 8-bit operand (offset binary, zero 8 for the high nibble)
    with the dyadic pairs (2^15, 11) and (2^15, 15) give Y_h + Y_l = a @ b exactly on every design's golden job."""
    rng = np.random.default_rng(1)
    cfg = ArrayConfig(design=design, M=4, N=8, K=4, lanes=8, bits=4, act="a8", group=32)
    a = rng.integers(-127, 128, size=(4, 32))
    b = rng.integers(0, 256, size=(8, 32)) if unsigned else rng.integers(-128, 128, size=(8, 32))
    code = b if unsigned else b + 128
    h, lo = code >> 4, code & 15
    one = np.ones((8, 1), np.int64)
    da = np.zeros((4, 1), np.int64)
    mw = cfg.mant_bits - 1
    yh = golden.tile_y(cfg, a, h, (0 if unsigned else 8) * one, (1 << mw) * one, (mw - 4) * one, da)
    yl = golden.tile_y(cfg, a, lo, 0 * one, (1 << mw) * one, mw * one, da)
    assert np.array_equal(yh + yl, a @ b.T)
    # a wrong pairing (the high pass at the low pass's shift) is caught
    assert not np.array_equal(golden.tile_y(cfg, a, h, (0 if unsigned else 8) * one, (1 << mw) * one, mw * one, da) + yl, a @ b.T)


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(["rmsnorm", "layernorm", "silu", "gelu", "shiftmax"]), st.integers(2, 300))
def test_row_energy_grows_with_the_row(unit, L):
    e1, e2 = cv.row_energy_pj(unit, L), cv.row_energy_pj(unit, L + 1)
    assert 0 < e1 < e2
    assert cv.row_energy_pj(unit, L, node="45nm") == pytest.approx(e1 * 45 / 28)


def test_requant_energy_by_hand():
    from hwsim.cost import energy as en

    # a row of 4 int32 values to int8: 4 steps of a 32 x 16 multiply and a 50-bit rounding add; each step moves
    # the x and y row registers whole (4 x (32 + 8) bits), at 28 nm
    s = en.node_scale("28nm")
    want = s * (4 * en.mult_pj(32, 16) + 4 * en.add_pj(50) + 4 * 4 * 40 * en.add_bit_pj())
    assert cv.events_energy_pj(cv.row_events("requant", 4, 32, out_bits=8)) == pytest.approx(want)


def test_elementwise_row_events_by_hand():
    # rope over 8 int16 values: 4 pair steps of four 16 x 16 products, two 32-bit sums, two 32 x 16 products and two
    # 50-bit roundings; its registers hold 16 + 16 + 8 bits a value (x, the cos / sin tables, y)
    ev = cv.row_events("rope", 8, 16)
    assert ev == {"mults": {(16, 16): 16, (32, 16): 8}, "adds": {32: 8, 50: 8}, "reg_bit_writes": 4 * 8 * 40}
    add = cv.row_events("add", 8, 16, out_bits=16)
    assert add == {"mults": {(16, 16): 16}, "adds": {34: 16}, "reg_bit_writes": 8 * 8 * 48}
    mul = cv.row_events("mul", 8)
    assert mul == {"mults": {(8, 8): 8, (16, 16): 8}, "adds": {34: 8}, "reg_bit_writes": 8 * 8 * 24}
    assert cv.row_ff_bits("requant", 32, 16) == 48 and cv.row_ff_bits("requant", 32) == 40
    with pytest.raises(LowbitError, match="even L"):
        cv.row_events("rope", 7)


def test_unit_area_from_the_yosys_figures():
    a8 = cv.unit_area("rmsnorm", 8)
    assert (a8["transistors"], a8["ff_bits"]) == (67714, 376)
    a16 = cv.unit_area("rmsnorm", 16)
    assert a16["ff_bits"] == 376 + 8 * 24 and a16["logic_um2"] == pytest.approx(a8["logic_um2"])
    assert cv.unit_area("shiftmax", 9, 32)["ff_bits"] == 510 + (32 + 9 + 8)
    assert cv.unit_area("gelu", 8, node="45nm")["total_um2"] == pytest.approx(cv.unit_area("gelu", 8)["total_um2"] * (45 / 28) ** 2)
    vu = cv.VectorUnit(2, "layernorm", "gelu")
    tot = cv.vector_area(vu, 8, 8)
    # the norm, the gate, Shiftmax, and the elementwise units at L = 8: requant int32 -> int8, add int32 -> int32 (no
    # mul: a GELU block has no SwiGLU, no rope without a head_dim)
    assert tot["transistors"] == 2 * (86530 + 59370 + 61234 + 48630 + 92400)
    # a llama block: mul, the KV writes' requant units and rope over head_dim 16 (its registers: 8 more values of 40 bits)
    ll = cv.vector_area(cv.VectorUnit(1, "rmsnorm", "silu"), 8, 8, L_head=16)
    assert ll["transistors"] == 67714 + 56436 + 61234 + 48630 + 92400 + 29320 + 26186 + 15804 + 142714 + 8 * 40 * cv.FF_T
    assert cv.unit_area("requant", 8, 32, out_bits=16)["ff_bits"] == 413 and cv.unit_area("add", 16, 16)["ff_bits"] == 429 + 8 * 48
    with pytest.raises(LowbitError, match="no synthesis figures"):
        cv.unit_area("silu", 8, 32)
    with pytest.raises(LowbitError, match="int16 outputs"):
        cv.unit_area("requant", 8, 16, out_bits=16)


def test_lanes_come_from_the_design_record():
    assert {d: cv.design_lanes(d) for d in DESIGNS} == {d: DESIGNS[d].default_array["lanes"] for d in DESIGNS}
    with pytest.raises(LowbitError, match="lanes"):
        cv.VectorUnit(0)


def test_block_decode_by_hand():
    """llama-tiny's block (256 wide, 8 heads and 4 kv heads of 32, SiLU over 768), decode against 17 keys on 8 lanes."""
    from compiler.frontend.presets import PRESETS

    b = block_of("llama", dict(PRESETS["llama-tiny"].config))
    assert (b["hidden"], b["heads"], b["kv_heads"], b["head_dim"], b["inter"], b["norm"], b["gate"], b["causal"]) == \
        (256, 8, 4, 32, 768, "rmsnorm", "silu", True)
    t = cv.total_costs(cv.block_shapes(b, 1, 17), cv.VectorUnit(8), MAC)
    norm = 2 * (565 + 2)  # two norms, two passes of one row: one row per lane
    add = 2 * 8 * (8 + 2)  # two residual adds, two passes of one row of 256: 64 rows of 8, 8 a lane
    rope = 2 * (16 + 2) + (16 + 2)  # q: 8 heads x 2 passes = 16 rows of 16 pairs, 2 a lane; k: 4 rows, one pass
    kv = 2 * 2 * (8 + 2)  # k and v: 4 rows of 32 each, one pass: 16 rows of 8 each, 2 a lane
    gate = 23 * 154 + 152 + 2  # 96 rows of 8 x 2 passes over 8 lanes: 24 on each
    softmax = 3 * 17 + 17 + 2  # 8 heads x 1 row, one per lane
    requant = 8 * (8 + 2)  # PV's rescale: 2 passes x 8 heads = 16 rows of 32 = 64 rows of 8, 8 a lane
    mul = 24 * (8 + 2)  # SwiGLU: 96 rows of 8 x 2 passes, 24 a lane
    assert t["vector"]["cycles"] == norm + add + rope + kv + gate + softmax + requant + mul == 5474
    assert t["ops"]["VEC_NORM"]["calls"] == t["ops"]["VEC_ADD"]["calls"] == t["ops"]["VEC_ROPE"]["calls"] == t["ops"]["VEC_KV"]["calls"] == 2
    assert (t["ops"]["VEC_MUL"]["cycles"], t["ops"]["REQUANT"]["cycles"], t["ops"]["VEC_KV"]["cycles"]) == (mul, requant, kv)
    # a BERT block (LayerNorm, GELU, no rope, no KV cache, no SwiGLU) has the adds and no elementwise unit besides
    bert = {**b, "norm": "layernorm", "gate": "gelu", "causal": False}
    assert [s["op"] for s in cv.block_shapes(bert, 4, 4)] == ["VEC_NORM", "VEC_NORM", "VEC_ADD", "VEC_ADD", "VEC_QK", "VEC_SOFTMAX", "VEC_PV", "VEC_GATE"]
    qk = cv.attn_matmul_cost(MAC, 8, 1, 17, 32)
    pv = cv.attn_matmul_cost(MAC, 8, 32, 1, 17)
    assert t["attn_matmul"]["cycles"] == qk["cycles"] + pv["cycles"]
    assert math.isclose(t["attn_matmul"]["energy_pj"], qk["energy_pj"] + pv["energy_pj"])


def test_int16_norms_take_the_same_steps():
    """norm16: ss gains 16 bits and loses the 2P = 16 fraction bits of the int8 root, so TW, the root and the divide
    keep their steps (MiniLM's LayerNorm over 384: 1223 steps, SmolLM2's RMSNorm over 576: 1205)."""
    from hwsim.arrays.vector_unit import EPS_PORT

    assert row_steps("layernorm", 384) == row_steps("layernorm", 384, EPS_PORT[16], 16) == 2 * 384 + 29 + 42 + 384
    assert row_steps("rmsnorm", 576) == row_steps("rmsnorm", 576, EPS_PORT[16], 16) == 1205
    wide = cv.command_costs({"op": "VEC_NORM", "kind": "layernorm", "L": 384, "rows": 3, "passes": 2, "in_bits": 16}, cv.VectorUnit(2), MAC)[0]
    narrow = cv.command_costs({"op": "VEC_NORM", "kind": "layernorm", "L": 384, "rows": 3, "passes": 2}, cv.VectorUnit(2), MAC)[0]
    assert wide["cycles"] == narrow["cycles"] == 3 * 1225 and wide["energy_pj"] > narrow["energy_pj"]
    assert cv.unit_area("layernorm", 384, 16)["ff_bits"] == 672 + 376 * 48
