"""The listener's admission decisions, by property: keyless connections stay within their
share, never push out an admitted one, and push out the oldest idle ones first."""

from __future__ import annotations

import itertools

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from transport._admission import Admission, address_group

HOSTS = ("10.0.0.1", "10.0.0.2", "2001:db8::1", "2001:db8::2", "2001:db8:0:1::1", "::ffff:10.0.0.1")

steps = st.lists(
    st.one_of(
        st.tuples(st.just("arrive"), st.sampled_from(HOSTS)),
        st.tuples(st.just("busy"), st.integers(0, 40), st.booleans()),
        st.tuples(st.just("admit"), st.integers(0, 40)),
        st.tuples(st.just("leave"), st.integers(0, 40)),
    ),
    max_size=120,
)


@attrs.define
class Model:
    """What the test knows of each connection."""

    order: list[int] = attrs.Factory(list)
    """Connections in the order they arrived."""
    group: dict[int, str] = attrs.Factory(dict)
    state: dict[int, str] = attrs.Factory(dict)
    """waiting, admitted or gone."""
    busy: set[int] = attrs.Factory(set)

    def waiting(self) -> list[int]:
        return [one for one in self.order if self.state[one] == "waiting"]


@given(
    steps=steps,
    cap=st.integers(1, 12),
    share=st.integers(1, 8),
    per_address=st.integers(1, 4),
)
@settings(max_examples=400, deadline=None)
def test_keyless_connections_stay_in_their_share_and_go_oldest_idle_first(
    steps: list[tuple[object, ...]], cap: int, share: int, per_address: int
) -> None:
    admission: Admission[int] = Admission(cap, share, per_address)
    model = Model()
    numbers = itertools.count()
    for step in steps:
        if step[0] == "arrive":
            host = str(step[1])
            new = next(numbers)
            before_waiting = model.waiting()
            all_admitted_at_cap = not before_waiting and admission.open >= cap
            arrival = admission.arrive(new, host)
            model.order.append(new)
            model.group[new] = address_group(host)
            assert arrival.refused == all_admitted_at_cap
            if arrival.refused:
                assert arrival.close == ()
                model.state[new] = "gone"
                continue
            model.state[new] = "waiting"
            for closed in arrival.close:
                assert closed in before_waiting  # never an admitted one, nor the new one
                model.state[closed] = "gone"
            survivors = [one for one in before_waiting if model.state[one] == "waiting"]
            for closed in arrival.close:
                same = [one for one in survivors if model.group[one] == model.group[closed]]
                idle = [one for one in same if one not in model.busy]
                if closed in model.busy:
                    assert idle == [], "a busy connection closed while an idle one stayed"
                else:
                    assert all(one > closed for one in idle), "an older idle one stayed"
            model.busy -= set(arrival.close)
        else:
            known = [one for one in model.order if model.state[one] != "gone"]
            if not known:
                continue
            which = known[int(step[1]) % len(known)]  # type: ignore[call-overload]
            if step[0] == "busy":
                admission.busy(which, bool(step[2]))
                if step[2] and model.state[which] == "waiting":
                    model.busy.add(which)
                else:
                    model.busy.discard(which)
            elif step[0] == "admit":
                admission.admit(which)
                if model.state[which] == "waiting":
                    model.state[which] = "admitted"
                    model.busy.discard(which)
            else:
                admission.leave(which)
                model.state[which] = "gone"
                model.busy.discard(which)
        waiting = model.waiting()
        admitted = [one for one in model.order if model.state[one] == "admitted"]
        assert admission.waiting == len(waiting) <= share
        assert admission.open == len(waiting) + len(admitted) <= max(cap, 1)
        for group in {model.group[one] for one in waiting}:
            assert sum(model.group[one] == group for one in waiting) <= per_address
        assert all(admission.is_waiting(one) for one in waiting)


def test_peers_are_counted_by_address_and_ipv6_by_its_64() -> None:
    assert address_group("10.0.0.1") == "10.0.0.1"
    assert address_group("::ffff:10.0.0.1") == "10.0.0.1"
    assert address_group("2001:db8::1") == address_group("2001:db8::ffff:2") == "2001:db8::/64"
    assert address_group("2001:db8:0:1::1") != address_group("2001:db8::1")
    assert address_group("a name") == "a name"
