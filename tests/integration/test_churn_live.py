"""Churn warnings on the real broker, live: customers who stop buying are warned by the
worker's timer while no events of theirs arrive at all (the partition clock follows the
wall clock), and one who comes back gets ``churn_cleared``.

Each customer bought on four consecutive days, so their usual gap is one day, and the
policy warns at 1.2 usual gaps of silence. The last purchases are dated so that this
moment lies some seconds *after* every event has been produced: the warnings can only
come from time passing.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration._worker_data import Doc
from tests.integration._worker_proc import (
    INPUT_TOPICS,
    Consumed,
    Names,
    WorkerProcess,
    consume,
    create_topics,
    produce,
)

pytestmark = pytest.mark.integration

DAY = 86_400_000
POLICY = """\
name: churn-live
version: "1"
tiers:
  - name: A
    when: {spend_365d: {gte: 200}}
  - name: D
churn:
  usual_gap: {of: p90, min_gaps: 3, default_days: 30}
  severity:
    - name: critical
      when: {silence_ratio: {gte: 5}}
    - name: warning
      when: {silence_ratio: {gte: 1.2}}
  actions:
    A: {warning: call, critical: call}
    "*": {warning: email, critical: winback_offer}
"""


def purchases(customer: str, last: int, amount: float) -> list[Doc]:
    return [
        Doc(
            "purchases",
            customer,
            {
                "event_id": f"{customer}-{k}",
                "customer_id": customer,
                "type": "purchase",
                "occurred_at": last - (3 - k) * DAY,
                "amount": amount,
            },
        )
        for k in range(4)
    ]


def warnings_of(records: list[Consumed]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        assert r.value is not None
        doc = orjson.loads(r.value)
        out.setdefault(doc["subject"], []).append(doc)
    return out


def test_silent_customers_are_warned_without_events_and_a_returning_one_is_cleared(
    names: Names, tmp_path: Path
) -> None:
    policy = tmp_path / "churn-live.yaml"
    policy.write_text(POLICY)
    asyncio.run(create_topics(names, INPUT_TOPICS))
    worker = WorkerProcess(
        names,
        tmp_path,
        TIERSTREAM_POLICY_FILE=str(policy),
        TIERSTREAM_CLOCK_MODE="wall",
        TIERSTREAM_ALLOWED_LATENESS_S="0",
    )
    worker.start().wait_healthy()
    try:
        lead_ms = 20_000  # the warnings fall due this long after we start producing
        now = int(time.time() * 1000)
        last = now - int(1.2 * DAY) + lead_ms
        quiet = {"quiet-a": 90.0, "quiet-b": 10.0, "back": 10.0}
        docs = [d for cid, amt in quiet.items() for d in purchases(cid, last, amt)]
        docs += purchases("steady", now - DAY // 10, 10.0)  # due in ~1.1 days: not today
        asyncio.run(produce(names, docs))
        produced_at = int(time.time() * 1000)
        due = last + int(1.2 * DAY)
        assert produced_at < due, "the machine was too slow to produce before the due time"

        def warned(records: list[Consumed]) -> bool:
            return set(quiet) <= set(warnings_of(records))

        got = warnings_of(
            asyncio.run(consume(names, "churn-warnings", until=warned, idle_s=1.0, timeout_s=90))
        )
        assert set(got) == set(quiet), got  # steady is not warned
        for cid, docs_of in got.items():
            assert len(docs_of) == 1, docs_of  # once per episode
            w = docs_of[0]
            data = w["data"]
            assert w["type"] == "io.tierstream.churn.warning.v1"
            assert data["severity"] == "warning" and data["previous_severity"] is None
            assert data["trigger"] == "time" and data["cause"].startswith("due@")
            warned_at = int(data["cause"][len("due@") :])
            assert warned_at >= due > produced_at  # after the customer's events were all in
            assert data["usual_gap_days"] == 1.0 and data["usual_gap_basis"] == "p90 of 3 gaps"
            assert data["days_silent"] >= 1.2
            assert data["suggested_action"] == ("call" if cid == "quiet-a" else "email")
            assert data["tier"] == ("A" if cid == "quiet-a" else "D")
            assert data["value_at_risk"] == pytest.approx(quiet[cid] * 4, rel=1e-9)

        # The customer who comes back: a purchase now clears the episode.
        back_at = int(time.time() * 1000)
        ret = Doc(
            "purchases",
            "back",
            {
                "event_id": "back-returns",
                "customer_id": "back",
                "type": "purchase",
                "occurred_at": back_at,
                "amount": 25.0,
            },
        )
        asyncio.run(produce(names, [ret]))

        def cleared(records: list[Consumed]) -> bool:
            return any(
                d["type"] == "io.tierstream.churn.cleared.v1"
                for docs_of in warnings_of(records).values()
                for d in docs_of
            )

        after = warnings_of(
            asyncio.run(consume(names, "churn-warnings", until=cleared, idle_s=1.0, timeout_s=60))
        )
    finally:
        code = worker.stop()
    assert code == 0, worker.log()
    clears = [d for docs_of in after.values() for d in docs_of if "cleared" in d["type"]]
    assert [c["subject"] for c in clears] == ["back"]
    c = clears[0]["data"]
    assert c["cause"] == "back-returns" and c["trigger"] == "event"
    assert c["severity"] == "warning"
    started = got["back"][0]["data"]["episode_started_at"]
    assert c["episode_started_at"] == started
    assert 0 < c["episode_days"] < 1.0  # the episode lasted seconds to minutes
