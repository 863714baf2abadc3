"""The replay core on its own (pure, no I/O): content addresses, what a sequential
handler's steps replay to, and what changed code is refused with. (Concurrent branches,
by property: `test_replay_properties`.)"""

from __future__ import annotations

from aiki.errors import NonDeterminismError
from aiki.protocol import RecordedTask, RecordedWait, Settled, canonical_json
from aiki.sdk import Deliver, Diverge, Replay, Start, Suspend, task_address

CHARGE_A = task_address("charge", {"order": "a", "amount": 10})
CHARGE_B = task_address("charge", {"order": "b", "amount": 10})
SHIP = task_address("ship", {"order": "a"})
EMAIL = task_address("email", None)


def done(address: str, seq: int = 0, output: object = "ok") -> RecordedTask:
    return RecordedTask(
        address=address, seq=seq, name=address.split(":")[1], state="completed", output=output
    )


def step(replay: Replay, address: str) -> Deliver | Start | Diverge | Suspend:
    """The handler's root branch takes a step; what the core decides."""
    replay.take((), address)
    decision = replay.decide()
    assert isinstance(decision, Deliver | Start | Diverge | Suspend), decision
    return decision


def test_addresses_depend_on_name_and_canonical_input_only() -> None:
    """Key order does not change the address; the name and the values do."""
    assert task_address("charge", {"amount": 10, "order": "a"}) == CHARGE_A
    assert CHARGE_A != CHARGE_B
    assert task_address("refund", {"order": "a", "amount": 10}) != CHARGE_A
    assert canonical_json({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == b'{"a":[1,{"c":3,"d":2}],"b":1}'


def test_a_fresh_run_gets_new_calls_numbered_per_address() -> None:
    """With no history every call is new; repeated calls of one address get seq 0, 1, 2."""
    replay = Replay()
    seqs = []
    for address in (CHARGE_A, CHARGE_A, SHIP):
        decision = step(replay, address)
        assert isinstance(decision, Start)
        (new,) = decision.steps
        seqs.append((new.address, new.seq))
        replay.arrive(new.address, new.seq, done(new.address, new.seq))
        assert isinstance(replay.decide(), Deliver)
    assert seqs == [(CHARGE_A, 0), (CHARGE_A, 1), (SHIP, 0)]


def test_recorded_calls_are_delivered_without_running_and_new_ones_follow() -> None:
    """A resumed run replays what is recorded (at its recorded positions), then continues
    with new calls."""
    history = [
        Settled(address=CHARGE_A, seq=0, position=0),
        Settled(address=SHIP, seq=0, position=1),
    ]
    replay = Replay([done(CHARGE_A, output="ch_1"), done(SHIP, output="tr_9")], history)
    first = step(replay, CHARGE_A)
    assert isinstance(first, Deliver)
    assert first.outcome == done(CHARGE_A, output="ch_1")
    assert first.settled is None, "its position is stored already"
    assert isinstance(second := step(replay, SHIP), Deliver)
    assert second.outcome == done(SHIP, output="tr_9")
    third = step(replay, EMAIL)
    assert isinstance(third, Start)
    assert third.steps[0].address == EMAIL
    replay.arrive(EMAIL, 0, done(EMAIL))
    delivered = replay.decide()
    assert isinstance(delivered, Deliver)
    assert delivered.settled == Settled(address=EMAIL, seq=0, position=2)


def test_outcomes_recorded_before_positions_existed_replay_by_address() -> None:
    """A history without positions (older runs) replays by address, as called."""
    replay = Replay([done(CHARGE_A, 1, "second"), done(CHARGE_A, 0, "first")])
    outputs = []
    for _ in range(2):
        decision = step(replay, CHARGE_A)
        assert isinstance(decision, Deliver)
        outputs.append(decision.outcome.output)  # type: ignore[attr-defined]
    assert outputs == ["first", "second"]
    decision = step(replay, CHARGE_A)
    assert isinstance(decision, Start)
    assert decision.steps[0].seq == 2


def test_reordered_calls_replay_fine() -> None:
    """Calling recorded tasks in another order still finds each by address."""
    history = [
        Settled(address=CHARGE_A, seq=0, position=0),
        Settled(address=SHIP, seq=0, position=1),
    ]
    replay = Replay([done(CHARGE_A), done(SHIP)], history)
    assert isinstance(step(replay, SHIP), Deliver)
    assert isinstance(step(replay, CHARGE_A), Deliver)
    assert isinstance(step(replay, EMAIL), Start)


def test_removed_calls_replay_fine_when_the_run_then_completes() -> None:
    """Dropping a recorded call from the code is fine: the rest replays."""
    replay = Replay([done(CHARGE_A), done(SHIP), done(EMAIL)])
    assert isinstance(step(replay, CHARGE_A), Deliver)
    assert isinstance(step(replay, EMAIL), Deliver)


def test_a_call_inserted_before_recorded_ones_is_caught_before_it_runs() -> None:
    """A new call while recorded calls are not replayed fails, naming them, before it runs."""
    history = [
        Settled(address=CHARGE_A, seq=0, position=0),
        Settled(address=SHIP, seq=0, position=1),
    ]
    replay = Replay([done(CHARGE_A), done(SHIP)], history)
    decision = step(replay, EMAIL)
    assert isinstance(decision, Diverge)
    assert set(decision.error.unconsumed) == {f"{CHARGE_A}#0", f"{SHIP}#0"}
    assert CHARGE_A in str(decision.error)
    assert isinstance(decision.error, NonDeterminismError)


def test_a_recorded_call_with_changed_input_is_caught() -> None:
    """Changing a task's input changes its address: the old record is unreached, so it fails."""
    decision = step(Replay([done(CHARGE_A)]), CHARGE_B)
    assert isinstance(decision, Diverge)
    assert "steps were not replayed" in str(decision.error)


def test_failed_outcomes_replay_too() -> None:
    """A task that failed for good is replayed as that failure, not run again."""
    failed = RecordedTask(address=SHIP, seq=0, name="ship", state="failed",
                          error={"type": "Boom", "message": "no"}, attempts=3)  # fmt: skip
    decision = step(Replay([failed]), SHIP)
    assert isinstance(decision, Deliver)
    assert decision.outcome == failed


def test_a_pending_wait_suspends_and_a_withdrawn_one_is_given_up_again() -> None:
    """A recorded pending wait holds its branch (the run suspends on it); a wait an
    earlier execution gave up is not delivered: its branch waits to give it up again,
    and if nothing can (no deadline), the code changed."""
    pending = RecordedWait(kind="event", key="go", seq=0, state="pending")
    assert isinstance(step(Replay([pending]), "event:go"), Suspend)
    withdrawn = RecordedWait(kind="sleep", key="nap", seq=0, state="withdrawn")
    given_up = [Settled(address="sleep:nap", seq=0, position=0, withdrawn=True)]
    replay = Replay([withdrawn], given_up)
    replay.take((), "sleep:nap", deadline=True)
    assert not isinstance(replay.decide(), Deliver | Start | Suspend), "waits for its deadline"
    assert replay.withdraw(()) is None, "its withdrawal is stored already"
    stuck = Replay([withdrawn], given_up)
    decision = step(stuck, "sleep:nap")
    assert isinstance(decision, Diverge)


def test_an_outcome_the_history_delivered_then_given_up_now_is_a_divergence() -> None:
    """Giving up a step whose outcome an earlier execution received means the handler's
    decisions depend on time: refused (before anything new happens). A step taken and
    given up in the same moment is simply forgotten."""
    history = [
        Settled(address=CHARGE_A, seq=0, position=0),
        Settled(address=SHIP, seq=0, position=1),
    ]
    replay = Replay([done(CHARGE_A), done(SHIP)], history)
    replay.take((2,), EMAIL)
    assert replay.withdraw((2,)) is None
    replay.take((0,), SHIP)
    replay.take((1,), CHARGE_A)
    assert isinstance(replay.decide(), Deliver)  # CHARGE_A, at position 0
    assert replay.withdraw((0,)) is None
    decision = replay.decide()
    assert isinstance(decision, Diverge)
    assert "given up" in str(decision.error)
