"""What every graph lowering of compiler/backends shares (tvm/lower.py, mlir/lower.py): a table of op
converters filled by a decorator, the environment of values by name, input lookup, and a check that names
every op a table lacks, all at once, before anything is converted. In the spirit of TVM Relax's
`BaseFXGraphImporter` (one importer base owning `env` and the convert map) and of its ONNX frontend's
`_check_for_unsupported_ops`.

A lowering declares its table and its lowerer:

    CONVERTERS = Converters("tvm")
    conv = CONVERTERS.register

    @conv("rmsnorm")
    def _rmsnorm(L, n):            # (lowerer, node) -> one value per node output
        x, w = L.ins(n)
        return [...]

    class _Lowerer(GraphLowerer):
        converters = CONVERTERS

`GraphLowerer(graph, kind)` refuses a graph with ops the table lacks (one LowbitError naming all of them);
`convert_nodes()` runs the converters in graph order and binds their results to the node outputs.
A new IR op needs a converter in every table: tests/compiler/backends/test_lowering_coverage.py checks that each
table covers compiler.ir.OPS.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from compiler.errors import LowbitError
from compiler.ir import Graph, Node


class Converters(dict):
    """op name -> converter(lowerer, node) -> list of values, one per node output."""

    def __init__(self, backend: str):
        super().__init__()
        self.backend = backend  # named in errors

    def register(self, op: str) -> Callable:
        """Decorator: the converter of `op` (one per op)."""

        def deco(fn):
            if op in self:
                raise ValueError(f"the {self.backend} lowering has two converters for {op}")
            self[op] = fn
            return fn

        return deco


def unsupported_ops(graph: Graph | Iterable[str], converters) -> list[str]:
    """The ops of `graph` (or the op names given) that `converters` has no entry for, sorted, each once."""
    ops = [n.op for n in graph.nodes] if isinstance(graph, Graph) else list(graph)
    return sorted(set(ops) - set(converters))


def check_supported(graph: Graph, converters) -> None:
    """LowbitError naming every op of `graph` that `converters` lacks."""
    missing = unsupported_ops(graph, converters)
    if missing:
        backend = getattr(converters, "backend", "this")
        raise LowbitError(
            f"the {backend} backend cannot lower graph {graph.name}: no converter for op{'s' if len(missing) > 1 else ''} {', '.join(missing)}",
            "compile it for another target (ref runs every op)",
        )


class GraphLowerer:
    """The base of a lowering: the graph, the target kind, and `env` (value name -> the backend's value)."""

    converters: Converters  # set by each lowering

    def __init__(self, graph: Graph, kind: str):
        check_supported(graph, self.converters)
        self.g = graph
        self.kind = kind  # 'cpu' | 'cuda'
        self.env: dict[str, object] = {}

    def value(self, name: str):
        return self.env[name]

    def ins(self, node: Node) -> list:
        """The values of a node's inputs, in order."""
        return [self.value(i) for i in node.inputs]

    def shape(self, name: str) -> tuple:
        return self.g.types[name].shape

    def convert_nodes(self, before=None) -> None:
        """Every node through its converter, in graph order; the results bound to the node's outputs. before(node),
        when given, runs ahead of each node's converter (e.g. to rebind an input)."""
        for node in self.g.nodes:
            if before is not None:
                before(node)
            outs = self.converters[node.op](self, node)
            for o, v in zip(node.outputs, outs):
                self.env[o] = v
