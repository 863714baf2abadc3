"""The replay core on its own (pure, no I/O): memoized task calls by content address."""

from __future__ import annotations

import pytest

from aiki.errors import NonDeterminismError
from aiki.protocol import RecordedTask, canonical_json
from aiki.sdk import NewCall, ReplayLog, task_address

CHARGE_A = task_address("charge", {"order": "a", "amount": 10})
CHARGE_B = task_address("charge", {"order": "b", "amount": 10})
SHIP = task_address("ship", {"order": "a"})
EMAIL = task_address("email", None)


def done(address: str, seq: int = 0, output: object = "ok") -> RecordedTask:
    return RecordedTask(
        address=address, seq=seq, name=address.split(":")[1], state="completed", output=output
    )


def test_addresses_depend_on_name_and_canonical_input_only() -> None:
    """Key order does not change the address; the name and the values do."""
    assert task_address("charge", {"amount": 10, "order": "a"}) == CHARGE_A
    assert CHARGE_A != CHARGE_B
    assert task_address("refund", {"order": "a", "amount": 10}) != CHARGE_A
    assert canonical_json({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == b'{"a":[1,{"c":3,"d":2}],"b":1}'


def test_a_fresh_run_gets_new_calls_numbered_per_address() -> None:
    """With no history every call is new; repeated calls of one address get seq 0, 1, 2."""
    log = ReplayLog([])
    assert log.call(CHARGE_A, RecordedTask) == NewCall(address=CHARGE_A, seq=0)
    assert log.call(CHARGE_A, RecordedTask) == NewCall(address=CHARGE_A, seq=1)
    assert log.call(SHIP, RecordedTask) == NewCall(address=SHIP, seq=0)


def test_recorded_calls_are_returned_without_running_and_new_ones_follow() -> None:
    """A resumed run replays what is recorded, then continues with new calls."""
    log = ReplayLog([done(CHARGE_A, output="ch_1"), done(SHIP, output="tr_9")])
    assert log.call(CHARGE_A, RecordedTask) == done(CHARGE_A, output="ch_1")
    assert log.call(SHIP, RecordedTask) == done(SHIP, output="tr_9")
    assert log.call(EMAIL, RecordedTask) == NewCall(address=EMAIL, seq=0)
    assert log.unconsumed() == []


def test_repeated_calls_replay_in_occurrence_order_then_continue_numbering() -> None:
    """Two recorded calls of the same address replay in seq order; a third is seq 2."""
    log = ReplayLog([done(CHARGE_A, 1, "second"), done(CHARGE_A, 0, "first")])
    outputs = [log.call(CHARGE_A, RecordedTask).output for _ in range(2)]
    assert outputs == ["first", "second"]
    assert log.call(CHARGE_A, RecordedTask) == NewCall(address=CHARGE_A, seq=2)


def test_reordered_calls_replay_fine() -> None:
    """Calling recorded tasks in another order still finds each by address."""
    log = ReplayLog([done(CHARGE_A), done(SHIP)])
    assert isinstance(log.call(SHIP, RecordedTask), RecordedTask)
    assert isinstance(log.call(CHARGE_A, RecordedTask), RecordedTask)
    assert log.call(EMAIL, RecordedTask) == NewCall(address=EMAIL, seq=0)


def test_removed_calls_replay_fine_when_the_run_then_completes() -> None:
    """Dropping a recorded call from the code is fine: the rest replays and the run can finish."""
    log = ReplayLog([done(CHARGE_A), done(SHIP), done(EMAIL)])
    assert isinstance(log.call(CHARGE_A, RecordedTask), RecordedTask)
    assert isinstance(log.call(EMAIL, RecordedTask), RecordedTask)
    assert [task.address for task in log.unconsumed()] == [SHIP]


def test_a_call_inserted_before_recorded_ones_is_caught_before_it_runs() -> None:
    """A new call while recorded calls are unconsumed fails, naming them, before it runs."""
    log = ReplayLog([done(CHARGE_A), done(SHIP)])
    with pytest.raises(NonDeterminismError) as caught:
        log.call(EMAIL, RecordedTask)
    assert set(caught.value.unconsumed) == {f"{CHARGE_A}#0", f"{SHIP}#0"}
    assert CHARGE_A in str(caught.value)


def test_a_recorded_call_with_changed_input_is_caught() -> None:
    """Changing a task's input changes its address: the old record is unconsumed, so it fails."""
    log = ReplayLog([done(CHARGE_A)])
    with pytest.raises(NonDeterminismError, match=r"steps were not replayed"):
        log.call(CHARGE_B, RecordedTask)


def test_failed_outcomes_replay_too() -> None:
    """A task that failed for good is replayed as that failure, not run again."""
    failed = RecordedTask(
        address=SHIP,
        seq=0,
        name="ship",
        state="failed",
        error={"type": "Boom", "message": "no"},
        attempts=3,
    )
    assert ReplayLog([failed]).call(SHIP, RecordedTask) == failed
