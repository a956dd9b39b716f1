"""FP8 checkpoints (transformers' fine-grained `fp8`: DeepSeek-V3 / Qwen3-FP8 layout, and compressed-tensors
float-quantized) written here byte by byte import exactly: the E4M3 bytes become the codes, the block, channel or
tensor scales the per-(row, group) scales; the float graph holds the decoded weights; `--quant keep` runs them on
ref, tvm-cpu and mlir-cpu (at A32, or `--act afp8` as the checkpoints' dynamic activation scheme asks); damaged or
unsupported checkpoints give one line."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from compiler.errors import LowbitError
from compiler.frontend import load_model
from tests.compiler.frontend.prequant_writers import linear_shapes, tiny_config
from tests.helpers import check_close, run_cli

# hidden 128: K of every linear a multiple of 128; the k / v projections (64 rows) fill half a row block
CFG = dict(hidden_size=128, intermediate_size=256, num_attention_heads=4, num_key_value_heads=2, head_dim=32)
DTYPE = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.uint8): "F8_E4M3"}


def decode_e4m3(c: np.ndarray) -> np.ndarray:
    """E4M3 (OCP, bias 7) from the bits, written here independently of compiler.quant.floatfmt."""
    c = c.astype(np.int64)
    e, m = (c >> 3) & 15, (c & 7).astype(np.float64)
    mag = np.where(e == 0, m / 8 * 2.0**-6, (1 + m / 8) * 2.0 ** (e - 7))
    return np.where(c & 0x80, -mag, mag)


def save_raw(path, tensors: dict[str, np.ndarray]):
    """safetensors written by hand: uint8 arrays are stored as F8_E4M3 (their bytes are the E4M3 codes)."""
    header, blobs, off = {}, [], 0
    for k, v in tensors.items():
        raw = np.ascontiguousarray(v).tobytes()
        header[k] = {"dtype": DTYPE[v.dtype], "shape": list(v.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def random_codes(rng, n, k):
    c = rng.integers(0, 256, (n, k)).astype(np.uint8)
    c[(c & 0x7F) == 0x7F] = 0x7E  # no NaN codes (the largest finite value instead)
    return c


def write_fp8_dir(path, layout: str, seed: int = 0, mutate=None):
    """A tiny llama with FP8 linears. layout: 'hf-block128' / 'hf-block64' (quant_method fp8, weight_scale_inv per
    block), 'ct-block', 'ct-channel', 'ct-tensor' (compressed-tensors float-quantized). Returns {prefix: (codes,
    scales [N, J] as the contract holds them, group)}."""
    rng = np.random.default_rng(seed)
    cfg = tiny_config(**CFG)
    block = {"hf-block128": (128, 128), "hf-block64": (64, 64), "ct-block": (128, 128)}.get(layout)
    if layout.startswith("hf"):
        cfg["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": list(block)}
    else:
        strategy = layout.split("-")[1]
        w = {"num_bits": 8, "type": "float", "symmetric": True, "dynamic": False, "strategy": strategy,
             **({"block_structure": list(block)} if block else {})}
        cfg["quantization_config"] = {"quant_method": "compressed-tensors", "format": "float-quantized", "ignore": ["lm_head"],
                                      "config_groups": {"group_0": {"targets": ["Linear"], "weights": w,
                                                                    "input_activations": {"num_bits": 8, "type": "float", "strategy": "token", "dynamic": True}}}}
    h, v = cfg["hidden_size"], cfg["vocab_size"]
    tensors = {"model.embed_tokens.weight": rng.normal(0, 1, (v, h)), "lm_head.weight": rng.normal(0, 0.1, (v, h)), "model.norm.weight": rng.uniform(0.5, 1.5, h)}
    for layer in range(cfg["num_hidden_layers"]):
        for norm in ("input_layernorm", "post_attention_layernorm"):
            tensors[f"model.layers.{layer}.{norm}.weight"] = rng.uniform(0.5, 1.5, h)
    tensors = {k: a.astype(np.float16) for k, a in tensors.items()}
    written = {}
    for prefix, (n, k) in linear_shapes(cfg).items():
        codes = random_codes(rng, n, k)
        if block:
            bn, bk = block
            s = rng.uniform(0.5, 2.0, (-(-n // bn), k // bk)).astype(np.float32) / 448 * 0.05
            full, g = np.repeat(s, bn, axis=0)[:n], bk
        elif layout == "ct-channel":
            s = rng.uniform(0.5, 2.0, (n, 1)).astype(np.float32) / 448 * 0.05
            full, g = s, k
        else:
            s = np.array([0.05 / 448], np.float32)
            full, g = np.full((n, 1), s[0], np.float32), k
        tensors[prefix + ".weight"] = codes
        tensors[prefix + (".weight_scale_inv" if layout.startswith("hf") else ".weight_scale")] = s
        written[prefix] = (codes, full, g)
    if mutate is not None:
        mutate(cfg, tensors)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(cfg))
    save_raw(path / "model.safetensors", tensors)
    return written


LAYOUTS = {"hf-block128": ("fp8b", "fp8-e4m3-block128x128"), "hf-block64": ("fp8g64", "fp8-e4m3-block64x64"),
           "ct-block": ("fp8b", "compressed-tensors-e4m3-block128x128"), "ct-channel": ("fp8", "compressed-tensors-e4m3-channel"),
           "ct-tensor": ("fp8", "compressed-tensors-e4m3-tensor")}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_layer_imports_bit_exactly(tmp_path, layout):
    written = write_fp8_dir(tmp_path / "m", layout)
    m = load_model(str(tmp_path / "m"))
    assert sorted(m.prequant) == sorted(p + ".weight" for p in written)
    from compiler.quant.keep import weight_format

    for p, (codes, full, g) in written.items():
        qw = m.prequant[p + ".weight"]
        np.testing.assert_array_equal(qw.codes, codes)
        np.testing.assert_array_equal(qw.scales, full)
        assert qw.group_size == g and qw.bits == 8 and qw.table is not None
        # the float graph: decode(code) * scale, exact in float32 (a 4-bit mantissa times a float32 scale)
        want = (decode_e4m3(codes) * np.repeat(full.astype(np.float64), g, axis=1)).astype(np.float32)
        np.testing.assert_array_equal(m.graph.consts[p + ".weight"], want)
        assert weight_format(qw).name == LAYOUTS[layout][0] and m.prequant_types[p + ".weight"] == LAYOUTS[layout][1]
    assert not any(k.endswith(("_scale", "_scale_inv")) for k in m.graph.consts)


@pytest.mark.slow
@pytest.mark.parametrize("layout, act", [("hf-block128", "a32"), ("ct-channel", "afp8")])
def test_kept_checkpoint_runs_on_every_cpu_path(tmp_path, capsys, layout, act):
    import runtime
    from compiler.frontend.llama import empty_cache
    from compiler.reference import Interpreter
    from tests.helpers import COMPILER_TOL, IDS

    write_fp8_dir(tmp_path / "m", layout)
    out = tmp_path / "art"
    code, _, err = run_cli(["compile", tmp_path / "m", "-o", out, "--quant", "keep", "--act", act, "--target", "ref,tvm-cpu,mlir-cpu"], capsys)
    assert code == 0, err
    rec = json.loads((out / "manifest.json").read_text())["quant"]["layers"]
    assert {r["as"] for r in rec.values() if "kept" in r} == {LAYOUTS[layout][0] + ("afp8" if act == "afp8" else "a32")}
    cm = runtime.load(str(out))
    ids = [i % 96 for i in IDS]
    feeds = {"input_ids": np.asarray(ids, np.int64), "positions": np.arange(len(ids)), **empty_cache(cm.graph, len(ids))}
    ref = cm.run(feeds, "ref")
    for backend in ("tvm-cpu", "mlir-cpu"):
        check_close(cm.run(feeds, backend), ref, COMPILER_TOL[act], f"{backend} {layout}")
    if act == "a32":  # kept at A32, the model computes what the float checkpoint of the decoded weights does
        m = load_model(str(tmp_path / "m"))
        want = Interpreter(m.graph).run({**feeds, **empty_cache(m.graph, len(ids))})["logits"]
        np.testing.assert_allclose(ref["logits"], want, rtol=0, atol=1e-4 * np.abs(want).max())


def _nan_code(cfg, t):
    t["model.layers.0.mlp.up_proj.weight"][3, 5] = 0xFF


def _e5m2(cfg, t):
    cfg["quantization_config"]["fmt"] = "e5m2"


def _bad_block(cfg, t):
    t["model.layers.1.mlp.down_proj.weight_scale_inv"] = t["model.layers.1.mlp.down_proj.weight_scale_inv"][:, :1].copy()


def _zero_scale(cfg, t):
    t["model.layers.0.self_attn.o_proj.weight_scale_inv"][0, 0] = 0.0


def _no_config(cfg, t):
    del cfg["quantization_config"]


@pytest.mark.parametrize("mutate, line", [
    (_nan_code, "model.layers.0.mlp.up_proj.weight' in"),
    (_e5m2, "stores e5m2 weights"),
    (_bad_block, "block scales [1, 1] for a [128, 256] weight in 128 x 128 blocks (expected [1, 2])"),
    (_zero_scale, "model.layers.0.self_attn.o_proj in"),
    (_no_config, "is F8_E4M3; lowbit reads float weights"),
])
def test_bad_checkpoints_give_one_line(tmp_path, capsys, mutate, line):
    write_fp8_dir(tmp_path / "m", "hf-block128", mutate=mutate)
    code, so, se = run_cli(["compile", tmp_path / "m", "-o", tmp_path / "art", "--quant", "keep"], capsys)
    assert code == 2 and line in se and len(se.strip().splitlines()) == 1, se
    assert not (tmp_path / "art").exists()


def test_blocks_must_tile_the_input_features(tmp_path):
    from compiler.frontend.prequant.fp8 import fp8_weight
    from pathlib import Path

    codes = random_codes(np.random.default_rng(0), 8, 96)
    with pytest.raises(LowbitError, match="K=96 is not a multiple of the 64-wide scale blocks"):
        fp8_weight(codes, np.ones((1, 2), np.float32), (128, 64), "fp8", "x", Path("m"))
    qw, kind = fp8_weight(codes, np.full((8, 3), 0.5, np.float32), None, "fp8", "x", Path("m"))
    assert (qw.group_size, kind, qw.fp) == (32, "fp8-e4m3-g32", "fp8")
