"""A due time at exactly the clock (issue 13, point 5), in the pure core.

The rule (``app.domain.engine``, "Due times and the clock"): a due time ``T`` runs when the
clock reaches ``T``, before the events dated ``T``. ``step`` runs it before applying an
event at ``T``; the timer (``tick``) at a clock of ``T`` runs it; ``classify`` advanced to
``T`` runs it. The CDNOW sample streamed with a closing event per partition once left a
customer whose demotion fell due exactly at the closing event's time: ``classify`` emitted
it, the worker (which ran only what was due *before* its clock) did not.

Here one customer (``c1``) is due at exactly ``T`` (its purchase day leaves the 90-day
window: tier C -> D, stage at risk, a churn warning), with and without events at ``T`` of
its own and of other customers. Every order in which a worker may meet the events of
``T`` and run its timer gives exactly what ``classify`` (replay, then advance to ``T``)
gives: the same outputs per customer (ids included) and the same states.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest

from app.domain.engine import advance, step, tick
from app.domain.events import Event
from app.domain.outputs import Output
from app.domain.policy import Policy
from app.domain.replay import replay
from app.domain.state import CustomerState, state_to_dict
from app.service.batch_replay import classify_events
from schemas import encode_output
from tests.kit.builders import DAY, interaction, purchase
from tests.kit.policies import VALUE_TIERS_V2

T0 = 1_717_200_000_000  # 2024-06-01T00:00:00Z
T = T0 + 90 * DAY  # c1's purchase of T0 leaves the 90-day window at midnight: due at T

HISTORY = [
    purchase("c1", 400.0, T0, event_id="c1-p0"),
    purchase("c2", 400.0, T0, event_id="c2-p0"),
]
#: The events at exactly T of each case (besides c1's due time).
AT_T: dict[str, list[Event]] = {
    "closing event of another customer": [interaction("c3", T, event_id="close")],
    "own interaction": [interaction("c1", T, event_id="c1-i")],
    "own purchase": [purchase("c1", 400.0, T, event_id="c1-p")],
    "own and others": [
        purchase("c1", 400.0, T, event_id="c1-p"),
        interaction("c1", T, event_id="c1-i"),
        interaction("c2", T, event_id="c2-i"),  # c2 is due at T too
        interaction("c3", T, event_id="close"),
    ],
}


@pytest.fixture(scope="module")
def policy() -> Policy:
    return VALUE_TIERS_V2


Run = tuple[dict[str, list[bytes]], dict[str, dict[str, object]]]


def per_customer(outputs: Sequence[Output], states: dict[str, CustomerState]) -> Run:
    out: dict[str, list[bytes]] = {}
    for o in outputs:
        out.setdefault(o.customer_id, []).append(encode_output(o))
    return out, {cid: state_to_dict(st) for cid, st in states.items()}


def batch_run(events: list[Event], policy: Policy) -> Run:
    result, at, _ = classify_events(events, policy, as_of=T)
    assert at == T
    return per_customer(result.outputs, result.states)


def worker_run(at_t: Sequence[Event], timer_after: int, policy: Policy) -> Run:
    """The history, then the events of ``T`` in the given order with the worker's timer
    (``tick`` of every customer to its partition clock) after the first ``timer_after`` of
    them, and the timer once more at the end (it keeps running)."""
    states: dict[str, CustomerState] = {}
    outputs: list[Output] = []
    clock = 0

    def timer() -> None:
        for st in states.values():
            outputs.extend(tick(st, clock, policy).outputs)

    for i, e in enumerate([*HISTORY, *at_t]):
        if i == len(HISTORY) + timer_after:
            timer()
        clock = max(clock, e.occurred_at)
        res = step(states.get(e.customer_id), e, clock, policy)
        states[e.customer_id] = res.state
        outputs.extend(res.outputs)
    timer()
    assert clock == T
    return per_customer(outputs, states)


def interleavings(events: Sequence[Event]) -> list[tuple[Event, ...]]:
    """Every order of ``events`` that keeps each customer's own events in their order.
    (The order of one customer's own events of one millisecond on different topics is
    the worker's cross-topic ordering, not the due-time rule: classify keeps file order.)"""

    def own_order(order: tuple[Event, ...], cid: str) -> list[str]:
        return [e.event_id for e in order if e.customer_id == cid]

    customers = {e.customer_id for e in events}
    return [
        order
        for order in itertools.permutations(events)
        if all(own_order(order, c) == own_order(tuple(events), c) for c in customers)
    ]


@pytest.mark.parametrize("case", AT_T)
def test_every_order_of_the_events_at_t_and_the_timer_gives_what_classify_gives(
    case: str, policy: Policy
) -> None:
    at_t = AT_T[case]
    want = batch_run([*HISTORY, *at_t], policy)
    changes, _ = want
    due = f"due@{T}"
    # c1's re-evaluation due at exactly T happened, at T, in classify as in the worker
    assert any(due in o.decode() and b"at_risk" in o for o in changes["c1"]), changes["c1"]
    runs = 0
    for order in interleavings(at_t):
        for timer_after in range(len(at_t) + 1):  # before, between or after them
            assert worker_run(order, timer_after, policy) == want, (order, timer_after)
            runs += 1
    assert runs >= 2


def test_the_due_time_runs_before_the_customers_own_event_at_t(policy: Policy) -> None:
    """``step`` with an event at ``T`` first runs the due time ``T`` (without the event),
    then evaluates the event at ``T``: the same outputs as the timer running first."""
    own = purchase("c1", 400.0, T, event_id="c1-p")
    first = replay(HISTORY[:1], policy).states["c1"]
    by_step = step(first, own, T, policy).outputs

    second = replay(HISTORY[:1], policy).states["c1"]
    by_timer = tick(second, T, policy).outputs
    assert by_timer and all(o.cause == f"due@{T}" for o in by_timer)
    assert tick(second, T, policy).outputs == []  # done: due again only after T
    then = step(second, own, T, policy).outputs
    assert [o.id for o in by_step] == [o.id for o in by_timer + then]
    assert state_to_dict(first) == state_to_dict(second)
    # the purchase of T lands after the demotion of T and brings the customer back
    tiers = [(o.cause, getattr(o, "to_tier", None)) for o in by_step if o.kind == "tier_change"]
    assert tiers == [(f"due@{T}", "D"), ("c1-p", "C")]


def test_advance_to_the_clock_is_inclusive_and_one_ms_earlier_is_not(policy: Policy) -> None:
    state = replay(HISTORY[:1], policy).states["c1"]
    assert state.next_due == T
    assert advance(state, T - 1, policy) == []
    assert {o.at for o in advance(state, T, policy)} == {T}
