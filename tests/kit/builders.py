"""Test kit: event builders and a settable clock (in the spirit of ``bytewax.testing``).

>>> clock = FixedClock(at("2024-03-01"))
>>> e = purchase("c1", 25.0, clock.now)
>>> e.kind, e.amount, e.occurred_at == at("2024-03-01")
('purchase', 25.0, True)
>>> clock.advance(days=1) - at("2024-03-01") == DAY
True
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from app.domain.events import AttributeValue, Event

DAY = 86_400_000
HOUR = 3_600_000
_ids = itertools.count(1)


def at(iso: str) -> int:
    """ISO-8601 (no zone means UTC) -> epoch ms, exactly (integer arithmetic)."""
    dt = datetime.fromisoformat(iso)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def next_id(prefix: str = "e") -> str:
    """A fresh, process-unique event id."""
    return f"{prefix}{next(_ids)}"


@dataclass
class FixedClock:
    """A clock that only moves when told to."""

    now: int

    def advance(self, *, days: float = 0, hours: float = 0, ms: int = 0) -> int:
        self.now += int(days * DAY) + int(hours * HOUR) + ms
        return self.now


def purchase(
    customer: str,
    amount: float,
    ts: int,
    event_id: str | None = None,
    type: str = "purchase",
    **extra: Any,
) -> Event:
    """A purchase (a negative ``amount`` is a refund)."""
    return Event(event_id or next_id("p"), customer, "purchase", type, ts, float(amount), **extra)


def refund(customer: str, amount: float, ts: int, event_id: str | None = None) -> Event:
    """A refund of ``abs(amount)``."""
    return purchase(customer, -abs(amount), ts, event_id, type="refund")


def interaction(customer: str, ts: int, type: str = "visit", event_id: str | None = None) -> Event:
    return Event(event_id or next_id("i"), customer, "interaction", type, ts)


def profile(
    customer: str,
    ts: int,
    attributes: Mapping[str, AttributeValue],
    event_id: str | None = None,
) -> Event:
    return Event(
        event_id or next_id("a"), customer, "profile", "profile", ts, attributes=dict(attributes)
    )


def random_events(
    seed: int,
    customers: int = 20,
    n: int = 2000,
    start: int = 1_704_067_200_000,  # 2024-01-01
    days: int = 800,
    late_fraction: float = 0.1,
    duplicate_fraction: float = 0.03,
) -> Iterator[Event]:
    """A reproducible mixed stream: purchases with awkward float amounts, refunds,
    interactions, profile updates, some events late (up to 400 days) and some duplicates."""
    rng = random.Random(seed)
    t = start
    step_ms = days * DAY // n
    emitted: list[Event] = []
    for i in range(n):
        t += rng.randrange(0, 2 * step_ms + 1)
        ts = t
        if rng.random() < late_fraction:
            ts = t - rng.randrange(0, 400 * DAY)
        cust = f"c{rng.randrange(customers)}"
        r = rng.random()
        if emitted and rng.random() < duplicate_fraction:
            ev = rng.choice(emitted)
        elif r < 0.45:
            amount = round(rng.lognormvariate(3.5, 1.2), rng.choice((0, 1, 2, 3))) + 0.1
            ev = purchase(cust, amount, ts, event_id=f"s{seed}-{i}")
        elif r < 0.5:
            ev = refund(cust, round(rng.uniform(0.01, 80.0), 2), ts, event_id=f"s{seed}-{i}")
        elif r < 0.95:
            ev = interaction(cust, ts, rng.choice(("visit", "email_open", "call")), f"s{seed}-{i}")
        else:
            attrs: dict[str, AttributeValue] = {
                "region": rng.choice(("emea", "apac", "amer")),
                "size": rng.randrange(1, 5000),
            }
            ev = profile(cust, ts, attrs, event_id=f"s{seed}-{i}")
        emitted.append(ev)
        yield ev
