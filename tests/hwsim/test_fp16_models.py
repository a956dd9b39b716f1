"""Whole models with their linear layers on the FP16-activation arrays (hwsim/designs/_fp16.py run_layer):
each layer's tiled hwsim result equals the design's golden model on the whole layer bit for bit, and the
model's logits stay close to the numeric contract's A16 reference (the arrays round differently: the
contract leaves the fp32 summation order open, mac-fp16 rounds each weight to fp16, lut-tc-fp16 each table
entry)."""

import numpy as np
import pytest

import runtime
from compiler.compile import compile_model
from compiler.quant.pack import unpack
from compiler.reference import Interpreter
from hwsim.designs import _fp16 as fp
from runtime.compare import cosine

# how close each design's logits come to ref's on llama-tiny w4g32 (A16): measured, with margin
MIN_COSINE = {"mixpe-fp16": 0.99999, "mac-fp16": 0.99999, "lut-tc-fp16": 0.99999}  # measured 0.9999997, 0.9999995, 0.9999993


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    out = tmp_path_factory.mktemp("fp16") / "llama"
    compile_model("llama-tiny", out, "w4g32", targets="ref", progress=False)
    return runtime.load(out)


def _feeds(m, n=5):
    ids = np.arange(3, 3 + n) * 7 % m.graph.meta["hparams"]["vocab"]
    f = {"input_ids": ids.astype(np.int64), "positions": np.arange(n, dtype=np.int64)}
    f.update(m._cache_feeds(n))
    return f


def _layer(node, ins):
    a = node.attrs
    codes = unpack(ins[1], a["bits"], a["layout"], a["k"]).astype(np.int64)
    return codes, np.asarray(ins[3]).astype(np.int64), np.asarray(ins[2], np.float32)


def _run(m, design):
    """Logits with every qlinear on `design` (M=8 N=64 K=4 tiles), the per-layer checks, total cycles."""
    cycles = []

    def on_array(i, node, ins, outs):
        if node.op != "qlinear":
            return outs
        a = node.attrs
        assert not a.get("mins") and len(ins) == 4, "these layers have zero points and no bias"
        codes, zeros, scales = _layer(node, ins)
        cfg = fp.Fp16Config(design, M=8, N=64, K=4, bits=a["bits"], group=a["group_size"], lanes=8)
        x = np.asarray(ins[0], np.float32).reshape(-1, a["k"])
        y, cyc = fp.run_layer(cfg, x, codes, zeros, scales)
        t = dict(x=fp.golden.f16_bits(x.astype(np.float16)), codes=codes, zeros=zeros, scales=fp.golden.f16_bits(scales.astype(np.float16)))
        assert np.array_equal(y.view(np.uint32), fp.golden_y(design, t, cfg.group, cfg.K, cfg.bits).astype(np.uint32)), node.outputs[0]
        cycles.append(cyc)
        return [y.reshape(outs[0].shape)]

    it = Interpreter(m.graph)
    env = it.start(_feeds(m))
    it.run_nodes(env, range(len(m.graph.nodes)), after_node=on_array)
    return env["logits"], sum(cycles)


@pytest.mark.parametrize("design", list(fp.FP16_DESIGNS))
def test_whole_model_on_fp16_array(model, design):
    m = model
    ref = Interpreter(m.graph).run(_feeds(m))["logits"]
    got, cycles = _run(m, design)
    assert got.shape == ref.shape and np.isfinite(got).all()
    assert cosine(got, ref) >= MIN_COSINE[design], cosine(got, ref)
    assert cycles > 0

