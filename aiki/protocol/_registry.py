"""Every operation of the API, collected from the protocol modules of each concept.

The carriers (HTTP ``POST /api/v1/<operation>`` and the WebSocket session), the clients
and the server's handlers all find operations here, by name or by request type.
"""

from __future__ import annotations

from typing import Final

from . import _keys, _limits, _live, _runs, _schedules, _views, _workers
from ._operation import Registry

OPERATIONS: Final = Registry(
    _runs.OPERATIONS,
    _workers.OPERATIONS,
    _views.OPERATIONS,
    _live.OPERATIONS,
    _schedules.OPERATIONS,
    _keys.OPERATIONS,
    _limits.OPERATIONS,
)
"""Every operation, by name (as used in URLs and session frames) and by request type."""
