"""The shape of ``aiki/``, checked by parsing every import (like the layering test).

- No import cycles between its modules (imports under ``if TYPE_CHECKING:`` are for the
  type checker only and do not count; imports inside functions do).
- No ``_private`` name is imported from another module, or read off an imported module.
- A package's private modules (``aiki/client/_session.py``) are imported only from inside
  that package; everyone else goes through the package (``from ..client import ...``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import attrs

ROOT = Path(__file__).resolve().parent.parent


@attrs.frozen
class Module:
    """One module of the tree: its dotted name, whether it is a package, and its source."""

    name: str
    is_package: bool
    tree: ast.Module

    @property
    def package(self) -> str:
        """The package it belongs to (itself, for a package's ``__init__``)."""
        return self.name if self.is_package else self.name.rpartition(".")[0]


@attrs.frozen
class Import:
    """``from <module> import <names>`` (or ``import <module>``) on ``line``."""

    line: int
    module: str
    names: tuple[str, ...]


def _modules(top: str) -> dict[str, Module]:
    found = {}
    for path in sorted((ROOT / top).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        name = ".".join(parts)
        found[name] = Module(name, is_package, ast.parse(path.read_text(), filename=str(path)))
    return found


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(node: ast.AST) -> list[ast.AST]:
    """Every node under ``node`` except inside ``if TYPE_CHECKING:`` blocks."""
    found: list[ast.AST] = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _type_checking_only(child):
            for other in child.orelse:
                found += [other, *_runtime_nodes(other)]
            continue
        found += [child, *_runtime_nodes(child)]
    return found


def _imports(module: Module, *, runtime_only: bool) -> list[Import]:
    nodes = _runtime_nodes(module.tree) if runtime_only else list(ast.walk(module.tree))
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [Import(node.lineno, alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append(Import(node.lineno, target, tuple(a.name for a in node.names)))
    return found


def _edges(modules: dict[str, Module], module: Module) -> set[str]:
    """The modules of the tree ``module`` imports at run time."""
    edges = set()
    for found in _imports(module, runtime_only=True):
        submodules = [f"{found.module}.{name}" for name in found.names]
        edges |= {name for name in submodules if name in modules}
        if found.module in modules and not all(name in modules for name in submodules):
            edges.add(found.module)
    edges.discard(module.name)
    return edges


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
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
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def _privacy_violations(modules: dict[str, Module]) -> list[str]:
    problems = []
    for module in modules.values():
        imported_modules: dict[str, str] = {}
        for found in _imports(module, runtime_only=False):
            if not found.module.startswith("aiki"):
                continue
            where = f"{module.name}:{found.line}"
            target = modules.get(found.module)
            if target is not None and not _may_import(module, target):
                problems.append(f"{where} imports private module {target.name}")
            for name in found.names:
                submodule = modules.get(f"{found.module}.{name}")
                if submodule is not None:
                    imported_modules[name] = submodule.name
                    if not _may_import(module, submodule):
                        problems.append(f"{where} imports private module {submodule.name}")
                elif name.startswith("_") and not name.startswith("__"):
                    problems.append(f"{where} imports {found.module}.{name}, a private name")
        for node in ast.walk(module.tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in imported_modules
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                owner = imported_modules[node.value.id]
                problems.append(f"{module.name}:{node.lineno} reads {owner}.{node.attr}")
    return problems


def _may_import(importer: Module, target: Module) -> bool:
    """A private module (one whose own name starts with ``_``) is for its own package and
    the packages inside it."""
    if not target.name.rpartition(".")[2].startswith("_") or target.is_package:
        return True
    owner = target.package
    return importer.name == owner or importer.name.startswith(owner + ".")


def test_aiki_has_no_import_cycles() -> None:
    """The run-time import graph of aiki/ is acyclic."""
    modules = _modules("aiki")
    graph = {name: _edges(modules, module) for name, module in modules.items()}
    assert _cycles(graph) == []


def test_no_private_names_or_modules_are_imported_across_packages() -> None:
    """Private names stay in their module; private modules stay in their package."""
    assert _privacy_violations(_modules("aiki")) == []


def test_the_checks_catch_a_cycle_and_a_private_import() -> None:
    """The parsers see what they look for, so a violation could not slip through."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    source = (
        "from typing import TYPE_CHECKING\n"
        "from ...client._session import ClientSession\n"
        "from .. import _committer\n"
        "from ..runs import _helper\n"
        "if TYPE_CHECKING:\n"
        "    from ...sdk import Run\n"
        "def f():\n"
        "    from ...protocol import OPERATIONS\n"
        "    return _committer._transact\n"
    )
    packages = ["aiki.client", "aiki.sdk", "aiki.protocol", "aiki.server", "aiki.server.operations"]
    plain = ["aiki.client._session", "aiki.server._committer", "aiki.server.runs"]
    modules = {name: Module(name, name in packages, ast.parse("")) for name in packages + plain}
    checked = Module("aiki.server.operations.x", False, ast.parse(source))
    modules[checked.name] = checked
    runtime = {found.module for found in _imports(checked, runtime_only=True)}
    assert "aiki.sdk" not in runtime
    assert "aiki.protocol" in runtime
    assert _edges(modules, checked) == {
        "aiki.client._session",
        "aiki.server._committer",
        "aiki.server.runs",
        "aiki.protocol",
    }
    assert _privacy_violations(modules) == [
        "aiki.server.operations.x:2 imports private module aiki.client._session",
        "aiki.server.operations.x:4 imports aiki.server.runs._helper, a private name",
        "aiki.server.operations.x:9 reads aiki.server._committer._transact",
    ]
