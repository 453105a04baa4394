"""The RFM summary equals ``lifetimes.utils.summary_data_from_transaction_data``.

CDNOW sample (shipped inside ``lifetimes``): whitespace separated, no header, columns
customer index, customer id, date YYYYMMDD, quantity, amount. Every row becomes a
purchase event; replay; compare every customer with ``freq='D'`` and the amount as
monetary value column.
"""

from __future__ import annotations

import math
import random
import warnings
from datetime import UTC, date, datetime
from importlib import resources
from typing import Any

import pytest

from app.domain.engine import step
from app.domain.events import Event
from app.domain.features import RFMSummary, rfm_summary
from app.domain.replay import replay, sort_key
from app.domain.state import CustomerState, day_of
from tests.kit.builders import DAY, at, purchase, refund
from tests.kit.policies import VALUE_TIERS_V2

pd = pytest.importorskip("pandas")
with warnings.catch_warnings():  # lifetimes 0.11 sets a pandas option pandas 3 deprecates
    warnings.simplefilter("ignore")
    lifetimes_utils = pytest.importorskip("lifetimes.utils")

END_1997_09_30 = date(1997, 9, 30)
POLICY = VALUE_TIERS_V2


def _ms(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp()) * 1000


def _cdnow_rows() -> list[tuple[str, date, float]]:
    text = resources.files("lifetimes").joinpath("datasets/CDNOW_sample.txt").read_text()
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        _idx, cid, ymd, _qty, amount = line.split()
        rows.append((cid, date(int(ymd[:4]), int(ymd[4:6]), int(ymd[6:8])), float(amount)))
    return rows


@pytest.fixture(scope="module")
def cdnow() -> list[tuple[str, date, float]]:
    return _cdnow_rows()


def _reference(rows: list[tuple[str, date, float]], end: date) -> Any:
    df = pd.DataFrame(rows, columns=["customer_id", "date", "amount"])
    df["date"] = pd.to_datetime(df["date"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lifetimes_utils.summary_data_from_transaction_data(
            df,
            "customer_id",
            "date",
            monetary_value_col="amount",
            observation_period_end=pd.Timestamp(end),
            freq="D",
        )


@pytest.mark.parametrize("end", ["1997-09-30", "last date in file"])
def test_rfm_equals_lifetimes_on_cdnow(cdnow: list[tuple[str, date, float]], end: str) -> None:
    obs_end = END_1997_09_30 if end == "1997-09-30" else max(d for _, d, _ in cdnow)
    kept = [r for r in cdnow if r[1] <= obs_end]  # lifetimes drops rows after the end
    events = [
        purchase(cid, amount, _ms(d) + i, event_id=f"cdnow-{i}")
        for i, (cid, d, amount) in enumerate(kept)
    ]
    states = replay(sorted(events, key=sort_key), VALUE_TIERS_V2).states
    ref = _reference(cdnow, obs_end)
    assert len(ref) == len(states) == 2357
    as_of = _ms(obs_end)
    mismatches = []
    for cid, row in ref.iterrows():
        got = rfm_summary(states[cid], as_of)
        want = (int(row["frequency"]), int(row["recency"]), int(row["T"]))
        if (got.frequency, got.recency, got.T) != want or not math.isclose(
            got.monetary_value, row["monetary_value"], rel_tol=1e-9, abs_tol=0.0
        ):
            mismatches.append((cid, got, tuple(row)))
    assert mismatches == []


def _brute_force(purchases: list[Event], as_of: int) -> RFMSummary:
    per_day: dict[int, float] = {}
    for e in purchases:
        if e.amount >= 0 and e.type != "refund":
            per_day[day_of(e.occurred_at)] = per_day.get(day_of(e.occurred_at), 0.0) + e.amount
    if not per_day:
        return RFMSummary(0, 0, 0, 0.0)
    first, last = min(per_day), max(per_day)
    repeats = [v for d, v in per_day.items() if d != first]
    return RFMSummary(
        len(repeats),
        last - first,
        max(day_of(as_of) - first, 0),
        sum(repeats) / len(repeats) if repeats else 0.0,
    )


@pytest.mark.parametrize("seed", range(20))
def test_rfm_with_late_events_of_any_age(seed: int) -> None:
    """Out-of-order purchases, also more than a year late, before the first purchase or
    between known days, with refunds mixed in."""
    rng = random.Random(seed)
    t0 = at("2022-01-01")
    events = []
    for i in range(120):
        ts = t0 + rng.randrange(0, 900) * DAY + rng.randrange(DAY)
        if rng.random() < 0.15:
            events.append(refund("c", rng.uniform(1, 30), ts, f"r{i}"))
        else:
            events.append(purchase("c", round(rng.uniform(1, 300), 2), ts, f"p{i}"))
    state: CustomerState | None = None
    for e in events:  # arrival order = random, not time order
        state = step(state, e, e.occurred_at, POLICY).state
    assert state is not None
    got = rfm_summary(state, state.clock)
    want = _brute_force(events, state.clock)
    assert (got.frequency, got.recency, got.T) == (want.frequency, want.recency, want.T)
    assert math.isclose(got.monetary_value, want.monetary_value, rel_tol=1e-12)
    assert state.purchase_days == len({day_of(e.occurred_at) for e in events if e.amount >= 0})


RFM_CASES = [
    # (purchases as (day offset, amount), in arrival order; expected F, R, T at day 10, M)
    ([(0, 10.0)], (0, 0, 10, 0.0)),
    ([(0, 10.0), (0, 5.0)], (0, 0, 10, 0.0)),
    ([(0, 10.0), (3, 5.0), (3, 7.0)], (1, 3, 10, 12.0)),
    ([(3, 5.0), (0, 10.0)], (1, 3, 10, 5.0)),  # late first purchase: day 3 becomes a repeat
    ([(5, 1.0), (8, 2.0), (6, 4.0), (6, 1.0)], (2, 3, 5, 3.5)),
]


@pytest.mark.parametrize(("purchases", "expected"), RFM_CASES)
def test_rfm_table(
    purchases: list[tuple[int, float]], expected: tuple[int, int, int, float]
) -> None:
    t0 = at("2024-01-01T09:00:00")
    state: CustomerState | None = None
    for i, (d, amount) in enumerate(purchases):
        state = step(state, purchase("c", amount, t0 + d * DAY + i), 0, POLICY).state
    assert state is not None
    r = rfm_summary(state, t0 + 10 * DAY)
    assert (r.frequency, r.recency, r.T, r.monetary_value) == expected
