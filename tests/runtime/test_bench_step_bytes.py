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
