"""What a payload schema a worker registers may contain.

The server validates starts and events against the JSON Schemas workers register, on
its event loop. A schema is therefore data from a peer like any other: a ``pattern``
with catastrophic backtracking (``^(a+)+$``) would stall every client for seconds. The
SDK derives schemas from Python types (`aiki.sdk`) with a small set of keywords and no
regular expressions; a registered schema may use exactly those, within bounds of size
and depth, and anything else is refused at registration with the keyword named.
"""

from __future__ import annotations

from typing import Final

SCHEMA_KEYWORDS: Final = frozenset({
    "$schema", "$ref", "$defs", "type", "properties", "required", "additionalProperties",
    "items", "prefixItems", "minItems", "maxItems", "enum", "anyOf", "format", "title",
})  # fmt: skip
"""The keywords the SDK writes (no ``pattern``, ``patternProperties`` or format ``regex``)."""

SCHEMA_FORMATS: Final = frozenset({"date-time", "date"})
MAX_SCHEMA_DEPTH: Final = 64
MAX_SCHEMA_NODES: Final = 10_000

_NAMED_CHILDREN: Final = frozenset({"properties", "$defs"})
"""Keywords whose value maps names (not keywords) to schemas."""
_LIST_CHILDREN: Final = frozenset({"prefixItems", "anyOf"})
_SCHEMA_CHILDREN: Final = frozenset({"items", "additionalProperties"})


def schema_problems(schema: object) -> list[str]:
    """What is wrong with ``schema`` as a registered payload schema (empty: nothing).

    Each problem names its place, e.g. ``keyword 'pattern' is not allowed @ $.properties.a``.
    """
    problems: list[str] = []
    nodes = 0

    def visit(node: object, path: str, depth: int) -> None:
        nonlocal nodes
        nodes += 1
        if depth > MAX_SCHEMA_DEPTH or nodes > MAX_SCHEMA_NODES:
            if not problems or "too large" not in problems[-1]:
                problems.append(f"the schema is too large or too deep @ {path}")
            return
        if isinstance(node, bool):
            return  # true / false: anything / nothing
        if not isinstance(node, dict):
            problems.append(f"a schema must be an object or a boolean @ {path}")
            return
        for keyword, value in node.items():
            where = f"{path}.{keyword}"
            if keyword not in SCHEMA_KEYWORDS:
                problems.append(f"keyword {keyword!r} is not allowed @ {path}")
            elif keyword == "format" and value not in SCHEMA_FORMATS:
                problems.append(f"format {value!r} is not allowed @ {where}")
            elif keyword in _NAMED_CHILDREN:
                if not isinstance(value, dict):
                    problems.append(f"{keyword} must be an object @ {where}")
                    continue
                for name, child in value.items():
                    visit(child, f"{where}.{name}", depth + 1)
            elif keyword in _LIST_CHILDREN:
                if not isinstance(value, list):
                    problems.append(f"{keyword} must be an array @ {where}")
                    continue
                for index, child in enumerate(value):
                    visit(child, f"{where}[{index}]", depth + 1)
            elif keyword in _SCHEMA_CHILDREN:
                visit(value, where, depth + 1)

    visit(schema, "$", 0)
    return problems


_METADATA: Final = frozenset({"$schema", "$defs", "title"})
"""Keywords that name or document a schema without changing what it accepts."""


def canonical_schema(schema: object) -> object:
    """What ``schema`` accepts, free of the names it was written with.

    A workflow version's identity is the structure of its payloads: field names and
    types. The names of definitions (the SDK writes the Python class's name), titles and
    the order of ``required`` are not part of it, so moving an input class to another
    module, or renaming it, keeps the version; changing a field's name or type does not.
    Definitions are renamed ``#0``, ``#1``… in the order a walk in sorted key order first
    refers to them, and those never referred to are dropped. Idempotent.

    ``schema`` must have passed `schema_problems` (its size and depth are bounded).
    """
    definitions = schema.get("$defs", {}) if isinstance(schema, dict) else {}
    names: dict[str, str] = {}

    def reference(ref: object) -> object:
        if not isinstance(ref, str) or not ref.startswith("#/$defs/"):
            return ref
        name = ref.removeprefix("#/$defs/")
        if name not in definitions:
            return ref
        return names.setdefault(name, f"#/$defs/#{len(names)}")

    def walk(node: object) -> object:
        if not isinstance(node, dict):
            return node
        shape: dict[str, object] = {}
        for keyword in sorted(node):
            value = node[keyword]
            if keyword in _METADATA:
                continue
            if keyword == "$ref":
                shape[keyword] = reference(value)
            elif keyword == "properties" and isinstance(value, dict):
                shape[keyword] = {name: walk(value[name]) for name in sorted(value)}
            elif keyword in _LIST_CHILDREN and isinstance(value, list):
                shape[keyword] = [walk(child) for child in value]
            elif keyword in _SCHEMA_CHILDREN:
                shape[keyword] = walk(value)
            elif keyword == "required" and isinstance(value, list):
                shape[keyword] = sorted(value, key=str)
            else:
                shape[keyword] = value
        return shape

    root = walk(schema)
    if not isinstance(root, dict) or not names:
        return root
    walked: dict[str, object] = {}
    while len(walked) < len(names):  # definitions refer to further definitions
        for name, renamed in list(names.items()):
            if renamed not in walked:
                walked[renamed] = walk(definitions[name])
    return root | {"$defs": {name.removeprefix("#/$defs/"): shape
                             for name, shape in sorted(walked.items())}}  # fmt: skip


def same_schemas(stored: object, registered: object) -> bool:
    """Whether two schemas accept the same payloads (their `canonical_schema` is equal)."""
    return canonical_schema(stored) == canonical_schema(registered)
