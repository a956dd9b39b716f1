"""`--quant-head`: the LM head of a causal LM quantized (RTN) at its own spec; the tied embedding table stays
float for the gather; ref and tvm-cpu agree on it; user errors are one clear message."""

from __future__ import annotations

import numpy as np
import pytest

from compiler.compile import compile_model
from compiler.errors import LowbitError
from runtime.compare import cosine


def test_head_is_quantized_and_the_embedding_stays_float(tmp_path, llama_tiny):
    import runtime

    compile_model(llama_tiny, tmp_path / "a", quant="w8pc", quant_head="w8pc", progress=False)
    m = runtime.load(tmp_path / "a")
    g = m.graph
    head = next(n for n in g.nodes if "logits" in n.outputs)
    assert head.op == "qlinear" and head.attrs["bits"] == 8 and head.attrs["n"] == g.meta["hparams"]["vocab"]
    emb = next(n for n in g.nodes if n.op == "embedding")
    assert g.consts[emb.inputs[1]].dtype == np.float32  # the gather still reads the float table
    assert m.artifact.manifest["quant"]["head"] == "w8pc"
    ids = list(range(1, 20))
    feeds = {"input_ids": np.array(ids), "positions": np.arange(len(ids)), **m._cache_feeds(len(ids))}
    got = m.run(feeds, "ref")["logits"]
    ref_float = llama_tiny.graph  # the float model on the same interpreter
    from compiler.reference import Interpreter

    want = Interpreter(ref_float).run(feeds)["logits"]
    assert cosine(got.ravel(), want.ravel()) > 0.999  # 8-bit weights everywhere, head included


def test_head_on_tvm_cpu_matches_ref(tmp_path, llama_tiny):
    pytest.importorskip("tvm")
    import runtime

    compile_model(llama_tiny, tmp_path / "a", quant="w4g128", quant_head="w4g128", targets="ref,tvm-cpu", progress=False)
    m = runtime.load(tmp_path / "a")
    ids = list(range(3, 15))
    a = m.generate(ids, 4, "ref")
    b = m.generate(ids, 4, "tvm-cpu")
    assert a.tokens == b.tokens
    assert np.abs(a.prompt_logits - b.prompt_logits).max() <= 5e-3 * np.abs(a.prompt_logits).max()


@pytest.mark.parametrize("model,quant,head,msg", [("bert-tiny", "w4g128", "w8pc", "no float LM head"), ("llama-tiny", "none", "w8pc", "needs quantized weights"),
                                                  ("llama-tiny", "w4g128", "w8pca8", "activation mode"), ("llama-tiny", "w4g128", "w4g100", "unsupported group size")])
def test_head_errors(tmp_path, model, quant, head, msg):
    with pytest.raises(LowbitError, match=msg):
        compile_model(model, tmp_path / "x", quant=quant, quant_head=head, progress=False)
    assert not (tmp_path / "x").exists()
