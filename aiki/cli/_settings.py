"""Command-line options made from a config's declarations (`aiki._settings`): one option
per setting, with its default, bounds and environment variable, and the config made back
from what was given."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import click

from .._settings import Declared, declarations

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

C = TypeVar("C")
F = TypeVar("F", bound="Callable[..., Any]")


def _click_type(declared: Declared) -> click.ParamType | None:  # type: ignore[type-arg]
    base, bounds = declared.base_type, declared.setting
    if declared.setting.existing_file:
        return click.Path(exists=True, dir_okay=False)
    low = bounds.gt if bounds.gt is not None else bounds.ge
    if base is int:
        if low is None and bounds.le is None:
            return click.INT
        high = None if bounds.le is None else int(bounds.le)
        return click.IntRange(min=None if low is None else int(low), max=high,
                              min_open=bounds.gt is not None)  # fmt: skip
    if base is float:
        if low is None and bounds.le is None:
            return click.FLOAT
        return click.FloatRange(min=low, max=bounds.le, min_open=bounds.gt is not None)
    return None  # str, bool (a flag), tuple[str, ...] (repeated)


def option_for(declared: Declared) -> Callable[[F], F]:
    """The click option of one declared setting (its parameter is the field's name)."""
    extra: dict[str, Any] = {}
    if declared.base_type is bool:
        extra["is_flag"] = True
    elif declared.base_type == tuple[str, ...]:
        extra["multiple"] = True
    elif (kind := _click_type(declared)) is not None:
        extra["type"] = kind
    has_default = declared.default is not attrs.NOTHING and declared.default not in (None, ())
    return click.option(
        declared.option,
        declared.name,
        envvar=declared.env,
        show_envvar=True,
        required=declared.required,
        default=declared.default if has_default else None,
        show_default=has_default and declared.base_type is not bool,
        help=declared.setting.help,
        **extra,
    )


def config_options(config: type) -> Callable[[F], F]:
    """Decorate a command with one option per setting ``config`` offers on the command
    line, in declaration order."""
    offered = [declared for declared in declarations(config) if declared.setting.cli]

    def decorate(command: F) -> F:
        for declared in reversed(offered):
            command = option_for(declared)(command)
        return command

    return decorate


def config_from(config: type[C], values: Mapping[str, Any]) -> C:
    """Make ``config`` from a command's parameters: each setting given (or with a default
    on the command line) is passed; one left out keeps the config's own default (a
    factory's, or its variable's).

    Raises:
        click.UsageError: the config refused a value (naming what is wrong).
    """
    given = {}
    for declared in declarations(config):
        value = values.get(declared.name)
        if declared.setting.cli and value is not None and value != ():
            given[declared.name] = value
    try:
        return config(**given)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def passes_settings(config: type) -> Callable[[F], F]:
    """``config_options``, and a ``settings`` parameter (the config's option values) in
    place of one parameter per setting."""
    names = {declared.name for declared in declarations(config) if declared.setting.cli}

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def wrapped(**params: Any) -> Any:
            settings = {name: params.pop(name) for name in names}
            return command(settings=settings, **params)

        return config_options(config)(wrapped)  # type: ignore[return-value]

    return decorate


def _written(value: object) -> str:
    if value is attrs.NOTHING:
        return "computed"
    if value is None or value == ():
        return "unset"
    if isinstance(value, bool):
        return "off" if not value else "on"
    return f"`{value}`"


def _bounds(declared: Declared) -> str:
    found = declared.setting
    parts = [f"≥ {found.ge:g}" if found.ge is not None else "",
             f"> {found.gt:g}" if found.gt is not None else "",
             f"≤ {found.le:g}" if found.le is not None else ""]  # fmt: skip
    return ", ".join(part for part in parts if part)


def render() -> str:
    """``docs/configuration.md``: every setting of the server and the worker, once, with
    its option, variable, default and bounds."""
    from ..server import ServerConfig
    from ..worker import WorkerConfig

    lines = [
        "# Configuration",
        "",
        "Generated from the settings' declarations (`ServerConfig`, `WorkerConfig`) by",
        "`aiki.cli._settings.render` (a test keeps it current).",
        "Each setting is a field of the config (for a program that runs a server or a",
        "worker itself), an option of the command, and an environment variable; an option",
        "given wins over its variable. Durations are in seconds.",
    ]
    for command, config in (("aiki server", ServerConfig), ("aiki worker", WorkerConfig)):
        lines += ["", f"## `{command}` (`{config.__name__}`)", "",
                  "| option | variable | default | bounds | field | what it does |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for declared in declarations(config):
            option = f"`{declared.option}`" if declared.setting.cli else "(none)"
            variable = f"`{declared.env}`" if declared.env else "(none)"
            default = "required" if declared.required else _written(declared.default)
            lines.append(f"| {option} | {variable} | {default} | {_bounds(declared)} | "
                         f"`{declared.name}` | {declared.setting.help} |")  # fmt: skip
    return "\n".join(lines) + "\n"
