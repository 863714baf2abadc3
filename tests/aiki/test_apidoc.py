"""docs/api.md is generated from the protocol classes and kept current."""

from __future__ import annotations

from aiki import _apidoc
from aiki._operation_table import OPERATIONS
from tests._processes import ROOT


def test_the_api_reference_is_current_and_covers_every_operation() -> None:
    text = _apidoc.render()
    assert (ROOT / "docs" / "api.md").read_text() == text, (
        "docs/api.md is stale: run `python -m aiki._apidoc > docs/api.md`"
    )
    for name in OPERATIONS:
        assert f"## `{name}`" in text
    assert "WebSocket session only" in text  # subscribe / unsubscribe
