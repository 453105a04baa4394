"""The explain document (app.service.explain) of customers built from events, with every reason
computed by hand; and the pure routing helpers of the query views (app.stream.web)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml
from aiokafka.partitioner import DefaultPartitioner

from app.domain.engine import step
from app.domain.events import Event
from app.domain.policy_doc import policy_from_dict
from app.domain.state import CustomerState
from app.service.explain import explain, json_safe
from app.stream.web import cluster_view, owners, partition_of, same_worker
from tests.kit.builders import DAY, HOUR, at, interaction, purchase, refund
from tests.kit.policies import VALUE_TIERS_V2

DEFAULT = VALUE_TIERS_V2  # pinned value-tiers@2: A 3000/12, B 1000/6 over 365 days, C spend_90d 100
ABCD_DOC: dict[str, Any] = yaml.safe_load(
    (Path(__file__).resolve().parents[3] / "examples" / "value-tiers-abcd.yaml").read_text()
)
ABCD = policy_from_dict(ABCD_DOC)  # A/B with stay conditions, 30 days in tier, 14 days grace
T0 = at("2024-03-01T00:00:00")


def run(events: list[Event], policy: Any) -> CustomerState:
    state: CustomerState | None = None
    for e in events:
        state = step(state, e, e.occurred_at, policy).state
    assert state is not None
    return state


def test_a_b_customer_under_the_default_policy() -> None:
    # 7 purchases of 200, weekly from T0: spend_365d 1400 >= 1000, 7 purchases >= 6 -> B;
    # A needs 3000. Stage: 7 purchase days, loyal_when purchases_365d >= 6 holds -> loyal.
    events = [purchase("b1", 200.0, T0 + k * 7 * DAY) for k in range(7)]
    state = run(events, DEFAULT)
    last = T0 + 42 * DAY
    doc = explain(DEFAULT, state)
    assert doc["customer_id"] == "b1"
    assert (doc["tier"], doc["entry_tier"], doc["stage"]) == ("B", "B", "loyal")
    assert doc["as_of"] == last and doc["tier_since"] == T0 + 35 * DAY  # the 6th purchase
    assert doc["policy"] == {
        "name": "value-tiers",
        "version": "2",
        "key": "value-tiers@2",
        "evaluated_under": "value-tiers@2",
    }
    assert doc["reasons"] == [
        "spend_365d 1400 >= 1000",
        "purchases_365d 7 >= 6",
        "not A: spend_365d 1400 < 3000",
    ]
    assert doc["deciding"] == {"spend_365d": 1400.0, "purchases_365d": 7.0}
    assert doc["stage_reason"] == "purchases_365d 7 >= 6"
    assert doc["hysteresis"] is None and doc["notes"] == [] and doc["upgrade_reasons"] == []
    assert (doc["pending_tier"], doc["pending_since"], doc["upgrade_candidate_since"]) == (
        None,
        None,
        None,
    )
    assert doc["service_level"]["queue_priority"] == 2
    assert doc["features"]["spend_90d"] == 1400.0
    assert doc["features"]["days_since_last_purchase"] == 0.0


def test_a_prospect_has_no_infinities_in_json() -> None:
    # Only interactions: never bought, so days_since_last_purchase is infinite -> null.
    state = run([interaction("p1", T0), interaction("p1", T0 + DAY)], DEFAULT)
    doc = explain(DEFAULT, state)
    assert (doc["tier"], doc["stage"]) == ("D", "prospect")
    assert doc["reasons"] == [
        "no better tier's conditions hold",
        "not A: spend_365d 0 < 3000",
        "not B: spend_365d 0 < 1000",
        "not C: spend_90d 0 < 100",
    ]
    assert doc["stage_reason"] == "no purchase yet"
    assert doc["features"]["days_since_last_purchase"] is None
    assert doc["service_level"] == {"queue_priority": 4, "channel": "self_service"}
    json.dumps(doc, allow_nan=False)  # strictly valid JSON


def into_a(cid: str) -> list[Event]:
    """3 x 1200 (margin 200) at T0, +1 h, +2 h: A (spend_90d 3600, 3 purchases, margin
    600, bought just now) at T0 + 2 h."""
    return [purchase(cid, 1200, T0 + k * HOUR, margin=200.0) for k in range(3)]


def test_held_in_a_by_its_stay_conditions() -> None:
    # A refund of 1000 five days in: spend_90d 2600 < 3000 (A's entry fails), but A's stay
    # (spend_90d >= 2000, days since the last purchase <= 60: 5 d - 2 h = 4.92) holds.
    state = run([*into_a("s1"), refund("s1", 1000, T0 + 5 * DAY)], ABCD)
    doc = explain(ABCD, state)
    assert (doc["tier"], doc["entry_tier"], doc["pending_tier"]) == ("A", "B", None)
    assert doc["hysteresis"] == (
        "held in A by its stay conditions: spend_90d 2600 >= 2000, "
        "days_since_last_purchase 4.92 <= 60; its entry conditions no longer hold: "
        "spend_90d 2600 < 3000"
    )
    assert doc["reasons"] == [
        "spend_90d 2600 >= 1000",
        "purchases_90d 3 >= 2",
        "days_since_last_purchase 4.92 <= 60",
        "not A: spend_90d 2600 < 3000",
    ]
    assert doc["notes"] == []
    # 3 purchases on one day: 1 purchase day < 2 (the default lifecycle) -> new
    assert (doc["stage"], doc["stage_reason"]) == ("new", "1 purchase day(s) < 2")
    assert set(doc["deciding"]) == {"spend_90d", "purchases_90d", "days_since_last_purchase"}


def test_held_in_a_by_a_pending_demotion() -> None:
    # A refund of 2000 five days in: spend_90d 1600 fails A's stay too. The demotion to B
    # is wanted since T0 + 5 d and allowed at max(T0 + 2 h + 30 d, T0 + 5 d + 14 d).
    state = run([*into_a("g1"), refund("g1", 2000, T0 + 5 * DAY)], ABCD)
    doc = explain(ABCD, state)
    assert (doc["tier"], doc["pending_tier"], doc["pending_since"]) == ("A", "B", T0 + 5 * DAY)
    assert doc["entry_tier"] == "B"
    assert doc["hysteresis"] == (
        "held in A by hysteresis: demotion to B wanted since 2024-03-06T00:00:00.000Z "
        "(stay condition fails: spend_90d 1600 < 2000), allowed from "
        "2024-03-31T02:00:00.000Z (min 30 days in tier, grace 14 days)"
    )
    assert doc["reasons"][0] == "spend_90d 1600 >= 1000"
    assert doc["deciding"]["spend_90d"] == 1600.0


def test_last_evaluated_under_another_policy_version() -> None:
    doc2 = copy.deepcopy(ABCD_DOC)
    doc2["version"] = "2"
    v2 = policy_from_dict(doc2)
    state = run([*into_a("v1"), refund("v1", 2000, T0 + 5 * DAY)], ABCD)
    doc = explain(v2, state)
    assert doc["policy"]["key"] == "value-tiers-abcd@2"
    assert doc["policy"]["evaluated_under"] == "value-tiers-abcd@1"
    assert doc["hysteresis"] is None  # a new version decides afresh
    assert doc["notes"] == [
        "last evaluated under value-tiers-abcd@1, not value-tiers-abcd@2: the tier and stage "
        "are that policy's; value-tiers-abcd@2 decides the customer afresh (without "
        "hysteresis) at the next re-evaluation, and would choose B"
    ]


def test_json_safe() -> None:
    inf = float("inf")
    assert json_safe({"a": inf, "b": -inf, "c": float("nan"), "d": (1, 2.5), "e": "x"}) == {
        "a": None,
        "b": None,
        "c": None,
        "d": [1, 2.5],
        "e": "x",
    }
    assert json_safe(frozenset({"b", "a"})) == ["a", "b"] and json_safe(True) is True


# --- routing helpers -----------------------------------------------------------------------


def test_partition_of_is_kafkas_default_partitioner() -> None:
    choose = DefaultPartitioner()
    for n in (1, 3, 4, 12):
        every = list(range(n))
        for cid in [f"c{i:04d}" for i in range(300)] + ["", "ü-ñ", "a/b c", "x" * 300]:
            assert partition_of(cid, n) == choose(cid.encode("utf-8"), every, every), (cid, n)


def test_owners_and_cluster_view_from_table_metadata() -> None:
    topic = "app-customer-state-v1-changelog"
    meta = {
        "http://h2:6066": {topic: [0, 2], "other-changelog": [1]},
        "http://h1:6066": {topic: [1]},
        "http://h3:6066": {},
    }
    assert owners(meta, topic) == {0: "http://h2:6066", 2: "http://h2:6066", 1: "http://h1:6066"}
    assert cluster_view(meta, topic, 4) == {
        "workers": [
            {"url": "http://h1:6066", "partitions": [1]},
            {"url": "http://h2:6066", "partitions": [0, 2]},
            {"url": "http://h3:6066", "partitions": []},
        ],
        "unassigned": [3],
    }


def test_same_worker_compares_host_and_port() -> None:
    assert same_worker("http://127.0.0.1:6066", "http://127.0.0.1:6066/")
    assert not same_worker("http://127.0.0.1:6066", "http://127.0.0.1:6067")
    assert same_worker("http://h", "http://h:80")
