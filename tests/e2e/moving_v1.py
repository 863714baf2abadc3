"""``e2e-moving@1`` as first deployed: its input class ``Parcel`` lives here."""

from __future__ import annotations

import attrs

import aiki


@attrs.frozen
class Parcel:
    key: str
    weight: int


@aiki.task
async def weigh(parcel: Parcel) -> str:
    return f"{parcel.key}: {parcel.weight}"


moving = aiki.workflow("e2e-moving")


@moving.version("1")
async def moving_flow(run: aiki.Run[str], parcel: Parcel) -> str:
    return await weigh.start(run, parcel)


worker = aiki.Worker(moving_flow, concurrency=1)
