"""The docs describe what is, in the project's own terms: no pointers to files outside the
repository, no "issue N" (a reader of the docs has no issue tracker), and the docstrings
say how waiting works as it does now."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SOURCES = sorted(path for package in ("aiki", "actors", "transport", "examples")
                 for path in (ROOT / package).rglob("*.py"))  # fmt: skip


@pytest.mark.parametrize("path", [*DOCS, *SOURCES], ids=lambda path: str(path.relative_to(ROOT)))
def test_no_references_outside_the_project(path: Path) -> None:
    text = path.read_text()
    assert not re.search(r"\.\./shared|\bissues? \d+", text, flags=re.I), (
        f"{path.relative_to(ROOT)} refers to files outside the repository or to issue numbers"
    )


def test_the_clients_docstring_says_waiting_is_pushed() -> None:
    import aiki.client._client as client

    doc = client.__doc__ or ""
    assert "always over HTTP" not in doc
    assert "pushes over a WebSocket" in doc
