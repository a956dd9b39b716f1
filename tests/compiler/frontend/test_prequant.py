"""Pre-quantized Hugging Face checkpoints (GPTQ v1/v2, AWQ GEMM, compressed-tensors pack-quantized) written in
their published layouts by independent packers (prequant_writers.py) import exactly: every layer's codes,
scales and zero points equal what was written, bit for bit; the float graph holds s * (q - z); the model runs
like the float checkpoint of those weights; bad checkpoints give one LowbitError line each."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.errors import LowbitError
from compiler.frontend import load_model
from compiler.frontend.llama import empty_cache
from compiler.frontend.prequant.common import unpack_bitstream, unpack_fields
from compiler.reference import Interpreter
from tests.compiler.frontend import prequant_writers as pw
from tests.helpers import run_cli

# (method, bits, group, symmetric, v1): every GPTQ width incl. 3-bit words that straddle, both zero formats,
# group sizes beyond ours (16, per-channel) and both compressed-tensors zero-point layouts
CASES = {
    "gptq-w4g32-asym-v1": ("gptq", 4, 32, False, True),
    "gptq-w3g32-asym-v1": ("gptq", 3, 32, False, True),
    "gptq-w3g16-asym-v2": ("gptq", 3, 16, False, False),
    "gptq-w2g64-sym-v1": ("gptq", 2, 64, True, True),
    "gptq-w8pc-asym-v2": ("gptq", 8, -1, False, False),
    "awq-w4g32-asym": ("awq", 4, 32, False, True),
    "awq-w4g16-asym": ("awq", 4, 16, False, True),
    "ct-w4g32-sym": ("compressed-tensors", 4, 32, True, True),
    "ct-w4g16-asym": ("compressed-tensors", 4, 16, False, True),
    "ct-w8pc-sym": ("compressed-tensors", 8, -1, True, True),
    "ct-w3g32-asym": ("compressed-tensors", 3, 32, False, True),
}


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    out = {}
    for i, (case, (method, bits, group, sym, v1)) in enumerate(CASES.items()):
        d = tmp_path_factory.mktemp(case)
        written, floats = pw.write_prequant_dir(d, method, bits, group, sym, v1=v1, seed=i)
        out[case] = (d, written, floats, load_model(str(d)))
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_every_layer_imports_bit_exactly(imported, case):
    method, bits, _, sym, _ = CASES[case]
    _, written, floats, m = imported[case]
    assert sorted(m.prequant) == sorted(p + ".weight" for p in written)
    for prefix, w in written.items():
        name = prefix + ".weight"
        qw = m.prequant[name]
        assert (qw.bits, qw.group_size, qw.ternary, qw.has_mins) == (bits, w.group, False, False)
        np.testing.assert_array_equal(qw.codes, w.codes)
        np.testing.assert_array_equal(qw.zeros, w.zeros)
        assert qw.scales.dtype == np.float32
        np.testing.assert_array_equal(qw.scales, w.scales)  # the fp16 values, widened exactly
        # the float graph is s * (q - z): exact in float32 for fp16 scales and codes of <= 8 bits
        expect = (
            np.repeat(w.scales.astype(np.float64), w.group, axis=1) * (w.codes.astype(np.float64) - np.repeat(w.zeros, w.group, axis=1))
        ).astype(np.float32)
        np.testing.assert_array_equal(m.graph.consts[name], expect)
        g = "pc" if w.group == w.codes.shape[1] else f"g{w.group}"
        assert m.prequant_types[name] == f"{method}-w{bits}{g}-{'sym' if sym and method != 'awq' else 'asym'}"
    for name, a in floats.items():  # embeddings, norms and the head load as before, and only they stay float
        np.testing.assert_array_equal(m.graph.consts[name], a)
        assert name not in m.prequant
    assert not any(k.endswith(("qweight", "qzeros", "scales", "g_idx", "_packed", "_scale", "_shape", "_zero_point")) for k in m.graph.consts)


def _float_dir(path, written, floats, cfg):
    """The float checkpoint of the same weights (s * (q - z) in float64, exact in float32), no quantization_config."""
    path.mkdir()
    cfg = {k: v for k, v in cfg.items() if k != "quantization_config"}
    (path / "config.json").write_text(json.dumps(cfg))
    t = dict(floats)
    for p, w in written.items():
        t[p + ".weight"] = (
            np.repeat(w.scales.astype(np.float64), w.group, axis=1) * (w.codes.astype(np.float64) - np.repeat(w.zeros, w.group, axis=1))
        ).astype(np.float32)
    pw.save_tensors(path, t)


def _logits(m, ids):
    feeds = {"input_ids": np.asarray(ids, np.int64), "positions": np.arange(len(ids)), **empty_cache(m.graph, len(ids))}
    return Interpreter(m.graph).run(feeds)[m.graph.outputs[0]]


@pytest.mark.parametrize("case", ["gptq-w3g32-asym-v1", "awq-w4g32-asym", "ct-w4g16-asym"])
def test_imported_model_runs_as_the_float_checkpoint(imported, tmp_path, case):
    d, written, floats, m = imported[case]
    _float_dir(tmp_path / "float", written, floats, json.loads((d / "config.json").read_text()))
    ids = [1, 17, 33, 5, 90, 64]
    a = _logits(m, ids)
    assert np.isfinite(a).all() and a.std() > 0
    np.testing.assert_array_equal(a, _logits(load_model(str(tmp_path / "float")), ids))


@pytest.mark.parametrize("case", ["gptq-w3g16-asym-v2", "ct-w4g16-asym"])
def test_ref_backend_runs_the_kept_checkpoint(imported, tmp_path, capsys, case):
    """`lowbit compile --quant keep --target ref` stores exactly the written codes, scales and zeros, and ref
    runs them within the A16 contract's distance of the float of the checkpoint."""
    import runtime
    from compiler.quant.pack import unpack

    d, written, _, m = imported[case]
    code, _, err = run_cli(["compile", d, "-o", tmp_path / "art", "--quant", "keep", "--target", "ref"], capsys)
    assert code == 0, err
    cm = runtime.load(str(tmp_path / "art"))
    nodes = {n.inputs[1].rsplit(".", 1)[0]: n for n in cm.graph.nodes if n.op == "qlinear"}
    assert sorted(nodes) == sorted(written)
    for p, w in written.items():
        n = nodes[p]
        codes = unpack(cm.graph.consts[n.inputs[1]], n.attrs["bits"], n.attrs["layout"], n.attrs["k"])
        np.testing.assert_array_equal(codes, w.codes)
        np.testing.assert_array_equal(cm.graph.consts[n.inputs[2]], w.scales)
        np.testing.assert_array_equal(cm.graph.consts[n.inputs[3]], w.zeros)
    ids = [3, 1, 4, 1, 5, 9, 2, 6]
    feeds = {"input_ids": np.asarray(ids, np.int64), "positions": np.arange(len(ids)), **empty_cache(m.graph, len(ids))}
    got, want = cm.run(feeds, "ref")["logits"], _logits(m, ids)
    # A16 rounds activations to fp16 (2^-11 relative) before each qlinear; through this random-weight model that
    # measured 1e-3..5e-3 of max |logit| against the float of the checkpoint, while one wrong code, scale or
    # zero point moves the logits by O(1): 2e-2 and cosine 0.9999 separate the two
    assert np.abs(got - want).max() <= 2e-2 * np.abs(want).max()
    assert float((got * want).sum() / np.linalg.norm(got) / np.linalg.norm(want)) >= 0.9999


def test_qwen2_biases_pass_through(tmp_path):
    written, floats = pw.write_prequant_dir(tmp_path / "q", "gptq", 4, 32, False, model_type="qwen2", bias=True)
    m = load_model(str(tmp_path / "q"))
    biases = [k for k in floats if k.endswith(".bias")]
    assert len(biases) == 6
    for k in biases:
        np.testing.assert_array_equal(m.graph.consts[k], floats[k])
    assert len(m.prequant) == len(written) == 14


def test_a_module_left_float_loads_as_before(tmp_path):
    """modules_to_not_convert / ignore: such a linear is stored as a float weight and stays out of prequant."""
    d = tmp_path / "m"
    written, _ = pw.write_prequant_dir(d, "awq", 4, 32, False, qc_extra={"modules_to_not_convert": ["down_proj"]})
    p = "model.layers.1.mlp.down_proj"
    w = np.random.default_rng(1).normal(0, 0.05, (64, 128)).astype(np.float32)

    def to_float(t):
        for s in (".qweight", ".qzeros", ".scales"):
            t.pop(p + s)
        t[p + ".weight"] = w

    _rewrite(d, edit_tensors=to_float)
    m = load_model(str(d))
    np.testing.assert_array_equal(m.graph.consts[p + ".weight"], w)
    assert p + ".weight" not in m.prequant and p + ".weight" not in m.prequant_types
    assert len(m.prequant) == len(written) - 1


def test_unpacked_signed_ct_zero_points(tmp_path):
    """Older compressed-tensors files keep asymmetric zero points unpacked and signed (int8 [N, J])."""
    written, _ = pw.write_prequant_dir(tmp_path / "c", "compressed-tensors", 4, 32, False, packed_zp=False)
    m = load_model(str(tmp_path / "c"))
    for p, w in written.items():
        np.testing.assert_array_equal(m.prequant[p + ".weight"].zeros, w.zeros)


# ---- the unpackers against the formats' own packers, on random shapes


@settings(max_examples=25, deadline=None)
@given(bits=st.sampled_from([2, 3, 4, 8]), rows32=st.integers(1, 3), n=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_gptq_bitstream_unpacks_autogptq_rows(bits, rows32, n, seed):
    k = 32 * rows32
    codes = np.random.default_rng(seed).integers(0, 1 << bits, size=(k, n)).astype(np.uint8)
    np.testing.assert_array_equal(unpack_bitstream(pw.gptq_pack_rows(codes, bits), bits, axis=0, count=k), codes)


@settings(max_examples=25, deadline=None)
@given(bits=st.sampled_from([2, 3, 4, 8]), k=st.integers(1, 40), n=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_ct_fields_unpack_pack_to_int32(bits, k, n, seed):
    off = 1 << (bits - 1)
    codes = np.random.default_rng(seed).integers(0, 1 << bits, size=(n, k)).astype(np.uint8)
    packed = pw.ct_pack(codes.astype(np.int64) - off, bits)
    np.testing.assert_array_equal(unpack_fields(packed, bits, axis=1, count=k), codes)
    np.testing.assert_array_equal(unpack_fields(pw.ct_pack(codes.T.astype(np.int64) - off, bits, packed_dim=0), bits, axis=0, count=k), codes.T)


# ---- bad checkpoints: one clear line each


def _rewrite(d, edit_cfg=None, edit_tensors=None):
    from safetensors.numpy import load_file

    if edit_cfg:
        cfg = json.loads((d / "config.json").read_text())
        edit_cfg(cfg)
        (d / "config.json").write_text(json.dumps(cfg))
    if edit_tensors:
        t = load_file(str(d / "model.safetensors"))
        edit_tensors(t)
        pw.save_tensors(d, t)


Q = "model.layers.0.self_attn.q_proj"


def _act_order(t):
    t[Q + ".g_idx"] = np.random.default_rng(0).permutation(np.arange(64) // 32).astype(np.int32)


BAD = {
    "act-order": ("gptq", lambda c: None, _act_order, "act-order .*g_idx"),
    "bits": ("gptq", lambda c: c["quantization_config"].update(bits=5), None, "5-bit weights"),
    "awq-bits": ("awq", lambda c: c["quantization_config"].update(bits=3), None, "3-bit weights"),
    "qzeros": ("gptq", None, lambda t: t.pop(Q + ".qzeros"), "lacks the tensor 'model.layers.0.self_attn.q_proj.qzeros'"),
    "config-shape": ("awq", lambda c: c.update(intermediate_size=256), None, r"mlp\.(down|gate|up)_proj .* config.json implies"),
    "group": ("gptq", lambda c: c["quantization_config"].update(group_size=48), None, "group size 48 does not divide K="),
    "method": ("gptq", lambda c: c["quantization_config"].update(quant_method="bitsandbytes"), None, "unsupported quant_method 'bitsandbytes'"),
    "awq-version": ("awq", lambda c: c["quantization_config"].update(version="gemv"), None, "version 'gemv'"),
    "ct-format": ("compressed-tensors", lambda c: c["quantization_config"].update(format="marlin-24"), None, "format 'marlin-24'"),
    "ct-zero-point": ("compressed-tensors", None, lambda t: t.pop(Q + ".weight_zero_point"), "asymmetric but has no weight_zero_point"),
    "gptq-format": ("gptq", lambda c: c["quantization_config"].update(checkpoint_format="marlin"), None, "checkpoint_format 'marlin'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_checkpoints_give_one_line(tmp_path, case):
    method, edit_cfg, edit_tensors, match = BAD[case]
    d = tmp_path / "m"
    pw.write_prequant_dir(d, method, 4, 32, False)
    _rewrite(d, edit_cfg, edit_tensors)
    with pytest.raises(LowbitError, match=match) as e:
        load_model(str(d))
    assert "\n" not in str(e.value) and e.value.fix


def test_cli_refuses_a_bad_checkpoint_with_exit_2(tmp_path, capsys):
    d = tmp_path / "m"
    pw.write_prequant_dir(d, "gptq", 4, 32, False)
    _rewrite(d, edit_tensors=_act_order)
    code, _, err = run_cli(["compile", d, "-o", tmp_path / "art", "--quant", "none", "--target", "ref"], capsys)
    assert code == 2
    assert err.strip().count("\n") == 0 and "act-order" in err and "Traceback" not in err
    assert not (tmp_path / "art").exists()
