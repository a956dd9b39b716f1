"""Lowering onto the arrays: weight re-layout, dyadic scales, the command stream and its JSON form."""

import json

import numpy as np
import pytest

from compiler.backends.accel.lower import decode_tile, lower_graph, relayout_tile
from compiler.backends.accel.program import Program
from compiler.backends import BuildOptions
from compiler.compile import compile_model
from compiler.quant.pack import unpack
from hwsim import golden


@pytest.mark.parametrize("design", ["lut-tc", "mixpe", "mac"])
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_relayout_round_trip_and_beat_order(design, bits):
    rng = np.random.default_rng(bits)
    N, KT, K = 16, 64, 4
    codes = rng.integers(0, 1 << bits, size=(N, KT)).astype(np.uint8)
    blob = relayout_tile(design, codes, bits, K)
    assert np.array_equal(decode_tile(design, blob, bits, N, KT, K), codes)
    stored = bits if design == "lut-tc" or bits != 3 else 4
    assert blob.size == KT // K * N * K * stored // 8  # nothing but codes (3-bit codes in 4-bit containers on mixpe/mac)
    beat = blob.reshape(KT // K, -1)[1]  # the second input beat: features 4..7 of every column
    if design == "lut-tc":  # planes: bit b of code q[n, 4 + t] at plane b, bit n*K + t
        bit = np.unpackbits(beat.reshape(bits, -1), axis=1, bitorder="little")
        for b in range(bits):
            assert np.array_equal(bit[b].reshape(N, K), (codes[:, 4:8] >> b) & 1)
    else:  # the in_w port: code q[n, 4 + t] at bits (n*K + t)*B
        vals = unpack(beat[None, :], stored, "dense", N * K) if stored > 1 else unpack(beat[None, None, :], 1, "planes", N * K)
        assert np.array_equal(vals.reshape(N, K), codes[:, 4:8])


@pytest.fixture(scope="module")
def llama_w3(tmp_path_factory):
    out = tmp_path_factory.mktemp("acc") / "m"
    return compile_model("llama-tiny", out, "w3g64a8-asym", targets="lut-tc", progress=False, options=BuildOptions(array="M=2,N=96,K=4,lanes=8"))["graph"]


def test_program_structure(llama_w3):
    g = llama_w3
    prog, tensors = lower_graph(g, "lut-tc", "M=2,N=96,K=4,lanes=8")
    assert Program.from_json(json.loads(json.dumps(prog.to_json()))).to_json() == prog.to_json()
    q = [n for n in g.nodes if n.op == "qlinear"]
    assert set(prog.layers) == {n.outputs[0] for n in q}
    ops = [c.op for c in prog.commands]
    # every non-linear node is a host op, every qlinear one LAYER
    assert ops.count("HOST_OP") == len(g.nodes) - len(q) and ops.count("LAYER") == len(q)
    # tables: once per activation tensor, right after its producer's QUANT_ACT, shared by its consumers
    tables = [c for c in prog.commands if c.op == "PRECOMPUTE_TABLE"]
    assert len(tables) == len({n.inputs[0] for n in q}) == 16  # 4 blocks x (attn_in, attn_flat, mlp_in, swiglu)
    for c in tables:
        i = prog.commands.index(c)
        assert prog.commands[i - 1].op == "QUANT_ACT" and prog.commands[i - 2].op == "HOST_OP" and prog.commands[i - 2].node == c.args["fused_into"]
    t0 = next(c for c in tables if c.node == "l0.attn_in")
    assert t0.args["consumers"] == ["l0.q", "l0.k", "l0.v"] and t0.args["entries"] == 8
    # gate_proj: n=768 -> 8 column tiles of 96; k=256 -> 4 groups of 64 in one job
    p = prog.layers["l0.gate"]
    assert (p.n_tiles, p.k_splits, p.n_pad) == (8, [[0, 256]], 768)
    assert tensors["l0.gate.w"].size == 768 * 256 * 3 // 8 == sum(sum(r) for r in p.tile_bytes)
    body = prog.layer_commands("l0.gate")
    assert [c.op for c in body[:9]] == ["LAYER", "LOAD_W", "LOAD_SCALES", "ROW_LOOP", "LOAD_A", "LUT_MMA", "DEQUANT", "STORE", "LOAD_W"]
    assert body[-1].op == "SCALE_OUT"


def test_dyadic_scales_and_zeros_stored(llama_w3):
    g = llama_w3
    prog, tensors = lower_graph(g, "mixpe", "M=2,N=96,K=4,lanes=8")
    node = next(n for n in g.nodes if n.outputs[0] == "l1.k")
    scales, zeros = g.consts[node.inputs[2]], g.consts[node.inputs[3]]
    mant, d, E = golden.dyadic_scales(scales)
    p = prog.layers["l1.k"]
    assert p.n == 128 and p.n_pad == 192  # 2 tiles of 96, the second half padding
    assert np.array_equal(tensors["l1.k.mant"][:128], mant) and np.array_equal(tensors["l1.k.d"][:128], d)
    assert np.array_equal(tensors["l1.k.E"], E) and np.array_equal(tensors["l1.k.zeros"][:128], zeros)
    assert not tensors["l1.k.mant"][128:].any()  # padded columns have scale 0: Y = 0 there
    assert np.all(golden.dyadic_value(mant, d, E) / scales - 1 < 2.0**-15)


@pytest.mark.parametrize("design", ["lut-tc", "mixpe", "mac"])
def test_a32_is_refused_at_check_time_in_one_line(design, tmp_path, capsys):
    """The arrays take int8 or A16 block-floating-point activations: float32 activations (a32) are refused by the
    target's check, before any model is loaded, with the fix; nothing is written."""
    from hwsim.designs import DESIGNS
    from tests.helpers import run_cli

    assert design in DESIGNS
    for args in (["--quant", "w4g32a32"], ["--quant", "w2g32", "--act", "a32"]):
        code, _, se = run_cli(["compile", "llama-tiny", "-o", tmp_path / "o", *args, "--target", f"ref,{design}"], capsys)
        lines = se.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and not (tmp_path / "o").exists(), se
        assert f"the {design} array takes a8 or a16" in lines[0] and "--act a16 or --act a8" in lines[0]


def test_negative_group_scales_are_refused_in_one_line(llama_w3):
    """GGUF's Q4_0 / Q3_K / Q6_K may store negative group scales; the arrays' dyadic scales are unsigned: the
    lowering names the layer and the fix instead of failing inside the golden model."""
    from compiler.errors import LowbitError

    g = llama_w3.copy()
    q = next(n for n in g.nodes if n.op == "qlinear")
    s = g.consts[q.inputs[2]].copy()
    s[0, 0] = -s[0, 0]
    g.consts[q.inputs[2]] = s
    with pytest.raises(LowbitError) as e:
        lower_graph(g, "lut-tc", "M=2,N=96,K=4,lanes=8")
    name = q.inputs[1].removesuffix(".qweight")
    assert f"layer {name} has 1 negative group scales" in str(e.value) and "--quant w4g32a8" in e.value.line()
