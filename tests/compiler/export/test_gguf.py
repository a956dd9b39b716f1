"""GGUF export: read back with gguf.GGUFReader (metadata, tensor types) and every weight decoded by
gguf.quants.dequantize against the artifact's own dequantized weight; q/k row order against RoPE; errors."""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.artifact import load_artifact, write_artifact
from compiler.compile import compile_model
from compiler.export.gguf import BLOCK, export_gguf, gguf_name, permute_rows, unpermute_rows
from compiler.quant.pack import unpack
from compiler.quant.qweight import QuantizedWeight
from tests.helpers import run_cli

# fp16 keeps 11 significant bits, so rounding a normal float32 scale moves it by at most 2^-11 of itself; a
# symmetric block's weights are d (q - z), so each moves by at most 2^-11 of the block's largest weight.
FP16_REL = 2.0**-11

# spec -> the GGUF type of its block linears
SPECS = {"w4g32": "Q4_0", "w4g64-asym": "Q4_1", "w8pc": "Q8_0", "w4pc": "Q4_0"}


@pytest.fixture(scope="module")
def arts(tmp_path_factory):
    root = tmp_path_factory.mktemp("gguf_export")
    out = {}
    for spec in [*SPECS, "w3g32"]:
        compile_model("llama-tiny", root / spec, quant=spec, progress=False)
        out[spec] = root / spec
    compile_model("bitnet-tiny", root / "ternary", quant="ternary", progress=False)
    out["ternary"] = root / "ternary"
    return out


def _read(path):
    r = gguf.GGUFReader(str(path))
    meta = {k: f.contents() for k, f in r.fields.items() if f.types}
    tensors = {t.name: t for t in r.tensors}
    return meta, tensors


def _decoded(t) -> np.ndarray:
    return gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape([int(s) for s in reversed(t.shape)])


def _artifact_weights(path) -> dict[str, np.ndarray]:
    """GGUF name -> the artifact's dequantized weight in GGUF row order (independently of the exporter's code:
    QuantizedWeight.dequantize, the contract's rule)."""
    a = load_artifact(path)
    g, hp = a.graph, a.graph.meta["hparams"]
    out = {}
    for n in g.nodes:
        if n.op != "qlinear":
            continue
        at = n.attrs
        packed, s, off = (g.consts[i] for i in n.inputs[1:4])
        codes = unpack(packed, at["bits"], at["layout"], at["k"])
        qw = QuantizedWeight(codes, s, np.zeros_like(off, np.uint8) if at.get("mins") else off, at["bits"], at["group_size"], at["ternary"],
                             off if at.get("mins") else None)
        name = gguf_name(n.inputs[1].replace(".qweight", ".weight"))
        w = qw.dequantize()
        nh = hp["heads"] if ".attn_q." in name else hp["kv_heads"] if ".attn_k." in name else None
        out[name] = permute_rows(w, nh) if nh else w
    return out


def _block_max(w):
    n, k = w.shape
    return np.repeat(np.abs(w.reshape(n, k // BLOCK, BLOCK)).max(axis=2), BLOCK, axis=1)


@pytest.mark.parametrize("spec", list(SPECS))
def test_export_reads_back(arts, spec, tmp_path):
    out = tmp_path / "m.gguf"
    rep = export_gguf(arts[spec], out)
    meta, tensors = _read(out)
    assert meta["general.architecture"] == "llama"
    assert (meta["llama.block_count"], meta["llama.embedding_length"], meta["llama.feed_forward_length"]) == (4, 256, 768)
    assert (meta["llama.attention.head_count"], meta["llama.attention.head_count_kv"], meta["llama.rope.dimension_count"]) == (8, 4, 32)
    assert meta["llama.context_length"] == 2048 and meta["llama.vocab_size"] == 512
    assert meta["llama.rope.freq_base"] == 10000.0 and meta["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-5)
    # the byte tokenizer as byte pieces: byte b is token b + 3, as in lowbit
    assert meta["tokenizer.ggml.model"] == "llama" and len(meta["tokenizer.ggml.tokens"]) == 512
    assert meta["tokenizer.ggml.tokens"][3 + ord("A")] == "<0x41>" and meta["tokenizer.ggml.bos_token_id"] == 1
    want = _artifact_weights(arts[spec])
    assert len(want) == 28
    worst = 0.0
    for name, w in want.items():
        t = tensors[name]
        assert t.tensor_type.name == SPECS[spec], name
        got = _decoded(t)
        r = next(x for x in rep.tensors if x.name == name)
        # bound reported per tensor, and the fp16 bound for symmetric blocks (Q4_1 from zero points also rounds m = -s z)
        assert np.all(np.abs(got - w) <= r.max_rel_change * _block_max(w) * (1 + 1e-6)), name
        if SPECS[spec] != "Q4_1":
            assert r.max_rel_change <= FP16_REL * (1 + 1e-6)
        worst = max(worst, r.max_rel_change)
    assert worst > 0  # RTN's float32 scales are not fp16 values: the report must see it
    assert tensors["blk.0.attn_norm.weight"].tensor_type.name == "F32" and tensors["output.weight"].tensor_type.name == "F32"
    g = load_artifact(arts[spec]).graph
    np.testing.assert_array_equal(_decoded(tensors["token_embd.weight"]), g.consts["model.embed_tokens.weight"])
    np.testing.assert_array_equal(_decoded(tensors["output_norm.weight"]).ravel(), g.consts["model.norm.weight"])


def _fp16_scaled(src, dst):
    """A copy of the artifact whose scales (and minimums) are fp16 values, as a GGUF-kept artifact's are."""
    a = load_artifact(src)
    g = a.graph.copy()
    for k in list(g.consts):
        if k.endswith((".scales", ".mins")):
            g.consts[k] = g.consts[k].astype(np.float16).astype(np.float32)
    write_artifact(dst, {k: v for k, v in a.manifest.items() if k not in ("graph", "weights")}, g)
    return dst


@pytest.mark.parametrize("spec", ["w4g32", "w8pc"])
def test_fp16_exact_scales_export_exactly_and_reexport_byte_identical(arts, spec, tmp_path):
    exact = _fp16_scaled(arts[spec], tmp_path / "exact")
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    export_gguf(arts[spec], a)
    rep = export_gguf(exact, b)
    want = _artifact_weights(exact)
    _, ta = _read(a)
    _, tb = _read(b)
    assert rep.max_rel_change == 0.0
    for name, w in want.items():
        np.testing.assert_array_equal(_decoded(tb[name]), w)
        # rounding the scales first changes nothing GGUF stores: the blocks are the same bytes
        np.testing.assert_array_equal(np.asarray(ta[name].data), np.asarray(tb[name].data))


def test_mins_artifact_exports_q4_1_exactly(tmp_path):
    """Scale-and-minimum groups (llama.cpp's Q4_1 rule) with fp16 scales and minimums: Q4_1 blocks that decode to
    the artifact's weights bit for bit."""
    from compiler.frontend import load_model
    from compiler.quant.apply import qlinear_node, quantizable
    from compiler.quant.rtn import quantize_rtn_min
    from compiler.quant.spec import parse_spec

    m = load_model("llama-tiny")
    g = m.graph.copy()
    for i in quantizable(g):
        n = g.nodes[i]
        qw = quantize_rtn_min(g.consts[n.inputs[1]], 4, 64)
        qw.scales, qw.mins = qw.scales.astype(np.float16).astype(np.float32), qw.mins.astype(np.float16).astype(np.float32)
        g.nodes[i] = qlinear_node(g, n, qw, parse_spec("w4g64"))
    g.consts = {k: v for k, v in g.consts.items() if any(k in n.inputs for n in g.nodes)}
    g.infer_types()
    manifest = {"model": {"name": m.name, "family": m.family, "config": m.config, "source": m.source}, "quant": None,
                "tokenizer": m.tokenizer.to_json(), "targets": {}}
    art = write_artifact(tmp_path / "mins", manifest, g)
    rep = export_gguf(art, tmp_path / "m.gguf")
    _, t = _read(tmp_path / "m.gguf")
    assert rep.max_rel_change == 0.0
    for name, w in _artifact_weights(art).items():
        assert t[name].tensor_type.name == "Q4_1"
        np.testing.assert_array_equal(_decoded(t[name]), w)


@pytest.mark.parametrize("ttype", ["TQ2_0", "TQ1_0"])
def test_ternary_exports_tq2_0(arts, tmp_path, ttype):
    rep = export_gguf(arts["ternary"], tmp_path / "t.gguf", ternary_type=ttype)
    _, t = _read(tmp_path / "t.gguf")
    for name, w in _artifact_weights(arts["ternary"]).items():
        assert t[name].tensor_type.name == ttype
        got = _decoded(t[name])
        r = next(x for x in rep.tensors if x.name == name)
        assert r.max_rel_change <= FP16_REL * (1 + 1e-6)
        assert np.all(np.abs(got - w) <= r.max_rel_change * _block_max(w) * (1 + 1e-6))
        np.testing.assert_array_equal(np.sign(got), np.sign(w))  # the ternary digits themselves are unchanged


@settings(max_examples=25, deadline=None)
@given(heads=st.sampled_from([1, 2, 4]), half=st.sampled_from([1, 2, 4]), pos=st.integers(0, 50), seed=st.integers(0, 2**16))
def test_permutation_turns_half_split_rope_into_interleaved(heads, half, pos, seed):
    """llama.cpp rotates pairs (2i, 2i+1); lowbit (like HF) rotates (i, i + d/2): the exported rows must make
    the two agree, i.e. interleaved_rope(P q) == P half_split_rope(q)."""
    d = 2 * half
    rng = np.random.default_rng(seed)
    q = rng.standard_normal(heads * d)
    ang = pos * 10000.0 ** (-np.arange(half) * 2.0 / d)
    c, s = np.cos(ang), np.sin(ang)
    h = q.reshape(heads, 2, half)
    hf = np.stack([h[:, 0] * c - h[:, 1] * s, h[:, 1] * c + h[:, 0] * s], axis=1).reshape(-1)
    p = permute_rows(q, heads).reshape(heads, half, 2)
    il = np.stack([p[..., 0] * c - p[..., 1] * s, p[..., 1] * c + p[..., 0] * s], axis=-1).reshape(-1)
    np.testing.assert_allclose(il, permute_rows(hf, heads), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(unpermute_rows(permute_rows(q, heads), heads), q)


def test_cli_export_and_json_report(arts, tmp_path, capsys):
    out = tmp_path / "cli.gguf"
    code, so, se = run_cli(["export", arts["w4g32"], "--format", "gguf", "-o", out], capsys)
    assert code == 0, se
    assert "Q4_0 28" in so and out.is_file()
    code, so, _ = run_cli(["export", arts["w4g32"], "-o", out, "--json"], capsys)
    rep = json.loads(so)
    assert code == 0 and rep["types"] == {"F32": 11, "Q4_0": 28} and 0 < rep["max_rel_change"] <= FP16_REL * (1 + 1e-6)


def test_w3_needs_fallback(arts, tmp_path, capsys):
    out = tmp_path / "w3.gguf"
    code, _, se = run_cli(["export", arts["w3g32"], "-o", out], capsys)
    assert code == 2 and se.count("\n") == 1 and "model.layers.0.self_attn.q_proj" in se and "--fallback" in se
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    rep = export_gguf(arts["w3g32"], out, fallback="f16")
    _, t = _read(out)
    for name, w in _artifact_weights(arts["w3g32"]).items():
        assert t[name].tensor_type.name == "F16"
        np.testing.assert_array_equal(_decoded(t[name]), w.astype(np.float16).astype(np.float32))
    assert all(r.fallback for r in rep.tensors if r.gguf_type == "F16") and 0 < rep.max_rel_change <= FP16_REL * (1 + 1e-6)
    export_gguf(arts["w3g32"], out, fallback="f32")
    _, t = _read(out)
    for name, w in _artifact_weights(arts["w3g32"]).items():
        np.testing.assert_array_equal(_decoded(t[name]), w)


def test_errors(arts, tmp_path, capsys):
    code, _, se = run_cli(["export", arts["w4g32"], "-o", tmp_path / "nope" / "m.gguf"], capsys)
    assert code == 2 and "does not exist" in se and not (tmp_path / "nope").exists()
    enc = tmp_path / "bert"
    compile_model("bert-tiny", enc, quant="w4g32", progress=False)
    code, _, se = run_cli(["export", enc, "-o", tmp_path / "b.gguf"], capsys)
    assert code == 2 and "bert" in se and not (tmp_path / "b.gguf").exists()
    code, _, se = run_cli(["export", tmp_path / "missing"], capsys)
    assert code == 2 and "does not exist" in se
    sp = tmp_path / "sp"
    compile_model("llama-tiny", sp, quant="w4g32-sp1", progress=False)
    code, _, se = run_cli(["export", sp, "-o", tmp_path / "sp.gguf"], capsys)
    assert code == 2 and "sparse outliers" in se and "-sp" in se and not (tmp_path / "sp.gguf").exists()


def test_kept_gguf_reexports_identical_blocks_and_metadata(tmp_path):
    """GGUF -> lowbit importer -> --quant keep -> export: every kept tensor is the same bytes (q/k permuted back),
    the tokenizer metadata is the original's, and the fp16 scales make the reported change zero."""
    from tests.compiler.frontend.gguf_fixtures import write_llama_gguf

    src = tmp_path / "src.gguf"
    write_llama_gguf(src, types={"attn_q": "Q4_0", "attn_v": "Q8_0", "ffn_down": "Q4_0"})
    compile_model(str(src), tmp_path / "keep", quant="keep", progress=False)
    rep = export_gguf(tmp_path / "keep", tmp_path / "out.gguf")
    ms, ts = _read(src)
    mo, to = _read(tmp_path / "out.gguf")
    assert rep.max_rel_change == 0.0
    assert set(ts) == set(to)
    for name, t in ts.items():
        assert to[name].tensor_type == t.tensor_type, name
        assert list(to[name].shape) == list(t.shape), name
        np.testing.assert_array_equal(np.asarray(to[name].data), np.asarray(t.data), err_msg=name)
    for k, v in ms.items():
        if k.startswith("tokenizer."):
            assert mo[k] == v, k
    assert {t.name: t.gguf_type for t in rep.tensors}["blk.0.attn_q.weight"] == "Q4_0"


def test_export_reimports_to_the_artifact_weights(arts, tmp_path):
    """The repo's GGUF importer reads an exported w4g32 artifact back: its float weights (Hugging Face names and
    row order) are the artifact's dequantized weights, to the reported fp16-scale bound."""
    from compiler.frontend import load_model

    out = tmp_path / "w4.gguf"
    rep = export_gguf(arts["w4g32"], out)
    m = load_model(str(out))
    a = load_artifact(arts["w4g32"])
    hp = a.graph.meta["hparams"]
    for name, w in _artifact_weights(arts["w4g32"]).items():
        hf = next(n.inputs[1].replace(".qweight", ".weight") for n in a.graph.nodes if n.op == "qlinear" and gguf_name(n.inputs[1].replace(".qweight", ".weight")) == name)
        nh = hp["heads"] if ".attn_q." in name else hp["kv_heads"] if ".attn_k." in name else None
        want = unpermute_rows(w, nh) if nh else w
        got = m.graph.consts[hf]
        bound = next(r.max_rel_change for r in rep.tensors if r.name == name) * (unpermute_rows(_block_max(w), nh) if nh else _block_max(w))
        assert np.all(np.abs(got - want) <= bound * (1 + 1e-6)), name
    np.testing.assert_array_equal(m.graph.consts["model.embed_tokens.weight"], a.graph.consts["model.embed_tokens.weight"])
    text = "Hello, world!  é"  # the byte vocabulary tokenizes as lowbit's byte tokenizer does (spaces too)
    assert m.tokenizer.encode(text) == a.tokenizer().encode(text) == [1, *(3 + b for b in text.encode())]


def test_llama3_rope_scaling_becomes_rope_freqs(tmp_path):
    """Llama 3 frequency scaling is llama.cpp's rope_freqs tensor: the divisor of each pair's base frequency."""
    from compiler.frontend import Model
    from compiler.frontend.hf import BUILDERS
    from compiler.frontend.presets import PRESETS, preset_weights
    from compiler.frontend.tokenizer import ByteTokenizer
    from compiler.reference import rope_inv_freq

    p = PRESETS["llama-tiny"]
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    cfg = {**p.config, "rope_scaling": scaling}
    m = Model("tiny-l3", "llama", cfg, BUILDERS["llama"](cfg, preset_weights(p, 0), "tiny-l3"), ByteTokenizer(), {"kind": "preset", "name": "llama-tiny"})
    compile_model(m, tmp_path / "a", quant="w4g32", progress=False)
    export_gguf(tmp_path / "a", tmp_path / "a.gguf")
    _, t = _read(tmp_path / "a.gguf")
    f = _decoded(t["rope_freqs.weight"]).ravel()
    inv = rope_inv_freq(32, 10000.0, scaling)
    np.testing.assert_allclose(10000.0 ** (-np.arange(0, 32, 2) / 32) / f, inv, rtol=1e-6)  # float32 storage
    assert f.min() == 1.0 and f.max() == 8.0  # high frequencies unscaled, low ones divided by the factor


@settings(max_examples=20, deadline=None)
@given(kind=st.sampled_from(["Q8_0", "Q4_0", "Q4_1", "TQ2_0", "TQ1_0"]), rows=st.integers(1, 3), blocks=st.integers(1, 2), per=st.sampled_from([1, 2, 8]),
       seed=st.integers(0, 2**16))
def test_block_encoders_match_gguf_dequantize(kind, rows, blocks, per, seed):
    """Random codes (extremes included) and fp16-exact scales / minimums: gguf's own decoder gives back exactly
    the contract's weights, for groups of one block or several blocks sharing a scale."""
    from compiler.export.gguf import QK_K, encode_q4_0, encode_q4_1, encode_q8_0, encode_tq1_0, encode_tq2_0

    rng = np.random.default_rng(seed)
    tern = kind.startswith("TQ")
    block = QK_K if tern else BLOCK
    group = block * per
    k = group * blocks
    qmax = {"Q8_0": 255, "Q4_0": 15, "Q4_1": 15, "TQ2_0": 2, "TQ1_0": 2}[kind]
    codes = rng.integers(0, qmax + 1, (rows, k)).astype(np.uint8)
    codes[0, :2] = [0, qmax]
    s = rng.uniform(1e-3, 1.0, (rows, blocks)).astype(np.float16).astype(np.float32)
    mins = rng.uniform(-1, 1, (rows, blocks)).astype(np.float16).astype(np.float32)
    z = {"Q8_0": 128, "Q4_0": 8, "Q4_1": 0, "TQ2_0": 1, "TQ1_0": 1}[kind]
    qw = QuantizedWeight(codes, s, np.full((rows, blocks), z, np.uint8), 8 if kind == "Q8_0" else 2 if tern else 4, group,
                         tern, mins if kind == "Q4_1" else None)
    if kind == "Q4_1":
        data, w = encode_q4_1(codes, s, mins, group, "t")
    else:
        data, w = {"Q8_0": encode_q8_0, "Q4_0": encode_q4_0, "TQ2_0": encode_tq2_0, "TQ1_0": encode_tq1_0}[kind](codes, s, group, "t")
    got = gguf.quants.dequantize(data, getattr(gguf.GGMLQuantizationType, kind)).reshape(rows, k)
    np.testing.assert_array_equal(got, qw.dequantize())
    np.testing.assert_array_equal(w, qw.dequantize())


# ---- two-level scales: K-quants, and the 5-bit types -------------------------------------------------------

# spec -> the GGUF type of its block linears (llama-tiny: K = 256 or 768, multiples of the 256-weight super-block)
K_SPECS = {"w4g32k-min": "Q4_K", "w3g16k": "Q3_K", "w2g16k4-min": "Q2_K"}


def _exact_export(art, out, want_type):
    """Export, then every linear is `want_type` and decodes (gguf's own dequantize) to the artifact's weight bit for bit."""
    rep = export_gguf(art, out)
    _, t = _read(out)
    assert rep.max_rel_change == 0.0
    want = _artifact_weights(art)
    assert len(want) == 28
    for name, w in want.items():
        assert t[name].tensor_type.name == want_type, name
        np.testing.assert_array_equal(_decoded(t[name]), w, err_msg=name)
    return rep


@pytest.mark.parametrize("spec", list(K_SPECS))
def test_two_level_specs_export_their_k_quant_exactly(spec, tmp_path):
    compile_model("llama-tiny", tmp_path / "a", quant=spec, progress=False)
    rep = _exact_export(tmp_path / "a", tmp_path / "a.gguf", K_SPECS[spec])
    assert rep.type_counts() == {"F32": 11, K_SPECS[spec]: 28}
    assert next(r.source for r in rep.tensors if r.name == "blk.0.ffn_down.weight") == spec.replace("-min", "") + " (mins)" * spec.endswith("-min")


def test_w8g16k8_with_full_range_codes_has_no_exact_type(tmp_path, capsys):
    """RTN's w8 codes use all 8 bits, more than Q6_K's 6, and g16 is no Q8_0 block: refused without --fallback."""
    compile_model("llama-tiny", tmp_path / "a", quant="w8g16k8", progress=False)
    code, _, se = run_cli(["export", tmp_path / "a", "-o", tmp_path / "a.gguf"], capsys)
    assert code == 2 and "w8g16k8" in se and "--fallback" in se


def _built(tmp_path, spec_text, make, seed=0):
    """An artifact of llama-tiny whose block linears are make(n, k, rng) -> QuantizedWeight (spec_text names them)."""
    from compiler.frontend import load_model
    from compiler.quant.apply import qlinear_node, quantizable
    from compiler.quant.spec import parse_spec

    rng = np.random.default_rng(seed)
    m = load_model("llama-tiny")
    g = m.graph.copy()
    for i in quantizable(g):
        n = g.nodes[i]
        g.nodes[i] = qlinear_node(g, n, make(*g.consts[n.inputs[1]].shape, rng), parse_spec(spec_text))
    g.consts = {k: v for k, v in g.consts.items() if any(k in n.inputs for n in g.nodes)}
    g.infer_types()
    manifest = {"model": {"name": m.name, "family": m.family, "config": m.config, "source": m.source}, "quant": None,
                "tokenizer": m.tokenizer.to_json(), "targets": {}}
    return write_artifact(tmp_path / spec_text, manifest, g)


def _grid(rng, n, k, group, lo, hi):
    """Two-level values [N, K / group]: an fp16 d per 256 weights (either sign) times integers in [lo, hi]."""
    d = (rng.uniform(1e-4, 1e-2, (n, k // 256)) * rng.choice([-1, 1], (n, k // 256))).astype(np.float16).astype(np.float32)
    return np.repeat(d, 256 // group, axis=1) * rng.integers(lo, hi + 1, (n, k // group)).astype(np.float32)


def _q6(n, k, rng):  # Q6_K's form: 6-bit codes q + 96, zeros 128, signed 8-bit sub-scales per 16
    return QuantizedWeight(rng.integers(96, 160, (n, k)).astype(np.uint8), _grid(rng, n, k, 16, -128, 127), np.full((n, k // 16), 128, np.uint8), 8, 16,
                           sub_bits=8, sub_signed=True)


def _q5k(n, k, rng):  # Q5_K's form: codes 0..31 with minimums, 6-bit sub-scales per 32
    return QuantizedWeight(rng.integers(0, 32, (n, k)).astype(np.uint8), np.abs(_grid(rng, n, k, 32, 1, 63)), np.zeros((n, k // 32), np.uint8), 8, 32,
                           mins=-np.abs(_grid(rng, n, k, 32, 0, 63)), sub_bits=6)


def _f16s(rng, n, j, lo=1e-4, hi=1e-2):
    return rng.uniform(lo, hi, (n, j)).astype(np.float16).astype(np.float32)


def _q5_0(n, k, rng):  # w8 symmetric with 5-bit codes (q + 112), fp16 scales per 32
    return QuantizedWeight(rng.integers(112, 144, (n, k)).astype(np.uint8), _f16s(rng, n, k // 32), np.full((n, k // 32), 128, np.uint8), 8, 32)


def _q5_1(n, k, rng):  # w8 codes 0..31 with fp16 scales and minimums per 32
    return QuantizedWeight(rng.integers(0, 32, (n, k)).astype(np.uint8), _f16s(rng, n, k // 32), np.zeros((n, k // 32), np.uint8), 8, 32,
                           mins=_f16s(rng, n, k // 32, -0.5, 0.5))


@pytest.mark.parametrize("spec, make, want", [("w8g16k8", _q6, "Q6_K"), ("w8g32k-min", _q5k, "Q5_K"), ("w8g32", _q5_0, "Q5_0"),
                                              ("w8g32-min", _q5_1, "Q5_1")])
def test_narrow_w8_codes_export_the_5_and_6_bit_types_exactly(spec, make, want, tmp_path):
    _exact_export(_built(tmp_path, spec, make), tmp_path / "m.gguf", want)


KEEP_TYPES = {"token_embd": "Q6_K", "attn_q": "Q4_K", "attn_k": "Q6_K", "attn_v": "Q5_0", "attn_output": "Q5_K", "ffn_gate": "Q2_K",
              "ffn_up": "Q3_K", "ffn_down": "Q5_1"}


@pytest.mark.parametrize("canonical", [True, False])
def test_kept_k_quants_and_5_bit_types_reexport_as_their_own_blocks(canonical, tmp_path):
    """GGUF (Q2_K .. Q6_K, Q5_0, Q5_1; a Q6_K tied embedding) -> --quant keep -> export: each tensor is its own type
    again and decodes to the same weights; with llama.cpp's convention of sub-scales (kquant_fixtures) every tensor,
    q/k included (permuted back), is the same bytes."""
    from tests.compiler.export.kquant_fixtures import canonical_k_quants
    from tests.compiler.frontend.gguf_fixtures import write_llama_gguf

    src = tmp_path / "src.gguf"
    write_llama_gguf(src, hidden=256, inter=256, types=KEEP_TYPES)
    if canonical:
        canonical_k_quants(src)
    compile_model(str(src), tmp_path / "keep", quant="keep", progress=False)
    rep = export_gguf(tmp_path / "keep", tmp_path / "out.gguf")
    _, ts = _read(src)
    _, to = _read(tmp_path / "out.gguf")
    assert rep.max_rel_change == 0.0 and set(ts) == set(to)
    for name, t in ts.items():
        assert to[name].tensor_type == t.tensor_type, name
        np.testing.assert_array_equal(_decoded(to[name]), _decoded(t), err_msg=name)
        # random K-quant blocks may come back as another split of the same weights (module doc of kquant_fixtures)
        if canonical or t.tensor_type.name in ("Q5_0", "Q5_1", "F32"):
            np.testing.assert_array_equal(np.asarray(to[name].data), np.asarray(t.data), err_msg=name)
    assert rep.type_counts() == {"F32": 5, "Q6_K": 3, **{t: 2 for t in ("Q4_K", "Q5_0", "Q5_K", "Q2_K", "Q3_K", "Q5_1")}}


def _random_fields(t, rows, supers, rng):
    """Raw codes and two-level fields of `rows` x `supers` random super-blocks of K-quant t."""
    from compiler.export.gguf import K_TYPES

    _, _, sub, zero, (cmin, cmax), offset, (lo, hi), _ = K_TYPES[t]
    k = 256 * supers
    raw = rng.integers(cmin - offset, cmax - offset + 1, (rows, k)).astype(np.uint8)
    d = rng.uniform(-2, 2, (rows, supers)).astype(np.float16)
    sc = rng.integers(lo, hi + 1, (rows, k // sub))
    sc[:, :: 256 // sub] = lo if lo < 0 else hi  # llama.cpp's largest sub-block at the end of the range
    if zero is not None:
        return raw, d, sc, None, None
    mq = rng.integers(0, hi + 1, (rows, k // sub))
    mq[:, :: 256 // sub] = hi
    return raw, np.abs(d), sc, rng.uniform(0, 2, (rows, supers)).astype(np.float16), mq


@settings(max_examples=30, deadline=None)
@given(t=st.sampled_from(["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]), rows=st.integers(1, 3), supers=st.integers(1, 2), seed=st.integers(0, 2**16))
def test_k_quant_encoders_invert_the_decoders(t, rows, supers, seed):
    """Random codes (extremes included), fp16 d / dmin of either sign and sub-scales: the blocks decode (the frontend's
    exact decoders) to the same codes, scales, zeros and minimums and the same two-level fields; gguf's dequantize
    agrees; and split_two_level recovers (d, sub-scales) from the float32 scales."""
    from compiler.export.gguf import K_TYPES, split_two_level
    from compiler.frontend.gguf_quant import decode_quantized, decode_two_level

    enc, _, sub, zero, (cmin, cmax), offset, (lo, hi), _ = K_TYPES[t]
    rng = np.random.default_rng(seed)
    raw, d, sc, dmin, mq = _random_fields(t, rows, supers, rng)
    raw[0, :2] = [cmin - offset, cmax - offset]
    data = enc(raw, d, sc, dmin, mq)
    k = raw.shape[1]
    qw = decode_quantized(data, t, rows, k)
    np.testing.assert_array_equal(qw.codes.astype(np.int16) - offset, raw)
    scales = np.repeat(d.astype(np.float32), 256 // sub, axis=1) * sc.astype(np.float32)
    np.testing.assert_array_equal(qw.scales, scales)
    if zero is None:
        mins = -(np.repeat(dmin.astype(np.float32), 256 // sub, axis=1) * mq.astype(np.float32))
        np.testing.assert_array_equal(qw.mins, mins)
        assert split_two_level(-mins, sub, 0, hi) is not None
        np.testing.assert_array_equal(split_two_level(-mins, sub, 0, hi)[1][dmin.astype(np.float32).repeat(256 // sub, 1) != 0],
                                      mq[dmin.astype(np.float32).repeat(256 // sub, 1) != 0])
    else:
        assert np.all(qw.zeros == zero)
    tl = decode_two_level(data, t, rows, k)
    np.testing.assert_array_equal(tl["d"], d)
    np.testing.assert_array_equal(tl["sc"], sc)
    if zero is None:
        np.testing.assert_array_equal(tl["dmin"], dmin)
        np.testing.assert_array_equal(tl["mq"], mq)
    got = gguf.quants.dequantize(data, getattr(gguf.GGMLQuantizationType, t)).reshape(rows, k)
    np.testing.assert_array_equal(got, qw.dequantize())
    nz = d.astype(np.float32) != 0  # a zero d has no sub-scales to recover
    split = split_two_level(scales, sub, lo, hi)
    assert split is not None
    np.testing.assert_array_equal(split[0][nz], d[nz])
    np.testing.assert_array_equal(split[1][np.repeat(nz, 256 // sub, axis=1)], sc[np.repeat(nz, 256 // sub, axis=1)])


@settings(max_examples=20, deadline=None)
@given(kind=st.sampled_from(["Q5_0", "Q5_1"]), rows=st.integers(1, 3), blocks=st.integers(1, 2), per=st.sampled_from([1, 2]), seed=st.integers(0, 2**16))
def test_5_bit_encoders_invert_the_decoders(kind, rows, blocks, per, seed):
    """Q5_0 / Q5_1 blocks of random 5-bit codes and fp16 scales (of either sign) and minimums decode to the same
    QuantizedWeight, for groups of one block or several."""
    from compiler.export.gguf import encode_q5_0, encode_q5_1
    from compiler.frontend.gguf_quant import decode_quantized

    rng = np.random.default_rng(seed)
    group = BLOCK * per
    k = group * blocks
    off = 112 if kind == "Q5_0" else 0
    codes = rng.integers(off, off + 32, (rows, k)).astype(np.uint8)
    codes[0, :2] = [off, off + 31]
    s = _f16s(rng, rows, blocks, -1.0, 1.0)
    m = _f16s(rng, rows, blocks, -1.0, 1.0)
    data, w = encode_q5_0(codes, s, group, "t") if kind == "Q5_0" else encode_q5_1(codes, s, m, group, "t")
    qw = decode_quantized(data, kind, rows, k)
    np.testing.assert_array_equal(qw.codes, codes)
    np.testing.assert_array_equal(qw.scales, np.repeat(s, per, axis=1))
    if kind == "Q5_0":
        assert np.all(qw.zeros == 128)
    else:
        np.testing.assert_array_equal(qw.mins, np.repeat(m, per, axis=1))
    np.testing.assert_array_equal(w, qw.dequantize())
    np.testing.assert_array_equal(gguf.quants.dequantize(data, getattr(gguf.GGMLQuantizationType, kind)).reshape(rows, k), w)


def test_tq1_0_blocks_decode_every_trit_pattern():
    """Every value of a five-trit byte (all 243) and of a four-trit qh byte (81), in each of the block's three byte
    regions: gguf's decoder (llama.cpp's (b 3^n mod 256) 3 >> 8) gives back each code."""
    from compiler.export.gguf import QK_K, encode_tq1_0

    rows = []
    for start, width, fields in ((0, 32, 5), (160, 16, 5), (240, 4, 4)):
        for base in range(0, 3**fields, width):
            c = np.ones(QK_K, np.uint8)
            for m in range(width):
                val = min(base + m, 3**fields - 1)
                for n in range(fields):  # the first code of a byte is its most significant trit
                    c[start + n * width + m] = (val // 3 ** (fields - 1 - n)) % 3
            rows.append(c)
    codes = np.stack(rows)
    s = np.full((len(rows), 1), 0.5, np.float32)
    data, w = encode_tq1_0(codes, s, QK_K, "t")
    got = gguf.quants.dequantize(data, gguf.GGMLQuantizationType.TQ1_0).reshape(len(rows), QK_K)
    np.testing.assert_array_equal(got, 0.5 * (codes.astype(np.float32) - 1))
    np.testing.assert_array_equal(w, got)
    assert data.shape == (len(rows), 54)  # 48 + 4 bytes of trits and an fp16 d: 1.6875 bits per weight
