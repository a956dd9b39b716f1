"""The rotation pass (compiler/passes/rotate.py, --rotate hadamard) and its matrices (compiler/passes/hadamard.py):
an exact float rewrite of a pre-norm decoder that lowers the quantization error where channels have outliers."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.errors import LowbitError
from compiler.frontend.llama import empty_cache
from compiler.passes.hadamard import hadamard_pm1, online_block, rotation, sylvester
from compiler.passes.rotate import rotate_graph
from compiler.quant.apply import quantize_graph
from compiler.quant.spec import parse_spec
from compiler.reference import Interpreter, hadamard
from tests.helpers import run_cli

# widths of real models and the Paley / Sylvester factors they need (576 = 36 * 16, 896 = 28 * 32, 1536 = 12 * 128)
ORDERS = [1, 2, 4, 8, 12, 20, 24, 28, 36, 44, 48, 60, 76, 576, 896, 1536, 4864]


@pytest.mark.parametrize("n", ORDERS)
def test_hadamard_orders(n):
    h = hadamard_pm1(n)
    assert h is not None and set(np.unique(h)) <= {-1, 1}
    hf = h.astype(np.float64)  # exact: the entries of H H^T are integers far below 2^53 (BLAS, not numpy's integer loop)
    assert np.array_equal(hf @ hf.T, n * np.eye(n))


def test_orders_without_a_construction_fall_back_to_a_random_orthogonal_matrix():
    for n in (6, 10, 52):
        assert hadamard_pm1(n) is None
        q, kind = rotation(n, seed=3)
        assert kind == "random orthogonal"
        np.testing.assert_allclose(q @ q.T, np.eye(n), atol=1e-12)
        assert not np.allclose(np.abs(q), np.abs(q[0, 0]))  # not a (scaled) +-1 matrix


@settings(max_examples=25)
@given(st.sampled_from(ORDERS[2:-3]), st.integers(0, 2**16))
def test_randomized_hadamard_is_orthogonal_and_flat(n, seed):
    q, kind = rotation(n, seed)
    assert kind == "hadamard"
    np.testing.assert_allclose(q @ q.T, np.eye(n), atol=1e-12)
    np.testing.assert_allclose(np.abs(q), 1 / np.sqrt(n), rtol=1e-12)  # every entry the same size: outliers spread evenly


@given(st.sampled_from([2, 8, 64, 512]), st.integers(1, 3))
def test_sylvester_is_the_hadamard_op(n, blocks):
    x = np.random.default_rng(n + blocks).standard_normal((3, n * blocks)).astype(np.float32)
    want = (x.reshape(3, blocks, n) @ (sylvester(n) / np.sqrt(n))).reshape(3, -1)
    np.testing.assert_allclose(hadamard(x, n), want, rtol=1e-5, atol=1e-5)
    assert online_block(n * blocks) == n * (blocks & -blocks)


def _feeds(graph, n=37):
    ids = np.arange(3, 3 + n, dtype=np.int64)
    return {"input_ids": ids, "positions": np.arange(n), **empty_cache(graph, n + 4)}


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(a))


def with_outlier_gains(graph, factor=20.0):
    """A copy whose RMSNorm gains have two channels `factor` x larger (the outlier features rotation is for)."""
    g = graph.copy()
    for n in g.nodes:
        if n.op == "rmsnorm":
            v = g.consts[n.inputs[1]].copy()
            v[[3, 17]] *= factor
            g.consts[n.inputs[1]] = v
    return g


def test_rotated_float_graph_computes_the_same_logits(llama_tiny):
    g0 = llama_tiny.graph
    g1, info = rotate_graph(g0, seed=0)
    hp = g0.meta["hparams"]
    assert info["norms_folded"] == 2 * hp["layers"] + 1 and info["value_heads"] == info["online"] == hp["layers"]
    assert [n.op for n in g1.nodes].count("hadamard") == hp["layers"]
    for n in g1.nodes:  # every gain folded into the weights
        if n.op == "rmsnorm":
            assert np.array_equal(g1.consts[n.inputs[1]], np.ones_like(g1.consts[n.inputs[1]]))
    a, b = Interpreter(g0).run(_feeds(g0)), Interpreter(g1).run(_feeds(g0))  # own feeds: the cache is written in place
    assert _rel(a["logits"], b["logits"]) < 1e-5
    # the cached values are rotated (per head), the keys are not
    assert _rel(a["present_value.0"], b["present_value.0"]) > 0.5
    np.testing.assert_allclose(b["present_key.0"], a["present_key.0"], rtol=1e-4, atol=1e-5)
    # a decode step over the rotated cache: still the same function
    step = {"input_ids": np.array([7], np.int64), "positions": np.array([37])}
    da = Interpreter(g0).run({**step, **{k.replace("present", "past"): v for k, v in a.items() if k.startswith("present")}})
    db = Interpreter(g1).run({**step, **{k.replace("present", "past"): v for k, v in b.items() if k.startswith("present")}})
    assert _rel(da["logits"], db["logits"]) < 1e-5
    for k, v in g0.consts.items():  # the input graph is not modified
        assert g0.consts[k] is v


def test_a_tied_head_gets_its_own_rotated_copy(llama_tiny):
    g0 = llama_tiny.graph.copy()
    head = next(n for n in g0.nodes if "logits" in n.outputs)
    table = next(n for n in g0.nodes if n.op == "embedding").inputs[1]
    del g0.consts[head.inputs[1]]
    head.inputs[1] = table  # tie the head to the embedding table
    g0.infer_types()
    g1, _ = rotate_graph(g0, seed=1)
    head1 = next(n for n in g1.nodes if "logits" in n.outputs)
    assert head1.inputs[1] != table and head1.inputs[1] in g1.consts
    assert _rel(Interpreter(g0).run(_feeds(g0))["logits"], Interpreter(g1).run(_feeds(g0))["logits"]) < 1e-5


@pytest.mark.parametrize("spec, most", [("w4g32", 0.75), ("w4g32a8", 0.75), ("mxfp4", 0.75), ("w8pca8", 0.6)])
def test_rotation_lowers_the_quantization_error_of_outlier_channels(llama_tiny, spec, most):
    g0 = with_outlier_gains(llama_tiny.graph)
    fd = _feeds(g0)
    want = Interpreter(g0).run(fd)["logits"]
    g1, _ = rotate_graph(g0, seed=0)
    plain = _rel(want, Interpreter(quantize_graph(g0, parse_spec(spec))).run(fd)["logits"])
    rotated = _rel(want, Interpreter(quantize_graph(g1, parse_spec(spec))).run(fd)["logits"])
    assert rotated < most * plain, (spec, plain, rotated)


def test_models_it_does_not_fit_are_refused(bert_tiny, llama_tiny):
    with pytest.raises(LowbitError, match="bert-tiny is not a pre-norm RMSNorm decoder.*more than one embedding"):
        rotate_graph(bert_tiny.graph)
    g = llama_tiny.graph.copy()  # a Gemma-style scaled embedding: a mul on the residual stream
    g.add_const("embed_scale", np.full(g.consts[g.nodes[0].inputs[1]].shape[1], 16.0, np.float32))
    g.nodes.insert(1, g.nodes[0].__class__("mul", ["embed", "embed_scale"], ["embed.scaled"], {}))
    for n in g.nodes[2:]:
        n.inputs = ["embed.scaled" if v == "embed" else v for v in n.inputs]
    g.infer_types()
    with pytest.raises(LowbitError, match="residual stream value embed is read by a mul node"):
        rotate_graph(g)


def test_cli(tmp_path, capsys):
    out = tmp_path / "a"
    code, so, se = run_cli(["compile", "llama-tiny", "-o", out, "--quant", "w4g32a8", "--rotate", "hadamard", "--target", "ref,tvm-cpu"], capsys)
    assert code == 0, se
    import json

    rec = json.loads((out / "manifest.json").read_text())["quant"]["rotate"]
    assert rec["method"] == "hadamard" and rec["residual"] == "hadamard" and rec["online"] == 4
    code, so, se = run_cli(["run", out, "--backend", "tvm-cpu", "--compare", "ref", "--ids", "3,4,5,6", "--tokens", "4"], capsys)
    assert code == 0, se
    cos = float(so.split("cosine similarity (logits)")[1].split("│")[1])
    assert cos >= 0.9999


def test_rotated_artifact_with_a_rotated_kv_cache(tmp_path, capsys):
    out = tmp_path / "kv"
    code, so, se = run_cli(["compile", "llama-tiny", "-o", out, "--quant", "w4g32", "--rotate", "hadamard", "--kv", "int4-rot"], capsys)
    assert code == 0, se
    from compiler.artifact import load_artifact
    from compiler.passes.kv_quant import float_cache_graph

    g = load_artifact(out).graph
    ops = [n.op for n in g.nodes]
    assert ops.count("hadamard") > 4  # the cache's rotations and the pass's four
    undone = float_cache_graph(g)  # a run-time --kv override keeps the pass's rotations, drops the cache's
    assert [n.outputs[0] for n in undone.nodes if n.op == "hadamard"] == [f"l{i}.swiglu.rotated" for i in range(4)]
    code, so, se = run_cli(["export", out, "-o", tmp_path / "x.gguf"], capsys)
    assert code == 2 and "was compiled with --rotate hadamard" in se and "without --rotate" in se
    assert not (tmp_path / "x.gguf").exists()


@pytest.mark.parametrize("args, line", [
    (["--quant", "keep"], "--rotate rewrites weights, which --quant keep"),
    (["--target", "tvm-cuda"], "target tvm-cuda has no kernel for the online Hadamard transform"),
    (["--rotate", "spin"], "Invalid value for '--rotate'"),
])
def test_cli_refusals(tmp_path, capsys, args, line):
    argv = ["compile", "llama-tiny", "-o", tmp_path / "b", "--rotate", "hadamard", *args]
    code, so, se = run_cli(argv, capsys)
    assert code == 2 and line in se and len(se.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()


def test_cli_refuses_an_encoder(tmp_path, capsys):
    code, so, se = run_cli(["compile", "bert-tiny", "-o", tmp_path / "c", "--quant", "w4g32", "--rotate", "hadamard"], capsys)
    assert code == 2 and "not a pre-norm RMSNorm decoder" in se and "drop --rotate" in se
    assert not (tmp_path / "c").exists()
