"""``e2e-moving@1`` with a field's type changed (``weight: str``): another schema, refused
under the same version."""

from __future__ import annotations

import attrs

import aiki


@attrs.frozen
class Parcel:
    key: str
    weight: str


@aiki.task
async def weigh(parcel: Parcel) -> str:
    return f"{parcel.key}: {parcel.weight}"


moving = aiki.workflow("e2e-moving")


@moving.version("1")
async def moving_flow(run: aiki.Run[str], parcel: Parcel) -> str:
    return await weigh.start(run, parcel)


worker = aiki.Worker(moving_flow, concurrency=1)
