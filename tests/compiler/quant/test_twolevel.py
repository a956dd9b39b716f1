"""Two-level (K-quant style) scales: the grid, its exact storage, RTN and GPTQ on it, and its bits per weight."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.artifact import WEIGHTS, load_artifact
from compiler.compile import compile_model
from compiler.quant import twolevel
from compiler.quant.bpw import spec_bpw
from compiler.quant.gptq import hessian_from_inputs, quantize_gptq
from compiler.quant.rtn import quantize_rtn
from compiler.quant.spec import parse_spec

GROUPS = st.sampled_from([16, 32, 64, 128])


def _grid_values(rng, n, j, group, sub_bits, signed):
    """Values d * q on a random two-level grid (fp16 d of any magnitude, q in range)."""
    lo, hi = twolevel.qrange(sub_bits, signed)
    s = twolevel.n_super(j, group)
    d = (rng.uniform(0.5, 1, (n, s)) * 2.0 ** rng.integers(-24, 15, (n, s))).astype(np.float16)
    q = rng.integers(lo, hi + 1, (n, j))
    return d.astype(np.float32)[:, twolevel.super_index(j, group)] * q.astype(np.float32)


@settings(max_examples=60, deadline=None)
@given(group=GROUPS, j=st.integers(1, 40), n=st.integers(1, 5), sub_bits=st.sampled_from([4, 6, 8]), signed=st.booleans(),
       seed=st.integers(0, 2**31))
def test_values_on_a_grid_decompose_exactly(group, j, n, sub_bits, signed, seed):
    a = _grid_values(np.random.default_rng(seed), n, j, group, sub_bits, signed)
    d, q = twolevel.decompose(a, group, sub_bits, signed)
    lo, hi = twolevel.qrange(sub_bits, signed)
    assert d.dtype == np.float16 and d.shape == (n, twolevel.n_super(j, group))
    assert q.min() >= lo and q.max() <= hi
    back = d.astype(np.float32)[:, twolevel.super_index(j, group)] * q.astype(np.float32)
    assert np.array_equal(back.view(np.uint32), a.view(np.uint32))  # signed zeros too


def test_values_off_the_grid_do_not_decompose():
    a = np.array([[1.0, 1.0 + 2.0**-20]], np.float32)  # no fp16 d with both an integer multiple of it
    assert twolevel.decompose(a, 32, 6, False) is None


@pytest.mark.parametrize("spec", ["w4g32k-min", "w3g16k", "w3g16k-min", "w2g16k4-min", "w4g32k-asym", "w8g16k8", "w3g64k"])
def test_rtn_scales_lie_on_the_grid_and_cost_little(spec):
    rng = np.random.default_rng(1)
    w = (rng.standard_t(4, size=(96, 768)) * 0.02).astype(np.float32)
    sp = parse_spec(spec)
    qw = quantize_rtn(w, sp)
    assert qw.sub_bits == sp.sub_bits and qw.group_size == sp.group_size
    signed = sp.symmetric and not sp.minimum  # as Q3_K / Q6_K store them: positive scales use half the range
    assert qw.sub_signed == signed
    dq = twolevel.decompose(qw.scales, qw.group_size, sp.sub_bits, signed)
    lo, hi = twolevel.qrange(sp.sub_bits, signed)
    assert dq is not None and dq[1].min() >= lo and dq[1].max() <= hi
    assert np.all(dq[1][qw.scales > 0] != 0)
    if sp.minimum:
        assert np.all(qw.mins <= 0) and twolevel.decompose(-qw.mins, qw.group_size, sp.sub_bits, False) is not None
    one = quantize_rtn(w, parse_spec(spec.replace("k4", "").replace("k8", "").replace("k", "")))
    err = float(np.mean((qw.dequantize() - w) ** 2))
    err1 = float(np.mean((one.dequantize() - w) ** 2))
    # 6- and 8-bit sub-scales cost a few percent of the squared error on these weights, 4-bit ones about 10%
    assert err <= err1 * (1.15 if sp.sub_bits == 4 else 1.06), (err, err1)


def test_an_all_zero_super_block_quantizes_to_zero():
    w = np.zeros((4, 512), np.float32)
    w[:, 256:] = np.random.default_rng(2).standard_normal((4, 256))
    qw = quantize_rtn(w, parse_spec("w4g32k-min"))
    assert np.array_equal(qw.dequantize()[:, :256], np.zeros((4, 256), np.float32))


@pytest.mark.parametrize("spec", ["w3g16k-min", "w4g32k", "w2g16k4-min"])
@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_on_the_grid_beats_rtn_on_the_grid(spec, act_order):
    rng = np.random.default_rng(3)
    k = 512
    w = (rng.standard_t(4, size=(64, k)) * 0.02).astype(np.float32)
    x = (rng.standard_normal((2048, k)) * np.linspace(0.2, 3, k)).astype(np.float32)
    h = hessian_from_inputs(x)
    sp = parse_spec(spec)
    g = quantize_gptq(w, h, sp, act_order=act_order)
    r = quantize_rtn(w, sp)
    assert g.sub_bits == sp.sub_bits
    assert twolevel.decompose(g.scales, g.group_size, sp.sub_bits, g.sub_signed) is not None

    def out_err(q):
        e = q.dequantize() - w
        return float(np.einsum("nk,kl,nl->", e, h, e))

    assert out_err(g) < 0.97 * out_err(r)


def test_bits_per_weight_match_llama_cpp_block_sizes():
    from gguf.constants import GGML_QUANT_SIZES
    from gguf.constants import GGMLQuantizationType as T

    def gguf_bpw(t):
        block, size = GGML_QUANT_SIZES[t]
        return size * 8 / block

    assert spec_bpw(parse_spec("w4g32k-min"), 4096) == gguf_bpw(T.Q4_K) == 4.5
    assert spec_bpw(parse_spec("w3g16k"), 4096) == gguf_bpw(T.Q3_K)
    assert spec_bpw(parse_spec("w2g16k4-min"), 4096) == gguf_bpw(T.Q2_K) == 2.625
    assert spec_bpw(parse_spec("w3g16k-min"), 256) == 3 + 12 / 16 + 32 / 256


def test_artifact_stores_two_level_scales_and_restores_them_bit_for_bit(tmp_path):
    res = compile_model("llama-tiny", tmp_path / "k", "w3g16k-min", progress=False)
    graph = res["graph"]
    q = [n for n in graph.nodes if n.op == "qlinear" and n.attrs.get("two_level")]
    assert q and all(n.attrs["two_level"] == {"sub_bits": 6, "signed": False} for n in q)
    from safetensors.numpy import load_file

    stored = load_file(str(tmp_path / "k" / WEIGHTS))
    manifest = json.loads((tmp_path / "k" / "manifest.json").read_text())
    packed = manifest["two_level_scales"]
    for n in q:
        for name in (n.inputs[2], n.inputs[3]):
            assert name not in stored and name in packed
            assert stored[name + ".d"].dtype == np.float16 and stored[name + ".q"].dtype == np.uint8
    loaded = load_artifact(tmp_path / "k").graph
    for name, v in graph.consts.items():
        assert loaded.consts[name].dtype == v.dtype and np.array_equal(loaded.consts[name], v), name
