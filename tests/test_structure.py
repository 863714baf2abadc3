"""Private names stay in their module: no ``_name`` is imported from another module of
``aiki/``, or read off one imported as a module.

The rest of the structure (the layering, import cycles, private modules staying in their
package) is import-linter's: see ``[tool.importlinter]`` in ``pyproject.toml``, run by
``.ci/run``. It works on modules, not names, hence this one check.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _violations(name: str, package: str, tree: ast.Module, modules: set[str]) -> list[str]:
    """Where module ``name`` (in ``package``) uses another module's private names."""
    problems = []
    imported_modules: dict[str, str] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package.split(".")
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        if not target.startswith("aiki"):
            continue
        for alias in node.names:
            if f"{target}.{alias.name}" in modules:
                imported_modules[alias.asname or alias.name] = f"{target}.{alias.name}"
            elif _private(alias.name):
                problems.append(
                    f"{name}:{node.lineno} imports {target}.{alias.name}, a private name"
                )
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in imported_modules and _private(node.attr)):  # fmt: skip
            owner = imported_modules[node.value.id]
            problems.append(f"{name}:{node.lineno} reads {owner}.{node.attr}")
    return problems


def _tree_violations() -> list[str]:
    found = {}
    for path in sorted((ROOT / "aiki").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        package = name if is_package else name.rpartition(".")[0]
        found[name] = (package, ast.parse(path.read_text(), filename=str(path)))
    modules = set(found)
    return [problem for name, (package, tree) in found.items()
            for problem in _violations(name, package, tree, modules)]  # fmt: skip


def test_no_private_names_are_imported_or_read_across_modules() -> None:
    assert _tree_violations() == []


def test_the_check_catches_a_private_import_and_a_private_read() -> None:
    source = (
        "from .. import _committer\n"
        "from ..runs import _helper\n"
        "from ..runs import public\n"
        "def f():\n"
        "    return _committer._transact, _committer.__doc__\n"
    )
    modules = {"aiki.server._committer", "aiki.server.runs"}
    assert _violations(
        "aiki.server.operations.x", "aiki.server.operations", ast.parse(source), modules
    ) == [
        "aiki.server.operations.x:2 imports aiki.server.runs._helper, a private name",
        "aiki.server.operations.x:5 reads aiki.server._committer._transact",
    ]
