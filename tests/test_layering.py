"""The dependency rule ``actors <- transport <- aiki``, checked by parsing every import."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

ALLOWED_THIRD_PARTY = {
    "actors": {"trio", "attrs"},
    "transport": None,  # any third-party library; the check below forbids `aiki`
    "aiki": None,
}
FORBIDDEN_FIRST_PARTY = {
    "actors": {"transport", "aiki"},
    "transport": {"aiki"},
    "aiki": set(),
}
CLIENT_LIBRARIES = {"psycopg", "psycopg_pool", "redis"}
"""Only `transport` talks to PostgreSQL and Redis."""


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name.split(".")[0]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def _violations(package: str) -> list[str]:
    problems = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, module in _imports(path):
            where = f"{path.relative_to(ROOT)}:{line} imports {module}"
            if module in FORBIDDEN_FIRST_PARTY[package]:
                problems.append(where)
            elif module in CLIENT_LIBRARIES and package != "transport":
                problems.append(where + " (only transport/ may use client libraries)")
            elif (
                (allowed := ALLOWED_THIRD_PARTY[package]) is not None
                and module not in sys.stdlib_module_names
                and module != package
                and module not in allowed
            ):
                problems.append(where + f" (allowed: stdlib, {', '.join(sorted(allowed))})")
    return problems


@pytest.mark.parametrize("package", ["actors", "transport", "aiki"])
def test_package_respects_the_dependency_rule(package: str) -> None:
    """actors: stdlib/trio/attrs only; transport never imports aiki; clients stay in transport."""
    assert _violations(package) == []


def test_the_checker_catches_a_violation(tmp_path: Path) -> None:
    """The parser sees both import forms, so a real violation could not slip through."""
    sample = tmp_path / "sample.py"
    sample.write_text("import transport.codec\nfrom aiki import errors\nfrom . import sibling\n")
    assert [module for _, module in _imports(sample)] == ["transport", "aiki"]
