"""A backlog is replayed in event-time order across a customer's input topics.

Each input topic is loaded whole before the worker starts -- all purchases, then all
interactions, then all profiles -- so every topic-partition has months of backlog and the
consumer fetches them in chunks, round robin. Without stream-time synchronisation
(app.service.ordering) purchases ran weeks of event time ahead of interactions and profiles, and
path-dependent state (tier history, lifecycle stages, churn episodes) of customers with
events on several topics differed from ``classify``. With it, every customer -- not only
those of one topic -- ends exactly where the batch replay does, and emits exactly its tier
changes.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.adapters.policy_files import load_policy
from tests.integration._worker_data import (
    expected,
    generate,
    partitions_of,
    topics_of,
)
from tests.integration._worker_proc import (
    INPUT_TOPICS,
    PARTITIONS,
    Names,
    WorkerProcess,
    assert_final_state_strictly_equals_replay,
    consume,
    create_topics,
    produce,
)
from tests.integration.test_pipeline import caught_up

pytestmark = pytest.mark.integration


def test_a_backlog_of_several_topics_is_applied_in_event_time_order(
    names: Names, tmp_path: Path
) -> None:
    docs = generate(customers=200, seed=23, duplicates=0)
    policy = load_policy()
    exp = expected(docs, policy, partitions_of(docs, PARTITIONS))
    several = [cid for cid, events in exp.events.items() if len(topics_of(events)) > 1]
    assert len(several) > 50  # the point of the test: customers on several topics
    asyncio.run(create_topics(names, INPUT_TOPICS))
    for topic in INPUT_TOPICS:  # topic by topic: each one's whole history at once
        asyncio.run(produce(names, [d for d in docs if d.topic == topic]))
    # small fetches, so that the topics arrive interleaved in many small chunks
    worker = WorkerProcess(names, tmp_path, TIERSTREAM_BATCH_SIZE="100")
    try:
        worker.start().wait_healthy()
        snaps = asyncio.run(consume(names, "customers", until=caught_up(exp), timeout_s=90))
        changes = asyncio.run(consume(names, "tier-changes", idle_s=0.5))
        health = worker.healthz()
    finally:
        code = worker.stop()
    assert code == 0, worker.log()
    assert health is not None and health["counters"]["order_forced"] == 0
    assert_final_state_strictly_equals_replay(exp, snaps, changes)
