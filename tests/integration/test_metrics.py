"""``GET /metrics``, ``/readyz`` and ``GET /customers/{id}`` of a real worker on the real
broker: a known input (with duplicates and bad records) is produced, the worker catches
up, and the scraped Prometheus text (parsed with ``prometheus_client``'s own parser) counts
exactly what the batch replay says: events by kind and outcome, dead letters by reason,
duplicates, tier and lifecycle changes by from/to, customers per tier and stage.

Only customers whose events are all on one input topic are used (plus one clock event
per partition at the file's latest time, as in ``test_query``): for them the worker's
transitions equal the replay's exactly (``test_pipeline``), so the counts must too.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.adapters.policy_files import load_policy
from tests.integration._worker_data import (
    START_MS,
    TOPIC_OF_KIND,
    expected,
    generate,
    partitions_of,
)
from tests.integration._worker_proc import (
    INPUT_TOPICS,
    PARTITIONS,
    Names,
    WorkerProcess,
    consume,
    create_topics,
    produce,
)
from tests.integration.test_pipeline import caught_up
from tests.integration.test_query import clock_docs

pytestmark = pytest.mark.integration

KIND_OF_TOPIC = {topic: kind for kind, topic in TOPIC_OF_KIND.items()}


def http(worker: WorkerProcess, path: str) -> tuple[int, dict[str, str], bytes]:
    url = f"http://127.0.0.1:{worker.web_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def scrape(worker: WorkerProcess) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Sample name -> (sorted label pairs) -> value, from the real ``/metrics``."""
    status, headers, body = http(worker, "/metrics")
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/plain")
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(body.decode("utf-8")):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def by(samples: dict[tuple[tuple[str, str], ...], float], *names: str) -> dict[Any, float]:
    """The non-zero samples keyed by the values of the labels ``names``."""
    out: dict[Any, float] = {}
    for labels, value in samples.items():
        d = dict(labels)
        key = tuple(d[n] for n in names)
        if value:
            out[key if len(key) > 1 else key[0]] = value
    return out


def test_metrics_count_what_the_replay_says(names: Names, tmp_path: Path) -> None:
    started = time.monotonic()
    generated = generate(customers=150, seed=23, duplicates=30)
    topics: dict[str, set[str]] = {}
    for d in generated:
        topics.setdefault(d.key, set()).add(d.topic)
    docs = [d for d in generated if len(topics[d.key]) == 1]
    docs += clock_docs(docs)
    policy = load_policy()
    part = partitions_of(docs, PARTITIONS)
    exp = expected(docs, policy, part)
    assert len(set(exp.until.values())) == 1
    customer_ids = set(exp.snapshots)
    one = next(iter(sorted(c for c in customer_ids if not c.startswith("zz-"))))
    bad = [
        ("purchases", one.encode(), b'{"event_id": "bad-1", "customer_id": '),  # malformed
        (  # keyed by somebody else: key_mismatch
            "interactions",
            b"somebody-else",
            orjson.dumps(
                {"event_id": "bad-2", "customer_id": one, "type": "visit", "occurred_at": START_MS}
            ),
        ),
    ]

    # what the replay says
    seen: set[tuple[str, str]] = set()
    applied: Counter[str] = Counter()
    duplicates: Counter[str] = Counter()
    for d in docs:
        kind = KIND_OF_TOPIC[d.topic]
        ident = (d.topic, d.doc["event_id"])
        (duplicates if ident in seen else applied)[kind] += 1
        seen.add(ident)
    assert sum(duplicates.values()) == exp.result.duplicates > 0
    said = Counter(o.kind for o in exp.result.outputs)
    tier_changes = Counter(
        (c["data"]["from_tier"] or "none", c["data"]["to_tier"])
        for seq in exp.changes.values()
        for c in seq
    )
    stage_changes = Counter(
        (c["data"]["from_stage"] or "none", c["data"]["to_stage"])
        for seq in exp.lifecycle.values()
        for c in seq
    )
    assert len(tier_changes) > 3 and len(stage_changes) > 3  # first tiers, ups and downs
    tiers = Counter(s["tier"] or "none" for s in exp.snapshots.values())
    stages = Counter(s["stage"] or "none" for s in exp.snapshots.values())

    asyncio.run(create_topics(names, INPUT_TOPICS))
    worker = WorkerProcess(names, tmp_path).start()
    try:
        worker.wait_healthy()
        asyncio.run(produce(names, docs, bad))
        snaps = asyncio.run(consume(names, "customers", until=caught_up(exp), timeout_s=45))
        deadline = time.monotonic() + 10
        while True:  # the last flush's counts land right after its snapshots
            m = scrape(worker)
            lags = m.get("tierstream_consumer_lag_messages", {})
            written = m["tierstream_output_records_total"].get((("topic", "customers"),))
            if (lags and not any(lags.values()) and written == len(snaps)) or (
                time.monotonic() > deadline
            ):
                break
            time.sleep(0.3)
        ready = http(worker, "/readyz")
        health = worker.healthz()
        known = http(worker, f"/customers/{urllib.parse.quote(one)}")
        unknown = http(worker, "/customers/nobody%20here")
        local = http(worker, "/tiers/local")
        whole = http(worker, "/tiers")
    finally:
        code = worker.stop()
    assert code == 0, worker.log()

    # counters: exactly the replay's
    events = by(m["tierstream_events_processed_total"], "kind", "outcome")
    want_events = {(k, "applied"): n for k, n in applied.items()}
    want_events |= {(k, "duplicate"): n for k, n in duplicates.items()}
    want_events |= {("purchase", "dead_letter"): 1, ("interaction", "dead_letter"): 1}
    assert events == want_events
    assert by(m["tierstream_duplicates_dropped_total"], "kind") == dict(duplicates)
    assert by(m["tierstream_dead_letters_total"], "reason") == {
        "malformed_json": 1,
        "key_mismatch": 1,
    }
    assert by(m["tierstream_tier_changes_total"], "from_tier", "to_tier") == tier_changes
    assert by(m["tierstream_lifecycle_changes_total"], "from_stage", "to_stage") == stage_changes
    assert sum(m.get("tierstream_churn_warnings_total", {}).values()) == said["churn_warning"]
    assert m["tierstream_churn_cleared_total"][()] == said["churn_cleared"]
    assert m["tierstream_upgrade_candidates_total"][()] == said["upgrade_candidate"]
    outputs = by(m["tierstream_output_records_total"], "topic")
    assert outputs["tier-changes"] == tier_changes.total()
    assert outputs["dead-letter"] == 2
    assert outputs["customers"] == len(snaps) == health["counters"]["customers_written"]
    assert m["tierstream_timer_reevaluations_total"][()] > 0
    assert m["tierstream_rebalances_total"][()] >= 1
    latency = m["tierstream_processing_latency_seconds_count"][()]
    assert latency == len(docs) + len(bad)
    assert m["tierstream_processing_latency_seconds_bucket"][(("le", "+Inf"),)] == latency

    # state at scrape time
    assert by(m["tierstream_customers"], "tier") == dict(tiers)
    assert by(m["tierstream_customers_by_stage"], "stage") == dict(stages)
    assert m["tierstream_table_customers"][()] == len(customer_ids) == tiers.total()
    lags = m["tierstream_consumer_lag_messages"]
    assert len(lags) == len(INPUT_TOPICS) * PARTITIONS and not any(lags.values()), lags
    assert {dict(k)["topic"] for k in lags} == set(INPUT_TOPICS)
    event_lag = m["tierstream_event_time_lag_seconds"]
    assert {dict(k)["partition"] for k in event_lag} == {str(p) for p in range(PARTITIONS)}
    assert all(v > 0 for v in event_lag.values())  # the events are historical
    assert m["tierstream_recovering"][()] == 0
    assert m["tierstream_recovery_seconds"][()] >= 0
    assert m["tierstream_assigned_partitions"][()] == len(INPUT_TOPICS) * PARTITIONS
    assert m["tierstream_policy_info"] == {
        (("name", policy.name), ("version", policy.version)): 1.0
    }
    assert len(m["tierstream_build_info"]) == 1

    # privacy: no label value is a customer id
    values = {v for samples in m.values() for labels in samples for _, v in labels}
    assert not values & (customer_ids | {"somebody-else"})

    # health, readiness and the query views
    assert health is not None and health["status"] == "ok" and "counters" in health
    assert ready[0] == 200 and json.loads(ready[2])["ready"] is True
    status, headers, body = known
    doc = json.loads(body)
    assert status == 200 and headers["X-Tierstream-Partition"] == str(part[one])
    snap = exp.snapshots[one]
    assert (doc["tier"], doc["stage"]) == (snap["tier"], snap["stage"])
    assert doc["churn"]["severity"] == snap["churn"]["severity"]
    assert doc["explanation"]["tier"] == snap["tier"] and doc["features"]
    assert unknown[0] == 404
    assert json.loads(unknown[2]) == {"error": "unknown customer", "customer_id": "nobody here"}
    assert local[0] == 200 and whole[0] == 200
    assert json.loads(whole[2])["tiers"] == dict(tiers)
    assert json.loads(local[2])["customers"] == len(customer_ids)
    assert time.monotonic() - started < 60
