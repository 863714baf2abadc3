"""One declaration per setting: a config field says its default, its bounds, its help,
its command-line option and its environment variable, once.

The server's and the worker's configs (`aiki.server.ServerConfig`,
`aiki.worker.WorkerConfig`) declare each field with `setting`; the command line builds
its options from those declarations (``aiki server --help`` lists each with its default
and its variable), and ``docs/configuration.md`` is rendered from them.

Names follow one rule unless a declaration says otherwise: the option is the field's
name without a ``_seconds`` suffix, dashed (``claim_timeout_seconds`` is
``--claim-timeout``); the variable is ``AIKI_`` and the option's name in capitals
(``AIKI_CLAIM_TIMEOUT``).
"""

from __future__ import annotations

import os
import types
import typing
from typing import Any, Final

import attrs

if typing.TYPE_CHECKING:
    from collections.abc import Callable

_KEY: Final = "aiki.setting"


@attrs.frozen
class Setting:
    """What a config field's declaration says besides its type and default."""

    help: str
    """One or two sentences, as ``--help`` shows them."""
    option: str | None = None
    """The command-line option (``--claim-timeout``); None: derived from the name."""
    env: str | None = None
    """The environment variable; None: derived from the option."""
    ge: float | None = None
    """The smallest value allowed, if any."""
    gt: float | None = None
    """A bound the value must exceed, if any."""
    le: float | None = None
    """The largest value allowed, if any."""
    existing_file: bool = False
    """The value names a file that must exist (a certificate, a key)."""
    cli: bool = True
    """Whether the command line offers it (False: set by the program itself)."""
    variable: bool = True
    """Whether an environment variable may set it (False: only the option, for a setting
    that lowers protection and must be asked for where it shows)."""


@attrs.frozen
class Declared:
    """A field and its declaration, with the names the rule derives."""

    name: str
    """The field's name."""
    type: object
    """The field's type (``int``, ``float``, ``str``, ``bool``, ``tuple[str, ...]``, or
    one of them ``| None``)."""
    default: object
    """The default value, or `attrs.NOTHING` for a required field or one with a factory."""
    required: bool
    """No default and no factory: the option (or its variable) must be given."""
    setting: Setting
    """The declaration."""

    @property
    def option(self) -> str:
        """The command-line option."""
        if self.setting.option is not None:
            return self.setting.option
        return "--" + self.name.removesuffix("_seconds").replace("_", "-")

    @property
    def env(self) -> str | None:
        """The environment variable (None: the setting has none)."""
        if not self.setting.variable:
            return None
        if self.setting.env is not None:
            return self.setting.env
        return "AIKI_" + self.option.removeprefix("--").replace("-", "_").upper()

    @property
    def base_type(self) -> object:
        """The type without ``| None``."""
        if typing.get_origin(self.type) in (typing.Union, types.UnionType):
            members = [arg for arg in typing.get_args(self.type) if arg is not type(None)]
            if len(members) == 1:
                return members[0]
        return self.type


def setting(
    default: Any = attrs.NOTHING,
    *,
    help: str,
    option: str | None = None,
    env: str | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    existing_file: bool = False,
    cli: bool = True,
    variable: bool = True,
    factory: Callable[[], Any] | None = None,
    from_env: bool = False,
    repr: bool = True,
) -> Any:
    """Declare a config field (an `attrs.field`) with everything the command line and the
    docs say of it.

    Args:
        default: the default; omit for a required setting (or give ``factory``).
        help: what ``--help`` shows.
        option, env: override the derived option and variable names.
        ge, gt, le: bounds, checked when the config is made and by the command line.
        existing_file: the value names a file that must exist.
        cli: False for a setting the program sets itself (not offered as an option).
        variable: False for a setting no environment variable may set.
        factory: makes the default.
        from_env: when not given, the config takes the value of ``env`` (None if unset or
            empty), also when a program makes it rather than the command line.
    """
    declared = Setting(help=help, option=option, env=env, ge=ge, gt=gt, le=le,
                       existing_file=existing_file, cli=cli, variable=variable)  # fmt: skip
    validators: list[Callable[[Any, attrs.Attribute[Any], Any], None]] = []
    for bound, check in ((ge, attrs.validators.ge), (gt, attrs.validators.gt),
                         (le, attrs.validators.le)):  # fmt: skip
        if bound is not None:
            validators.append(_unless_none(check(bound)))
    metadata = {_KEY: declared}
    if from_env:
        if env is None or factory is not None or default is not attrs.NOTHING:
            raise TypeError("from_env needs env= and makes the default itself")
        name = env

        def factory() -> str | None:
            return os.environ.get(name) or None

    if factory is not None:
        return attrs.field(factory=factory, validator=validators, metadata=metadata, repr=repr)
    return attrs.field(default=default, validator=validators, metadata=metadata, repr=repr)


def _unless_none(check: Callable[[Any, attrs.Attribute[Any], Any], None]) -> Any:
    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None:
            check(instance, attribute, value)

    return validate


def declarations(config: type) -> tuple[Declared, ...]:
    """Every declared setting of the attrs class ``config``, in field order.

    Raises:
        TypeError: a field was not declared with `setting`.
    """
    hints = typing.get_type_hints(config)
    found = []
    for field in attrs.fields(config):
        declared = field.metadata.get(_KEY)
        if declared is None:
            raise TypeError(f"{config.__name__}.{field.name} is not declared with setting()")
        default = field.default
        has_factory = isinstance(default, attrs.Factory)  # type: ignore[arg-type]
        found.append(Declared(
            name=field.name, type=hints[field.name],
            default=attrs.NOTHING if has_factory else default,
            required=default is attrs.NOTHING, setting=declared,
        ))  # fmt: skip
    return tuple(found)
