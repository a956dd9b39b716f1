"""Stacked sibling qlinears (compiler/backends/tvm/lower.py `_stack_siblings`) and the weights' per-call checks left
out of the library (compiler/backends/tvm/vm_checks.py).

Stacking q/k/v and gate/up into one kernel over their rows must not change a bit of any output: each row keeps its
own groups and scales and the activations are quantized once either way. The storage layouts differ by bit width
(bit planes at W3, five trits per byte for ternary A8, scale-and-minimum groups, biases), so each is compared."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from tests.compiler.backends.tvm.common import InMemoryTVM, quantized_graph, tvm  # noqa: F401

CASES = [  # (model, spec): the storage layouts and kernels the stacked arrays go through
    ("llama-tiny", "w4g32"),
    ("llama-tiny", "w4g32-min"),  # scale-and-minimum groups
    ("llama-tiny", "w3g128"),  # bit planes [3, N, K/8], stacked along N = axis 1
    ("llama-tiny", "ternarypca8"),  # five trits per byte on VNNI + VBMI hosts
    ("bert-tiny", "w8g32"),  # q/k/v with biases
]


def _feeds(graph, n: int = 5):
    from compiler.frontend.llama import empty_cache

    ids = np.array([3, 4, 5, 6, 7][:n], np.int64)
    feeds = {"input_ids": ids}
    if "positions" in graph.inputs:
        feeds["positions"] = np.arange(n, dtype=np.int64)
    if graph.meta.get("causal"):
        feeds.update(empty_cache(graph, n))
    for k, t in graph.inputs.items():  # (an encoder's other inputs)
        if k not in feeds:
            feeds[k] = np.zeros([n if not isinstance(d, int) else d for d in t.shape], np.int64 if t.dtype == "i64" else np.float32)
    return feeds


def _qlinear_layers(graph) -> dict[str, list[str]]:
    """activation -> the packed weights of the qlinears that read it (in graph order)."""
    out: dict[str, list[str]] = {}
    for n in graph.nodes:
        if n.op == "qlinear":
            out.setdefault(n.inputs[0], []).append(n.inputs[1])
    return out


@pytest.mark.parametrize("model,spec", CASES, ids=[f"{m}-{s}" for m, s in CASES])
def test_stacked_siblings_are_bit_identical_to_separate_layers(model, spec, monkeypatch):
    g = quantized_graph(model, spec)
    monkeypatch.setenv("LOWBIT_TVM_FUSE_SIBLINGS", "0")
    apart = InMemoryTVM(g)
    monkeypatch.setenv("LOWBIT_TVM_FUSE_SIBLINGS", "1")
    stacked = InMemoryTVM(g)
    assert apart.lowered.stacked == []
    # every group of >= 2 qlinears reading one activation is stacked (same spec everywhere here), nothing else
    expected = sorted(ws for ws in _qlinear_layers(g).values() if len(ws) > 1)
    assert sorted(stacked.lowered.stacked) == expected
    assert len(expected) >= 2
    assert set(stacked.lowered.kernels) == set(apart.lowered.kernels)  # every layer still names its kernel
    assert all(p["of"] in g.consts for m in (apart, stacked) for p in m.lowered.params)  # what lowbit bench counts them as
    feeds = _feeds(g)
    a, b = apart.run(feeds), stacked.run(feeds)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    # one kernel call per group: the qlinear calls in the VM code drop by (members - 1) per group
    calls = lambda m: len(re.findall(r"call  qlinear_", _vm_text(m.lowered).split("@main:")[1].split("\n@")[0]))  # noqa: E731
    assert calls(apart) - calls(stacked) == sum(len(ws) - 1 for ws in expected)


def test_layers_with_other_quantization_are_not_stacked(monkeypatch):
    """q/k/v where k has another group size read the same activation but cannot share a kernel's groups: q and v
    are stacked, k runs alone, and the outputs equal the unstacked module's."""
    import copy

    g32, g64 = quantized_graph("llama-tiny", "w4g32"), quantized_graph("llama-tiny", "w4g64")
    g = copy.deepcopy(g32)
    k64 = {n.outputs[0]: n for n in g64.nodes if n.op == "qlinear" and ".k_proj" in n.inputs[1]}
    for i, n in enumerate(g.nodes):
        if n.outputs[0] in k64:
            g.nodes[i] = copy.deepcopy(k64[n.outputs[0]])
            for c in g.nodes[i].inputs[1:]:
                g.consts[c] = g64.consts[c]
    monkeypatch.setenv("LOWBIT_TVM_FUSE_SIBLINGS", "1")
    m = InMemoryTVM(g)
    attn = [grp for grp in m.lowered.stacked if any(".q_proj" in w for w in grp)]
    assert attn and all(len(grp) == 2 and any(".v_proj" in w for w in grp) for grp in attn)
    assert not any(".k_proj" in w for grp in m.lowered.stacked for w in grp)
    monkeypatch.setenv("LOWBIT_TVM_FUSE_SIBLINGS", "0")
    feeds = _feeds(g)
    a, b = InMemoryTVM(g).run(feeds), m.run(feeds)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _vm_text(lowered) -> str:
    from compiler.backends.tvm.build import compile_lowered
    from compiler.backends.tvm.target import cpu_target

    return compile_lowered(lowered, "cpu", cpu_target())["as_text"]()


def test_weight_checks_are_dropped_and_input_checks_kept():
    from compiler.backends.tvm.lower import lower_graph

    g = quantized_graph("llama-tiny", "w4g32")
    low = lower_graph(g, "cpu")
    text = _vm_text(low)
    main = text[text.index("@main:"):]
    main = main[: main.index("\n@", 1)] if "\n@" in main[1:] else main
    checked = [int(r) for r in re.findall(r"vm\.builtin\.check_tensor_info in: %(\d+),", main)]
    n_in = len(low.inputs)
    assert sorted(checked) == list(range(n_in))  # each graph input once, no weight
    matched = [int(r) for r in re.findall(r"vm\.builtin\.match_shape in: %(\d+),", main)]
    weights = set(range(n_in, n_in + len(low.params)))  # (registers past them are values the body computes)
    assert set(range(n_in)) & set(matched) and not weights & set(matched)
    # without the graph inputs known (what a caller of the pipeline without them gets) every parameter is checked
    class Bare:
        mod = low.mod

    bare = _vm_text(Bare)
    bare_main = bare[bare.index("@main:"):]
    assert len(re.findall(r"check_tensor_info in: %", bare_main)) >= n_in + len(low.params)


def test_a_weight_of_another_shape_is_refused_at_load(tmp_path):
    """The library trusts its weights' shapes, so the runtime checks them once when it loads them."""
    import runtime
    from compiler.compile import compile_model
    from compiler.errors import LowbitError

    out = tmp_path / "lt"
    compile_model("llama-tiny", out, quant="w4g32", targets="tvm-cpu", progress=False)
    runtime.load(out).backend("tvm-cpu")  # loads as compiled
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    info_path = bad / "tvm-cpu" / "tvm.json"
    info = json.loads(info_path.read_text())
    p = info["params"][3]
    p["shape"] = [p["shape"][0] + 1, *p["shape"][1:]]
    info_path.write_text(json.dumps(info))
    with pytest.raises(LowbitError, match=re.escape(f"({p['key']}: other shape or dtype)")):
        runtime.load(bad).backend("tvm-cpu")
