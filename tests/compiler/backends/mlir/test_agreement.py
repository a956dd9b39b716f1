"""mlir-cpu against ref beyond the presets-by-spec grid of the backend agreement suite
(tests/runtime/backends/test_agreement.py, which states the tolerances): exactness when no int8 rounding
flips, and the causal mask and KV cache."""

from __future__ import annotations

import numpy as np

from compiler.frontend.llama import empty_cache
from compiler.reference import Interpreter
from tests.helpers import IDS
from tests.helpers import check_close as check
from tests.compiler.backends.mlir.common import compiled, quantized_graph


def test_a8_exact_when_no_rounding_flip():
    """llama-tiny w4g128a8: every int32 group sum is exact and the int8 activations match numpy's bit for
    bit, so the only differences left are float32 rounding of the dequantization and of the float ops:
    1e-5 relative, 2000x below the A8 tolerance (a real bug in unpacking or zero points would be >= 1e-2)."""
    g = quantized_graph("llama-tiny", "w4g128a8")
    feeds = {"input_ids": np.array(IDS, np.int64), "positions": np.arange(len(IDS), dtype=np.int64)}
    mlir = compiled("llama-tiny", "w4g128a8").run({**feeds, **empty_cache(g, len(IDS))})
    errs = check(mlir, Interpreter(g).run({**feeds, **empty_cache(g, len(IDS))}), 1e-5, "w4g128a8 exact")
    assert max(errs.values()) < 1e-5


def test_causal_mask_and_kv_cache_matter():
    """The decode step must read the cache: feeding an empty cache instead changes the logits (so the
    agreement above is not vacuous), and a prefill of one token equals the float model's first row."""
    g = quantized_graph("llama-tiny", "none")
    m = compiled("llama-tiny", "none")
    feeds = {"input_ids": np.array(IDS, np.int64), "positions": np.arange(len(IDS), dtype=np.int64), **empty_cache(g, len(IDS) + 1)}
    out = m.run(feeds)
    step = {"input_ids": np.array([5], np.int64), "positions": np.array([len(IDS)], np.int64)}
    with_cache = m.run({**step, **{k.replace("present_", "past_"): v for k, v in out.items() if k.startswith("present_")}})
    without = m.run({**step, **empty_cache(g, len(IDS) + 1)})  # in place: zero rows, not this prompt's
    assert np.abs(with_cache["logits"] - without["logits"]).max() > 1e-3
    first = m.run({"input_ids": np.array(IDS[:1], np.int64), "positions": np.arange(1, dtype=np.int64), **empty_cache(g, 1)})
    np.testing.assert_allclose(first["logits"][0], out["logits"][0], rtol=0, atol=1e-5 * np.abs(out["logits"][0]).max())


