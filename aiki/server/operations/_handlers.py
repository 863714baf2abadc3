"""The handler table: one handler per declared operation, found by request type.

Each domain module builds a `Handlers` table of its operations; the package merges them
(`aiki.server.operations.HANDLERS`). Binding an operation twice, or two tables binding
the same one, raises at import: no handler can shadow another.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from ...protocol import Operation
    from ._services import Caller, Services

P = TypeVar("P")

Handler = Callable[["Services", Any, "Caller"], Awaitable[Any]]
"""``handler(services, request, caller)`` returns the operation's reply."""


class Handlers:
    """Handlers by request type. Build one with `on`; merge several by passing them in.

    Raises:
        ValueError: an operation is bound twice.
    """

    def __init__(self, *tables: Handlers) -> None:
        self._by_type: dict[type, tuple[Operation[Any, Any], Handler]] = {}
        for table in tables:
            for operation in table:
                self._bind(operation, table.of_type(operation.request_type))

    def on(
        self,
        operation: Operation[Any, P],
        handler: Callable[[Services, Any, Caller], Awaitable[P]],
    ) -> Handlers:
        """Bind ``handler`` to ``operation`` (its reply type must be the operation's)."""
        self._bind(operation, handler)
        return self

    def _bind(self, operation: Operation[Any, Any], handler: Handler) -> None:
        if operation.request_type in self._by_type:
            raise ValueError(f"operation {operation.name!r} has two handlers")
        self._by_type[operation.request_type] = (operation, handler)

    def __iter__(self) -> Iterator[Operation[Any, Any]]:
        return (operation for operation, _ in self._by_type.values())

    def handler(self, request: object) -> Handler:
        """The handler of ``request``'s operation.

        Raises:
            KeyError: no handler is bound to it.
        """
        return self.of_type(type(request))

    def of_type(self, request_type: type) -> Handler:
        """The handler bound to the operation of ``request_type`` (see `handler`)."""
        return self._by_type[request_type][1]
