"""Numbers at the decoder's bounds never crash anything later (issue 13, point 2).

Two purchases with ``margin: 1e308`` once passed decoding and crashed the worker's flush
(``math.fsum`` overflowed while building the snapshot). The decoder now bounds every number
an event carries (``schemas.codec.MAX_NUMBER``); these tests feed thousands of events *at*
those bounds, decoded by the real decoder, through every example policy: ``step``,
``tick``, ``advance`` over years of silence, ``snapshot`` / ``encode_snapshot``,
``encode_output`` and the state's changelog round trip. Nothing may raise, no snapshot or
output number may be infinite or NaN (JSON has neither: orjson would write ``null``), and
the sums must still be exact.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.adapters.policy_files import load_policy
from app.domain.engine import advance, step, tick
from app.domain.errors import InvalidEvent
from app.domain.events import Event
from app.domain.features import FEATURES, compute_features
from app.domain.outputs import Output, snapshot
from app.domain.policy import Policy
from app.domain.replay import replay
from app.domain.state import (
    CustomerState,
    recompute_windows,
    state_from_dict,
    state_to_dict,
    window_values,
)
from app.service.batch_replay import population_cutoffs
from schemas import decode_event, encode_output, encode_snapshot
from schemas.codec import MAX_NUMBER
from tests.kit.policies import VALUE_TIERS_V2

DAY = 86_400_000
START = 1_704_067_200_000  # 2024-01-01
EXAMPLES = sorted((Path(__file__).resolve().parents[3] / "examples").glob("*.yaml"))
POLICIES = [None, *EXAMPLES]
B = MAX_NUMBER
#: Features that are infinite by definition (growth from nothing, days since never);
#: the outputs carry them as null. A policy's derived features may be too (1e15 / 5e-324:
#: arithmetic on finite values, compared as the largest number, carried as null).
INFINITE_BY_DESIGN = {name for name in FEATURES if "growth" in name or "days_since" in name}


def _doc(i: int, customer: str, ts: int, **fields: Any) -> dict[str, Any]:
    return {"event_id": f"x{i}", "customer_id": customer, "occurred_at": ts, **fields}


def extreme_events(seed: int, days: int = 420, per_day: int = 4) -> Iterator[Event]:
    """Purchases, refunds, margins, quantities and numeric attributes at the bounds (and
    just inside them), several a day, for a few customers; each decoded by the decoder."""
    rng = random.Random(seed)
    i = 0
    profiles = {
        "wallet_size": [B, -B, 1.0, 5e-324],
        "financial_strength": [B, -B, 10**15, -(10**15)],
        "strategic_importance": [B, 0, -B],
        "segment": ["consumer", "business"],
        "ownership": ["listed", "private"],
        "employees": [10**15, -(10**15), 0],
    }
    for d in range(days):
        day = START + d * DAY
        for _ in range(per_day):
            i += 1
            ts = day + rng.randrange(DAY)
            customer = rng.choice(("max", "min", "mixed", "mixed2"))
            r = rng.random()
            if customer == "max" or (customer.startswith("mixed") and r < 0.5):
                doc = _doc(i, customer, ts, type="purchase", amount=B, margin=B, quantity=B)
                kind = "purchase"
            elif customer == "min" or r < 0.8:
                doc = _doc(i, customer, ts, type="refund", amount=-B, margin=-B, quantity=-B)
                kind = "purchase"
            elif r < 0.9:
                doc = _doc(i, customer, ts, type="visit")
                kind = "interaction"
            else:
                attrs = {k: rng.choice(v) for k, v in profiles.items()}
                doc = _doc(i, customer, ts, type="profile", attributes=attrs)
                kind = "profile"
            yield decode_event(orjson.dumps(doc), kind=kind)  # type: ignore[arg-type]
    # a last day with purchases at the bounds, for everybody: RFM repeat days
    for customer in ("max", "min", "mixed", "mixed2"):
        i += 1
        ts = START + days * DAY
        doc = _doc(i, customer, ts, type="purchase", amount=B, margin=B)
        yield decode_event(orjson.dumps(doc), kind="purchase")


def _non_finite(value: Any, path: str = "$") -> list[str]:
    """Paths of the infinite or NaN floats in a nested structure."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [f"{path}={value}"]
    if isinstance(value, Mapping):
        return [p for k, v in value.items() for p in _non_finite(v, f"{path}.{k}")]
    if isinstance(value, list | tuple):
        return [p for i, v in enumerate(value) for p in _non_finite(v, f"{path}[{i}]")]
    return []


def _check_output(out: Output, policy: Policy) -> None:
    fields = dataclasses.asdict(out)
    features = fields.pop("features", {})
    assert _non_finite(fields) == [], out
    allowed = INFINITE_BY_DESIGN | {name for name, _ in policy.derived}
    bad = [p for p in _non_finite(features) if p.split("=")[0][2:] not in allowed]
    assert bad == [], (out.kind, bad)
    document = orjson.loads(encode_output(out))
    assert document["id"] == out.id  # encodes, and as JSON (infinite features are null)


def _check_state(state: CustomerState, at: int, policy: Policy) -> None:
    snap = snapshot(state)
    assert _non_finite(snap) == [], snap
    assert orjson.loads(encode_snapshot(snap)) == snap  # nothing became null on the way
    later = snapshot(state, as_of=at)
    assert _non_finite(later) == [], later
    raw = orjson.dumps(state_to_dict(state))
    again = state_from_dict(orjson.loads(raw))
    assert orjson.dumps(state_to_dict(again)) == raw
    every = {**compute_features(state, at), **policy.features(state, at)}
    bad = {k for k, v in every.items() if isinstance(v, float) and not math.isfinite(v)}
    assert bad <= INFINITE_BY_DESIGN | {name for name, _ in policy.derived}, bad


def _ready(path: Path | None, events: list[Event]) -> Policy:
    policy = load_policy(path) if path is not None else load_policy()
    if policy.ranked:
        end = max(e.occurred_at for e in events)
        policy = policy.with_cutoffs(population_cutoffs(replay(events, policy), policy, end))
    return policy


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.stem if p else "default")
def test_events_at_the_bounds_never_overflow(path: Path | None) -> None:
    events = list(extreme_events(seed=13))
    policy = _ready(path, events)
    states: dict[str, CustomerState] = {}
    outputs: list[Output] = []
    spent: dict[str, list[float]] = {}
    clock = 0
    for n, e in enumerate(events, 1):
        clock = max(clock, e.occurred_at)
        res = step(states.get(e.customer_id), e, clock, policy)
        states[e.customer_id] = res.state
        outputs.extend(res.outputs)
        if e.kind == "purchase":
            spent.setdefault(e.customer_id, []).append(e.amount)
        if n % 97 == 0:  # the worker's timer, a flush and a restart from the changelog
            for cid, st in list(states.items()):
                outputs.extend(tick(st, clock, policy).outputs)
                _check_state(st, clock, policy)
                states[cid] = state_from_dict(orjson.loads(orjson.dumps(state_to_dict(st))))
    end = clock + 3 * 365 * DAY  # years of silence: churn, lifecycle, windows emptying
    for st in states.values():
        outputs.extend(advance(st, end, policy))
        _check_state(st, end, policy)
    assert len(events) > 1500 and outputs
    for out in outputs:
        _check_output(out, policy)
    for cid, st in states.items():  # still exact, at magnitudes up to ~1e18
        assert st.lifetime_spend == pytest.approx(math.fsum(spent[cid]), rel=1e-12, abs=1.0)
        assert window_values(st.windows) == window_values(recompute_windows(st))
    assert states["max"].lifetime_spend >= 300 * B
    assert states["min"].lifetime_spend <= -300 * B


def test_many_events_of_one_day_at_the_bound() -> None:
    """Thousands of purchases at +1e15 and -1e15 on one day: the day's bucket and every
    window hold the exact sum (a float sum of integers below 2**53 * 1e15 is exact here)."""
    policy = VALUE_TIERS_V2
    state: CustomerState | None = None
    for i in range(5000):
        amount = B if i % 5 else -B
        doc = _doc(i, "c", START + i, type="purchase", amount=amount, margin=amount)
        state = step(state, decode_event(doc, kind="purchase"), START + i, policy).state
    assert state is not None
    expected = (4000 - 1000) * B
    assert state.lifetime_spend == expected == state.lifetime_margin
    snap = orjson.loads(encode_snapshot(snapshot(state)))
    assert snap["rolling"]["spend_30d"] == expected == snap["rolling"]["margin_365d"]
    assert snap["rolling"]["avg_order_value_30d"] == expected / 4000
    assert snap["rfm"]["monetary_value"] == 0.0  # one purchase day: no repeat


def test_the_issues_margins_are_rejected_at_decode() -> None:
    """The reproduction of point 2: two purchases with margin 1e308 on different days. The
    decoder used to take them, and the snapshot's margin sum then raised OverflowError."""
    docs = [
        _doc(i, "c", START + i * DAY, type="purchase", amount=5.0, margin=1e308) for i in range(2)
    ]
    for d in docs:
        with pytest.raises(InvalidEvent) as err:
            decode_event(orjson.dumps(d), kind="purchase")
        assert err.value.reason == "invalid_value"
        assert "margin" in err.value.detail and "1e+15" in err.value.detail
