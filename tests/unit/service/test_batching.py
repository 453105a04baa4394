"""The batch plumbing between Faust and the core (app.service.processor), without Kafka."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from app.domain.engine import StepResult, step
from app.domain.events import Event
from app.domain.outputs import snapshot
from app.domain.policy import Policy
from app.domain.replay import replay
from app.domain.state import CustomerState
from app.service.processor import (
    Counters,
    CustomerBatch,
    Flush,
    InputRecord,
    dead_letter_headers,
    decode_state,
)
from schemas import decode_event, output_to_cloudevent
from tests.kit.docs import TOPIC_KINDS as KINDS
from tests.kit.fakes import Store
from tests.kit.policies import VALUE_TIERS_V2

T0 = 1_717_200_000_000  # 2024-06-01
DAY = 86_400_000


@pytest.fixture(scope="module")
def policy() -> Policy:
    return VALUE_TIERS_V2


def doc(cid: str, n: int, kind: str = "purchase", **over: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "event_id": f"{cid}-{kind}-{n}",
        "customer_id": cid,
        "type": "purchase" if kind == "purchase" else "visit",
        "occurred_at": T0 + n * DAY,
    }
    if kind == "purchase":
        d["amount"] = 400.0
    d.update(over)
    return d


def records(
    docs: list[tuple[str, dict[str, Any] | bytes]], partition: int = 0
) -> list[InputRecord]:
    out = []
    for offset, (topic, d) in enumerate(docs):
        value = d if isinstance(d, bytes) else orjson.dumps(d)
        key = d["customer_id"].encode() if isinstance(d, dict) else b"c1"
        out.append(InputRecord(f"t.{topic}", partition, offset, key, value))
    return out


def batch(policy: Policy, **kw: Any) -> CustomerBatch:
    return CustomerBatch(policy, KINDS, 86_400.0, clock=lambda: T0 + 1000 * DAY, **kw)


def test_each_touched_customer_is_written_and_snapshotted_once_per_flush(policy: Policy) -> None:
    recs = records(
        [("purchases", doc("c1", i)) for i in range(3)]
        + [("interactions", doc("c2", i, "interaction")) for i in range(3)]
        + [("purchases", doc("c1", i)) for i in (3, 4)],
        partition=2,
    )
    store = Store()
    b = batch(policy)
    out = b.process(recs[:5], store.load)
    more = b.process(recs[5:] + records([("purchases", doc("c1", 9))], partition=2), store.load)
    assert (out.events, more.events) == (5, 4) and out.duplicates == more.duplicates == 0
    assert not out.dead_letters and store.data == {}  # nothing written before the flush
    assert (b.dirty_customers, b.unflushed_events) == (2, 9)
    flush = store.flush(b)
    assert [w.key for w in flush.writes] == [b"c1", b"c2"]  # first touched first
    assert [k for k, _, _ in flush.snapshots] == [b"c1", b"c2"]
    assert {w.partition for w in flush.writes + flush.snapshots} == {2}
    assert (b.dirty_customers, b.unflushed_events) == (0, 0)
    # the state is loaded once per customer and flush, not once per event or batch
    assert [k for k, _ in store.reads] == [b"c1", b"c2"]
    # and equals what the core computes for the customer's events in order
    events = [decode_event(orjson.dumps(doc("c1", i)), kind="purchase") for i in (0, 1, 2, 3, 4, 9)]
    want = replay(events, policy)
    assert decode_state(store.data[b"c1"]) == want.states["c1"]
    assert orjson.loads(flush.snapshots[0][1]) == orjson.loads(
        orjson.dumps(snapshot(want.states["c1"]))
    )
    changes = out.tier_changes + more.tier_changes
    assert [orjson.loads(v) for k, v, _ in changes if k == b"c1"] == [
        orjson.loads(orjson.dumps(output_to_cloudevent(c)))
        for c in want.outputs
        if c.kind == "tier_change"
    ]
    # an empty flush writes nothing
    assert store.flush(b) == Flush()


def test_flushes_continue_from_the_stored_state_and_drop_duplicates(policy: Policy) -> None:
    store = Store()
    b = batch(policy)
    first = records([("purchases", doc("c1", i)) for i in range(3)])
    b.process(first, store.load)
    store.flush(b)
    again = b.process(first + records([("purchases", doc("c1", 3))]), store.load)
    assert again.duplicates == 3 and again.events == 4
    store.flush(b)
    assert decode_state(store.data[b"c1"]).lifetime_purchases == 4
    # and from the table alone, without the cache (another process, or after a rebalance)
    b.discard()
    b.process(records([("purchases", doc("c1", 4))]), store.load)
    store.flush(b)
    assert decode_state(store.data[b"c1"]).lifetime_purchases == 5


def test_a_batch_of_only_duplicates_writes_nothing(policy: Policy) -> None:
    store = Store()
    b = batch(policy, cache_size=10)
    recs = records([("purchases", doc("c1", 0))])
    b.process(recs, store.load)
    store.flush(b)
    out = b.process(recs, store.load)
    assert out.duplicates == 1 and b.dirty_customers == 0
    assert store.flush(b).writes == []
    assert len(b.cache) == 1  # the clean state went back to the cache


def test_discard_forgets_unflushed_customers(policy: Policy) -> None:
    """After a revocation the unflushed events are consumed again (they were never acked):
    they must apply to the written state, not to a dirty state that already has them."""
    store = Store()
    b = batch(policy, cache_size=10)
    b.process(records([("purchases", doc("c1", 0))]), store.load)
    store.flush(b)
    b.process(records([("purchases", doc("c1", 1))]), store.load)
    b.discard()
    assert (b.dirty_customers, b.unflushed_events, len(b.cache)) == (0, 0, 0)
    out = b.process(records([("purchases", doc("c1", 1))]), store.load)
    assert out.duplicates == 0
    store.flush(b)
    assert decode_state(store.data[b"c1"]).lifetime_purchases == 2


def test_partition_clock_is_the_max_event_time_seen(policy: Policy) -> None:
    seen: list[int] = []

    def spy(state: CustomerState | None, event: Event, now: int, pol: Policy) -> StepResult:
        seen.append(now)
        return step(state, event, now, pol)

    b = batch(policy, step_fn=spy)
    b.process(records([("purchases", doc("c1", 5)), ("purchases", doc("c2", 2))]), Store().load)
    assert seen == [T0 + 5 * DAY, T0 + 5 * DAY]
    assert b.partition_clocks == {0: T0 + 5 * DAY}


def test_dead_letter_headers() -> None:
    rec = InputRecord("t.purchases", 3, 1234, b"k", b"v")
    assert dead_letter_headers("wrong_type", "amount must be a number", rec) == [
        ("error.reason", b"wrong_type"),
        ("error.detail", b"amount must be a number"),
        ("origin.topic", b"t.purchases"),
        ("origin.partition", b"3"),
        ("origin.offset", b"1234"),
    ]


@pytest.mark.parametrize(
    ("value", "key", "reason"),
    [
        (b"{not json", b"c1", "malformed_json"),
        (orjson.dumps({"customer_id": "c1"}), b"c1", "missing_field"),
        (orjson.dumps(doc("c1", 0, amount="5")), b"c1", "wrong_type"),
        (orjson.dumps(doc("c1", 0, occurred_at="9999-01-01")), b"c1", "timestamp_out_of_range"),
        (orjson.dumps(doc("c1", 0, occurred_at=T0 + 1100 * DAY)), b"c1", "timestamp_in_future"),
        (orjson.dumps(doc("c1", 0)), b"c2", "key_mismatch"),
        (orjson.dumps(doc("c1", 0)), None, "key_mismatch"),
        (None, b"c1", "missing_value"),
    ],
)
def test_invalid_records_are_dead_lettered_and_the_rest_goes_on(
    policy: Policy, value: bytes | None, key: bytes | None, reason: str
) -> None:
    good = records([("purchases", doc("c1", 1)), ("purchases", doc("c1", 2))])
    bad = InputRecord("t.purchases", 0, 99, key, value)
    b = batch(policy)
    out = b.process([good[0], bad, good[1]], Store().load)
    assert out.events == 2 and b.dirty_customers == 1 and b.unflushed_events == 2
    [dl] = out.dead_letters
    assert (dl.key, dl.value, dl.reason) == (key, value, reason)
    headers = dict(dl.headers)
    assert headers["error.reason"] == reason.encode()
    assert headers["origin.offset"] == b"99" and headers["origin.partition"] == b"0"


def test_a_core_error_dead_letters_the_event_and_keeps_the_customer_consistent(
    policy: Policy, caplog: pytest.LogCaptureFixture
) -> None:
    def flaky(state: CustomerState | None, event: Event, now: int, pol: Policy) -> StepResult:
        res = step(state, event, now, pol)
        if event.event_id == "c1-purchase-2":
            raise ZeroDivisionError("boom")  # after step mutated the state in place
        return res

    store = Store()
    b = batch(policy, step_fn=flaky)
    b.process(records([("purchases", doc("c1", 0))]), store.load)
    store.flush(b)  # the table has event 0; event 1 is only in the dirty state
    out = b.process(records([("purchases", doc("c1", i)) for i in range(1, 4)]), store.load)
    [dl] = out.dead_letters
    assert dl.reason == "processing_error" and dict(dl.headers)["origin.offset"] == b"1"
    store.flush(b)
    state = decode_state(store.data[b"c1"])
    assert state.lifetime_purchases == 3  # 0, 1, 3: the failed event left no trace
    assert "c1-purchase-2" not in state.recent_ids
    assert state.recent_ids == ["c1-purchase-0", "c1-purchase-1", "c1-purchase-3"]
    # privacy: the log names topic/partition/offset, not the customer or the payload
    assert "t.purchases[0]@1" in caplog.text and "c1" not in caplog.text


def test_counters_add_up(policy: Policy) -> None:
    c = Counters()
    recs = records([("purchases", doc("c1", 0)), ("purchases", b"[]")])
    b = batch(policy)
    c.add(b.process(recs, Store().load))
    c.add_flush(Store().flush(b), "interval")
    assert c.as_dict() == {
        "batches": 1,
        "events": 1,
        "duplicates": 0,
        "ticked": 0,
        "outputs": {"tier-changes": 1, "lifecycle-changes": 1},
        "flushes": {"interval": 1},
        "customers_written": 1,
        "revocations": 0,
        "sweeps": 0,
        "dead_letters": {"not_an_object": 1},
        "order_forced": 0,
    }
