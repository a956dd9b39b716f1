"""Every lowering covers the IR: each op table (the converters of compiler/backends/tvm/lower.py and
mlir/lower.py, and compiler/reference.py's KERNELS) has an entry for every op of compiler.ir.OPS and none for
an op the IR does not define; and a graph with ops a lowering lacks is refused before anything is converted,
with one error naming all of them (compiler/backends/lowering.py)."""

from __future__ import annotations

import pytest

from compiler import ir
from compiler.backends.lowering import Converters, GraphLowerer, check_supported, unsupported_ops
from compiler.errors import LowbitError

FAKE_OPS = ("warp_drive", "fancy_norm")  # ops no lowering knows


def _tvm_converters():
    pytest.importorskip("tvm", reason="Apache TVM (apache-tvm) is not installed")
    from compiler.backends.tvm.lower import CONVERTERS

    return CONVERTERS


def _mlir_converters():
    from compiler.backends.mlir.lower import CONVERTERS  # (IREE is imported only when a module is built)

    return CONVERTERS


def _reference_kernels():
    from compiler.reference import KERNELS

    return KERNELS


TABLES = {"tvm": _tvm_converters, "mlir": _mlir_converters, "reference": _reference_kernels}


def _lower_graph(lowering: str):
    if lowering == "tvm":
        _tvm_converters()
        from compiler.backends.tvm.lower import lower_graph
    else:
        from compiler.backends.mlir.lower import lower_graph
    return lower_graph


def with_fake_ops(graph: ir.Graph) -> ir.Graph:
    """A copy of `graph` whose last two nodes carry ops no lowering knows (every other node converts)."""
    g = graph.copy()
    for node, op in zip(g.nodes[-2:], FAKE_OPS):
        node.op = op
    return g


@pytest.mark.parametrize("lowering", list(TABLES))
def test_table_covers_every_ir_op(lowering):
    table = TABLES[lowering]()
    missing = unsupported_ops(ir.OPS, table)
    assert not missing, f"the {lowering} lowering has no converter for {len(missing)} IR op(s): {', '.join(missing)}"
    stale = sorted(set(table) - set(ir.OPS))
    assert not stale, f"the {lowering} lowering converts ops the IR does not define: {', '.join(stale)}"


def test_unsupported_ops_names_every_missing_op_once():
    table = Converters("toy")
    for op in ("add", "mul"):
        table.register(op)(lambda L, n: [])
    assert unsupported_ops(["add", "rope", "mul", "attention", "rope"], table) == ["attention", "rope"]
    assert unsupported_ops(["add"], table) == []
    with pytest.raises(ValueError, match="two converters for add"):
        table.register("add")(lambda L, n: [])


def test_the_check_runs_before_any_converter(bert_tiny):
    calls = []
    table = Converters("toy")
    for op in ir.OPS:
        table.register(op)(lambda L, n: calls.append(n.op) or [None] * len(n.outputs))

    class Toy(GraphLowerer):
        converters = table

    with pytest.raises(LowbitError) as e:
        Toy(with_fake_ops(bert_tiny.graph), "cpu").convert_nodes()
    assert not calls  # refused before the first node
    assert all(op in str(e.value) for op in FAKE_OPS) and "toy" in str(e.value)
    with pytest.raises(LowbitError, match="warp_drive"):
        check_supported(with_fake_ops(bert_tiny.graph), table)
    lowerer = Toy(bert_tiny.graph, "cpu")
    lowerer.convert_nodes()
    assert calls == [n.op for n in bert_tiny.graph.nodes]
    assert set(lowerer.env) == {o for n in bert_tiny.graph.nodes for o in n.outputs}


@pytest.mark.parametrize("lowering", ["tvm", "mlir"])
def test_a_graph_with_unknown_ops_fails_naming_them_all(lowering, bert_tiny):
    lower_graph = _lower_graph(lowering)
    with pytest.raises(LowbitError) as e:
        lower_graph(with_fake_ops(bert_tiny.graph), "cpu")
    msg = str(e.value)
    assert all(op in msg for op in FAKE_OPS), msg
    assert "no converter for ops fancy_norm, warp_drive" in msg and "ref" in e.value.fix
