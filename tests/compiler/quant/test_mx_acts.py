"""OCP MX activations (act modes amx8 = MXINT8, amxfp4 = MXFP4; blocks of 32 along K with an E8M0 scale): the
grammar, the reference quantizer against the OCP v1.0 rules written out here, the TVM and MLIR quantizers bit for
bit against it, and the targets that refuse them (whole models on tvm-cpu / mlir-cpu: test_agreement.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from compiler.errors import LowbitError
from compiler.quant.floatfmt import mx_activations
from compiler.quant.spec import parse_spec
from tests.helpers import run_cli

E2M1_VALUES = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]


@pytest.mark.parametrize("text, act", [("w4g32amx8", "amx8"), ("mxfp4amxfp4", "amxfp4"), ("nvfp4amx8", "amx8"), ("w8pcamxfp4", "amxfp4")])
def test_spec_parses_and_names_itself(text, act):
    s = parse_spec(text)
    assert s.act == act and parse_spec(s.name) == s


@pytest.mark.parametrize("text", ["w4g32amxfp8", "w4g32amx4", "mxfp4amx"])
def test_bad_mx_modes_are_named(text):
    with pytest.raises(LowbitError) as e:
        parse_spec(text)
    assert text in str(e.value)


def ocp_block(v: list[float], act: str) -> list[float]:
    """One block by the OCP MX v1.0 text: shared exponent floor(log2 max|v|) - emax (emax 2 for FP4 E2M1, 0 for
    INT8 with its implicit 2^-6), each element v / X rounded to the element format (nearest, ties to even,
    saturating), dequantized."""
    amax = max(abs(t) for t in v)
    if amax == 0:
        return [0.0] * len(v)
    e = max(-127, min(127, math.floor(math.log2(amax)) - (2 if act == "amxfp4" else 0)))
    x = 2.0**e
    out = []
    for t in v:
        a = t / x
        if act == "amx8":
            out.append(max(-128, min(127, round(a * 64))) / 64 * x)  # (Python's round: ties to even)
            continue
        m = min(abs(a), 6.0)
        best = min(E2M1_VALUES, key=lambda c: (abs(c - m), E2M1_VALUES.index(c) % 2))  # ties: the even mantissa
        out.append(math.copysign(best, a) * x if best else 0.0)
    return out


@settings(max_examples=150, deadline=None)
@given(hnp.arrays(np.float32, st.tuples(st.integers(1, 3), st.sampled_from([32, 64])),
                  elements=st.floats(-1e3, 1e3, width=32, allow_subnormal=False)), st.sampled_from(["amx8", "amxfp4"]))
def test_reference_follows_the_ocp_rules(x, act):
    got = mx_activations(x, act)
    for i in range(x.shape[0]):
        for b in range(x.shape[1] // 32):
            want = ocp_block([float(t) for t in x[i, 32 * b : 32 * (b + 1)]], act)
            np.testing.assert_array_equal(got[i, 32 * b : 32 * (b + 1)], np.array(want, np.float32))  # (-0 == 0)


def _edge_rows():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4, 96)).astype(np.float32)
    x[1, :32] = 0.0  # an all-zero block: scale 1, zeros
    x[2, :32] = [4.0, 5.0, 7.0, 2.5, 0.25, 0.75, 1.25, -5.0] * 4  # E2M1 midpoints (X = 1: amax 7)
    x[2, 32:64] = (np.arange(32, dtype=np.float32) + 0.5) / 64  # MXINT8 ties: (k + 1/2) / 64 with X = 1 (amax 1.5)
    x[2, 32] = 1.5
    x[3] *= np.float32(2.0) ** rng.integers(-30, 30, 96).astype(np.float32)
    return x


@pytest.mark.parametrize("act", ["amx8", "amxfp4"])
def test_tvm_quantizer_matches_reference_bit_for_bit(act):
    pytest.importorskip("tvm")
    from tests.compiler.backends.tvm.test_kernels import build

    from compiler.backends.tvm import qlinear_te

    x = _edge_rows()
    f = build(lambda t: qlinear_te.act_quant_mx(t, act), [(("S", 96), "float32")], "mx", qlinear_te.schedule_act_quant("cpu", "mx"))
    np.testing.assert_array_equal(f(x).numpy(), mx_activations(x, act))


@pytest.mark.parametrize("act", ["amx8", "amxfp4"])
def test_mlir_quantizer_matches_reference_bit_for_bit(act):
    pytest.importorskip("iree.runtime")
    from compiler.backends.mlir import qlinear as mq
    from tests.compiler.backends.mlir.common import run_function

    x = _edge_rows()
    m, k = x.shape
    (got,) = run_function(lambda B, a: [mq.quantize_mx(B, a, m, k, act)], [((m, k), "f32")], [((m, k), "f32")], x)
    np.testing.assert_array_equal(got, mx_activations(x, act))


def test_edge_rows_round_as_the_spec_says():
    x = _edge_rows()
    fp4, i8 = mx_activations(x, "amxfp4"), mx_activations(x, "amx8")
    assert np.array_equal(fp4[1, :32], np.zeros(32)) and np.array_equal(i8[1, :32], np.zeros(32))
    assert fp4[2, :8].tolist() == [4.0, 4.0, 6.0, 2.0, 0.0, 1.0, 1.0, -4.0]  # 5 -> 4, 7 -> 6 (saturating), 0.25 -> 0, 0.75 -> 1
    k = np.arange(1, 32)
    assert i8[2, 32] == 1.5 and np.array_equal(i8[2, 33:64] * 64, np.where(k % 2 == 0, k, k + 1).astype(np.float32))  # ties to even


@pytest.mark.parametrize("target, line", [
    ("tvm-cuda", "amx8 activations: target tvm-cuda has no MX activation kernel"),
    ("mixpe", "has amx8 activations; the mixpe array takes a8 or a16"),
])
def test_targets_without_mx_activations_refuse(tmp_path, capsys, target, line):
    code, so, se = run_cli(["compile", "llama-tiny", "-o", tmp_path / "b", "--quant", "w4g32", "--act", "amx8", "--target", target], capsys)
    assert code == 2 and line in se and len(se.strip().splitlines()) == 1, se
    assert not (tmp_path / "b").exists()
