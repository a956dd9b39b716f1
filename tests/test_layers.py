"""Imports point down: no import cycle between lowbit's modules, and every import between packages is an
edge the layer table of docs/DESIGN.md allows.

The walk reads every import statement of compiler/, hwsim/, rtl/ and runtime/ with `ast` (module level and
inside functions alike, since a function-level import is a dependency too; `if TYPE_CHECKING:` blocks are
skipped), resolves relative imports, and maps `from pkg import name` to the module `pkg.name` when that
is a module. Each module belongs to the first unit of the table whose pattern matches it.
"""

from __future__ import annotations

import ast
import re
from fnmatch import fnmatch
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("compiler", "hwsim", "rtl", "runtime")
DESIGN = ROOT / "docs" / "DESIGN.md"


def module_files(root: Path = ROOT) -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in sorted((root / pkg).rglob("*.py")):
            parts = list(f.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = f
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module -> the lowbit modules it imports."""
    files = module_files(root)
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, f in files.items():
        is_pkg = f.name == "__init__.py"
        for node in _imports(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    pkg = pkg[: len(pkg) - (node.level - 1)]
                    base = ".".join(pkg + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for t in targets:
                while t and t not in files:  # `import compiler.quant.spec` with an attribute path: its module
                    t = t.rpartition(".")[0]
                if t and t != mod and t.split(".")[0] in PACKAGES:
                    graph[mod].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def layer_table(text: str) -> list[tuple[str, list[str], set[str]]]:
    """(unit, module patterns, units it may import) from the table under '## Layers' in DESIGN.md."""
    sec = text.split("## Layers", 1)[1]
    rows = []
    for line in sec.splitlines()[1:]:
        if line.startswith("## "):
            break
        if not line.startswith("|") or set(line) <= set("|- "):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "unit":
            continue
        unit, modules, may = cells[0].strip("`"), cells[1], cells[2]
        pats = re.findall(r"`([^`]+)`", modules)
        allowed = set(re.findall(r"`([^`]+)`", may))
        rows.append((unit, pats, allowed))
    return rows


def unit_of(mod: str, table) -> str | None:
    for unit, pats, _ in table:
        if any(fnmatch(mod, p) for p in pats):
            return unit
    return None


def forbidden_edges(graph, table) -> list[str]:
    allowed = {u: a for u, _, a in table}
    bad = []
    for mod in sorted(graph):
        u = unit_of(mod, table)
        if u is None:
            bad.append(f"{mod}: in no unit of the table")
            continue
        for dep in sorted(graph[mod]):
            v = unit_of(dep, table)
            if v != u and v not in allowed[u]:
                bad.append(f"{mod} ({u}) imports {dep} ({v})")
    return bad


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_imports_follow_the_layer_table():
    table = layer_table(DESIGN.read_text())
    assert table, "docs/DESIGN.md has no layer table"
    bad = forbidden_edges(import_graph(), table)
    assert not bad, "imports outside docs/DESIGN.md's layer table:\n" + "\n".join(bad)


def test_units_only_name_known_units():
    table = layer_table(DESIGN.read_text())
    units = {u for u, _, _ in table}
    for u, _, allowed in table:
        assert allowed <= units, f"unit {u} may import unknown units {allowed - units}"


@pytest.fixture
def tree_copy(tmp_path):
    """A copy of the four packages to add an import to."""
    import shutil

    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.so", "reports"))
    return tmp_path


@pytest.mark.parametrize(
    "module, line",
    [
        ("hwsim/memory.py", "from runtime.model import CompiledModel\n"),  # hwsim must not import runtime
        ("compiler/ir.py", "def _late():\n    from compiler.backends.tvm import build\n"),  # a function-level import counts
        ("rtl/synth.py", "from compiler.frontend import load_model\n"),  # rtl takes shapes, not models
    ],
)
def test_a_forbidden_import_fails(tree_copy, module, line):
    f = tree_copy / module
    f.write_text(f.read_text() + "\n" + line)
    table = layer_table(DESIGN.read_text())
    assert forbidden_edges(import_graph(tree_copy), table)


def test_a_cycle_fails(tree_copy):
    (tree_copy / "compiler" / "errors.py").write_text((tree_copy / "compiler" / "errors.py").read_text() + "\nfrom compiler import knobs\n")
    assert any("compiler.errors" in c for c in cycles(import_graph(tree_copy)))
