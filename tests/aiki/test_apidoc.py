"""docs/api.md is generated from the protocol's operation declarations and kept current."""

from __future__ import annotations

from aiki.protocol import OPERATIONS
from aiki.protocol._apidoc import render
from tests._processes import ROOT


def test_the_api_reference_is_current_and_covers_every_operation() -> None:
    """The committed reference equals a fresh rendering; every operation and its callers
    are in it."""
    text = render()
    assert (ROOT / "docs" / "api.md").read_text() == text, (
        "docs/api.md is stale: run `python -m aiki.protocol._apidoc > docs/api.md`"
    )
    for operation in OPERATIONS:
        assert f"## `{operation.name}`" in text
    assert "WebSocket session only" in text  # subscribe / unsubscribe
    assert "callers: `worker`" in text
