"""Workflows and their versions.

::

    orders = aiki.workflow("order-processing")

    @orders.version("1.0.0", retry=aiki.retry.exponential(3))
    async def process_order(run: aiki.Run[Order], order: Order) -> Receipt:
        charge_id = await charge.start(run, order)
        return Receipt(order_id=order.id, charge_id=charge_id)

    handle = await process_order.start(client, Order(...))
    result = await handle.wait_for_status("completed")

A run is pinned to the version it was started with; workers serve the versions they
register, so a run is never executed by another version's code.
"""

from __future__ import annotations

import copy
import inspect
import typing
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Generic, TypeVar

from ..protocol import (
    ConcurrencyLimit,
    ConflictPolicy,
    GetRun,
    StartOptions,
    StartRun,
    VersionSpec,
    limits_problems,
)
from ..retry import NEVER, RetryPolicy
from ._event import EventDefinition, bind_events
from ._payload import PayloadType, declared_output
from ._steps import Step

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from ..client import Client, RunHandle
    from ..trigger import Trigger
    from ._children import ChildRun
    from ._run_context import Run

I = TypeVar("I")
O = TypeVar("O")

Handler = Callable[["Run[I]", I], Awaitable[O]]

_UNSET: typing.Any = object()


def _handler_types(handler: Callable[..., object], what: str) -> tuple[object, object]:
    parameters = list(inspect.signature(handler).parameters.values())
    if not 1 <= len(parameters) <= 2:
        raise TypeError(
            f"{what}: a handler takes (run) or (run, input), got {len(parameters)} parameters"
        )
    if not inspect.iscoroutinefunction(handler):
        raise TypeError(f"{what}: the handler must be an async function")
    hints = typing.get_type_hints(handler)
    input_type: object = None
    if len(parameters) == 2:
        name = parameters[1].name
        if name not in hints:
            raise TypeError(f"{what}: annotate the input parameter {name!r} with its type")
        input_type = hints[name]
    return input_type, declared_output(hints, what)


class WorkflowVersion(Generic[I, O]):
    """One version of a workflow: its handler, types, retry policy and start options."""

    def __init__(
        self,
        workflow: str,
        version: str,
        handler: Callable[..., Awaitable[O]],
        *,
        retry: RetryPolicy = NEVER,
        events: Mapping[str, EventDefinition[typing.Any]] | None = None,
        timeout_seconds: float | None = None,
        options: StartOptions | None = None,
        limits: Sequence[ConcurrencyLimit] = (),
    ) -> None:
        self.workflow = workflow
        self.version = version
        self.handler = handler
        self.retry = retry
        self.limits = tuple(limits)
        if problems := limits_problems([(f"{workflow}@{version}", self.limits)]):
            raise ValueError(f"concurrency limits of {workflow}@{version}: {problems[0]}")
        self.events = bind_events(events or {}, f"{workflow}@{version}")
        self.options = options or StartOptions(timeout_seconds=timeout_seconds)
        self.takes_input = len(inspect.signature(handler).parameters) == 2
        input_type, output_type = _handler_types(handler, f"{workflow}@{version}")
        self.input_type: PayloadType[I] = PayloadType(input_type, f"input of {workflow}@{version}")
        self.output_type: PayloadType[O] = PayloadType(
            output_type, f"output of {workflow}@{version}"
        )

    def __repr__(self) -> str:
        return f"<aiki workflow version {self.workflow}@{self.version}>"

    def with_(
        self,
        *,
        reference_id: str | None = _UNSET,
        conflict: ConflictPolicy = _UNSET,
        pool: str | None = _UNSET,
        retry: RetryPolicy | None = _UNSET,
        trigger: Trigger | None = _UNSET,
        timeout_seconds: float | None = _UNSET,
        priority: int | None = _UNSET,
        fairness_key: str | None = _UNSET,
        fairness_weight: int | None = _UNSET,
    ) -> WorkflowVersion[I, O]:
        """A copy whose starts use these options.

        Args:
            reference_id: makes the start idempotent: a second start with the same
                reference ID returns the existing run.
            conflict: with a known reference ID, ``"error"`` (default) raises
                `aiki.ReferenceConflictError` if the input differs;
                ``"return_existing"`` returns the existing run regardless.
            pool: route the run to workers serving this pool.
            retry: override this version's retry policy for the run.
            trigger: start ``scheduled`` and queue later (`aiki.trigger.after` / ``at``).
            timeout_seconds: fail the run if it has not ended this long after its start.
            priority: 0 (lowest) to 4 (highest; default 2, or a parent's): a run waiting
                at the gate goes before every waiting run of a lower level.
            fairness_key: who the run is for (a tenant): runs waiting at the gate are
                let through across fairness keys in proportion to their weights.
            fairness_weight: the fairness key's share (1 to 1000; default 1).
        """
        current = self.options
        options = StartOptions(
            reference_id=current.reference_id if reference_id is _UNSET else reference_id,
            conflict=current.conflict if conflict is _UNSET else conflict,
            pool=current.pool if pool is _UNSET else pool,
            retry=current.retry if retry is _UNSET else retry,
            start_delay_seconds=(
                current.start_delay_seconds
                if trigger is _UNSET
                else trigger.delay_seconds
                if trigger
                else None
            ),
            start_at=(current.start_at if trigger is _UNSET else trigger.at if trigger else None),
            timeout_seconds=(
                current.timeout_seconds if timeout_seconds is _UNSET else timeout_seconds
            ),
            priority=current.priority if priority is _UNSET else priority,
            fairness_key=current.fairness_key if fairness_key is _UNSET else fairness_key,
            fairness_weight=(
                current.fairness_weight if fairness_weight is _UNSET else fairness_weight
            ),
        )
        # A shallow copy: the handler's types were derived once, at declaration (deriving
        # them again, per start, cost more than the start's own request).
        clone = copy.copy(self)
        clone.options = options
        return clone

    async def start(self, client: Client, input: I = None) -> RunHandle[O]:  # type: ignore[assignment]
        """Start a run of this version and return its handle.

        The input is validated against the declared type here, before anything is sent.

        Raises:
            aiki.ValidationError: ``input`` does not fit the declared type (nothing stored).
            aiki.WorkflowNotFoundError: no worker has registered this version yet.
            aiki.ReferenceConflictError: the reference ID exists with another input.
            aiki.UnavailableError: the server cannot be reached (retry later).
        """
        request = StartRun(
            workflow=self.workflow,
            version=self.version,
            input=self.input_type.to_json(input),
            options=self.options,
        )
        started = await client.start_run(request)
        return client.handle(started.run.id, self, info=started.run)

    def start_as_child(self, run: Run[typing.Any], input: I = None) -> Step[ChildRun[O]]:  # type: ignore[assignment]
        """Start a run of this version as a child of ``run`` (inside a workflow handler).

        On replay the same child is returned, matched by its reference ID (``with_``) or
        by its input; the conflict policy applies as for `start`. Wait for it with
        ``await child.wait_for_status("completed")``: the parent is suspended meanwhile.
        Cancelling the parent cancels its children.

        Raises:
            aiki.WorkflowNotFoundError: no worker has registered this version (in the run's
                namespace); uncaught, it fails the parent.
            aiki.ValidationError: ``input`` does not fit the version's input type.
        """
        label = f"{self.workflow}@{self.version}.start_as_child(run, ...)"
        return Step(run._start_child(self, input, self.options), label, run._unawaited, 1)

    def get_handle(self, client: Client, run_id: str) -> RunHandle[O]:
        """A handle on an existing run of this version (no request is made)."""
        return client.handle(run_id, self)

    async def get_handle_by_reference(self, client: Client, reference_id: str) -> RunHandle[O]:
        """The handle of the run of this version started with ``reference_id``.

        Raises:
            aiki.RunNotFoundError: there is none.
        """
        info = await client.get_run(
            GetRun(workflow=self.workflow, version=self.version, reference_id=reference_id)
        )
        return client.handle(info.id, self, info=info)

    def spec(self) -> VersionSpec:
        """What a worker registers for this version (with the input's JSON Schema)."""
        return VersionSpec(
            workflow=self.workflow,
            version=self.version,
            input_schema=self.input_type.schema(),
            event_schemas={name: ev.payload.schema() for name, ev in self.events.items()},
            limits=self.limits,
        )


class Workflow:
    """A named workflow; add versions with `Workflow.version`."""

    def __init__(self, name: str) -> None:
        if not name or any(character in name for character in "@#\n"):
            raise ValueError(f"invalid workflow name {name!r} (no '@', '#' or newlines)")
        self.name = name
        self.versions: dict[str, WorkflowVersion[typing.Any, typing.Any]] = {}

    def version(
        self,
        version: str,
        *,
        retry: RetryPolicy = NEVER,
        events: Mapping[str, EventDefinition[typing.Any]] | None = None,
        timeout_seconds: float | None = None,
        limits: Sequence[ConcurrencyLimit] = (),
    ) -> Callable[[Callable[..., Awaitable[O]]], WorkflowVersion[typing.Any, O]]:
        """Decorate ``async def handler(run, input) -> output`` as version ``version``.

        Args:
            retry: how a failed run is retried as a whole (completed tasks replay).
            events: the events runs of this version can wait for, by name:
                ``{"payment_received": aiki.event(Payment)}``.
            timeout_seconds: fail runs that have not ended this long after they start.
            limits: the concurrency limits its runs take a slot of
                (`aiki.ConcurrencyLimit`): a run over a limit waits at the server's gate,
                holding no worker, until a slot frees.

        Raises:
            ValueError: the version exists already, the name is invalid, or a limit is
                not allowed (its name, its key path, its numbers).
            TypeError: the handler's signature or annotations are not usable.
        """
        if not version or any(character in version for character in "@#\n"):
            raise ValueError(f"invalid version {version!r} (no '@', '#' or newlines)")
        if version in self.versions:
            raise ValueError(f"workflow {self.name!r} already has a version {version!r}")

        def decorate(handler: Callable[..., Awaitable[O]]) -> WorkflowVersion[typing.Any, O]:
            defined = WorkflowVersion[typing.Any, O](
                self.name, version, handler, retry=retry, events=events,
                timeout_seconds=timeout_seconds, limits=limits,
            )  # fmt: skip
            self.versions[version] = defined
            return defined

        return decorate

    def __repr__(self) -> str:
        return f"<aiki workflow {self.name!r}>"


def workflow(name: str) -> Workflow:
    """Declare a workflow by name; then define versions with ``@wf.version("1.0.0")``."""
    return Workflow(name)
