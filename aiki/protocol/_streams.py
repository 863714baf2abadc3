"""Names shared by the server (which publishes) and workers (which consume)."""

from __future__ import annotations

from typing import Final

import attrs

from transport import WireCodec

GROUP: Final = "aiki-workers"
"""The consumer group every worker reads run streams through."""


def stream_for(namespace: str, workflow: str, version: str, pool: str | None) -> str:
    """The Redis stream that carries queued runs of one workflow version (and pool) in one
    namespace: ``aiki:runs:<namespace>/<workflow>@<version>[#<pool>]`` (a namespace name
    has no ``/``, so the key names one stream only)."""
    base = f"aiki:runs:{namespace}/{workflow}@{version}"
    return base if pool is None else f"{base}#{pool}"


@attrs.frozen(kw_only=True)
class QueuedRun:
    """A stream entry: this run is queued at this revision; claim it through the server."""

    run_id: str
    revision: int


QUEUED_RUN: Final = WireCodec[QueuedRun](QueuedRun)
