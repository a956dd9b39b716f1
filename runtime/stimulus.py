"""Array jobs made with the quantizer, for the RTL regressions: rtl takes integer tiles only (it never
imports compiler.quant), so `lowbit sim --design` and the tests make these and pass them to
rtl.sim.run_sim(..., tiles=...).

    quantizer_tile(cfg, rng, n_groups) -> TileInputs        RTN-quantized random weights and activations
                                                            (an array with the minimum term, rtl.gen.common.MinsConfig:
                                                            scale-and-minimum weights by quantize_rtn_min;
                                                            E2M1 arrays: MXFP4 or NVFP4 by quantize_float)
    quantizer_tiles(cfg, rng, count, max_groups=2) -> list   `count` of them, 1..max_groups groups each
"""

from __future__ import annotations

import numpy as np

from compiler.quant.floatfmt import quantize_float
from compiler.quant.rtn import quantize_rtn, quantize_rtn_min
from compiler.quant.spec import QuantSpec
from hwsim import golden as gm
from hwsim.config import ArrayConfig
from rtl.gen.common import has_mins


def quantizer_tile(cfg: ArrayConfig, rng: np.random.Generator, n_groups: int) -> gm.TileInputs:
    """A real job: float weights and activations of random scale, quantized with compiler.quant.rtn at
    the array's format (random symmetric / asymmetric), then brought to the array's integer formats."""
    kt = cfg.group * n_groups
    w = rng.standard_normal((cfg.N, kt)).astype(np.float32) * rng.uniform(0.01, 0.2)
    x = (rng.standard_normal((cfg.M, kt)) * rng.uniform(0.1, 4)).astype(np.float32)
    if has_mins(cfg):  # Q4_1-style groups, offset so that most do not contain 0
        w = w + np.float32(rng.uniform(-0.2, 0.2))
        return gm.prepare_tile(cfg, x, quantize_rtn_min(w, cfg.bits, cfg.group))
    if cfg.e2m1:  # MXFP4 (E8M0 scales) or NVFP4 (E4M3 x FP32 scales) at the array's group
        return gm.prepare_tile(cfg, x, quantize_float(w, str(rng.choice(["mxfp4", "nvfp4"])), cfg.group))
    if cfg.ternary:
        spec = QuantSpec(bits=2, group_size=cfg.group, act=cfg.act, ternary=True)
    else:
        spec = QuantSpec(bits=max(cfg.bits, 2), group_size=cfg.group, act=cfg.act, symmetric=bool(rng.integers(2)))
    qw = quantize_rtn(w, spec)
    if cfg.bits == 1:  # no 1-bit quantizer: keep the quantizer's scales, take the codes' top bit
        qw.codes = (qw.codes >> 1).astype(np.uint8)
        qw.zeros = np.ones_like(qw.zeros)
        qw.bits = 1
    return gm.prepare_tile(cfg, x, qw)


def quantizer_tiles(cfg: ArrayConfig, rng: np.random.Generator, count: int, max_groups: int = 2) -> list[gm.TileInputs]:
    return [quantizer_tile(cfg, rng, int(rng.integers(1, max_groups + 1))) for _ in range(count)]
