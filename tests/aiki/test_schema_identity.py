"""A version's identity is the structure of its payloads, not the names of their types.

Moving an input class to another module (or renaming it) is a refactor: the schema the
SDK derives differs only in definition names and titles, and `canonical_schema` makes
those the same. Changing a field's name or type is a new version.
"""

from __future__ import annotations

import sys
import textwrap
import types

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiki.protocol import canonical_schema, same_schemas, schema_problems
from aiki.sdk import PayloadType

ORDER_MODULE = """
from __future__ import annotations
import attrs

@attrs.frozen
class Item:
    sku: str
    quantity: {quantity}

@attrs.frozen
class Order:
    id: str
    items: list[Item]
    parent: Order | None = None
"""


def _input_schema(module_name: str, quantity: str = "int") -> object:
    """The input schema of ``Order``, with its classes defined in module ``module_name``."""
    module = types.ModuleType(module_name)
    sys.modules[module_name] = module  # (attrs resolves the hints through it)
    try:
        exec(textwrap.dedent(ORDER_MODULE.format(quantity=quantity)), module.__dict__)
        return PayloadType(module.Order, "input").schema()
    finally:
        del sys.modules[module_name]


def test_a_class_moved_to_another_module_has_the_same_schema() -> None:
    before = _input_schema("shop.orders")
    after = _input_schema("shop.models.order")
    assert before != after  # the definitions are named by module: the raw text differs
    assert same_schemas(before, after)
    assert canonical_schema(before) == canonical_schema(after)


def test_a_changed_field_type_is_another_schema() -> None:
    assert not same_schemas(_input_schema("shop.orders"), _input_schema("shop.orders", "str"))
    assert not same_schemas(_input_schema("shop.orders"),
                            _input_schema("shop.orders", "int | None"))  # fmt: skip


def test_the_canonical_form_is_itself_a_registrable_schema() -> None:
    canonical = canonical_schema(_input_schema("shop.orders"))
    assert schema_problems(canonical) == []
    assert canonical_schema(canonical) == canonical
    assert isinstance(canonical, dict)
    assert sorted(canonical["$defs"]) == ["#0", "#1"]


_NAMES = st.text("abcdefgh", min_size=1, max_size=4)
_LEAVES = st.sampled_from([{"type": t} for t in ("string", "integer", "number", "boolean")])


@st.composite
def _schemas(draw: st.DrawFn) -> tuple[dict[str, object], dict[str, object]]:
    """A schema with object definitions, and the same schema with every definition
    renamed, titles changed and ``required`` reordered."""
    count = draw(st.integers(1, 4))
    shapes = []
    for index in range(count):
        fields = draw(st.dictionaries(_NAMES, st.one_of(
            _LEAVES, st.integers(0, count - 1).map(lambda i: {"$ref": i}),
        ), min_size=1, max_size=4))  # fmt: skip
        shapes.append((index, fields))
    old = [f"pkg.mod{index}.T{index}" for index in range(count)]
    new = [f"elsewhere.M{draw(st.integers(0, 99))}_{index}" for index in range(count)]

    def write(names: list[str], shuffle: bool) -> dict[str, object]:
        definitions: dict[str, object] = {}
        for index, fields in shapes:
            properties = {name: ({"$ref": f"#/$defs/{names[kind['$ref']]}"}
                                 if isinstance(kind.get("$ref"), int) else kind)
                          for name, kind in fields.items()}  # fmt: skip
            required = sorted(properties, reverse=shuffle)
            definitions[names[index]] = {"type": "object", "properties": properties,
                                         "required": required, "additionalProperties": False,
                                         "title": names[index].rpartition(".")[2]}  # fmt: skip
        if shuffle:
            definitions = dict(reversed(definitions.items()))
        return {"$schema": "https://json-schema.org/draft/2020-12/schema",
                "$ref": f"#/$defs/{names[0]}", "$defs": definitions}  # fmt: skip

    return write(old, False), write(new, True)


@given(_schemas())
def test_renaming_definitions_keeps_the_identity(pair: tuple[dict[str, object], ...]) -> None:
    original, renamed = pair
    assert same_schemas(original, renamed)


@given(_schemas(), st.sampled_from(["string", "integer", "number", "boolean", "null"]))
def test_changing_a_field_type_changes_the_identity(
    pair: tuple[dict[str, object], ...], kind: str
) -> None:
    original, _ = pair
    definitions = original["$defs"]
    assert isinstance(definitions, dict)
    first = next(iter(definitions.values()))
    name, field = next(iter(first["properties"].items()))
    if field == {"type": kind}:
        return
    changed = {**original, "$defs": {**definitions, next(iter(definitions)): {
        **first, "properties": {**first["properties"], name: {"type": kind}}}}}  # fmt: skip
    assert not same_schemas(original, changed)


@pytest.mark.parametrize("schema", [{}, True, {"type": "string"}, {"$ref": "#/$defs/missing"}])
def test_schemas_without_definitions_are_kept(schema: object) -> None:
    assert same_schemas(schema, schema)
    assert canonical_schema(canonical_schema(schema)) == canonical_schema(schema)
