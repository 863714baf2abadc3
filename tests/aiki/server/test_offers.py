"""Eager dispatch: a slot a worker offers takes the next start of a run it serves, claimed
in the start's own transaction; an offer that ends unused answers with nothing; a claim
whose offer was withdrawn meanwhile is given back at once."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable

import psycopg
import pytest
import trio

import aiki
from aiki.client import SessionConnection
from aiki.protocol import (
    MAX_MESSAGE_BYTES,
    ClaimedRuns,
    ClaimRun,
    OfferSlot,
    RegisterWorker,
    RunClaimed,
    ServedQueue,
    TransitionRun,
    VersionSpec,
    session_url,
)
from tests._deadline import deadline
from tests._waiting import wait_until
from transport.websocket import open_websocket

from .conftest import ORDER_SCHEMA, Api, bearer

ORDER = {"id": "o-1", "quantity": 2}


@contextlib.asynccontextmanager
async def _worker(api: Api, worker_id: str, workflow: str) -> AsyncIterator[SessionConnection]:
    """A registered worker's session (closed when the block ends)."""
    version = VersionSpec(workflow=workflow, version="1.0", input_schema=ORDER_SCHEMA)
    async with (
        open_websocket(session_url(api.url), max_message_bytes=MAX_MESSAGE_BYTES,
                       headers=bearer(api.keys["worker"])) as websocket,
        trio.open_nursery() as nursery,
    ):  # fmt: skip
        session = SessionConnection(websocket, api.url)
        nursery.start_soon(session.read)
        await session.call(RegisterWorker(worker_id=worker_id, versions=(version,), concurrency=4))
        yield session
        await websocket.aclose()
        nursery.cancel_scope.cancel()


async def _gauge(api: Api, name: str) -> float:
    text = (await api.http.get(f"{api.url}/metrics")).text
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert found is not None, name
    return float(found.group(1))


def _offer(workflow: str, worker_id: str = "w1", wait_seconds: float = 30.0) -> OfferSlot:
    return OfferSlot(worker_id=worker_id, queues=(ServedQueue(workflow=workflow, version="1.0"),),
                     wait_seconds=wait_seconds)  # fmt: skip


async def _open_offer(
    api: Api, session: SessionConnection, nursery: trio.Nursery, request: OfferSlot
) -> Callable[[], Awaitable[ClaimedRuns]]:
    """Send ``request`` in the background and wait until the server holds it open; the
    function returned waits for its answer."""
    answers: list[ClaimedRuns] = []
    answered = trio.Event()

    async def offer() -> None:
        answers.append(await session.call(request))
        answered.set()

    nursery.start_soon(offer)
    with trio.fail_after(10):
        await wait_until(lambda: _is(api, "aiki_offers_open", 1.0))

    async def answer() -> ClaimedRuns:
        with trio.fail_after(10):
            await answered.wait()
        return answers[0]

    return answer


def _rows(pg_url: str, sql: str, params: tuple[object, ...]) -> list[tuple[object, ...]]:
    with psycopg.connect(pg_url) as connection:
        return connection.execute(sql, params).fetchall()


async def _history(pg_url: str, run_id: str) -> list[tuple[object, ...]]:
    """(to_status, revision, reason) of each of the run's transitions."""
    return await trio.to_thread.run_sync(
        _rows, pg_url,
        "SELECT to_status, revision, reason FROM aiki_transitions WHERE run_id = %s ORDER BY id",
        (run_id,),
    )  # fmt: skip


@deadline(60)
async def test_an_offered_slot_takes_the_next_start_claimed_in_its_transaction(
    api: Api, workflow: str, pg_url: str
) -> None:
    """The start's reply shows the run running at revision 2; the offer's answer is that
    claim; the run has no outbox row; the worker completes it with that revision."""
    async with _worker(api, "w1", workflow) as session, trio.open_nursery() as nursery:
        answer = await _open_offer(api, session, nursery, _offer(workflow))
        started = await api.ok("start_run", {"workflow": workflow, "version": "1.0",
                                             "input": ORDER})  # fmt: skip
        run = started["run"]
        assert (run["status"], run["revision"]) == ("running", 2)  # type: ignore[index]
        (claim,) = (await answer()).claims
        assert (claim.run.id, claim.run.revision) == (run["id"], 2)  # type: ignore[index]
        assert await _is(api, "aiki_offers_open", 0.0)
        outbox = await trio.to_thread.run_sync(
            _rows, pg_url, "SELECT count(*) FROM aiki_outbox WHERE run_id = %s", (claim.run.id,)
        )
        assert outbox == [(0,)]
        done = await session.call(TransitionRun(run_id=claim.run.id, revision=2,
                                                status="completed", output=7))  # fmt: skip
        assert done.status == "completed"
    assert await _history(pg_url, claim.run.id) == [
        ("queued", 1, "started"), ("running", 2, "claimed at start"),
        ("completed", 3, None)]  # fmt: skip


@deadline(60)
async def test_an_offer_ends_unused_and_a_start_of_another_queue_is_queued(
    api: Api, workflow: str
) -> None:
    """An offer for another workflow is not taken; after its wait it answers with nothing."""
    async with _worker(api, "w1", workflow) as session, trio.open_nursery() as nursery:
        other = _offer(f"{workflow}-other", wait_seconds=1.0)
        answer = await _open_offer(api, session, nursery, other)
        started = await api.ok("start_run", {"workflow": workflow, "version": "1.0",
                                             "input": ORDER})  # fmt: skip
        assert started["run"]["status"] == "queued"  # type: ignore[index]
        assert (await answer()).claims == ()
        assert await _is(api, "aiki_offers_open", 0.0)


@deadline(60)
async def test_a_claim_whose_offer_was_withdrawn_is_given_back_at_once(
    api: Api, workflow: str, pg_url: str
) -> None:
    """The offer is taken, then its worker's session closes while the start's transaction
    waits (held on a lock): the run is queued again at once (reason ``offered slot
    withdrawn``), not left to the claim timeout, and another worker can claim it."""
    holder = await trio.to_thread.run_sync(psycopg.connect, pg_url)
    try:
        async with trio.open_nursery() as nursery:
            async with _worker(api, "w1", workflow) as session:

                async def offer() -> None:
                    with pytest.raises(aiki.UnavailableError, match="dropped"):
                        await session.call(_offer(workflow))  # its session is closed below

                nursery.start_soon(offer)
                with trio.fail_after(10):
                    await wait_until(lambda: _is(api, "aiki_offers_open", 1.0))
                # The start's transaction will wait for this lock (it records history).
                await trio.to_thread.run_sync(
                    holder.execute, "LOCK TABLE aiki_transitions IN SHARE MODE"
                )
                replies: list[dict[str, object]] = []
                replied = trio.Event()

                async def start() -> None:
                    replies.append(await api.ok("start_run", {
                        "workflow": workflow, "version": "1.0", "input": ORDER}))  # fmt: skip
                    replied.set()

                nursery.start_soon(start)
                with trio.fail_after(10):  # taken; it cannot commit while the lock is held
                    await wait_until(lambda: _is(api, "aiki_offers_open", 0.0))
            # The worker's session is closed: wait until the server let it go.
            with trio.fail_after(10):
                await wait_until(lambda: _is(api, "aiki_websocket_sessions", 0.0))
            await trio.to_thread.run_sync(holder.rollback)
            with trio.fail_after(10):
                await replied.wait()
        run_id = str(replies[0]["run"]["id"])  # type: ignore[index]
        with trio.fail_after(10):
            await wait_until(lambda: _has_reason(pg_url, run_id, "offered slot withdrawn"))
        assert await _history(pg_url, run_id) == [
            ("queued", 1, "started"), ("running", 2, "claimed at start"),
            ("queued", 3, "offered slot withdrawn")]  # fmt: skip
        async with _worker(api, "w2", workflow) as other:
            claimed = await other.call(ClaimRun(run_id=run_id, worker_id="w2"))
        assert isinstance(claimed, RunClaimed)
        assert claimed.run.revision == 4
    finally:
        with trio.move_on_after(5, shield=True):
            await trio.to_thread.run_sync(holder.close)


@deadline(30)
async def test_an_offer_out_of_bounds_is_refused_naming_the_field(api: Api, workflow: str) -> None:
    """Offers are held open for at most a minute and name at least one queue."""
    queues = (ServedQueue(workflow=workflow, version="1.0"),)
    async with _worker(api, "w1", workflow) as session:
        for wrong, field in [(_offer(workflow, wait_seconds=0.0), "wait_seconds"),
                             (_offer(workflow, wait_seconds=61.0), "wait_seconds"),
                             (OfferSlot(worker_id="w1", queues=(), wait_seconds=1.0), "queues"),
                             (OfferSlot(worker_id="w1", queues=queues * 1001, wait_seconds=1.0),
                              "queues")]:  # fmt: skip
            with pytest.raises(aiki.BadRequestError, match=field):
                await session.call(wrong)


async def _is(api: Api, gauge: str, value: float) -> bool:
    return await _gauge(api, gauge) == value


async def _has_reason(pg_url: str, run_id: str, reason: str) -> bool:
    return reason in [row[2] for row in await _history(pg_url, run_id)]
