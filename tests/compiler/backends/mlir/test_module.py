"""The lowered MLIR itself: it prints, parses back in a fresh context and verifies; qlinear weights stay
packed (the kernel reads i8 bytes, no dequantized float weight tensor exists); mlir-cuda builds a vmfb for
sm_80, and sm_90 is refused with a clear error; a missing IREE gives an install hint."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest

from compiler.errors import LowbitError
from tests.compiler.backends.mlir.common import compiled, quantized_graph


@pytest.mark.parametrize("model,spec", [("llama-tiny", "w4g128"), ("bert-tiny", "w2g64a8"), ("llama-tiny", "w3g64")])
def test_printed_mlir_parses_back_and_verifies(model, spec):
    from iree.compiler import ir

    asm = compiled(model, spec).asm
    with ir.Context():
        mod = ir.Module.parse(asm)
        assert mod.operation.verify()
        again = str(mod)
    assert again == asm  # printing is a fixed point: nothing is lost in the round trip
    fn = re.search(r"func\.func @main\((.*?)\) ->", asm, re.S).group(1)
    g = quantized_graph(model, spec)
    lowered = compiled(model, spec).lowered
    assert fn.count("%arg") == len(g.inputs) + len(lowered.params)
    # symbolic dims stay dynamic: input_ids is tensor<?xi64>, no shape was specialized
    assert "%arg0: tensor<?xi64>" in fn


def test_qlinear_reads_packed_bytes_and_dequantizes_per_group():
    """Each qlinear is one generic over the i8 bytes (the unpacking is inside its region: shifts and masks)
    producing [.., J, L] group sums, then one generic that multiplies by the scales; no f32 tensor with the
    weight's [N, K] or [Nb, J, C, L] shape exists anywhere in the module."""
    m = compiled("llama-tiny", "w4g128")
    asm = m.asm
    relaid = {p["key"]: m.lowered.relayout[p["key"]] for p in m.lowered.params if p["source"] == "relayout"}
    codes = [v for k, v in relaid.items() if k.endswith(".qweight@blocked32")]
    assert len(codes) == 4 * 7  # every linear of the 4 blocks is blocked
    for c in codes:
        shape = "x".join(str(d) for d in c.shape)
        assert f"tensor<{shape}xi8>" in asm
        assert f"tensor<{shape}xf32>" not in asm
    assert asm.count("arith.shrui") >= 28 and asm.count("arith.andi") >= 28
    assert "linalg.matmul" not in asm and "linalg.batch_matmul" not in asm
    # A8: group sums in fp32 where every partial sum is an exact integer (g * 127 * qmax < 2^24), with the
    # zero point applied after the sum; int32 otherwise (8-bit codes, per-channel groups)
    assert set(compiled("bert-tiny", "w2g64a8").lowered.kernels.values()) == {"blocked32-f32-a8exact"}
    from compiler.backends.mlir.gemv import gemv_module, qlinear_attrs, quantized_layer

    qw, spec = quantized_layer(64, 4096, "w8pca8")
    text = gemv_module(qlinear_attrs(qw, spec, 64, 4096), lanes=32)
    assert re.search(r"linalg\.fill .*tensor<\?x2x32xi32>", text)


def test_relayout_is_a_permutation_of_the_stored_bytes():
    from compiler.backends.mlir.qlinear import relayout_blocked

    g = quantized_graph("llama-tiny", "w3g64")
    n = next(n for n in g.nodes if n.op == "qlinear")
    packed, scales, zeros = (g.consts[c] for c in n.inputs[1:4])
    w, s, z = relayout_blocked(packed, scales, zeros, n.attrs, 32)
    assert sorted(w.ravel().tolist()) == sorted(packed.ravel().tolist())
    # plane 1, row 37, group 1, byte 3 of the group (8 codes per byte, 8 bytes per group)
    assert w[1, 37 // 32, 1, 3, 37 % 32] == packed[1, 37, 1 * 8 + 3]
    assert s[37 // 32, 1, 37 % 32] == scales[37, 1] and z[1, 1, 37 % 32] == zeros[32 + 37 % 32, 1]


@pytest.mark.parametrize("model,spec", [("llama-tiny", "w4g128a8"), ("bert-tiny", "w2g64")])
def test_mlir_cuda_builds_a_vmfb_for_sm80(model, spec, tmp_path):
    from compiler.backends.mlir.build import build_target

    info = build_target(quantized_graph(model, spec), "mlir-cuda", tmp_path / "mlir-cuda")
    vmfb = (tmp_path / "mlir-cuda" / "model.vmfb").read_bytes()
    assert info["cuda_arch"] == "sm_80" and info["iree"]["backends"] == ["cuda"]
    assert vmfb[:4] == b"PK\x03\x04" and len(vmfb) > 10_000  # a vmfb is a zip-aligned flatbuffer archive
    assert b"cuda-nvptx-fb" in vmfb and b'arch = "sm_80"' in vmfb  # the embedded CUDA executable for sm_80
    assert b"llvm-cpu" not in vmfb


@pytest.mark.parametrize("arch", ["sm_90", "sm_90a", "sm_100"])
def test_sm90_is_refused_clearly(arch, tmp_path, monkeypatch):
    from compiler.backends.mlir.build import build_target

    monkeypatch.setenv("LOWBIT_MLIR_CUDA_ARCH", arch)
    with pytest.raises(LowbitError) as e:
        build_target(quantized_graph("bert-tiny", "w2g64"), "mlir-cuda", tmp_path / "x")
    assert arch in e.value.what and "IREE 3.13" in e.value.what and "sm_80" in e.value.fix
    assert not (tmp_path / "x").exists()


def test_missing_iree_says_how_to_install(monkeypatch):
    from compiler.backends.mlir.build import require_iree_compiler

    monkeypatch.setitem(sys.modules, "iree.compiler", None)  # import fails as if not installed
    with pytest.raises(LowbitError) as e:
        require_iree_compiler()
    assert "iree-base-compiler" in e.value.what and "pip install" in e.value.fix


def test_reshape_groups():
    from compiler.backends.mlir.builder import _reshape_groups

    assert _reshape_groups(("S", 256), ("S", 8, 32)) == [([0], [0]), ([1], [1, 2])]
    assert _reshape_groups(("S", 8, 32), ("S", 256)) == [([0], [0]), ([1, 2], [1])]
    assert _reshape_groups(("S", 256), ("S", 1, 256, 1)) == [([0], [0]), ([1], [1, 2, 3])]
    assert _reshape_groups((4, 1, 64), (4, 64)) == [([0], [0]), ([1, 2], [1])]
    with pytest.raises(NotImplementedError):
        _reshape_groups(("S", 6), ("P", 6))
    assert np.prod((4, 64)) == 256
