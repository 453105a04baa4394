"""The timer path without Kafka: the due-time index, the partition-clock watermark, and
``CustomerBatch.tick`` re-evaluating exactly the customers that fell due."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from app.domain.engine import advance
from app.domain.policy import Policy
from app.domain.state import CustomerState, state_to_dict
from app.service.batch_replay import classify_events
from app.service.due import DueIndex, ReadProgress, partition_clocks, peek_next_due
from app.service.processor import INPUT_KINDS, CustomerBatch, decode_state
from schemas import OUTPUT_TOPICS, decode_event
from tests.kit.fakes import Store
from tests.unit.service.test_batching import DAY, T0, batch, doc, policy, records

__all__ = ["policy"]  # the fixture


def test_due_index_pops_in_time_order_per_partition_and_forgets_replaced_times() -> None:
    idx = DueIndex()
    idx.put("a", 0, 30)
    idx.put("b", 0, 10)
    idx.put("c", 1, 5)
    idx.put("a", 0, 20)  # moved earlier: the old entry is stale
    idx.put("b", 0, None)  # no longer due at all
    assert len(idx) == 2 and idx.next_due(0) == 20
    assert idx.pop_due(0, 25) == ["a"]
    assert idx.pop_due(0, 100) == [] and idx.pop_due(1, 4) == []
    assert idx.pop_due(1, 5) == ["c"] and len(idx) == 0
    for i in range(5000):  # many updates of one customer stay one entry (compaction)
        idx.put("x", 2, i)
    assert len(idx) == 1 and idx.pop_due(2, 10**9) == ["x"]


def test_rebuild_reads_due_times_and_clocks_from_stored_states() -> None:
    s = CustomerState("c1", clock=T0, next_due=T0 + DAY, tier="D")
    quiet = CustomerState("c2", clock=T0 + 5)
    v3 = orjson.dumps({"v": 3, "id": "c3", "clock": 7, "tier": "A"})  # from before due times
    stored = [
        (0, b"c1", orjson.dumps(state_to_dict(s))),
        (0, b"c2", orjson.dumps(state_to_dict(quiet))),
        (1, b"c3", v3),
    ]
    assert peek_next_due(stored[0][2]) == T0 + DAY and peek_next_due(stored[1][2]) is None
    idx = DueIndex()
    clocks = idx.rebuild(stored)
    assert clocks == {0: T0 + 5, 1: 7}
    assert idx.pop_due(1, 0) == ["c3"]  # due at once: its first evaluation sets the time
    assert idx.pop_due(0, T0 + DAY) == ["c1"]


def test_watermark_holds_the_clock_at_the_topic_that_is_behind() -> None:
    read = ReadProgress()
    read.next_offset.update({("p", 0): 10, ("i", 0): 3})
    read.event_time.update({("p", 0): 5_000, ("i", 0): 2_000})
    hw = {("p", 0): 10, ("i", 0): 8, ("p", 1): 4, ("i", 1): 0}
    latest = {0: 5_000, 1: 900}

    def clocks(wall: int | None, start: dict[tuple[str, int], int] | None = None) -> dict[int, int]:
        return partition_clocks(
            [0, 1], ["p", "i"], read, start or {}, lambda t, p: hw.get((t, p)), latest, wall, 100
        )

    # partition 0: interactions have 5 records left -> held at their 2000 (minus lateness);
    # partition 1: purchases have records and none read yet -> no clock
    assert clocks(None) == {0: 1_900}
    # everything read: the latest event time; and with a wall clock, the wall clock
    read.next_offset[("i", 0)] = 8
    assert clocks(None, {("p", 1): 4}) == {0: 4_900, 1: 800}
    assert clocks(10_000, {("p", 1): 4}) == {0: 9_900, 1: 9_900}


def test_tick_re_evaluates_due_customers_and_makes_them_dirty(policy: Policy) -> None:
    b: CustomerBatch = batch(policy)
    store = Store()
    b.process(records([("purchases", doc("c1", 0)), ("purchases", doc("c2", 50))]), store.load)
    store.flush(b)
    # c1's purchase day leaves the 90-day window (spend_90d decides tier C) 90 days on
    assert decode_state(store.data[b"c1"]).next_due == T0 + 90 * DAY
    assert b.due.next_due(0) == T0 + 90 * DAY and len(b.due) == 2

    def load(key: bytes, partition: int) -> bytes | None:
        assert partition == 0
        return store.data.get(key)

    now = T0 + 200 * DAY  # c1: 200 days silent, c2: 150
    out = b.tick({0: now}, load)
    assert out.ticked == 2 and b.dirty_customers == 2
    want: dict[str, list[bytes]] = {}
    for cid in ("c1", "c2"):
        ref = decode_state(store.data[cid.encode()])
        want[cid] = [o.id.encode() for o in advance(ref, now, policy)]
    got = [orjson.loads(r.value) for rs in out.outputs.values() for r in rs]
    assert sorted(g["id"].encode() for g in got) == sorted(i for ids in want.values() for i in ids)
    assert any(g["data"].get("to_stage") == "at_risk" for g in got)
    assert all(g["data"]["trigger"] == "time" for g in got)
    flushed = store.flush(b)
    assert {w.key for w in flushed.writes} == {b"c1", b"c2"}
    assert b.tick({0: now}, load).ticked == 0  # nothing due again until their next time


def test_tick_works_off_a_backlog_in_bounded_steps(policy: Policy) -> None:
    b: CustomerBatch = batch(policy)
    store = Store()
    b.process(records([("purchases", doc(f"c{i}", 0)) for i in range(3)]), store.load)
    store.flush(b)

    def load(key: bytes, partition: int) -> bytes | None:
        return store.data.get(key)

    now = T0 + 200 * DAY
    first = b.tick({0: now}, load, limit=2)
    assert (first.ticked, first.more_due) == (2, True)
    second = b.tick({0: now}, load, limit=2)
    assert (second.ticked, second.more_due) == (1, False)


# --- a due time at exactly the partition clock (issue 13, point 5) -------------------------
# c1's purchase of day 0 leaves the 90-day window at midnight of day 90 (tier C -> D, stage
# at risk, a churn warning): due at exactly T. The partition clock reaches T with an event
# of T: a closing event of another customer, or c1's own. Whatever the batches and wherever
# the timer runs, the worker ends with what classify advanced to T gives.
DUE = T0 + 90 * DAY
HISTORY = [("purchases", doc("c1", 0)), ("purchases", doc("c2", 0))]
CLOSING = ("interactions", doc("c3", 90, "interaction"))
OWN = ("purchases", doc("c1", 90))

#: case -> the batches after the history; None marks a timer run at the partition clock
SPLITS: dict[str, list[list[tuple[str, dict[str, Any]]] | None]] = {
    "closing event, then the timer": [[CLOSING], None],
    "own event of T after the timer": [[CLOSING], None, [OWN], None],
    "own event of T before the timer": [[CLOSING, OWN], None],
    "own event of T only": [[OWN], None],
    "everything in one batch": [[OWN, CLOSING], None],
}


def _by_customer(outcomes: list[Any]) -> dict[tuple[str, str], list[str]]:
    got: dict[tuple[str, str], list[str]] = {}
    for outcome in outcomes:
        for topic, recs in outcome.outputs.items():
            for r in recs:
                got.setdefault((r.key.decode(), topic), []).append(orjson.loads(r.value)["id"])
    return got


@pytest.mark.parametrize("case", SPLITS)
def test_tick_at_the_clock_runs_what_is_due_exactly_then_as_classify_does(
    case: str, policy: Policy
) -> None:
    b: CustomerBatch = batch(policy)
    store = Store()
    outcomes = [b.process(records(HISTORY), store.load)]
    store.flush(b)
    sent = list(HISTORY)
    offset = len(HISTORY)
    for step_ in SPLITS[case]:
        if step_ is None:  # the timer, at the partition clock the events brought
            assert b.partition_clocks[0] == DUE
            outcomes.append(b.tick(dict(b.partition_clocks), lambda k, p: store.data.get(k)))
        else:
            recs = [r._replace(offset=r.offset + offset) for r in records(step_)]
            outcomes.append(b.process(recs, store.load))
            sent += step_
            offset += len(step_)
    store.flush(b)

    events = [decode_event(orjson.dumps(d), kind=INPUT_KINDS[t]) for t, d in sent]
    want, at, _ = classify_events(events, policy)
    assert at == DUE
    expected: dict[tuple[str, str], list[str]] = {}
    for o in want.outputs:
        expected.setdefault((o.customer_id, OUTPUT_TOPICS[o.kind]), []).append(o.id)
    assert _by_customer(outcomes) == expected
    assert any(o.customer_id == "c1" and o.cause == f"due@{DUE}" for o in want.outputs)
    for cid, st in want.states.items():
        assert state_to_dict(decode_state(store.data[cid.encode()])) == state_to_dict(st), cid
