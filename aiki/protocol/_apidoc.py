"""The API reference (``docs/api.md``), generated from the operations' own classes.

``python -m aiki.protocol._apidoc > docs/api.md`` regenerates it; a test keeps it current.
"""

from __future__ import annotations

import inspect
import typing

import attrs

from ._registry import OPERATIONS

_INTRO = """# Aiki HTTP and WebSocket API

Generated from the protocol's operation declarations (`aiki/protocol/`) by
`python -m aiki.protocol._apidoc` (do not edit by hand).

Every operation is `POST /api/v1/<operation>` with a JSON body, answered with the reply
object as JSON (status 200), or `{"error": {"code", "message", "errors", "run_id",
"retry_after_seconds"}}` with a 4xx/5xx status (`code` names an `aiki.errors` class:
`bad_request` 400, `forbidden` 403, `not_found` 404, `conflict` 409, `payload_too_large`
413, `validation_error` 422, `rate_limited` 429 with `Retry-After`, `unavailable` 503,
...). Values are never coerced (`5` is not a string, `true` and `2.9` are not integers).
Times are ISO 8601 UTC. A request (or a session's upgrade) may name the namespace it acts
in with the header `aiki-namespace`: an admin key of every namespace then acts as that
namespace's admin; a key of one namespace may name only its own (`403` otherwise).

The same operations run over one WebSocket at `/api/v1/session`: send
`{"id": N, "op": "<operation>", "body": {...}}`, receive `{"id": N, "ok": {...}}` or
`{"id": N, "error": {...}}`; requests on a session run concurrently. Subscriptions exist
only there: after `subscribe`, the server sends `{"subscription": S, "updates": [...]}`
(each a `RunUpdate`) and, if the subscriber fell behind, `{"subscription": S, "resync":
true}`.

Other endpoints: `GET /` (dashboard), `GET /metrics` (Prometheus), `GET /healthz` (PostgreSQL
and Redis reachable), `GET /readyz` (same, and the server is fully started, not stopping).

Each operation names the roles that may call it: `viewer` (reads and watches), `client`
(starts, events, control, schedules), `worker` (a worker executing runs), `admin`. Worker
operations are accepted only on a WebSocket session a worker registered on
(`register_worker`), and only for the runs that worker claimed.
"""


def _type_name(annotation: object) -> str:
    if isinstance(annotation, str):
        return annotation
    if typing.get_origin(annotation) is typing.Literal:
        return " | ".join(repr(value) for value in typing.get_args(annotation))
    if isinstance(annotation, type):
        return annotation.__name__
    return repr(annotation).replace("typing.", "")


def _written(cls: type, name: str, resolved: object) -> object:
    for base in cls.__mro__:
        annotations = vars(base).get("__annotations__", {})
        if name in annotations:
            return annotations[name]
    return resolved


def _fields(cls: type) -> list[str]:
    lines = []
    for field in attrs.fields(cls):
        default = ""
        if field.default is not attrs.NOTHING:
            value = field.default
            if isinstance(value, attrs.Factory):  # type: ignore[arg-type]
                value = value.factory()
            default = f" = `{value!r}`"
        # As written in the source (``field.type`` may have been resolved by cattrs).
        written = _written(cls, field.name, field.type)
        kind = _type_name(written).replace("|", "\\|")  # a pipe would end the cell
        lines.append(f"| `{field.name}` | `{kind}`{default} |")
    return lines


def _describe(cls: type, seen: set[type]) -> list[str]:
    doc = inspect.getdoc(cls) or ""
    lines = [f"#### `{cls.__name__}`", "", doc.split("\n\n")[0], ""]
    if attrs.has(cls) and attrs.fields(cls):
        lines += ["| field | type |", "|---|---|", *_fields(cls), ""]
    seen.add(cls)
    return lines


def render() -> str:
    """The whole reference as Markdown."""
    out = [_INTRO]
    seen: set[type] = set()
    for operation in sorted(OPERATIONS, key=lambda operation: operation.name):
        name = operation.name
        where = "WebSocket session only" if operation.session_only else f"`POST /api/v1/{name}`"
        callers = ", ".join(f"`{role}`" for role in sorted(operation.callers))
        out += [f"## `{name}`", "", f"{where}; callers: {callers}", "", "Request:", ""]
        out += _describe(operation.request_type, seen)
        reply = operation.reply_type
        replies = typing.get_args(reply) or (reply,)
        out += ["Reply:", ""]
        out += [line for cls in replies if isinstance(cls, type) for line in _describe(cls, seen)]
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
