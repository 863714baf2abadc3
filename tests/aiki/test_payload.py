"""User payload types: strict JSON conversion and a JSON Schema that agrees with it."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from typing import Literal, TypedDict

import attrs
import jsonschema
import pytest

import aiki
from aiki.errors import ValidationError
from aiki.protocol import MAX_SCHEMA_DEPTH, schema_problems
from aiki.sdk import PayloadType


@attrs.frozen
class Item:
    sku: str
    quantity: int


@attrs.frozen
class Order:
    id: str
    items: list[Item]
    note: str | None = None


@dataclasses.dataclass
class Address:
    street: str
    zip_code: str = "00000"


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Shipment(TypedDict):
    carrier: Literal["dhl", "ups"]
    weight_kg: float
    to: Address
    at: dt.datetime
    color: Color


ORDER = Order(id="o1", items=[Item("a", 2), Item("b", 1)])
SHIPMENT: Shipment = {
    "carrier": "dhl",
    "weight_kg": 2,
    "to": Address("Main St 1"),
    "at": dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.UTC),
    "color": Color.RED,
}


@pytest.mark.parametrize(
    ("annotation", "value"),
    [
        (Order, ORDER),
        (Shipment, SHIPMENT),
        (list[int], [1, 2]),
        (dict[str, float], {"x": 1.5}),
        (dict[str, object], {"a": [1, {"b": None}], "c": "d"}),
        (int, 3),
        (str, "s"),
        (bool, True),
        (None, None),
        (tuple[int, str], (1, "a")),
    ],
)
def test_values_round_trip_through_json(annotation: object, value: object) -> None:
    """Declared types convert to JSON data and back to an equal value."""
    payload = PayloadType(annotation, "input")
    assert payload.from_json(payload.to_json(value)) == value


@pytest.mark.parametrize(
    ("annotation", "data", "problem"),
    [
        (int, "5", "expected int"),
        (int, True, "expected int"),
        (float, "1.5", "expected float"),
        (str, 5, "expected str"),
        (Order, {"id": "o", "items": [{"sku": "a", "quantity": "two"}]}, "@ $.items[0].quantity"),
        (Order, {"id": "o", "items": [], "extra": 1}, "extra fields found (extra)"),
        (Order, {"items": []}, "required field missing @ $.id"),
        (Shipment, {**SHIPMENT, "carrier": "fedex"}, "@ $.carrier"),
    ],
)
def test_data_that_does_not_fit_is_rejected_with_its_path(
    annotation: object, data: object, problem: str
) -> None:
    """Strict: no string-to-number coercion, no unknown keys, paths point at the problem."""
    payload = PayloadType(annotation, "input of shop@1")
    if annotation is Shipment:
        data = {**payload.to_json(SHIPMENT), "carrier": "fedex"}
    with pytest.raises(ValidationError) as caught:
        payload.from_json(data)
    assert any(problem in error for error in caught.value.errors), caught.value.errors
    assert "input of shop@1" in str(caught.value)


def test_to_json_rejects_a_value_of_the_wrong_type() -> None:
    """Passing a value that does not fit the declared type fails before anything is sent."""
    with pytest.raises(ValidationError):
        PayloadType(Order, "input").to_json({"id": 1})


@pytest.mark.parametrize(
    ("annotation", "value", "problem"),
    [
        (list[str], {"a"}, "expected list, got set @ $"),
        (list[str], ("a",), "expected list, got tuple @ $"),
        (int, True, "expected int, got bool @ $"),
        (dict[str, list[int]], {"k": {1}}, "expected list, got set @ $.k"),
        (Order, Order(id="o", items=(Item("a", 1),)), "expected list, got tuple @ $.items"),  # type: ignore[arg-type]
        (int | str, 1.5, "float fits none of"),
    ],
)
def test_to_json_is_strict_about_containers_and_scalars(
    annotation: object, value: object, problem: str
) -> None:
    """A value the converter could coerce (a set for a list, True for an int) is refused
    as not of the declared type, naming where."""
    with pytest.raises(ValidationError) as caught:
        PayloadType(annotation, "output of task 'x'").to_json(value)
    assert problem in caught.value.message
    assert caught.value.message.startswith("output of task 'x' must be ")


class Opaque:
    """Not an attrs class, dataclass or TypedDict: cannot travel as JSON."""


def test_types_that_cannot_travel_as_json_are_refused_at_declaration() -> None:
    with pytest.raises(TypeError, match="Opaque'> cannot travel as JSON"):

        @aiki.task
        async def opaque(x: int) -> Opaque:
            return Opaque()

    with pytest.raises(TypeError, match=r"input of task 'nested': .*Wrapper.inner: "):

        @aiki.task
        async def nested(x: Wrapper) -> None:
            return None


@attrs.frozen
class Wrapper:
    inner: Opaque


def test_a_missing_return_annotation_is_refused_at_declaration() -> None:
    """Not taken to mean ``None`` (which failed only at run time, on the first return)."""
    with pytest.raises(TypeError, match=r"task 'bare': annotate the return type \(-> None"):

        @aiki.task
        async def bare(x: int):  # type: ignore[no-untyped-def]
            return x

    flow = aiki.workflow("bare-flow")
    with pytest.raises(TypeError, match=r"bare-flow@1: annotate the return type"):

        @flow.version("1")
        async def handler(run: aiki.Run[int], x: int):  # type: ignore[no-untyped-def]
            return x


@pytest.mark.parametrize(
    ("annotation", "good", "bad"),
    [
        (
            Order,
            ORDER,
            [
                {"id": "o", "items": [{"sku": "a", "quantity": "2"}]},
                {"id": "o", "items": [], "x": 1},
                {"items": []},
                [],
            ],
        ),
        (Shipment, SHIPMENT, [{"carrier": "dhl"}, "x"]),
        (list[int], [1], [["1"], [1.5], {"a": 1}]),
        (int | None, None, ["1", 1.5]),
    ],
)
def test_the_json_schema_agrees_with_the_converter(
    annotation: object, good: object, bad: list[object]
) -> None:
    """What the server validates (the schema) matches what workers accept (the converter)."""
    payload = PayloadType(annotation, "input")
    schema = payload.schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    validator.validate(payload.to_json(good))
    for data in bad:
        assert not validator.is_valid(data), data
        with pytest.raises(ValidationError):
            payload.from_json(data)


@pytest.mark.parametrize(
    "annotation",
    [Order, Shipment, list[Order], dict[str, float], dict[str, object], int, str, bool, None,
     tuple[int, str], Order | None, list[Shipment] | int],
)  # fmt: skip
def test_every_schema_the_sdk_derives_may_be_registered(annotation: object) -> None:
    """What the SDK writes stays within what the server accepts at registration."""
    assert schema_problems(PayloadType(annotation, "input").schema()) == []


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ({"type": "string", "pattern": "^(a+)+$"}, "keyword 'pattern' is not allowed @ $"),
        ({"type": "object", "properties": {"a": {"type": "string", "format": "regex"}}},
         "format 'regex' is not allowed @ $.properties.a.format"),
        ({"type": "object", "patternProperties": {"^(a+)+$": {}}},
         "keyword 'patternProperties' is not allowed @ $"),
        ({"anyOf": [{"type": "string"}, {"not": {}}]}, "keyword 'not' is not allowed @ $.anyOf[1]"),
        ("string", "a schema must be an object or a boolean @ $"),
    ],
)  # fmt: skip
def test_schemas_beyond_what_the_sdk_writes_are_refused(schema: object, problem: str) -> None:
    """Regular expressions (catastrophic backtracking on the server's loop) and keywords
    the SDK never writes are named with their place."""
    assert problem in schema_problems(schema)


def test_a_schema_too_deep_is_refused() -> None:
    """Depth is bounded, so a hostile schema cannot exhaust the server's stack."""
    schema: dict[str, object] = {"type": "string"}
    for _ in range(MAX_SCHEMA_DEPTH + 5):
        schema = {"type": "array", "items": schema}
    assert any("too large or too deep" in problem for problem in schema_problems(schema))
