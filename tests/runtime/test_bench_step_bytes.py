"""runtime.bench.step_bytes: the bytes of one decode step, KV traffic by the cache's form (graph meta `kv`): in
place, the context + 1 rows attention reads (tvm-cpu's kernel reads no more); concat, the past read and its grown
copy written before attention reads the copy."""

import pytest

from runtime.bench import step_bytes


@pytest.fixture(scope="module")
def graphs():
    from compiler.frontend import load_model

    out = {}
    with pytest.MonkeyPatch.context() as mp:
        for kv in ("inplace", "concat"):
            mp.setenv("LOWBIT_KV_CACHE", kv)
            out[kv] = load_model("llama-tiny").graph
    return out


ROW = 2 * 4 * 4 * 32 * 4  # K and V, 4 layers, 4 KV heads of 32 floats


@pytest.mark.parametrize("context", [0, 1, 100, 1024])
def test_inplace_counts_the_rows_attention_reads(graphs, context):
    g = graphs["inplace"]
    assert g.meta["kv"] == "inplace"
    b = step_bytes(g, context)
    assert b["kv"] == ROW * (context + 1)
    assert b["total"] == b["quantized"] + b["float"] + b["embedding"] + b["kv"]
    assert step_bytes(g, context + 1)["total"] - b["total"] == ROW  # one more position, one more row


@pytest.mark.parametrize("context", [0, 5, 1024])
def test_concat_counts_the_copy(graphs, context):
    g = graphs["concat"]
    assert g.meta["kv"] == "concat"
    b = step_bytes(g, context)
    assert b["kv"] == ROW * (3 * context + 2)
    assert b["total"] - b["kv"] == step_bytes(graphs["inplace"], context)["total"] - step_bytes(graphs["inplace"], context)["kv"]


def test_library_arrays_count_each_array_under_the_constant_it_holds():
    from runtime.bench import library_arrays

    info = {"params": [
        {"key": "w.q.packed+2@vnni-cpu", "of": "w.q.packed", "shape": [60, 9, 64], "dtype": "uint8"},
        {"key": "w.q.scales+2@vnni-cpu", "of": "w.q.scales", "shape": [60, 18, 16], "dtype": "float16"},
        {"key": "norm.weight", "of": "norm.weight", "shape": [576], "dtype": "float32"},
        {"key": "emb.packed@vnni-trit-cpu", "of": "emb.packed", "shape": [100, 7], "dtype": "uint8"},
    ]}
    assert library_arrays(info) == [("w.q.packed", 60 * 9 * 64, 60), ("w.q.scales", 60 * 18 * 16 * 2, 60), ("norm.weight", 576 * 4, 576),
                                     ("emb.packed", 700, 100)]
    assert library_arrays({"params": [{"key": "x"}]}) is None  # a library built before shapes were recorded: the graph's bytes


def test_a_library_that_stores_weights_smaller_is_counted_at_its_size(tmp_path):
    """tvm-cpu's step streams its own copies: same bytes as the graph where the layout only reorders, fewer where a
    kernel stores ternary at five trits per byte (vnni-trit-cpu, on hosts with VNNI and VBMI)."""
    import json

    pytest.importorskip("tvm")
    import runtime
    from compiler.compile import compile_model
    from runtime.bench import library_arrays

    for spec in ("w8g32", "ternarypca8"):
        out = tmp_path / spec
        compile_model("llama-tiny", out, quant=spec, targets="tvm-cpu", progress=False)
        info = json.loads((out / "tvm-cpu" / "tvm.json").read_text())
        g = runtime.load(out).graph
        lib, art = step_bytes(g, 10, library_arrays(info)), step_bytes(g, 10)
        assert lib["kv"] == art["kv"] and lib["float"] == art["float"]
        trits = "vnni-trit-cpu" in info["kernels"].values()
        if spec == "w8g32" or not trits:
            assert lib["quantized"] == pytest.approx(art["quantized"], rel=0.02)  # (padding of a re-layout at most)
        else:  # 2-bit codes (per-channel scales) in the artifact, 1.6 bits in the library
            assert lib["quantized"] < 0.85 * art["quantized"]
