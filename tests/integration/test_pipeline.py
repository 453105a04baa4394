"""Streaming equals batch: a real worker on the real local broker against the replay.

The guarantee, precisely: the worker applies each customer's events *of one input topic*
in that topic's offset order (key = customer_id, one agent over the co-partitioned
topics); how one customer's purchases, interactions and profiles interleave across topics
is not defined by Kafka. Hence, for the event-time ordered file produced in order:

- every customer's final state (aggregates, rolling windows, RFM, first/last times,
  attributes, tier) equals the batch replay's; for customers whose events are all on one
  topic the whole snapshot and the tier-change sequence (ids, times, reasons, features)
  equal the replay's exactly;
- for customers with events on several topics, the tier-change sequence is exactly what
  the core emits for *some* interleaving that keeps each topic's order (checked by a search
  over all such interleavings), and ``tier_since`` is the time of the last emitted change.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.adapters.policy_files import load_policy
from schemas.codec import iso
from tests.integration._worker_data import (
    TOPIC_OF_KIND,
    Doc,
    Expected,
    consistent_with_some_interleaving,
    expected,
    generate,
    normalize,
    partitions_of,
    topics_of,
)
from tests.integration._worker_proc import (
    INPUT_TOPICS,
    PARTITIONS,
    Consumed,
    Names,
    WorkerProcess,
    by_key_in_order,
    consume,
    create_topics,
    last_by_key,
    produce,
)

pytestmark = pytest.mark.integration


def caught_up(exp: Expected) -> Any:
    """True once every customer's latest snapshot shows all their events counted and the
    last re-evaluation the timer owes them (the expected ``as_of``)."""
    want = {
        cid: (normalize(s)["lifetime"], normalize(s)["as_of"]) for cid, s in exp.snapshots.items()
    }

    def check(records: list[Consumed]) -> bool:
        latest = last_by_key(records)
        return all(
            cid in latest and (latest[cid]["lifetime"], latest[cid]["as_of"]) == w
            for cid, w in want.items()
        )

    return check


def classify_file(
    docs: list[Doc], tmp_path: Path
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, dict[str, Any]]]:
    """Run ``tierstream classify`` over the docs written as a JSON Lines file: the tier
    changes per customer (in order) and the per-customer snapshots."""
    kind_of_topic = {topic: kind for kind, topic in TOPIC_OF_KIND.items()}
    events = tmp_path / "events.jsonl"
    events.write_bytes(
        b"".join(orjson.dumps({"kind": kind_of_topic[d.topic], **d.doc}) + b"\n" for d in docs)
    )
    out, customers = tmp_path / "changes.jsonl", tmp_path / "customers.jsonl"
    cmd = [sys.executable, "-m", "app.cli", "classify", str(events), "--out", str(out)]
    subprocess.run([*cmd, "--customers-out", str(customers), "-q"], check=True, timeout=120)
    changes: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in out.read_bytes().splitlines():
        change = orjson.loads(line)
        if change["type"] == "io.tierstream.tier.changed.v1":
            changes[change["subject"]].append(change)
    snaps = {}
    for line in customers.read_bytes().splitlines():
        snap = orjson.loads(line)
        snaps[snap["customer_id"]] = snap
    return dict(changes), snaps


def test_streaming_equals_batch(names: Names, tmp_path: Path) -> None:
    docs = generate(customers=300, seed=7, duplicates=20)
    policy = load_policy()
    # The batch side is `tierstream classify` over the same file; it equals the replay
    # advanced to the last event time.
    whole = expected(docs, policy)
    batch_changes, batch_snaps = classify_file(docs, tmp_path)
    assert batch_changes == whole.changes
    assert batch_snaps == {cid: normalize(s) for cid, s in whole.snapshots.items()}
    # The worker's partition clocks stop at the last event time of each partition.
    exp = expected(docs, policy, partitions_of(docs, PARTITIONS))
    single = {cid for cid, evs in exp.events.items() if len(topics_of(evs)) == 1}
    mixed = set(exp.events) - single
    assert len(docs) > 5000 and len(single) > 100 and len(mixed) > 100

    asyncio.run(create_topics(names, INPUT_TOPICS))
    worker = WorkerProcess(names, tmp_path).start()
    try:
        worker.wait_healthy()
        sent = asyncio.run(produce(names, docs))
        assert {d.key: m.partition for d, m in zip(docs, sent, strict=True)} == (
            partitions_of(docs, PARTITIONS)
        )
        snap_records = asyncio.run(consume(names, "customers", until=caught_up(exp)))
        change_records = asyncio.run(consume(names, "tier-changes", idle_s=0.5))
        stage_records = asyncio.run(consume(names, "lifecycle-changes", idle_s=0.5))
        health = worker.healthz()
    finally:
        code = worker.stop()
    assert code == 0, worker.log()

    assert health is not None
    counters = health["counters"]
    assert counters["events"] == len(docs)
    assert counters["duplicates"] == exp.result.duplicates == 20
    assert counters["dead_letters"] == {}
    # one snapshot per touched customer per flush, not one per event
    assert len(snap_records) == counters["customers_written"] < len(docs) - 20

    snaps = last_by_key(snap_records)
    changes = by_key_in_order(change_records)
    assert set(snaps) == set(exp.snapshots)
    ids = [c["id"] for seq in changes.values() for c in seq]
    assert len(ids) == len(set(ids)), "a clean run emits every tier change once"

    stages = by_key_in_order(stage_records)
    for cid in sorted(single):

        def brief(seq: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
            return [(c["time"], c["data"].get("to_tier"), c["data"]["cause"]) for c in seq]

        assert snaps[cid] == normalize(exp.snapshots[cid]), (
            cid,
            brief(changes.get(cid, [])),
            brief(exp.changes.get(cid, [])),
            [(e.occurred_at, e.kind, e.event_id) for e in exp.events[cid]][-8:],
        )
        assert changes.get(cid, []) == exp.changes.get(cid, []), cid
        assert stages.get(cid, []) == exp.lifecycle.get(cid, []), cid
    # silence moved customers through the timer path, with no events of theirs
    timed = [c for seq in stages.values() for c in seq if c["data"]["trigger"] == "time"]
    assert len(timed) > 50 and {c["data"]["to_stage"] for c in timed} >= {"at_risk", "churned"}

    for cid in sorted(mixed):
        got, want = dict(snaps[cid]), normalize(exp.snapshots[cid])
        got_since, want_since = got.pop("tier_since"), want.pop("tier_since")
        got.pop("stage_since"), want.pop("stage_since")  # the event that moved it may differ
        assert got == want, cid  # exact: window sums are exact, spend is one topic
        seq = changes.get(cid, [])
        assert seq and seq[-1]["data"]["to_tier"] == want["tier"], cid
        assert iso(got_since) == seq[-1]["time"], cid
        assert consistent_with_some_interleaving(exp.events[cid], seq, policy, exp.until[cid])
        if seq == exp.changes.get(cid):
            assert got_since == want_since
