"""A limit's key, taken from a run's input by a path: a string, an integer or a boolean
there is the key; anything else is a refusal that names the path."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiki.protocol._limits import (
    MAX_KEY_LENGTH,
    ConcurrencyLimit,
    LimitKeyError,
    key_path_problem,
    limit_key,
)

ORDER = {"customer_id": 7, "account": {"id": "acct-1", "vip": True}, "items": [{"sku": "a"}]}


def _limit(key: str | None) -> ConcurrencyLimit:
    return ConcurrencyLimit(name="stripe", key=key, per_key=2)


@pytest.mark.parametrize(("path", "key"), [
    (None, ""), ("customer_id", "7"), ("account.id", "acct-1"), ("account.vip", "true"),
    ("items.0.sku", "a"),
])  # fmt: skip
def test_the_key_is_the_value_at_the_path_as_text(path: str | None, key: str) -> None:
    assert limit_key(_limit(path), ORDER) == key


@pytest.mark.parametrize(("path", "named"), [
    ("customer", "$.customer"), ("account.name", "$.account.name"), ("items.3.sku", "$.items[3]"),
    ("account", "$.account: a string"), ("items", "$.items: a string"),
])  # fmt: skip
def test_an_input_without_a_usable_key_is_refused_naming_the_path(path: str, named: str) -> None:
    with pytest.raises(LimitKeyError, match=r"limit 'stripe' takes its key from") as refused:
        limit_key(_limit(path), ORDER)
    assert named in str(refused.value)


def test_a_key_too_long_is_refused() -> None:
    with pytest.raises(LimitKeyError, match="longer than"):
        limit_key(_limit("id"), {"id": "x" * (MAX_KEY_LENGTH + 1)})


@pytest.mark.parametrize("path", ["a..b", "a.b c", "$.a", "a." * 8 + "a", "a.-1", ""])
def test_bad_key_paths_are_named(path: str) -> None:
    assert key_path_problem(path) is not None


_PATHS = st.lists(st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True), min_size=1, max_size=8)
_KEYS = st.one_of(st.text(max_size=50), st.integers(-(10**18), 10**18), st.booleans())


@given(_PATHS, _KEYS)
def test_any_valid_path_finds_the_value_it_names(parts: list[str], value: object) -> None:
    path = ".".join(parts)
    assert key_path_problem(path) is None
    payload: object = value
    for part in reversed(parts):
        payload = {part: payload}
    expected = ("true" if value else "false") if isinstance(value, bool) else str(value)
    assert limit_key(_limit(path), payload) == expected
