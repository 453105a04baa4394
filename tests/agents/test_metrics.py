"""The worker's metrics (app.stream.metrics) and the tier census (app.service.census),
without Kafka: a fresh CollectorRegistry per test, batch outcomes of the real plumbing fed
in, values read with ``registry.get_sample_value``."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.domain.policy import Policy
from app.service.census import Census, peek_place, peek_string
from app.service.processor import CustomerBatch, InputRecord, decode_state
from app.stream.metrics import LATENCY_BUCKETS, METRICS, WorkerMetrics
from tests.kit.docs import TOPIC_KINDS as KINDS
from tests.kit.fakes import Store
from tests.kit.policies import VALUE_TIERS_V2
from tests.unit.service.test_batching import DAY, T0, doc, records


@pytest.fixture(scope="module")
def policy() -> Policy:
    return VALUE_TIERS_V2


class FakeView:
    """The worker as the scrape-time collector sees it."""

    def __init__(self, census: Census | None = None) -> None:
        self.census = census or Census()
        self.partitions = {0, 1}

    def tier_counts(self) -> tuple[Mapping[str, int], Mapping[str, int]]:
        return self.census.totals(self.partitions)

    def event_times(self) -> Mapping[int, int]:
        return {0: int(time.time() * 1000) - 90_000}

    def consumer_lags(self) -> Mapping[tuple[str, int], int]:
        return {("purchases", 0): 7, ("interactions", 0): 0}

    def recovering(self) -> bool:
        return False

    def recovery_seconds(self) -> float | None:
        return 1.5

    def assigned_partitions(self) -> int:
        return 6

    def policy_in_force(self) -> tuple[str, str]:
        return "value-tiers", "1"


def value(reg: CollectorRegistry, metric: str, **labels: str) -> float | None:
    return reg.get_sample_value(metric, labels)


def test_a_batch_is_counted_by_kind_outcome_and_reason(policy: Policy) -> None:
    reg = CollectorRegistry()
    metrics = WorkerMetrics(reg, kinds=KINDS)
    batch = CustomerBatch(policy, KINDS, 3600.0)
    store = Store()
    first = doc("c1", 1)
    out = batch.process(
        records(
            [
                ("purchases", first),
                ("purchases", doc("c1", 2)),
                ("purchases", first),  # duplicate
                ("interactions", doc("c2", 1, "interaction")),
                ("interactions", doc("c2", 1, "interaction")),  # duplicate
                ("purchases", b"{not json"),
                ("profiles", b"[1]"),
                ("purchases", doc("c3", 1, amount="many")),
            ]
        ),
        store.load,
    )
    metrics.add(out)
    ev = "tierstream_events_processed_total"
    assert value(reg, ev, kind="purchase", outcome="applied") == 2
    assert value(reg, ev, kind="purchase", outcome="duplicate") == 1
    assert value(reg, ev, kind="purchase", outcome="dead_letter") == 2
    assert value(reg, ev, kind="interaction", outcome="applied") == 1
    assert value(reg, ev, kind="interaction", outcome="duplicate") == 1
    assert value(reg, ev, kind="profile", outcome="dead_letter") == 1
    assert value(reg, ev, kind="profile", outcome="applied") == 0  # exists from the start
    assert value(reg, "tierstream_duplicates_dropped_total", kind="purchase") == 1
    assert value(reg, "tierstream_duplicates_dropped_total", kind="interaction") == 1
    dead = "tierstream_dead_letters_total"
    assert value(reg, dead, reason="malformed_json") == 1
    assert value(reg, dead, reason="not_an_object") == 1
    assert value(reg, dead, reason="wrong_type") == 1
    assert value(reg, dead, reason="key_mismatch") == 0
    out_total = "tierstream_output_records_total"
    assert value(reg, out_total, topic="dead-letter") == 3
    changes = [orjson.loads(r.value) for r in out.tier_changes]
    assert changes and value(reg, out_total, topic="tier-changes") == len(changes)
    for (from_tier, to_tier), n in Counter(
        (c["data"]["from_tier"] or "none", c["data"]["to_tier"]) for c in changes
    ).items():
        assert (
            value(reg, "tierstream_tier_changes_total", from_tier=from_tier, to_tier=to_tier) == n
        )
    stages = out.outputs.get("lifecycle-changes", [])
    counted = _samples(reg, "tierstream_lifecycle_changes_total")
    assert sum(counted.values()) == len(stages) > 0
    firsts = sum(v for labels, v in counted.items() if labels["from_stage"] == "none")
    assert firsts == 2  # the first stages of c1 and c2

    # a flush: the snapshots are counted as output records of the customers topic
    flush = store.flush(batch)
    metrics.add_flush(flush)
    assert value(reg, out_total, topic="customers") == 2
    metrics.add_timer(5)
    metrics.add_rebalance()
    assert value(reg, "tierstream_timer_reevaluations_total") == 5
    assert value(reg, "tierstream_rebalances_total") == 1


def test_latency_buckets_are_cumulative_and_sum_up() -> None:
    reg = CollectorRegistry()
    metrics = WorkerMetrics(reg)
    done = 1_000.0
    metrics.observe_latency(
        [done - 0.003, done - 0.2, done - 0.2, done - 100.0, done + 1, None], done
    )
    name = "tierstream_processing_latency_seconds"
    assert value(reg, f"{name}_count") == 5  # the one without a timestamp is left out
    assert value(reg, f"{name}_sum") == pytest.approx(0.003 + 0.4 + 100.0)
    assert value(reg, f"{name}_bucket", le="0.005") == 2  # 3 ms, and the clock skew as 0
    assert value(reg, f"{name}_bucket", le="0.25") == 4
    assert value(reg, f"{name}_bucket", le="60.0") == 4
    assert value(reg, f"{name}_bucket", le="+Inf") == 5
    assert len(LATENCY_BUCKETS) == 13


def test_state_gauges_are_computed_at_scrape_time() -> None:
    reg = CollectorRegistry()
    census = Census()
    view = FakeView(census)
    WorkerMetrics(reg, view=view)
    census.apply([(0, None, ("A", "active")), (1, None, ("B", None)), (5, None, ("A", "new"))])
    assert value(reg, "tierstream_customers", tier="A") == 1  # partition 5 is not ours
    assert value(reg, "tierstream_customers", tier="B") == 1
    assert value(reg, "tierstream_customers_by_stage", stage="none") == 1
    assert value(reg, "tierstream_table_customers") == 2
    census.apply([(1, ("B", None), ("A", "active"))])  # seen at the next scrape
    assert value(reg, "tierstream_customers", tier="A") == 2
    assert value(reg, "tierstream_customers", tier="B") is None
    assert value(reg, "tierstream_customers_by_stage", stage="active") == 2
    lag = value(reg, "tierstream_event_time_lag_seconds", partition="0")
    assert lag is not None and 89 < lag < 120
    assert value(reg, "tierstream_consumer_lag_messages", topic="purchases", partition="0") == 7
    assert value(reg, "tierstream_recovering") == 0
    assert value(reg, "tierstream_recovery_seconds") == 1.5
    assert value(reg, "tierstream_assigned_partitions") == 6
    assert value(reg, "tierstream_policy_info", name="value-tiers", version="1") == 1
    built = _samples(reg, "tierstream_build_info")
    assert len(built) == 1 and set(next(iter(built))) == {"version", "python"}


def test_every_contract_metric_is_exposed_with_its_type_and_labels(policy: Policy) -> None:
    reg = CollectorRegistry()
    metrics = WorkerMetrics(reg, kinds=KINDS, view=FakeView())
    metrics.tier_changes.labels("none", "A").inc()
    metrics.lifecycle_changes.labels("none", "new").inc()
    metrics.churn_warnings.labels("high").inc()
    text = generate_latest(reg).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, (kind, labels) in METRICS.items():
        base = name.removesuffix("_total")
        assert base in families, name
        family = families[base]
        assert family.type == kind, name
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == set(labels), (name, sample)


def test_two_workers_have_their_own_registries() -> None:
    a, b = WorkerMetrics(), WorkerMetrics()  # no "Duplicated timeseries" error
    a.add_rebalance()
    assert a.registry.get_sample_value("tierstream_rebalances_total") == 1
    assert b.registry.get_sample_value("tierstream_rebalances_total") == 0


def _samples(reg: CollectorRegistry, name: str) -> dict[Any, float]:
    return {_Labels(s.labels): s.value for f in reg.collect() for s in f.samples if s.name == name}


class _Labels(dict[str, str]):
    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items())))


# -- the census -----------------------------------------------------------------------


def recount(store: Store, partition_of: Mapping[bytes, int]) -> tuple[dict[str, int], ...]:
    """Customers per tier and stage by decoding every stored state (the slow way)."""
    tiers: Counter[str] = Counter()
    stages: Counter[str] = Counter()
    for raw in store.data.values():
        state = decode_state(raw)
        tiers[state.tier or "none"] += 1
        stages[state.stage or "none"] += 1
    return dict(sorted(tiers.items())), dict(sorted(stages.items()))


def test_the_census_follows_the_table_through_events_timers_and_a_rebuild(
    policy: Policy,
) -> None:
    rng = random.Random(3)
    batch = CustomerBatch(policy, KINDS, 3600.0)
    store = Store()
    partition_of = {f"c{n}".encode(): n % 3 for n in range(60)}
    offset = 0
    last_day = {n: rng.randrange(40, 500) for n in range(60)}  # then silent
    seen_tiers: set[str] = set()
    seen_stages: set[str] = set()
    for day in range(0, 600, 9):
        recs = []
        for _ in range(25):
            n = rng.randrange(60)
            if day > last_day[n]:
                continue
            cid = f"c{n}"
            kind = "purchase" if rng.random() < 0.7 else "interaction"
            d = doc(cid, day, kind, event_id=f"e{offset}", amount=rng.choice((20.0, 300.0)))
            if kind != "purchase":
                d.pop("amount")
            topic = "purchases" if kind == "purchase" else "interactions"
            recs.append(InputRecord(f"t.{topic}", n % 3, offset, cid.encode(), orjson.dumps(d)))
            offset += 1
        batch.process(recs, store.load)
        # time passes: the timer re-evaluates who is due
        batch.tick({p: T0 + (day + 8) * DAY for p in range(3)}, lambda k, p: store.data.get(k))
        store.flush(batch)
        tiers, stages = batch.census.totals(range(3))
        assert (tiers, stages) == recount(store, partition_of), day
        seen_tiers |= set(tiers)
        seen_stages |= set(stages)
    assert len(seen_tiers) > 2 and len(seen_stages) > 2, (seen_tiers, seen_stages)
    assert batch.census.customers(range(3)) == len(store.data)
    # per partition, too
    for p in range(3):
        mine = Store()
        mine.data = {k: v for k, v in store.data.items() if partition_of[k] == p}
        assert batch.census.totals([p]) == recount(mine, partition_of)
    # rebuilt from the stored bytes (after a recovery): the same counts
    before = batch.census.totals(range(3))
    batch.rebuild_due((partition_of[k], k, v) for k, v in store.data.items())
    assert batch.census.totals(range(3)) == before
    assert batch.census.totals([0]) == recount(_only(store, partition_of, 0), partition_of)


def test_unflushed_and_abandoned_work_is_not_counted(policy: Policy) -> None:
    batch = CustomerBatch(policy, KINDS, 3600.0)
    store = Store()
    batch.process(records([("purchases", doc("c1", 1))]), store.load)
    assert batch.census.totals([0]) == ({}, {})  # not in the table yet
    flush = batch.flush()
    batch.discard()  # e.g. revoked before the flush was on the broker: never flushed()
    assert flush.moves and batch.census.totals([0]) == ({}, {})
    batch.process(records([("purchases", doc("c1", 1))]), store.load)
    store.flush(batch)
    assert batch.census.customers([0]) == 1


def _only(store: Store, partition_of: Mapping[bytes, int], p: int) -> Store:
    out = Store()
    out.data = {k: v for k, v in store.data.items() if partition_of[k] == p}
    return out


@pytest.mark.parametrize(
    ("raw", "tier", "stage"),
    [
        (b'{"v":5,"id":"x","tier":null,"stage":null}', None, None),
        (b'{"v":5,"id":"x","tier":"A","pending_tier":"B","stage":"loyal"}', "A", "loyal"),
        (b'{"v":5,"id":"a\\"tier\\":\\"Z","tier":"B","stage":"new"}', "B", "new"),
        (b'{"v":5,"id":"x","tier":"A \\"q\\"","stage_since":3,"stage":"x"}', 'A "q"', "x"),
        (b'{"v":3,"id":"x","tier":"C","attributes":{"stage":"y","tier":"Q"}}', "C", None),
    ],
)
def test_peeking_tier_and_stage_without_decoding(
    raw: bytes, tier: str | None, stage: str | None
) -> None:
    assert peek_place(raw) == (tier, stage)
    assert peek_string(raw, b'"nothing":') is None
