"""A32 (float32 activations as given: weight-only quantization) on mlir-cpu, and mlir-cuda's build of it.

The GEMV (the qlinear lowering whole models use) against compiler.reference.qlinear at A32: blocked and stored-layout
forms, zero points and minimums, W4 / W2 / W8 / W3, within fp32 summation order (1e-5 of max |y|) and much closer to
it than to A16's answer (no fp16 rounding of the activations: the lowering emits no f16 truncation for A32); a tiny
llama at w4g32a32 through mlir-cpu within the agreement table's float row (1e-4); its mlir-cuda lowering builds a
vmfb for sm_80."""

from __future__ import annotations

import numpy as np
import pytest

from compiler.reference import QLinearWeights, qlinear
from tests.compiler.backends.mlir.common import rt  # noqa: F401 (skips without IREE)

A32_TOL = 1e-5  # fp32 summation order inside a group (IREE reassociates reductions)


@pytest.mark.parametrize(
    "spec,lanes,mins",
    [("w4g32a32", None, False), ("w4g32a32", None, True), ("w2g64a32", None, False), ("w8g32a32", None, True), ("w3g32a32", 0, False),
     ("w4g32a32", 0, True)],
    ids=["w4-blocked", "w4-mins-blocked", "w2-blocked", "w8-mins-blocked", "w3-groupsum", "w4-mins-groupsum"],
)
def test_a32_gemv_matches_contract(spec, lanes, mins):
    from compiler.backends.mlir.gemv import build_gemv

    g = build_gemv(64, 256, spec, threads=1, rotate=False, lanes=lanes, mins=mins)
    assert g._attrs["act"] == "a32" and "f32 to f16" not in g.asm  # the activations are never rounded to fp16
    x = (np.random.default_rng(4).standard_normal((1, 256)) * 3).astype(np.float32)
    err = g.max_rel_err_vs_ref(x)
    assert err < A32_TOL, err
    a16 = qlinear(x, QLinearWeights(*g._host, g._attrs), "a16")
    assert np.abs(g(x) - a16).max() > 10 * err * np.abs(a16).max()  # A16's answer is ~1e-4 away


def test_a16_lowering_rounds_and_a32_does_not():
    from compiler.backends.mlir.gemv import gemv_module, qlinear_attrs, quantized_layer

    for spec, has_f16 in (("w4g32", True), ("w4g32a32", False)):
        qw, s = quantized_layer(64, 128, spec)
        assert ("f32 to f16" in gemv_module(qlinear_attrs(qw, s, 64, 128), lanes=32)) == has_f16, spec


@pytest.fixture(scope="module")
def llama_a32():
    from tests.compiler.backends.mlir.common import compiled, quantized_graph

    return quantized_graph("llama-tiny", "w4g32a32"), compiled("llama-tiny", "w4g32a32")


def test_tiny_llama_a32_matches_ref_within_the_float_row(llama_a32):
    from compiler.frontend.llama import empty_cache
    from compiler.reference import Interpreter
    from tests.helpers import COMPILER_TOL, IDS, check_close

    g, mod = llama_a32
    assert "f32 to f16" not in mod.asm  # (no activation rounded to fp16)
    feeds = {"input_ids": np.array(IDS, np.int64), "positions": np.arange(len(IDS), dtype=np.int64), **empty_cache(g, len(IDS))}
    errs = check_close(mod.run(feeds), Interpreter(g).run(feeds), COMPILER_TOL["float"], "mlir-cpu w4g32a32")
    print(f"mlir-cpu w4g32a32 llama-tiny: max error relative to max |output| {max(errs.values()):.2e}")


def test_mlir_cuda_builds_a32(tmp_path):
    from compiler.backends.mlir.build import build_target
    from compiler.backends.mlir.lower import lower_graph
    from tests.compiler.backends.mlir.test_mins import _table_graph

    g = _table_graph(64, 64, 4, 32, True, "a16")
    for n in g.nodes:
        if n.op == "qlinear":
            n.attrs["act"] = "a32"
    assert "f32 to f16" not in lower_graph(g, "cuda").asm
    info = build_target(g, "mlir-cuda", tmp_path / "mlir-cuda")
    assert info["cuda_arch"] == "sm_80" and b"cuda-nvptx-fb" in (tmp_path / "mlir-cuda" / "model.vmfb").read_bytes()
