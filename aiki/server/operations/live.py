"""Live updates: subscribe a WebSocket session to run changes, and unsubscribe it.

A subscription lives on the session that made it (`Caller.session`); its updates are
pushed there by the broadcaster, starting right after the reply. Both operations are
session-only (declared so in the protocol): the carriers refuse them over HTTP.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from ...errors import BadRequestError, NotFoundError
from ...protocol import SUBSCRIBE, UNSUBSCRIBE, Subscribe, Subscribed, Unsubscribe, Unsubscribed
from ._handlers import Handlers

if TYPE_CHECKING:
    from ._services import Caller, Services

SESSION_SUBSCRIPTIONS: Final = 64
"""Subscriptions one WebSocket session may hold at once."""


def _check(request: Subscribe) -> None:
    if request.after_revision is not None and (not request.run_ids or request.after_revision < 0):
        raise BadRequestError("after_revision (>= 0) needs run_ids",
                              errors=("@ $.after_revision",))  # fmt: skip
    if request.version is not None and request.workflow is None:
        raise BadRequestError("version needs workflow", errors=("@ $.version",))


async def subscribe(services: Services, request: Subscribe, caller: Caller) -> Subscribed:
    """Subscribe the caller's session; with ``run_ids``, reply with those runs as they are
    once the subscription is in place (or replay their changes after a revision)."""
    session = caller.session
    if session is None:
        raise BadRequestError("subscribe works only over the WebSocket session")
    _check(request)
    if session.subscription_count >= SESSION_SUBSCRIPTIONS:
        raise BadRequestError(f"at most {SESSION_SUBSCRIPTIONS} subscriptions per session")
    subscriptions = services.subscriptions
    subscriber = await subscriptions.add(request, caller.scope.namespace)
    try:
        # Read after registering: every change from here on is pushed (no gap).
        found = await services.transact(caller, lambda scoped: scoped.runs_by_id(request.run_ids))
        missing = [run_id for run_id in request.run_ids if run_id not in found]
        if missing:
            raise NotFoundError(f"no run {', '.join(missing[:5])}")
        if request.after_revision is not None:
            after = request.after_revision
            past = await services.transact(
                caller, lambda scoped: scoped.changes_after(request.run_ids, after)
            )
            subscriber.replay([update for update in past if subscriber.matches(update)])
        else:
            subscriber.skip_through({run.id: run.revision for run in found.values()})
    except BaseException:
        subscriptions.remove(subscriber.id)
        raise
    caller.follow(subscriber)
    return Subscribed(subscription=subscriber.id,
                      runs=tuple(found[run_id] for run_id in request.run_ids))  # fmt: skip


async def unsubscribe(services: Services, request: Unsubscribe, caller: Caller) -> Unsubscribed:
    """End one of the caller session's subscriptions (already gone: nothing to do)."""
    if caller.session is not None:
        caller.session.unfollow(request.subscription)
    return Unsubscribed(subscription=request.subscription)


HANDLERS: Final = Handlers().on(SUBSCRIBE, subscribe).on(UNSUBSCRIBE, unsubscribe)
"""The handlers of live updates."""
