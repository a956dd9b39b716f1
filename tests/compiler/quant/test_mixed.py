"""Mixed precision under a bits-per-weight budget (compiler.quant.mixed, `lowbit compile --bpw`): the plan stays
within the budget, a larger budget never costs more, the proxy is the layer's output error, the manifest records
the choice, and the bits counting is benchmarks/quality.py's."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.compile import compile_model
from compiler.errors import LowbitError
from compiler.quant import mixed
from compiler.quant.bpw import graph_bpw, spec_bits, spec_bpw
from compiler.quant.spec import parse_spec
from tests.helpers import run_cli


@pytest.fixture(scope="module")
def feeds(llama_tiny):
    from compiler.quant.calib import calibration_feeds

    return calibration_feeds(llama_tiny, 4, 32)


@pytest.fixture(scope="module")
def sens(llama_tiny, feeds):
    return mixed.measure(llama_tiny.graph, mixed.ladder(parse_spec("w3g32"), "a16"), feeds, kl_samples=2)


@pytest.fixture(scope="module")
def sens_auto(llama_tiny, feeds):
    return mixed.measure(llama_tiny.graph, mixed.ladder(None, "a16"), feeds, kl_samples=2)


def test_spec_bpw_is_ggufs_count():
    assert spec_bpw(parse_spec("w4g32"), 576) == 4.5  # Q4_0
    assert spec_bpw(parse_spec("w4g32-min"), 576) == 5.0  # Q4_1
    assert spec_bpw(parse_spec("w8g32"), 576) == 8.5  # Q8_0
    assert spec_bpw(parse_spec("w2g32"), 1536) == 2.5
    assert spec_bpw(parse_spec("w3g32-asym"), 64) == 4.0
    assert spec_bpw(parse_spec("w4g128"), 576) == 4.25  # g128 does not divide 576: g64
    assert spec_bpw(parse_spec("w4pc"), 576) == 4 + 16 / 576


@pytest.mark.parametrize("name, bpw", [("w3g32-min", 4.0), ("w4g32-asym", 5.0), ("w2g32", 2.5), ("w8g32", 8.5)])
def test_graph_bpw_counts_minimums_and_zero_points(llama_tiny, name, bpw):
    from compiler.quant.apply import quantize_graph

    assert graph_bpw(quantize_graph(llama_tiny.graph, parse_spec(name))) == bpw


def test_ladders():
    assert [s.name for s in mixed.ladder(parse_spec("w3g32-min"), "a16")] == ["w2g32-min", "w3g32-min", "w4g32-min", "w8g32-min"]
    assert [s.name for s in mixed.ladder(None, "a8")] == [dataclasses.replace(parse_spec(n), act="a8").name for n in mixed.AUTO_LADDER]
    assert mixed.ladder(None, "a8")[0].name == "w2g16k4a8-min"
    # at K = 1536 (six whole super-blocks): Q2_K's 2.625, then 2 + 12/16 + 32/256, ..., Q4_K's 4.5, Q4_1's 5.0, Q8_0's 8.5
    assert [spec_bpw(s, 1536) for s in mixed.ladder(None, "a16")] == [2.625, 2.875, 3.5, 3.875, 4.5, 5.0, 8.5]
    with pytest.raises(LowbitError, match="ternary"):
        mixed.ladder(parse_spec("ternary"), "a16")


def test_proxy_is_the_output_error(llama_tiny, feeds, sens):
    """proxy(w, s) = mean over calibration tokens of ||(Q(W) - W) x||^2, computed here from the activations."""
    from compiler.reference import Interpreter

    g = llama_tiny.graph
    w = "model.layers.1.mlp.down_proj.weight"
    node = next(n for n in g.nodes if n.op == "linear" and n.inputs[1] == w)
    xs = []
    interp = Interpreter(g)
    for f in feeds:
        env = interp.start(f)
        interp.run_nodes(env, range(len(g.nodes)), on_node=lambda i, n, v: xs.append(v[0].reshape(-1, v[0].shape[-1])) if n is node else None)
    x = np.concatenate(xs).astype(np.float64)
    W = g.consts[w].astype(np.float64)
    for si, s in enumerate(sens.ladder):
        dw = mixed._rtn(g.consts[w], s, w).astype(np.float64) - W
        want = np.mean(np.sum((x @ dw.T) ** 2, axis=1))
        assert sens.proxy[w][si] == pytest.approx(want, rel=1e-3)
    assert sens.proxy[w] == sorted(sens.proxy[w], reverse=True)  # more bits, less error


def test_every_role_and_block_has_a_measured_kl(sens):
    """cost at the calibration rung = KL(role) x KL(block), both measured, each > 0; the other rungs scale by the proxy."""
    assert set(sens.role_kl) == {mixed.role(w) for w in sens.elems} and len(sens.role_kl) == 7
    assert set(sens.block_kl) == {0, 1, 2, 3}
    assert all(v > 0 for v in [*sens.role_kl.values(), *sens.block_kl.values()])
    ci = sens.ladder.index(sens.cal_spec)
    for w in sens.elems:
        b = int(w.split(".")[2])
        assert sens.options[w][ci][1] == pytest.approx(sens.role_kl[mixed.role(w)] * sens.block_kl[b], rel=1e-6)


@settings(max_examples=60, deadline=None)
@given(st.floats(2.5, 8.5))
def test_the_plan_is_within_the_budget(sens, budget):
    c = mixed.choose(sens, budget)
    assert c.bpw <= budget
    assert set(c.specs) == set(sens.elems)
    assert c.bits == sum(sens.options[w][sens.ladder.index(s)][0] for w, s in c.specs.items())


@settings(max_examples=60, deadline=None)
@given(st.floats(2.625, 5.0), st.floats(2.625, 5.0))  # the auto ladder's cheapest plan: Q2_K's 2.625
def test_a_larger_budget_never_costs_more(sens_auto, a, b):
    lo, hi = sorted((a, b))
    assert mixed.choose(sens_auto, hi).cost <= mixed.choose(sens_auto, lo).cost


@pytest.mark.parametrize("name", ["w3g32", "w4g32"])
def test_mixed_beats_one_width_at_its_bits(sens, name):
    """At the budget of one width everywhere, the chosen plan's estimated cost is not above that width's."""
    i = [s.name for s in sens.ladder].index(name)
    uniform = sum(o[i][1] for o in sens.options.values())
    c = mixed.choose(sens, spec_bpw(parse_spec(name), 256))
    assert c.cost <= uniform


def test_hull_drops_dominated_and_concave_points():
    # (bits, cost): 3 is dominated by 2 (more bits, more cost); 1 lies above the chord 0-2
    opts = [(10, 100.0), (20, 80.0), (30, 20.0), (40, 30.0), (80, 1.0)]
    assert mixed._hull(opts) == [0, 2, 4]


def test_budget_errors(sens):
    with pytest.raises(LowbitError, match="below the cheapest plan, 2.5"):
        mixed.choose(sens, 2.4)
    with pytest.raises(LowbitError, match="above the widest plan, 8.5"):
        mixed.choose(sens, 9)


def test_compile_records_the_plan(tmp_path, llama_tiny):
    from benchmarks.quality import linear_bpw
    from compiler.artifact import load_artifact

    compile_model(llama_tiny, tmp_path / "a", quant="w3g32", bpw=3.75, progress=False, calib_samples=4, calib_seqlen=32)
    q = json.loads((tmp_path / "a" / "manifest.json").read_text())["quant"]
    g = load_artifact(tmp_path / "a").graph
    assert q["name"] == "w3g32" and q["bpw"]["budget"] == 3.75 and q["bpw"]["ladder"] == ["w2g32", "w3g32", "w4g32", "w8g32"]
    assert q["bpw"]["achieved"] <= 3.75
    assert q["bpw"]["achieved"] == pytest.approx(graph_bpw(g), abs=1e-4) == pytest.approx(linear_bpw(tmp_path / "a"), abs=1e-4)
    bits = {n.inputs[1][: -len(".qweight")] + ".weight": n.attrs["bits"] for n in g.nodes if n.op == "qlinear"}
    assert len(bits) == 28 and len(set(bits.values())) > 1
    for w, b in bits.items():  # layers off the model-wide spec are named, the others are at it
        assert b == (parse_spec(q["layers"][w]["as"]).bits if w in q["layers"] else 3)
    assert sum(q["summary"].values()) == len(q["layers"])


def test_auto_with_gptq_and_an_override(tmp_path, llama_tiny):
    from compiler.artifact import load_artifact

    compile_model(llama_tiny, tmp_path / "a", quant="auto", method="gptq", bpw=4.5, quant_layer="down_proj=w8g32", progress=False,
                  calib_samples=4, calib_seqlen=32)
    q = json.loads((tmp_path / "a" / "manifest.json").read_text())["quant"]
    g = load_artifact(tmp_path / "a").graph
    assert q["name"] == "auto" and q["method"] == "gptq" and q["bpw"]["achieved"] <= 4.5
    ql = [n for n in g.nodes if n.op == "qlinear"]
    assert all(n.attrs["bits"] == 8 for n in ql if "down_proj" in n.inputs[1])
    total = sum(spec_bits(parse_spec(q["layers"][n.inputs[1].replace(".qweight", ".weight")]["as"]), n.attrs["n"], n.attrs["k"]) for n in ql)
    assert total / sum(n.attrs["n"] * n.attrs["k"] for n in ql) == pytest.approx(q["bpw"]["achieved"], abs=1e-4) == pytest.approx(graph_bpw(g), abs=1e-4)


@pytest.mark.parametrize("args, what", [
    (["--quant", "keep", "--bpw", "4"], "--bpw chooses formats, which --quant keep"),
    (["--quant", "auto"], "--quant auto needs a bits-per-weight budget"),
    (["--quant", "none", "--bpw", "4"], "--bpw needs quantized weights"),
    (["--quant", "ternary", "--bpw", "4"], "no wider or narrower widths"),
    (["--quant", "w3g32", "--bpw", "2"], "--bpw 2 is below the cheapest plan, 2.5 bits per weight"),
    (["--quant", "auto", "--bpw", "9"], "--bpw 9 is above the widest plan, 8.5 bits per weight"),
    (["--quant", "w3g32", "--bpw", "4", "--quant-layer", "proj=w4g32"], "nothing to choose"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, args, what):
    code, _out, err = run_cli(["compile", "llama-tiny", "-o", tmp_path / "a", *args], capsys)
    assert code == 2 and what in err and len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert not (tmp_path / "a").exists()


def test_an_encoder_ranks_by_the_proxy_alone(tmp_path, bert_tiny):
    r = compile_model(bert_tiny, tmp_path / "a", quant="w4g32", bpw=5.0, progress=False)
    q = r["quant"]["bpw"]
    assert q["achieved"] <= 5.0 and q["sensitivity"]["role_kl"] == {} and q["sensitivity"]["block_kl"] == {}
