"""Whole models on the hwsim backends, equal to the accelerator integer reference bit for bit."""

import numpy as np
import pytest

import runtime
from compiler.backends.accel.program import load_program
from compiler.backends.accel.reference import ProgramExecutor
from compiler.backends import BuildOptions
from compiler.compile import compile_model
from compiler.quant.pack import unpack
from compiler.quant.qweight import QuantizedWeight
from compiler.reference import Interpreter
from hwsim import golden
from hwsim.designs import DESIGNS as REGISTRY
from runtime.compare import cosine

DESIGNS = list(REGISTRY)


def _feeds(m, n=7, past=None, start=0):
    ids = np.arange(3, 3 + n) * 7 % m.graph.meta["hparams"]["vocab"]
    f = {"input_ids": ids.astype(np.int64), "positions": np.arange(start, start + n, dtype=np.int64)}
    if m.causal:
        f.update(past if past is not None else m._cache_feeds(n + 1))  # room for one decode step
    return f


def _copy(feeds: dict) -> dict:
    """Feeds of their own: an in-place KV cache is written by the run it is fed to, and the runs compared must
    not share one."""
    return {k: v.copy() for k, v in feeds.items()}


@pytest.fixture(scope="module", params=[("llama-tiny", "w4g128a8"), ("bert-tiny", "w2g64a16"), ("bitnet-tiny", "ternarya16")], ids=lambda p: f"{p[0]}-{p[1]}")
def compiled(request, tmp_path_factory):
    model, quant = request.param
    out = tmp_path_factory.mktemp("acc") / model
    compile_model(model, out, quant, targets="ref," + ",".join(DESIGNS), progress=False)
    return runtime.load(out)


@pytest.mark.parametrize("design", DESIGNS)
def test_hwsim_equals_integer_reference_bit_for_bit(compiled, design):
    m = compiled
    prog, tensors = load_program(m.artifact, design)
    refx = ProgramExecutor(m.graph, prog, tensors)
    b = m.backend(f"hwsim:{design}")
    b.reset_stats()
    runs = [_feeds(m)]
    got1, want1 = b.run(runs[0]), refx.run(_copy(runs[0]))
    if m.causal:  # and one decode step on the cache the prefill left
        past = {k.replace("present_", "past_"): v for k, v in want1.items() if k.startswith("present_")}
        runs.append(_feeds(m, 1, past, start=7))
    for f in runs:
        got, want = b.run(_copy(f)), refx.run(_copy(f))
        assert set(got) == set(want) == set(m.graph.outputs)
        for k in got:
            assert got[k].dtype == want[k].dtype and np.array_equal(got[k], want[k]), k
    # and it computes the model: close to the numeric contract's `ref` (dyadic scales are the only change)
    ref = Interpreter(m.graph).run(runs[0])
    o = m.graph.outputs[0]
    assert cosine(got1[o], ref[o]) > 0.9999
    assert not np.array_equal(got1[o], ref[o])  # (it is the array's own arithmetic, not the ref path)
    s = b.summary()
    nq = len(prog.layers)
    assert s["calls"] == nq * (len(runs) + 1)  # the first prefill ran twice
    assert s["cycles"] == sum(p["cycles"] for p in s["layers"]) > 0
    assert s["stall_cycles"] <= s["cycles"] and 0 < s["utilization"] <= 1
    assert s["energy_pj"] > 0 and s["macs"] == sum(r["macs"] for r in b.records if r["kind"] == "layer")
    for r in b.records:
        if r["kind"] == "layer":
            assert abs(sum(r["energy_parts_pj"].values()) - r["energy_pj"]) <= 1e-6 * r["energy_pj"]
    assert (s["tables"] > 0) == (design == "lut-tc")
    if design == "lut-tc":  # the fused precompute builds each tensor's tables once; the array, per job
        assert s["table_builds_fused"] == sum(r["builds"] for r in b.records if r["kind"] == "table") > 0
        assert all(r["builds"] == r["rows"] * m.graph.types[r["node"]].shape[-1] // 4 for r in b.records if r["kind"] == "table")
        assert s["table_builds_array"] > s["table_builds_fused"]


def test_reference_layer_equals_golden_on_the_quantized_weights(compiled):
    """The program (re-laid-out codes, stored scales, tiling) computes exactly golden.tile_y of the layer
    made straight from the graph's QuantizedWeight by golden.prepare_tile."""
    m = compiled
    prog, tensors = load_program(m.artifact, "mixpe")
    seen = {}

    class Spy(ProgramExecutor):
        def run_layer(self, plan, body, act):
            y = super().run_layer(plan, body, act)
            seen[plan.node] = (y, act)
            return y

    feeds = _feeds(m, 5)
    interp = Interpreter(m.graph)
    env = interp.start(feeds)
    interp.run_nodes(env, range(len(m.graph.nodes)), keep={o for n in m.graph.nodes for o in n.outputs})
    Spy(m.graph, prog, tensors).run(feeds)
    checked = 0
    for node in [n for n in m.graph.nodes if n.op == "qlinear"][:3]:
        a = node.attrs
        codes = unpack(m.graph.consts[node.inputs[1]], a["bits"], a["layout"], a["k"])
        qw = QuantizedWeight(codes, m.graph.consts[node.inputs[2]], m.graph.consts[node.inputs[3]], a["bits"], a["group_size"], a["ternary"])
        cfg = prog.layers[node.outputs[0]].array
        y, act = seen[node.outputs[0]]
        # the ref path's activations feed the first layers; both paths agree on them bit for bit there
        t = golden.prepare_tile(cfg, np.asarray(env[node.inputs[0]]).reshape(-1, a["k"]), qw)
        assert np.array_equal(t.a, act.a) and np.array_equal(t.da, act.da)
        whole = cfg.with_(M=t.a.shape[0], N=qw.shape[0], lanes=1)
        assert np.array_equal(golden.tile_y(whole, t.a, t.codes, t.zeros, t.mant, t.d, t.da), y)
        checked += 1
    assert checked == 3


@pytest.mark.parametrize("quant", ["w4pc", "w2g32a8", "w3g64a16-asym", "ternarya8"])
def test_other_specs_hwsim_equals_reference(tmp_path, quant):
    """Per-channel groups (one group = the layer's K), W2/W3, zero points, ternary, A8 and A16."""
    compile_model("bert-tiny", tmp_path / "m", quant, targets=",".join(DESIGNS), progress=False)
    m = runtime.load(tmp_path / "m")
    f = _feeds(m, 6)
    ref = Interpreter(m.graph).run(f)["embedding"]
    for design in DESIGNS:
        prog, tensors = load_program(m.artifact, design)
        want = ProgramExecutor(m.graph, prog, tensors).run(f)["embedding"]
        got = m.run(f, f"hwsim:{design}")["embedding"]
        assert np.array_equal(got, want), design
        assert cosine(got, ref) > 0.9999
    if quant == "w4pc":
        assert prog.layers["l0.ffn_out"].cfg["group"] == 512 and prog.layers["l0.q"].cfg["group"] == 128


@pytest.mark.parametrize("quant", ["mxfp4a8", "nvfp4"])
def test_fp4_models_hwsim_equals_reference(tmp_path, quant):
    """MXFP4 / NVFP4 (E2M1 codes) run on every array's e2m1 weight format: hwsim equals the accelerator integer
    reference bit for bit (prefill and a decode step), each layer is golden.tile_y of the graph's own
    QuantizedWeight, and the model stays within the hwsim tolerance of the contract's codebook qlinear."""
    compile_model("llama-tiny", tmp_path / "m", quant, targets="ref," + ",".join(DESIGNS), progress=False)
    m = runtime.load(tmp_path / "m")
    f = _feeds(m)
    ref = Interpreter(m.graph).run(_copy(f))
    o = m.graph.outputs[0]
    for design in DESIGNS:
        prog, tensors = load_program(m.artifact, design)
        assert all(p.array.e2m1 and p.array.bits == 4 for p in prog.layers.values())
        seen = {}

        class Spy(ProgramExecutor):
            def run_layer(self, plan, body, act):
                seen.setdefault(plan.node, (super().run_layer(plan, body, act), act))
                return seen[plan.node][0]

        want = Spy(m.graph, prog, tensors).run(_copy(f))
        got = m.run(_copy(f), f"hwsim:{design}")
        assert set(got) == set(want)
        for k in got:
            assert np.array_equal(got[k], want[k]), (design, k)
        past = {k.replace("present_", "past_"): v for k, v in want.items() if k.startswith("present_")}
        step = _feeds(m, 1, past, start=7)
        got2, want2 = m.run(_copy(step), f"hwsim:{design}"), ProgramExecutor(m.graph, prog, tensors).run(_copy(step))
        assert all(np.array_equal(got2[k], want2[k]) for k in got2), design
        assert cosine(got[o], ref[o]) > 0.999
        tol = 5e-2 if quant.endswith("a8") else 5e-3  # the hwsim rows of test_agreement's table
        assert np.abs(got[o] - ref[o]).max() <= tol * np.abs(ref[o]).max()
        node = next(n for n in m.graph.nodes if n.op == "qlinear")
        a = node.attrs
        qw = QuantizedWeight(unpack(m.graph.consts[node.inputs[1]], 4, a["layout"], a["k"]), m.graph.consts[node.inputs[2]],
                             np.zeros_like(m.graph.consts[node.inputs[2]], dtype=np.uint8), 4, a["group_size"],
                             table=m.graph.consts[node.inputs[3]], fp=a["fp"])
        y, act = seen[node.outputs[0]]
        cfg = prog.layers[node.outputs[0]].array
        whole = cfg.with_(M=act.a.shape[0], N=qw.shape[0], lanes=1)
        mant, d, _ = golden.dyadic_scales(golden.epilogue_scales(cfg, qw.scales), cfg.mant_bits, cfg.shift_bits)
        assert np.array_equal(golden.tile_y(whole, act.a, qw.codes, qw.zeros, mant, d, act.da), y[: act.a.shape[0], : qw.shape[0]])
        if quant.startswith("mxfp4"):  # E8M0 / 2: power-of-two mantissas
            assert set(np.unique(mant).tolist()) <= {0, 1 << (cfg.mant_bits - 1)}


def test_fp4_needs_e2m1_tables_and_other_codebooks_stay_refused(tmp_path):
    from compiler.errors import LowbitError

    for spec in ("nf4", "w3cb", "mxfp8"):
        with pytest.raises(LowbitError, match="codebook weights|1..4-bit"):
            compile_model("llama-tiny", tmp_path / spec, spec, targets="lut-tc", progress=False)


def test_k_splits_accumulate_in_the_output_buffer(tmp_path):
    """With guard_bits=1 a job holds at most 2 groups: bert-tiny's ffn_out (K=512, 4 groups of 128) runs as
    two K splits whose Y are summed by STORE(accumulate); the result still equals hwsim's full-K jobs."""
    compile_model("bert-tiny", tmp_path / "m", "w4g128a8", targets="mixpe", progress=False, options=BuildOptions(array="guard_bits=1"))
    m = runtime.load(tmp_path / "m")
    prog, tensors = load_program(m.artifact, "mixpe")
    p = prog.layers["l0.ffn_out"]
    assert p.k_splits == [[0, 256], [256, 512]] and len(p.tile_offsets[0]) == 2
    stores = [c.args["accumulate"] for c in prog.layer_commands("l0.ffn_out") if c.op == "STORE"]
    assert stores == [False, True] * p.n_tiles
    f = _feeds(m, 6)
    want = ProgramExecutor(m.graph, prog, tensors).run(f)
    got = m.run(f, "hwsim:mixpe")
    assert all(np.array_equal(got[k], want[k]) for k in want)
    assert cosine(got["embedding"], Interpreter(m.graph).run(f)["embedding"]) > 0.9999
