"""Scale-and-minimum layers (Q4_1-style, attr mins) and a qembedding table on the accelerator paths: a
tiny llama whose every linear has minimums and whose token embedding is a qembedding reading the LM
head's quantized constants (the tied table, stored once). On every design: hwsim == the accelerator
integer reference bit for bit, both within the hwsim tolerance of `ref`; one layer on the RTL == hwsim bit
for bit and cycle for cycle."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from compiler.backends import BuildOptions
from compiler.backends.accel import build_accel_target
from compiler.backends.accel.lower import lower_graph
from compiler.backends.accel.program import PROGRAM, WEIGHTS, Program
from compiler.backends.accel.reference import ProgramExecutor
from compiler.frontend import load_model
from compiler.ir import Node
from compiler.quant.apply import qlinear_node
from compiler.quant.rtn import quantize_rtn_min
from compiler.quant.spec import QuantSpec
from compiler.reference import Interpreter
from hwsim import golden
from hwsim.arrays import stream_cycles
from hwsim.designs import DESIGNS
from runtime.backends.hwsim import HwsimExecutor
from tests.rtl.simulators import icarus

# the hwsim rows of tests/runtime/backends/test_agreement.py's table (max abs error / the output's max |value|)
TOL = {"a8": 5e-2, "a16": 5e-3}
ARRAY = {"M": 2, "N": 16, "K": 4, "lanes": 8}  # small arrays: the RTL builds in seconds


def mins_graph(act: str, bits: int = 4, group: int = 32):
    """llama-tiny with every linear (and the LM head) quantized with minimums (quantize_rtn_min) and the
    token embedding replaced by a qembedding of the head's constants."""
    m = load_model("llama-tiny")
    g = m.graph
    spec = QuantSpec(bits=bits, group_size=group, act=act)
    for i, nd in enumerate(g.nodes):
        if nd.op == "linear":
            g.nodes[i] = qlinear_node(g, nd, quantize_rtn_min(g.consts[nd.inputs[1]], bits, group), spec)
    head = next(nd for nd in g.nodes if nd.op == "qlinear" and "logits" in nd.outputs)
    e = next(i for i, nd in enumerate(g.nodes) if nd.op == "embedding")
    emb = g.nodes[e]
    attrs = {k: head.attrs[k] for k in ("bits", "group_size", "n", "k", "layout", "ternary", "mins")}
    g.nodes[e] = Node("qembedding", [emb.inputs[0], *head.inputs[1:4]], list(emb.outputs), attrs)
    used = {v for nd in g.nodes for v in nd.inputs}
    for c in [c for c in g.consts if c not in used]:  # the float tables
        del g.consts[c]
        g.types.pop(c, None)
    g.verify()
    return g


def feeds_of(g, n: int = 5, past: dict | None = None, start: int = 0) -> dict:
    f = {"input_ids": (np.arange(3, 3 + n) * 37 % 512).astype(np.int64), "positions": np.arange(start, start + n, dtype=np.int64)}
    for k, t in g.inputs.items():
        if k.startswith("past_"):
            # concat: an empty cache; in place: rows for these positions and one decode step
            rows = start + n + 1 if g.meta.get("kv") == "inplace" else 0
            f[k] = past[k].copy() if past else np.zeros((rows, *t.shape[1:]), np.float32)
    return f


@functools.lru_cache(maxsize=None)
def cached_graph(act: str):
    return mins_graph(act)


# every design once, both activation modes
@pytest.mark.parametrize("design, act", [(d, ("a16", "a8")[i % 2]) for i, d in enumerate(DESIGNS)])
def test_hwsim_equals_reference_and_is_within_tolerance(design, act, tmp_path):
    g = cached_graph(act)
    summary = build_accel_target(g, design, tmp_path, BuildOptions())
    prog = Program.from_json(json.loads((tmp_path / PROGRAM).read_text()))
    tensors = load_file(str(tmp_path / WEIGHTS))
    nq = sum(nd.op == "qlinear" for nd in g.nodes)
    assert prog.stats["min_layers"] == len(prog.layers) == nq
    assert all(v.endswith("_min.v") for v in summary["verilog"])  # the arrays with the minimum term
    host = [c.args["kernel"] for c in prog.commands if c.op == "HOST_OP"]
    assert host[0] == "qembedding"  # the gather runs on the host, reading the head's table
    hw, refx = HwsimExecutor(g, prog, tensors), ProgramExecutor(g, prog, tensors)
    f = feeds_of(g, 4)  # one row tile of the default arrays (M = 4)
    got, want = hw.run(f), refx.run({k: v.copy() for k, v in f.items()})
    for k in got:
        assert got[k].dtype == want[k].dtype and np.array_equal(got[k], want[k]), k
    past = {k.replace("present_", "past_"): v for k, v in got.items() if k.startswith("present_")}
    f2 = feeds_of(g, 1, past, start=4)  # and one decode step on that cache
    got2 = hw.run(f2)
    interp = Interpreter(g)
    for a, r in ((got, interp.run(feeds_of(g, 4))), (got2, interp.run({k: v.copy() for k, v in f2.items()}))):
        for k in ("logits", "present_key.3", "present_value.3"):
            err = np.abs(a[k] - r[k]).max() / np.abs(r[k]).max()
            assert err <= TOL[act], (k, err)
    layers = [r for r in hw.records if r["kind"] == "layer"]
    assert len(layers) == 2 * nq and all(r["energy_pj"] > 0 for r in layers)


def test_lowering_of_minimum_layers():
    g = cached_graph("a8")
    prog, tensors = lower_graph(g, "mixpe", ARRAY)
    plan = prog.layers["l0.q"]
    ng = plan.k // 32
    assert plan.mins and tensors["l0.q.mm"].shape == tensors["l0.q.dm"].shape == (plan.n_pad, ng)
    assert not tensors["l0.q.zeros"].any() and (tensors["l0.q.mm"] < 0).any()  # Q4_1 minimums are mostly negative
    dq = [c for c in prog.layer_commands("l0.q") if c.op == "DEQUANT"]
    assert dq and all(c.args["mins"] for c in dq)
    ls = next(c for c in prog.layer_commands("l0.q") if c.op == "LOAD_SCALES")
    assert ls.args["bytes"] == -(-16 * ng * (4 + 16 + 5 + 17 + 5) // 8)  # zero, mant, d + mm (MW+1), dm
    # K is cut at 2^(GB-1) groups with minimums: --array guard_bits=3 -> 4 groups a job
    prog3, _ = lower_graph(g, "mixpe", {**ARRAY, "guard_bits": 3})
    assert prog3.layers["l0.q"].k_splits == [[0, 128], [128, 256]]


@icarus
@pytest.mark.parametrize("design, act", [("lut-tc", "a16"), ("mixpe", "a8"), ("mac", "a16")])
def test_one_minimum_layer_on_the_rtl_equals_hwsim(design, act):
    from compiler.backends.accel.reference import quantize_act
    from runtime.backends.rtl import assemble_y, layer_jobs, simulate_jobs

    g = cached_graph(act)
    prog, tensors = lower_graph(g, design, ARRAY)
    plan = prog.layers["l0.k"]  # 128 x 256, 8 groups of 32
    body = prog.layer_commands("l0.k")
    cfg = plan.array
    x = np.random.default_rng(3).standard_normal((3, plan.k)).astype(np.float32)  # 3 rows: two row tiles, one padded
    a = quantize_act(x, act, cfg.group, cfg.bfp_bits, cfg.shift_bits)
    hw = HwsimExecutor(g, prog, tensors)
    want = hw.run_layer(plan, body, a)
    jobs, where = layer_jobs(hw, plan, body, a)
    assert len(jobs) == 2 * 8 and all(j.has_mins for j in jobs)  # 2 row tiles x 128 / 16 columns
    # and, in the same simulation, the widths' limits: every product and minimum term at its extreme
    rng = np.random.default_rng(5)
    corners = [golden.random_tile(cfg, rng, n_groups=8, kind=k, mins=True) for k in ("min", "max", "mixed-extreme")]
    run = simulate_jobs(cfg, jobs + corners, "icarus")
    np.testing.assert_array_equal(assemble_y(plan, run.y[: len(jobs)], where, 3), want)
    for y, t in zip(run.y[len(jobs) :], corners):
        np.testing.assert_array_equal(y, t.y(cfg))
    assert hw.records[-1]["compute_cycles"] == stream_cycles(cfg, 8, len(jobs))
    assert run.cycles == stream_cycles(cfg, 8, len(jobs) + len(corners))  # cycle for cycle, back to back
