"""The CDNOW sample (``lifetimes``) streamed through a worker with one closing event per
partition, dated the day after the log ends, equals ``classify`` of the same events.

Dates in CDNOW are whole days, so demotions, window ends and churn signals fall due at
midnight -- and the closing events are at midnight too. A customer whose demotion fell due
exactly at the closing event's time was emitted by ``classify`` and not by the worker (its
timer ran what was due strictly before the clock): issue 13, fault 5. The rule is now one
(a due time T runs when the clock reaches T, before the events dated T) and the two agree
on every customer.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.adapters.files import parse_map, read_events
from app.adapters.policy_files import load_policy
from app.domain.state import DAY_MS
from schemas import decode_event
from tests.integration._worker_data import (
    Doc,
    expected,
    partitions_of,
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

CDNOW = Path(__import__("lifetimes").__file__).parent / "datasets" / "CDNOW_sample.txt"


def cdnow_docs() -> list[Doc]:
    lines = read_events(
        CDNOW,
        fmt="csv",
        delimiter="whitespace",
        header=False,
        mapping=parse_map("customer_id=1,occurred_at=3,quantity=4,amount=5"),
    )
    docs = [Doc("purchases", sl.doc["customer_id"], sl.doc) for sl in lines if sl.doc]
    times = {id(d): decode_event(d.doc, kind="purchase").occurred_at for d in docs}
    return sorted(docs, key=lambda d: times[id(d)])  # event-time order, as it happened


def closing(at: int) -> list[Doc]:
    """A visit per partition at ``at``, so every partition clock ends there."""
    out: dict[int, Doc] = {}
    n = 0
    while len(out) < PARTITIONS:
        cid = f"zz-close-{n}"
        doc = {"event_id": f"close-{n}", "customer_id": cid, "type": "visit", "occurred_at": at}
        out.setdefault(partitions_of([Doc("interactions", cid, doc)], PARTITIONS)[cid],
                       Doc("interactions", cid, doc))  # fmt: skip
        n += 1
    return list(out.values())


def test_cdnow_streamed_with_closing_events_equals_classify(names: Names, tmp_path: Path) -> None:
    docs = cdnow_docs()
    assert len(docs) == 6919
    last = max(decode_event(d.doc, kind="purchase").occurred_at for d in docs)
    assert last % DAY_MS == 0  # whole days: due times at midnight
    docs += closing(last + DAY_MS)  # midnight after the log ends
    policy = load_policy()
    exp = expected(docs, policy, partitions_of(docs, PARTITIONS))
    assert set(exp.until.values()) == {last + DAY_MS}
    asyncio.run(create_topics(names, INPUT_TOPICS))
    worker = WorkerProcess(names, tmp_path)
    try:
        worker.start().wait_healthy()
        asyncio.run(produce(names, docs))
        snaps = asyncio.run(consume(names, "customers", until=caught_up(exp), timeout_s=90))
        changes = asyncio.run(consume(names, "tier-changes", idle_s=0.5))
    finally:
        code = worker.stop()
    assert code == 0, worker.log()
    assert_final_state_strictly_equals_replay(exp, snaps, changes)
    # what fell due exactly at the closing time was emitted by the worker too
    at_close = [
        c for cs in exp.changes.values() for c in cs if c["time"].startswith("1998-07-01T00:00")
    ]
    assert at_close, "no tier change fell due at the closing time: the test lost its point"
