"""The JSON wire codec: tagged unions round-trip; bad input is rejected with a clear path."""

from __future__ import annotations

import datetime as dt

import attrs
import pytest

from aiki.wire import CodecError, WireCodec


@attrs.frozen(kw_only=True)
class Retry:
    max_attempts: int
    delay_seconds: float


@attrs.frozen(kw_only=True)
class NoRetry:
    pass


RetryPolicy = Retry | NoRetry


@attrs.frozen(kw_only=True)
class StartRun:
    run_id: str
    attempt: int
    requested_at: dt.datetime
    tags: tuple[str, ...] = ()
    retry: RetryPolicy = NoRetry()


@attrs.frozen(kw_only=True)
class CancelRun:
    run_id: str
    reason: str | None = None


WorkerInbound = StartRun | CancelRun
WIRE = WireCodec[WorkerInbound](WorkerInbound, also=[RetryPolicy])
EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_messages_round_trip_with_their_tag() -> None:
    """Each member of the union encodes with a "type" tag and decodes to an equal value."""
    start = StartRun(
        run_id="r1", attempt=2, requested_at=EPOCH, tags=("a", "b"),
        retry=Retry(max_attempts=3, delay_seconds=0.5),
    )  # fmt: skip
    cancel = CancelRun(run_id="r1", reason="user")
    for message in (start, cancel):
        raw = WIRE.encode(message)
        assert WIRE.decode(raw) == message
    assert b'"type":"StartRun"' in WIRE.encode(start)
    assert b'"type":"Retry"' in WIRE.encode(start), "nested unions are tagged too"


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b'{"type":"CancelRun","run_id":"r","extra":1}', "extra fields found (extra) @ $"),
        (b'{"type":"StartRun","run_id":"r","attempt":"two","requested_at":"2026-01-01T00:00:00Z"}',
         "expected int @ $.attempt"),
        (b'{"type":"CancelRun"}', "required field missing @ $.run_id"),
        (b'{"type":"Explode","run_id":"r"}', "unknown ('Explode') message type @ $.type"),
        (b'{"run_id":"r"}', "missing message type @ $.type"),
        (b"[1, 2]", "not an object @ $"),
        (b"{not json", "@ $"),
    ],
)  # fmt: skip
def test_bad_input_is_rejected_with_the_problem_and_its_path(raw: bytes, problem: str) -> None:
    """Unknown fields, wrong types, missing fields or tags, non-objects and non-JSON all fail."""
    with pytest.raises(CodecError) as caught:
        WIRE.decode(raw)
    assert any(problem in error for error in caught.value.errors), caught.value.errors


def test_a_nested_value_of_the_wrong_type_names_its_full_path() -> None:
    """Errors inside nested messages point at the nested field."""
    raw = (
        b'{"type":"StartRun","run_id":"r","attempt":1,"requested_at":"2026-01-01T00:00:00+00:00",'
        b'"retry":{"type":"Retry","max_attempts":"x","delay_seconds":1}}'
    )
    with pytest.raises(CodecError, match=r"expected int @ \$\.retry\.max_attempts"):
        WIRE.decode(raw)


def test_a_single_class_protocol_needs_no_tag() -> None:
    """A codec over one class encodes plain objects and still forbids unknown fields."""
    codec = WireCodec[CancelRun](CancelRun)
    assert codec.decode(codec.encode(CancelRun(run_id="x"))) == CancelRun(run_id="x")
    assert b"type" not in codec.encode(CancelRun(run_id="x"))
    with pytest.raises(CodecError, match="extra fields"):
        codec.decode(b'{"run_id":"x","nope":true}')


def test_protocols_must_be_attrs_classes() -> None:
    """Building a codec over something that is not an attrs class fails at once."""
    with pytest.raises(TypeError, match="not an attrs class"):
        WireCodec[int](int)


@attrs.frozen(kw_only=True)
class Envelope:
    payload: object
    note: str = ""


def test_object_fields_carry_any_json_value_unchanged() -> None:
    """A field typed ``object`` passes JSON through untouched (user payloads)."""
    codec = WireCodec[Envelope](Envelope)
    document = {"a": [1, 2.5, None, {"b": True}], "c": "x"}
    assert codec.decode(codec.encode(Envelope(payload=document))) == Envelope(payload=document)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("run_id", 5),  # a number for a string
        ("attempt", True),  # a boolean for an integer
        ("attempt", 2.9),  # a fraction for an integer
        ("attempt", "3"),  # a string for an integer
        ("reason", 0),  # a number for an optional string
    ],
)
def test_values_are_never_coerced(field: str, value: object) -> None:
    """cattrs alone would turn 5 into "5" and 2.9 into 2; the codec refuses, naming the field."""
    codec = WireCodec[StartRun | CancelRun](StartRun | CancelRun)
    message = {"type": "CancelRun" if field == "reason" else "StartRun", "run_id": "r1",
               "attempt": 1, "requested_at": "2026-01-01T00:00:00+00:00"}  # fmt: skip
    if field == "reason":
        del message["attempt"], message["requested_at"]
    message[field] = value
    with pytest.raises(CodecError) as raised:
        codec.structure(message)
    assert any(error.endswith(f"@ $.{field}") for error in raised.value.errors), raised.value.errors


@attrs.frozen(kw_only=True)
class Suspend:
    blocked_on: tuple[tuple[str, str, int], ...] = ()
    labels: dict[str, str] = attrs.Factory(dict)
    names: list[str] = attrs.Factory(list)


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("blocked_on", "x" * 2_000_000, "invalid value for type, expected tuple @ $.blocked_on"),
        ("blocked_on", {"a": 1}, "invalid value for type, expected tuple @ $.blocked_on"),
        ("names", "abc", "invalid value for type, expected list @ $.names"),
        ("labels", ["a", "b"], "invalid value for type, expected dict @ $.labels"),
        ("blocked_on", ["evt"], "invalid value for type, expected tuple @ $.blocked_on[0]"),
        ("blocked_on", [["event", "go"]],
         "invalid value for type, expected tuple @ $.blocked_on[0]"),
    ],
)  # fmt: skip
def test_containers_take_only_arrays_and_objects(field: str, value: object, error: str) -> None:
    """A string where a list belongs is one error, not one per character (cattrs alone
    iterates it: two million errors for 2 MB), and a fixed-length tuple takes its length."""
    codec = WireCodec[Suspend](Suspend)
    with pytest.raises(CodecError) as raised:
        codec.structure({field: value})
    assert raised.value.errors == (error,)
