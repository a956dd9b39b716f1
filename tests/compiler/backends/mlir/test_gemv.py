"""The standalone GEMV (compiler.backends.mlir.gemv, what the benchmarks time) computes the numeric contract:
compiled for a small layer and compared with compiler.reference.qlinear for each bit width and activation
mode. A8 group sums are exact int32, so A8 agrees to float32 rounding of the dequantization (1e-6); A16 to
fp32 summation order (1e-5). A wrong shift, mask, zero point or layout would be >= 1e-2 off."""

from __future__ import annotations

import numpy as np
import pytest

from tests.compiler.backends.mlir.common import rt  # noqa: F401 (skips without IREE)

SPECS = ["w4g128", "w4g128a8", "w2g64", "ternarya8", "w3g32a8", "w8pc"]


@pytest.mark.parametrize("spec", SPECS)
def test_gemv_matches_contract(spec):
    from compiler.backends.mlir.gemv import build_gemv

    g = build_gemv(128, 512, spec, threads=1, rotate=False)
    rng = np.random.default_rng(3)
    for _ in range(2):
        x = rng.standard_normal((1, 512)).astype(np.float32)
        assert g.max_rel_err_vs_ref(x) < (1e-6 if "a8" in spec else 1e-5)
    # the function is a real computation of x: a different input gives a different output
    assert np.abs(g(np.ones(512, np.float32)) - g(np.full(512, 2.0, np.float32))).max() > 0


@pytest.mark.parametrize("spec", ["w4g32a8", "w3g32", "ternary"])
def test_fallback_form_matches_contract(spec):
    """N = 40 is not a multiple of the blocked kernel's 32 lanes: the stored-layout groupsum form runs."""
    from compiler.backends.mlir.gemv import build_gemv

    g = build_gemv(40, 256, spec, threads=1, rotate=False, lanes=0)
    assert "linalg.index" in g.asm  # the fallback's code-in-byte loop
    x = np.random.default_rng(4).standard_normal((1, 256)).astype(np.float32)
    assert g.max_rel_err_vs_ref(x) < (1e-6 if "a8" in spec else 1e-5)


def test_gemv_rotation_and_timing_fields(monkeypatch):
    from compiler.backends.mlir import gemv

    monkeypatch.setattr(gemv, "llc_bytes", lambda: 256 << 10)  # a 256 KiB "LLC" keeps the test small
    g = gemv.build_gemv(64, 256, "w2g64a8", threads=1, rotate=True)
    assert g.copies * g.weight_bytes >= 4 * (256 << 10) and g.copies > 2
    y0, y1 = g(np.ones(256, np.float32), copy=0), g(np.ones(256, np.float32), copy=g.copies - 1)
    np.testing.assert_array_equal(y0, y1)  # every copy holds the same weights
    assert np.isfinite(g.time_ms(repeat=2)) and np.isfinite(g.numpy_baseline_ms(repeat=1))
