"""What the operators' commands share: options, calling the server, output formats.

Every command that calls the server takes ``--server-url`` (``AIKI_SERVER_URL``),
``--api-key`` (``AIKI_API_KEY``; prefer the variable: a command line is visible to every
user of the machine) and ``--ca-file`` (``AIKI_CA_FILE``: a private CA's certificate, for
an ``https://`` server).

Exit codes: 0 done, 1 refused by the server, 2 usage, 3 not found, 4 unreachable,
5 not authenticated (no key, or one the server does not take).
"""

from __future__ import annotations

import sys
import typing
from typing import Final, TypeVar

import click
import orjson
import trio

from ..client import (
    API_KEY_ENV,
    CA_FILE_ENV,
    CLIENT_CERT_ENV,
    CLIENT_KEY_ENV,
    Client,
    parse_server_urls,
)
from ..errors import AikiError, NotFoundError, UnauthenticatedError, UnavailableError
from ..wire import WireCodec

if typing.TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Awaitable, Callable, Sequence

T = TypeVar("T")

EXIT_REFUSED: Final = 1
EXIT_NOT_FOUND: Final = 3
EXIT_UNREACHABLE: Final = 4
EXIT_UNAUTHENTICATED: Final = 5
_API_KEY: Final = "aiki.api_key"
_CA_FILE: Final = "aiki.ca_file"
_CLIENT_CERT: Final = "aiki.client_cert"
_CLIENT_KEY: Final = "aiki.client_key"
"""Where `_keep` leaves ``--api-key``, ``--ca-file``, ``--client-cert`` and ``--client-key``
in the click context."""


def _keep(context: click.Context, param: click.Parameter, value: str | None) -> None:
    context.meta[f"aiki.{param.name}"] = value


_KEPT: Final = (
    ("--ca-file", CA_FILE_ENV, "A private CA's certificate (PEM) for an https:// server"),
    ("--api-key", API_KEY_ENV, "The API key to act with (prefer the variable to the option)"),
    ("--client-cert", CLIENT_CERT_ENV, "A client certificate (PEM), for mutual TLS"),
    ("--client-key", CLIENT_KEY_ENV, "The client certificate's private key (PEM)"),
)
"""Options every command that calls the server takes, kept for `call_server`."""


def server_url_option(command: Callable[..., T]) -> Callable[..., T]:
    """Add ``--server-url`` (passed as ``server_url``), ``--api-key`` and ``--ca-file``
    (kept for `call_server`) to ``command``."""
    for flag, env, text in _KEPT:
        command = click.option(flag, envvar=env, expose_value=False, callback=_keep,
                               help=f"{text} [env {env}].")(command)  # fmt: skip
    return click.option(
        "--server-url",
        envvar="AIKI_SERVER_URL",
        default="http://127.0.0.1:8470",
        show_default=True,
        help="The Aiki server, or several comma-separated (used in turn when one is "
        "unreachable) [env AIKI_SERVER_URL].",
    )(command)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def call_server(server_url: str, action: Callable[[Client], Awaitable[T]]) -> T:
    """Run ``action`` with a client; map Aiki errors to a message and an exit code."""

    meta = click.get_current_context().meta
    try:
        parse_server_urls(server_url)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--server-url") from None

    async def main() -> T:
        async with Client(server_url, api_key=meta.get(_API_KEY), ca_file=meta.get(_CA_FILE),
                          client_cert=meta.get(_CLIENT_CERT),
                          client_key=meta.get(_CLIENT_KEY)) as client:  # fmt: skip
            return await action(client)

    try:
        return trio.run(main)
    except (AikiError, BaseExceptionGroup) as raised:
        error = _aiki_error(raised)
        if error is None:
            raise
        click.echo(f"error: {error}", err=True)
        if isinstance(error, UnavailableError):
            sys.exit(EXIT_UNREACHABLE)
        if isinstance(error, UnauthenticatedError):
            sys.exit(EXIT_UNAUTHENTICATED)
        sys.exit(EXIT_NOT_FOUND if isinstance(error, NotFoundError) else EXIT_REFUSED)


def _aiki_error(raised: BaseException) -> AikiError | None:
    """The one Aiki error in ``raised`` (the client's nursery may group it), if that is all
    there is."""
    if isinstance(raised, AikiError):
        return raised
    if isinstance(raised, BaseExceptionGroup) and len(raised.exceptions) == 1:
        return _aiki_error(raised.exceptions[0])
    return None


def dump(value: object, kind: type) -> None:
    """Print ``value`` as JSON (its wire form, as ``kind``)."""
    codec = WireCodec[object](kind)
    click.echo(codec.encode(value).decode())


def when(moment: dt.datetime | None) -> str:
    """A time in the local timezone, to the millisecond (``-`` for none)."""
    return "-" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Rows under upper-case headers, in columns as wide as their widest cell."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max([len(header)] + [len(row[i]) for row in cells]) for i, header in
              enumerate(headers)]  # fmt: skip
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def short(value: object, limit: int = 60) -> str:
    """``value`` as JSON, cut at ``limit`` characters."""
    text = orjson.dumps(value).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"
