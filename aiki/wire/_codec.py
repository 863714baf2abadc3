"""JSON wire codec for frozen attrs messages, built on cattrs (orjson preconf converter).

A protocol is a union of attrs classes; on the wire each message is a JSON object
tagged with its class name under ``"type"``. Fields annotated ``object`` carry any JSON
value as is (user payloads the transport does not interpret). Decoding is strict: unknown
fields, a missing or unknown tag and values of the wrong type (no coercion: ``5`` is not a
string, ``true`` and ``2.9`` are not integers) are all rejected with a `CodecError` whose
``errors`` name each problem and its path (``expected an integer @ $.attempt``).

Example::

    WorkerInbound = StartRun | CancelRun
    WIRE: Final = WireCodec[WorkerInbound](WorkerInbound)
    raw = WIRE.encode(StartRun(run_id="r1"))
    message = WIRE.decode(raw)
"""

from __future__ import annotations

import types
import typing
from typing import TYPE_CHECKING, Final, Generic, TypeVar, cast

import attrs
import cattrs
import cattrs.cols
import orjson
from cattrs.preconf.orjson import OrjsonConverter, make_converter
from cattrs.strategies import configure_tagged_union

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from cattrs.dispatch import StructureHook

M = TypeVar("M")
T = TypeVar("T")


@attrs.define(auto_exc=True)
class CodecError(Exception):
    """Bytes could not be decoded into the expected message type (or a value encoded).

    ``errors`` lists each problem with its path, e.g. ``"expected int @ $.attempt"``.
    """

    message: str
    errors: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.message


TAG: Final = "type"
"""The JSON key that names a message's class."""


def _members(protocol: object) -> tuple[type, ...]:
    if typing.get_origin(protocol) in (typing.Union, types.UnionType):
        return tuple(typing.get_args(protocol))
    if isinstance(protocol, type):
        return (protocol,)
    raise TypeError(f"a protocol is an attrs class or a union of them, not {protocol!r}")


def _passthrough(value: object, _: type) -> object:
    return value


def _strict_str(value: object, _: type) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _strict_int(value: object, _: type) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


def _strict_float(value: object, _: type) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    return float(value)


def _strict_bool(value: object, _: type) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {type(value).__name__}")
    return value


def _expect(value: object, kind: type, name: str) -> None:
    if not isinstance(value, kind):
        raise TypeError(f"expected {name}, got {type(value).__name__}")


def _is_fixed_tuple(cls: object) -> bool:
    args = typing.get_args(cls)
    return typing.get_origin(cls) is tuple and not (len(args) == 2 and args[1] is Ellipsis)


def _checked(structure: StructureHook, kind: type, name: str) -> StructureHook:
    def strict(value: object, type_: type) -> object:
        _expect(value, kind, name)
        return structure(value, type_)

    return strict


def _strict_containers(converter: OrjsonConverter) -> None:
    """Sequences take only a JSON array and mappings only an object: cattrs would iterate a
    string character by character (or an object's keys), with an error for each one (a
    2 MB string where a list belongs: two million errors, seconds of CPU)."""

    def sequence(cls: type) -> StructureHook:
        if typing.get_origin(cls) is tuple:
            return _checked(cattrs.cols.homogenous_tuple_structure_factory(cls, converter),
                            list, "an array")  # fmt: skip
        return _checked(cattrs.cols.list_structure_factory(cls, converter), list, "an array")

    def mapping(cls: type) -> StructureHook:
        return _checked(cattrs.cols.mapping_structure_factory(cls, converter), dict, "an object")

    def fixed_tuple(cls: type) -> StructureHook:
        kinds = typing.get_args(cls)
        hooks = [converter.get_structure_hook(kind) for kind in kinds]

        def structure(value: list[object], _: type) -> object:
            if len(value) != len(kinds):
                raise ValueError(f"expected an array of {len(kinds)}, got {len(value)} items")
            items = zip(hooks, value, kinds, strict=True)
            return tuple(hook(item, kind) for hook, item, kind in items)

        return _checked(structure, list, f"an array of {len(kinds)}")

    converter.register_structure_hook_factory(cattrs.cols.is_sequence, sequence)
    converter.register_structure_hook_factory(cattrs.cols.is_mapping, mapping)
    converter.register_structure_hook_factory(_is_fixed_tuple, fixed_tuple)


def make_wire_converter(*protocols: object) -> OrjsonConverter:
    """Build a private strict converter; every union among ``protocols`` is tagged by ``"type"``.

    List nested unions before the unions whose members contain them: cattrs builds
    (and caches) a class's hooks when its union is configured. Use this directly for
    values that are not messages of one protocol; prefer `WireCodec` for a protocol,
    which also maps errors.
    """
    converter = make_converter(forbid_extra_keys=True)  # never the global converter
    # Exactly `object` (a dispatch on the class would catch every subclass too).
    converter.register_structure_hook_func(lambda cls: cls is object, _passthrough)
    # No coercion: cattrs would take 5 for a string, true or 2.9 for an integer.
    converter.register_structure_hook(str, _strict_str)
    converter.register_structure_hook(int, _strict_int)
    converter.register_structure_hook(float, _strict_float)
    converter.register_structure_hook(bool, _strict_bool)
    _strict_containers(converter)
    for protocol in protocols:
        if len(_members(protocol)) > 1:
            configure_tagged_union(protocol, converter, tag_name=TAG)
    return converter


def describe_structure_error(exc: Exception, path: str = "$") -> tuple[str, ...]:
    """Turn a cattrs (or plain) structuring error into readable ``problem @ path`` lines."""
    if isinstance(exc, cattrs.BaseValidationError | KeyError | ValueError | TypeError):
        return tuple(cattrs.transform_error(exc, path=path))
    return (f"{exc} @ {path}",)


class WireCodec(Generic[M]):
    """Encodes and decodes the messages of one protocol. Build as ``WireCodec[Proto](Proto)``.

    Args:
        protocol: an attrs class or a union of attrs classes (the ``M`` of the codec).
        also: further unions that appear nested inside messages, to tag them as well.
    """

    def __init__(self, protocol: object, *, also: Sequence[object] = ()) -> None:
        self._protocol = protocol
        self._classes: Mapping[str, type] = {cls.__name__: cls for cls in _members(protocol)}
        for cls in self._classes.values():
            if not attrs.has(cls):
                raise TypeError(f"{cls!r} is not an attrs class")
        self._tagged = len(self._classes) > 1
        self.converter = make_wire_converter(*also, protocol)

    def encode(self, message: M) -> bytes:
        """Return the JSON bytes of ``message``.

        Raises:
            CodecError: ``message`` holds a value JSON cannot carry.
        """
        try:
            return self.converter.dumps(message, unstructure_as=self._protocol)
        except (TypeError, ValueError, orjson.JSONEncodeError) as exc:
            raise CodecError(f"cannot encode {type(message).__name__}: {exc}") from exc

    def decode(self, raw: bytes | bytearray | memoryview | str) -> M:
        """Parse ``raw`` into one of the protocol's messages.

        Raises:
            CodecError: not JSON, not an object, a missing or unknown tag, an unknown field,
                a missing field or a value of the wrong type. Nothing is partially built.
        """
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise CodecError(f"not valid JSON: {exc}", errors=(f"{exc} @ $",)) from None
        return self.structure(document)

    def structure(self, document: object) -> M:
        """Build a message from already-parsed JSON (see `decode` for the errors)."""
        if not isinstance(document, dict):
            kind = type(document).__name__
            raise CodecError(f"expected a JSON object, got {kind}", errors=("not an object @ $",))
        if self._tagged:
            tag = document.get(TAG)
            if tag not in self._classes:
                expected = ", ".join(sorted(self._classes))
                problem = "missing" if tag is None else f"unknown ({tag!r})"
                raise CodecError(
                    f"message type {problem}; expected one of: {expected}",
                    errors=(f"{problem} message type @ $.{TAG}",),
                )
        try:
            return cast("M", self.converter.structure(document, self._protocol))  # type: ignore[arg-type]
        except (cattrs.BaseValidationError, KeyError, ValueError, TypeError) as exc:
            errors = describe_structure_error(exc)
            raise CodecError("invalid message: " + "; ".join(errors), errors=errors) from None

    def unstructure(self, message: M) -> object:
        """Return ``message`` as plain JSON-compatible data (dicts, lists, strings, numbers)."""
        return self.converter.unstructure(message, unstructure_as=self._protocol)
