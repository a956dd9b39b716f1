"""Compile a preset to W4 (group 128), run it on the reference backend, and compare with the float model.

    .venv/bin/python examples/quickstart.py [MODEL] [SPEC]
"""

import sys
import tempfile
from pathlib import Path

from compiler.compile import compile_model
from runtime import load
from runtime.compare import logits_metrics
from runtime.model import float_model

model = sys.argv[1] if len(sys.argv) > 1 else "llama-tiny"
spec = sys.argv[2] if len(sys.argv) > 2 else "w4g128"
with tempfile.TemporaryDirectory() as tmp:
    out = Path(tmp) / "artifact"
    compile_model(model, out, spec, progress=False)
    m = load(out)
    ids = m.encode("Low-bit inference on a laptop")
    if m.causal:
        gen = m.generate(ids, 12, backend="ref")
        print("generated:", gen.tokens, f"({gen.decode_tokens_per_s:.0f} tokens/s)")
        ref_logits, _ = float_model(m.artifact).prefill(ids)
        print("vs float:", logits_metrics(gen.prompt_logits, ref_logits))
    else:
        e = m.embed(ids)
        f = float_model(m.artifact).embed(ids)
        print("embedding cosine to float:", float(e @ f / ((e @ e) ** 0.5 * (f @ f) ** 0.5)))
