"""Activation-aware weight scaling (compiler/passes/awq.py): an exact float rewrite whose per-site exponent is
searched to lower the readers' output error under their quantizer."""

import json

import numpy as np

from compiler.frontend.llama import empty_cache
from compiler.passes.awq import ALPHAS, awq_graph, awq_scales, norm_outputs, output_error
from compiler.passes.smooth import foldable_sites
from compiler.quant.calib import calibration_feeds
from compiler.quant.rtn import quantize_rtn
from compiler.quant.spec import parse_spec
from compiler.reference import Interpreter
from tests.compiler.passes.test_smooth import with_outlier_channels
from tests.helpers import run_cli

SPEC = parse_spec("w3g32-min")


def test_the_rewrite_keeps_the_float_model_and_lowers_each_sites_error(llama_tiny):
    g0 = with_outlier_channels(llama_tiny.graph, factor=10.0)
    calib = calibration_feeds(llama_tiny, n_samples=4, seqlen=32)
    g1, alphas = awq_graph(g0, calib, lambda w: SPEC)
    sites = foldable_sites(g0)
    assert set(alphas) == {g0.nodes[p].outputs[0] for p in sites} and set(alphas.values()) <= set(ALPHAS)
    assert any(a > 0 for a in alphas.values())  # outlier channels: scaling pays somewhere
    ids = np.arange(3, 40, dtype=np.int64)
    fd = {"input_ids": ids, "positions": np.arange(len(ids)), **empty_cache(g0, len(ids))}
    a, b = Interpreter(g0).run(fd)["logits"], Interpreter(g1).run(fd)["logits"]
    np.testing.assert_allclose(b, a, atol=1e-4 * float(np.abs(a).max()))
    # the chosen exponent's output error is the smallest of the grid, so at most that of s = 1 (alpha 0)
    xs = norm_outputs(g0, list(alphas), calib)
    q = lambda v: quantize_rtn(v, SPEC).dequantize()
    drops = []
    for p, readers in sites.items():
        y = g0.nodes[p].outputs[0]
        x = xs[y]
        h = (x.T.astype(np.float64) @ x / len(x)).astype(np.float32)
        err = {al: sum(output_error(g0.consts[g0.nodes[i].inputs[1]], awq_scales(x, al), h, q) for i in readers) for al in ALPHAS}
        assert err[alphas[y]] == min(err.values())
        drops.append(err[alphas[y]] / err[0.0])
    print("output error at the chosen alpha / at alpha 0, per site:", np.round(drops, 3))
    assert min(drops) < 0.9


def test_compile_records_the_alphas_and_refuses_keep(tmp_path, capsys):
    code, _, err = run_cli(["compile", "llama-tiny", "-o", tmp_path / "a", "--quant", "w3g32-min", "--awq"], capsys)
    assert code == 0, err
    q = json.loads((tmp_path / "a" / "manifest.json").read_text())["quant"]
    assert len(q["awq"]["alphas"]) == 2 * 4  # two norm sites per block, 4 blocks
    code, _, err = run_cli(["compile", "llama-tiny", "-o", tmp_path / "b", "--quant", "keep", "--awq"], capsys)
    assert code == 2 and err.strip().count("\n") == 0 and "--awq rescales weights" in err and not (tmp_path / "b").exists()
