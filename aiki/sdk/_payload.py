"""User payload types: strict conversion between Python values and JSON, and JSON Schema.

Inputs and outputs of workflows and tasks are declared by annotations: attrs classes,
dataclasses, TypedDicts, primitives, enums, literals, optionals/unions and lists/dicts of
those. `PayloadType` converts values to JSON-compatible data and back with cattrs,
strictly: ``"5"`` is not an ``int``, unknown keys are errors. Its `PayloadType.schema`
describes the same shape as JSON Schema, which workers register with the server so it
can reject bad input from any client (curl included) without importing user code.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import datetime as dt
import enum
import types
import typing
from typing import Any, Final, Generic, TypeVar, get_args, get_origin, is_typeddict

import attrs
import cattrs
import orjson
from cattrs.preconf.json import make_converter

from ..errors import ValidationError
from ..protocol import payload_problems

T = TypeVar("T")

JsonSchema = dict[str, Any]


def _strict(kind: type, accept: tuple[type, ...], reject: tuple[type, ...] = ()) -> Any:
    def structure(value: object, _: type) -> object:
        if isinstance(value, reject) or not isinstance(value, accept):
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
        return float(typing.cast("float", value)) if kind is float else value

    return structure


def _make_converter() -> cattrs.Converter:
    converter = make_converter(forbid_extra_keys=True, detailed_validation=True)
    converter.register_structure_hook(int, _strict(int, (int,), (bool,)))
    converter.register_structure_hook(float, _strict(float, (int, float), (bool,)))
    converter.register_structure_hook(str, _strict(str, (str,)))
    converter.register_structure_hook(bool, _strict(bool, (bool,)))
    converter.register_structure_hook(type(None), _strict(type(None), (type(None),)))
    # `object` (like Any) means "any JSON value": passed through as is.
    converter.register_structure_hook_func(lambda cls: cls is object, lambda value, _: value)
    return converter


CONVERTER: Final = _make_converter()
"""The one converter for user payloads (private to Aiki; users never configure it)."""


def _errors(exc: Exception, path: str) -> tuple[str, ...]:
    try:
        return tuple(cattrs.transform_error(exc, path=path))
    except Exception:  # transform_error only knows cattrs' own shapes
        return (f"{exc} @ {path}",)


_SCALARS: Final = (bool, int, float, str, dt.datetime, dt.date)
_SEQUENCES: Final[dict[object, tuple[type, ...]]] = {
    list: (list,), set: (set, frozenset), frozenset: (set, frozenset),
    collections.abc.Sequence: (list, tuple), collections.abc.MutableSequence: (list,),
}  # fmt: skip
_EXACT: Final[dict[object, type | tuple[type, ...]]] = {
    int: int, float: (int, float), str: str, bool: bool, type(None): type(None),
}  # fmt: skip
_MAPPINGS: Final = (dict, collections.abc.Mapping, collections.abc.MutableMapping)


def _is_record(tp: object) -> bool:
    return isinstance(tp, type) and (attrs.has(tp) or dataclasses.is_dataclass(tp) or
                                     is_typeddict(tp))  # fmt: skip


def unsupported(tp: object, seen: frozenset[object] = frozenset()) -> str | None:
    """Why ``tp`` cannot travel as a payload (naming the part that cannot), or None if it
    can: JSON scalars, datetimes, enums, literals, unions, lists/sets/tuples/dicts of
    those, attrs classes, dataclasses and TypedDicts; ``object``/``Any`` for any JSON."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any or tp is object or tp is None or tp is type(None) or tp in _SCALARS:
        return None
    if (isinstance(tp, type) and issubclass(tp, enum.Enum)) or origin is typing.Literal:
        return None
    if origin in (typing.Union, types.UnionType, tuple, *_SEQUENCES, *_MAPPINGS):
        parts = [arg for arg in args if arg is not Ellipsis]
        return next((why for arg in parts if (why := unsupported(arg, seen))), None)
    if _is_record(tp):
        if tp in seen:
            return None
        hints = typing.get_type_hints(tp)
        return next((f"{getattr(tp, '__name__', tp)}.{name}: {why}" for name, hint in
                     hints.items() if (why := unsupported(hint, seen | {tp}))), None)  # fmt: skip
    if tp in (list, dict, set, tuple):
        return None  # unparameterised: items of any JSON value
    return (f"{tp!r} cannot travel as JSON (use an attrs class, a dataclass, a TypedDict, "
            "JSON scalars, or lists and dicts of those)")  # fmt: skip


def _mismatch(value: object, tp: object, path: str) -> str | None:
    """Where ``value`` does not have the declared type ``tp`` exactly (a ``set`` is not a
    ``list``, ``True`` is not an ``int``), or None. Shapes only: the converter's round
    trip checks the rest."""
    origin, args = get_origin(tp), get_args(tp)
    found = type(value).__name__
    if tp is Any or tp is object:
        return None
    if origin in (typing.Union, types.UnionType):
        misses = [_mismatch(value, arg, path) for arg in args]
        return None if None in misses else f"{found} fits none of {tp!r} @ {path}"
    exact = _EXACT.get(tp)
    if exact is not None and (
        not isinstance(value, exact) or (tp is not bool and isinstance(value, bool))
    ):
        return f"expected {getattr(tp, '__name__', tp)}, got {found} @ {path}"
    accepted = _SEQUENCES.get(origin or tp)
    if accepted is not None:
        if not isinstance(value, accepted):
            return f"expected {getattr(origin or tp, '__name__', tp)}, got {found} @ {path}"
        items = typing.cast("typing.Iterable[object]", value)
        item = args[0] if args else Any
        return next((why for index, each in enumerate(items)
                     if (why := _mismatch(each, item, f"{path}[{index}]"))), None)  # fmt: skip
    if origin is tuple or tp is tuple:
        if not isinstance(value, tuple):
            return f"expected tuple, got {found} @ {path}"
        kinds = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        return next((why for index, (each, kind) in enumerate(zip(value, kinds, strict=False))
                     if (why := _mismatch(each, kind, f"{path}[{index}]"))), None)  # fmt: skip
    if origin in _MAPPINGS or tp is dict:
        if not isinstance(value, dict):
            return f"expected dict, got {found} @ {path}"
        kind = args[1] if len(args) == 2 else Any
        return next((why for key, each in value.items()
                     if (why := _mismatch(each, kind, f"{path}.{key}"))), None)  # fmt: skip
    if isinstance(tp, type) and (attrs.has(tp) or dataclasses.is_dataclass(tp)):
        if not isinstance(value, tp):
            return f"expected {tp.__name__}, got {found} @ {path}"
        hints = typing.get_type_hints(tp)
        return next((why for name, hint in hints.items()
                     if (why := _mismatch(getattr(value, name, None), hint, f"{path}.{name}"))),
                    None)  # fmt: skip
    return None


def declared_output(hints: dict[str, object], what: str) -> object:
    """The return annotation among a function's ``hints``.

    Raises:
        TypeError: there is none (a missing annotation is not taken to mean ``None``).
    """
    if "return" not in hints:
        raise TypeError(
            f"{what}: annotate the return type (-> None if it returns nothing): every "
            "return is checked against it"
        )
    return hints["return"]


class PayloadType(Generic[T]):
    """How one declared type travels as JSON. Build with ``PayloadType(Order, "input")``.

    Args:
        annotation: the declared type (``None`` / ``NoneType`` for "no value").
        role: named in error messages, e.g. ``"input of order-processing@1.0.0"``.

    Raises:
        TypeError: the type cannot travel as JSON (the message names the part).
    """

    def __init__(self, annotation: object, role: str) -> None:
        self.annotation = type(None) if annotation is None else annotation
        self.role = role
        if (why := unsupported(self.annotation)) is not None:
            raise TypeError(f"{role}: {why}")

    def to_json(self, value: T) -> object:
        """Convert ``value`` to JSON-compatible data, checking that it fits the type.

        Raises:
            ValidationError: ``value`` is not of the declared type (nothing was sent).
        """
        if (mismatch := _mismatch(value, self.annotation, "$")) is not None:
            raise ValidationError(
                f"{self.role} must be {self.describe()}: {mismatch}", errors=(mismatch,)
            )
        try:
            data = CONVERTER.unstructure(value, unstructure_as=self.annotation)
            orjson.dumps(data)
        except Exception as exc:
            raise ValidationError(
                f"{self.role} is not JSON-serializable as {self.describe()}: {exc}",
                errors=(f"{exc} @ $",),
            ) from exc
        if problems := payload_problems(data):
            raise ValidationError(
                f"{self.role} cannot be sent: {problems[0]}", errors=tuple(problems)
            )
        self.from_json(data)  # round trip: catches values of the wrong shape
        return data

    def from_json(self, data: object) -> T:
        """Build the declared type from JSON-compatible data.

        Raises:
            ValidationError: ``data`` does not fit; ``errors`` name each problem and path.
        """
        try:
            return typing.cast("T", CONVERTER.structure(data, self.annotation))  # type: ignore[arg-type]
        except Exception as exc:
            errors = _errors(exc, "$")
            raise ValidationError(
                f"{self.role} does not match {self.describe()}: " + "; ".join(errors),
                errors=errors,
            ) from None

    def describe(self) -> str:
        """A short name of the declared type for messages."""
        annotation = self.annotation
        if get_args(annotation):
            return repr(annotation).replace("typing.", "")
        return getattr(annotation, "__name__", None) or repr(annotation)

    def schema(self) -> JsonSchema:
        """The JSON Schema (draft 2020-12) of the declared type."""
        definitions: dict[str, JsonSchema] = {}
        root = _schema(self.annotation, definitions)
        document: JsonSchema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **root}
        if definitions:
            document["$defs"] = definitions
        return document


def _object_schema(
    properties: dict[str, object], required: list[str], definitions: dict[str, JsonSchema]
) -> JsonSchema:
    return {
        "type": "object",
        "properties": {name: _schema(tp, definitions) for name, tp in properties.items()},
        "required": required,
        "additionalProperties": False,
    }


def _class_schema(cls: type, definitions: dict[str, JsonSchema]) -> JsonSchema:
    name = f"{cls.__module__}.{cls.__qualname__}"
    if name not in definitions:
        definitions[name] = {}  # placeholder: breaks recursion for self-referencing types
        hints = typing.get_type_hints(cls)
        if attrs.has(cls):
            fields = attrs.fields(cls)
            props = {field.alias or field.name: hints.get(field.name, Any) for field in fields}
            required = [
                field.alias or field.name for field in fields if field.default is attrs.NOTHING
            ]
        elif dataclasses.is_dataclass(cls):
            fields_ = dataclasses.fields(cls)
            props = {field.name: hints.get(field.name, Any) for field in fields_}
            required = [
                field.name
                for field in fields_
                if field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            ]
        else:  # TypedDict
            props = dict(hints)
            required = sorted(getattr(cls, "__required_keys__", props))
        definitions[name] = _object_schema(props, required, definitions) | {"title": cls.__name__}
    return {"$ref": f"#/$defs/{name}"}


def _schema(tp: object, definitions: dict[str, JsonSchema]) -> JsonSchema:
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any or tp is object:
        return {}
    if tp is type(None) or tp is None:
        return {"type": "null"}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": "number"}
    if tp is str:
        return {"type": "string"}
    if tp is dt.datetime:
        return {"type": "string", "format": "date-time"}
    if tp is dt.date:
        return {"type": "string", "format": "date"}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"enum": [member.value for member in tp]}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_schema(arg, definitions) for arg in args]}
    if origin in (list, set, frozenset, typing.Sequence, typing.MutableSequence):
        return {"type": "array", "items": _schema(args[0], definitions) if args else {}}
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": _schema(args[0], definitions)}
        return {
            "type": "array",
            "prefixItems": [_schema(arg, definitions) for arg in args],
            "minItems": len(args),
            "maxItems": len(args),
        }
    if origin in (dict, typing.Mapping, typing.MutableMapping):
        values = _schema(args[1], definitions) if len(args) == 2 else {}
        return {"type": "object", "additionalProperties": values}
    if isinstance(tp, type) and (attrs.has(tp) or dataclasses.is_dataclass(tp) or is_typeddict(tp)):
        return _class_schema(tp, definitions)
    return {}  # a type we cannot describe: accept anything here, the worker still validates
