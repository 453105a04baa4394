"""``tierstream simulate``: deterministic, ordered, realistic in the ways the tests rely on."""

from __future__ import annotations

from collections import Counter
from datetime import date
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from app.adapters.policy_files import load_policy
from app.cli.main import cli
from app.service.batch_replay import classify_events
from app.tools.simulate import Simulation, SimulationConfig, simulate
from schemas.codec import decode_event, parse_timestamp

CONFIG = SimulationConfig(customers=400, days=365, seed=11)


@pytest.fixture(scope="module")
def sim() -> Simulation:
    return simulate(CONFIG)


def test_deterministic_for_a_seed(sim: Simulation) -> None:
    again = simulate(CONFIG)
    assert again.events == sim.events
    assert [t.to_dict() for t in again.truth] == [t.to_dict() for t in sim.truth]
    other = simulate(SimulationConfig(customers=400, days=365, seed=12))
    assert other.events != sim.events


def test_event_time_ordered_and_within_the_period(sim: Simulation) -> None:
    times = [parse_timestamp(e["occurred_at"]) for e in sim.events]
    assert times == sorted(times)
    assert CONFIG.start_ms <= times[0] and times[-1] < CONFIG.end_ms


def test_every_event_decodes_and_all_kinds_are_present(sim: Simulation) -> None:
    events = [decode_event(d) for d in sim.events]
    kinds = Counter(e.kind for e in events)
    types = Counter(e.type for e in events)
    assert kinds["purchase"] > 0 and kinds["interaction"] > 0 and kinds["profile"] > 0
    assert {"visit", "email_open", "email_click", "support_ticket", "refund"} <= set(types)
    refunds = [e for e in events if e.type == "refund"]
    assert refunds and all(e.amount < 0 for e in refunds)
    purchases = [e for e in events if e.type == "purchase"]
    assert all(e.amount > 0 for e in purchases)
    # Interactions go with buying: the busiest buyers interact more than the quietest.
    by_customer: dict[str, Counter[str]] = {}
    for e in events:
        by_customer.setdefault(e.customer_id, Counter())[e.kind] += 1
    ranked = sorted(by_customer.values(), key=lambda c: c["purchase"])
    quarter = len(ranked) // 4
    low = sum(c["interaction"] for c in ranked[:quarter])
    high = sum(c["interaction"] for c in ranked[-quarter:])
    assert high > 2 * low


def test_duplicates_are_exact_redeliveries(sim: Simulation) -> None:
    by_id: dict[str, list[dict[str, object]]] = {}
    for doc in sim.events:
        by_id.setdefault(str(doc["event_id"]), []).append(doc)
    dups = {k: v for k, v in by_id.items() if len(v) > 1}
    assert 0.002 * len(sim.events) < len(dups) < 0.03 * len(sim.events)
    assert all(len(v) == 2 and v[0] == v[1] for v in dups.values())


def test_churners_stop_buying_at_their_truth_time(sim: Simulation) -> None:
    churned = {t.customer_id: t.churned_at for t in sim.truth if t.churned_at is not None}
    assert 0.1 * CONFIG.customers < len(churned) < 0.3 * CONFIG.customers
    last_purchase: dict[str, int] = {}
    for doc in sim.events:
        if doc["type"] == "purchase":
            last_purchase[str(doc["customer_id"])] = parse_timestamp(doc["occurred_at"])
    for cid, at in churned.items():
        assert cid not in last_purchase or last_purchase[cid] < at, cid
    # ... while the others keep buying until near the end.
    loyal = [
        t.customer_id
        for t in sim.truth
        if t.churned_at is None and t.purchase_rate_per_year > 24 and t.joined_at < CONFIG.end_ms
    ]
    late = CONFIG.end_ms - 60 * 86_400_000
    assert sum(last_purchase.get(c, 0) > late for c in loyal) > 0.8 * len(loyal)


def test_default_policy_spread_is_plausible() -> None:
    """The calibration target: A a few %, B ~10-20 %, C ~25-40 %, D the rest (as of the end
    of the period, time having passed for everyone)."""
    config = SimulationConfig(customers=1500, days=365, seed=2)
    policy = load_policy()
    events = (decode_event(d) for d in simulate(config).events)
    result, _, _ = classify_events(events, policy, as_of=config.end_ms)
    tiers = Counter(state.tier for state in result.states.values())
    n = sum(tiers.values())
    share = {t: tiers[t] / n for t in "ABCD"}
    assert 0.01 <= share["A"] <= 0.07, share
    assert 0.08 <= share["B"] <= 0.22, share
    assert 0.18 <= share["C"] <= 0.40, share
    assert share["D"] >= 0.35, share


def test_cli_writes_stream_and_truth(tmp_path: Path) -> None:
    out, truth = tmp_path / "events.jsonl", tmp_path / "truth.jsonl"
    args = ["simulate", "--customers", "30", "--days", "90", "--seed", "4", "--start"]
    result = CliRunner().invoke(
        cli, [*args, "2025-02-01", "--out", str(out), "--truth-out", str(truth)]
    )
    assert result.exit_code == 0, result.output
    assert "simulated" in result.output
    expected = simulate(SimulationConfig(customers=30, days=90, seed=4, start=date(2025, 2, 1)))
    assert [orjson.loads(x) for x in out.read_bytes().splitlines()] == expected.events
    rows = [orjson.loads(x) for x in truth.read_bytes().splitlines()]
    assert [r["customer_id"] for r in rows] == [t.customer_id for t in expected.truth]
    assert set(rows[0]) == {
        "customer_id",
        "joined_at",
        "churned_at",
        "purchase_rate_per_year",
        "mean_order_value",
        "grows",
    }


@pytest.mark.parametrize(
    ("customers", "days", "seed"),
    [(500, 365, 1), (2000, 365, 1), (50, 1, 3), (7, 2, 5), (1, 1, 1)],
)
def test_cli_gives_exactly_the_customers_asked_for(
    tmp_path: Path, customers: int, days: int, seed: int
) -> None:
    """Every simulated customer is in the stream: also those who join and churn at once
    or join at the very end (they get the visit they joined with)."""
    out, truth = tmp_path / "events.jsonl", tmp_path / "truth.jsonl"
    args = ["simulate", "--customers", str(customers), "--days", str(days), "--seed", str(seed)]
    result = CliRunner().invoke(cli, [*args, "--out", str(out), "--truth-out", str(truth)])
    assert result.exit_code == 0, result.output
    in_stream = {orjson.loads(x)["customer_id"] for x in out.read_bytes().splitlines()}
    assert len(in_stream) == customers
    assert in_stream == {orjson.loads(x)["customer_id"] for x in truth.read_bytes().splitlines()}
