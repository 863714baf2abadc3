"""The server's SQL, by concept. Every function runs inside one `transport.postgres.Transaction`.

- `runs`: creating, reading, claiming and moving runs; task records;
- `outbox`: queued runs waiting to be published to Redis;
- `workers`: workers and the versions (with schemas) they register;
- `waits`: durable waits, events, child runs and run control (cancel, pause, resume);
- `history`: the order in which a run's steps settled, and what an execution adds to it;
- `recovery`: claim freshness, stale claims, dead workers, redelivery, pull claims;
- `schedules`: schedules and the runs they start;
- `updates`: committed transitions for live updates, task progress;
- `views`: a run in full and the workers, for operators;
- `keys`: API keys (their format and hash, and the SQL that keeps them);
- `pages`: pages of listings, bounded in items and bytes, and their cursors;
- `scoped`: the store as one caller sees it (its namespace, its worker): the only way
  operation handlers read and write.
"""

from . import gate as gate
from . import history as history
from . import keys as keys
from . import limits as limits
from . import outbox as outbox
from . import pages as pages
from . import recovery as recovery
from . import runs as runs
from . import schedules as schedules
from . import scoped as scoped
from . import slots as slots
from . import updates as updates
from . import views as views
from . import waits as waits
from . import workers as workers

__all__ = [
    "history",
    "keys",
    "outbox",
    "pages",
    "recovery",
    "runs",
    "schedules",
    "scoped",
    "updates",
    "views",
    "waits",
    "workers",
]
