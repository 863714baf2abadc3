"""``e2e-moving@1`` after a refactor: its input class moved to this module and was renamed;
the fields are the same, so a worker serving it registers the same version."""

from __future__ import annotations

import attrs

import aiki


@attrs.frozen
class Shipment:
    key: str
    weight: int


@aiki.task
async def weigh(parcel: Shipment) -> str:
    return f"{parcel.key}: {parcel.weight}"


moving = aiki.workflow("e2e-moving")


@moving.version("1")
async def moving_flow(run: aiki.Run[str], parcel: Shipment) -> str:
    return await weigh.start(run, parcel)


worker = aiki.Worker(moving_flow, concurrency=1)
