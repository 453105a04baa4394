"""A realistic, deterministic stream of customer events (``tierstream simulate``).

Each customer joins at some time, buys as a Poisson process whose yearly rate is gamma
distributed across customers (a few buy very often, most rarely), spends lognormal order
values around a personal mean, and interacts (visits, e-mail opens and clicks, support
tickets) at rates correlated with buying. Some customers grow (their rate doubles over the
period), some stop buying at a known time (churners: the time goes to the truth file),
some send a profile, some purchases are refunded (negative amounts) and some events are
delivered twice (same ``event_id``). Every customer has at least one event (one with
nothing else in the period has the visit they joined with). Everything comes from one
``random.Random(seed)``: same arguments, same bytes. Output is ordered by event time.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from schemas.codec import iso

DAY_MS = 86_400_000
YEAR_DAYS = 365.0
DEFAULT_START = date(2024, 1, 1)

INDUSTRIES = ("retail", "manufacturing", "services", "software", "logistics", "healthcare")
REGIONS = ("north", "south", "east", "west", "central")
SIZES = ("small", "medium", "large", "enterprise")
CHANNELS = ("web", "app", "store", "phone")
CATEGORIES = ("electronics", "home", "apparel", "books", "grocery", "sports")
#: Namespace of the ids of the join visits of customers with no other event.
_JOIN_IDS = uuid.UUID("6f1c2a4e-0d8b-4b8e-9a57-3c2d1e0f9b11")


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    """Knobs of the generator. The defaults are calibrated so the packaged policy gives
    roughly A 3-5 %, B 10-20 %, C 25-40 %, D the rest among active customers."""

    customers: int = 1000
    days: int = 365
    seed: int = 1
    start: date = DEFAULT_START
    #: Gamma shape and mean of the yearly purchase rate across customers.
    rate_shape: float = 1.2
    rate_mean_per_year: float = 10.0
    #: Lognormal personal mean order value: median and sigma across customers.
    order_value_median: float = 60.0
    order_value_sigma: float = 0.75
    #: Spread of single orders around the personal mean (lognormal sigma).
    order_sigma: float = 0.45
    #: Share of customers present at the start; the others join uniformly over the period.
    initial_share: float = 0.6
    churn_share: float = 0.2
    growth_share: float = 0.1
    profile_share: float = 0.4
    refund_rate: float = 0.03
    duplicate_rate: float = 0.01

    @property
    def start_ms(self) -> int:
        return (
            int(datetime(self.start.year, self.start.month, self.start.day, tzinfo=UTC).timestamp())
            * 1000
        )

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.days * DAY_MS


@dataclass(slots=True)
class CustomerTruth:
    """What the generator decided about a customer (the ``--truth-out`` line)."""

    customer_id: str
    joined_at: int
    purchase_rate_per_year: float
    mean_order_value: float
    churned_at: int | None = None
    grows: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "joined_at": iso(self.joined_at),
            "churned_at": iso(self.churned_at) if self.churned_at is not None else None,
            "purchase_rate_per_year": round(self.purchase_rate_per_year, 4),
            "mean_order_value": round(self.mean_order_value, 2),
            "grows": self.grows,
        }


@dataclass(slots=True)
class Simulation:
    events: list[dict[str, Any]] = field(default_factory=list)
    truth: list[CustomerTruth] = field(default_factory=list)


def _poisson_times(rng: random.Random, rate_per_day: float, start: int, end: int) -> list[int]:
    """Event times (ms) of a homogeneous Poisson process on [start, end)."""
    times: list[int] = []
    if rate_per_day <= 0 or end <= start:
        return times
    t = float(start)
    while True:
        t += rng.expovariate(rate_per_day) * DAY_MS
        if t >= end:
            return times
        times.append(int(t))


def _thinned_growth(
    rng: random.Random, times: list[int], start: int, end: int, factor: float
) -> list[int]:
    """Keep each time with a probability rising linearly from 1/factor to 1 over the
    span: the rate grows ``factor``-fold (call with times generated at the top rate)."""
    span = max(end - start, 1)
    out = []
    for t in times:
        p = (1.0 + (factor - 1.0) * (t - start) / span) / factor
        if rng.random() < p:
            out.append(t)
    return out


class _Ids:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def __call__(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))


def simulate(config: SimulationConfig) -> Simulation:
    """Generate the whole stream in memory, ordered by event time."""
    rng = random.Random(config.seed)
    new_id = _Ids(rng)
    start, end = config.start_ms, config.end_ms
    sim = Simulation()
    rows: list[tuple[int, int, int, dict[str, Any]]] = []  # (time, customer, seq, doc)
    seq = 0
    width = max(len(str(config.customers)), 5)
    for n in range(config.customers):
        cid = f"c{n + 1:0{width}d}"
        rate_year = rng.gammavariate(
            config.rate_shape, config.rate_mean_per_year / config.rate_shape
        )
        mean_value = rng.lognormvariate(
            math.log(config.order_value_median), config.order_value_sigma
        )
        if rng.random() < config.initial_share:
            joined = start + int(rng.random() * DAY_MS)
        else:
            joined = start + int(rng.random() * (end - start))
        churned: int | None = None
        if rng.random() < config.churn_share:
            churned = joined + int(rng.random() * (end - joined))
        grows = rng.random() < config.growth_share
        truth = CustomerTruth(cid, joined, rate_year, mean_value, churned, grows)
        sim.truth.append(truth)
        buying_end = churned if churned is not None else end
        engagement = rng.lognormvariate(0.0, 0.5)  # how much this customer interacts per sale
        channel = rng.choice(CHANNELS)
        docs: list[dict[str, Any]] = []

        # Profile: some customers send attributes at join, a few update them later.
        if rng.random() < config.profile_share:
            attrs: dict[str, Any] = {
                "industry": rng.choice(INDUSTRIES),
                "region": rng.choice(REGIONS),
                "size": rng.choice(SIZES),
            }
            docs.append(_profile(new_id(), cid, joined, attrs))
            if rng.random() < 0.15:
                t = joined + int(rng.random() * (end - joined))
                docs.append(_profile(new_id(), cid, t, {**attrs, "size": rng.choice(SIZES)}))

        # Purchases (and the visits leading to them, and refunds).
        rate_day = rate_year / YEAR_DAYS
        if grows:
            times = _thinned_growth(
                rng, _poisson_times(rng, rate_day * 2.0, joined, buying_end), joined, end, 2.0
            )
        else:
            times = _poisson_times(rng, rate_day, joined, buying_end)
        if not times and churned is None and rng.random() < 0.5:
            # Most customers who joined bought at least once (that is how they joined).
            times = [min(joined + int(rng.random() * 3 * DAY_MS), end - 1)]
        for t in times:
            amount = round(rng.lognormvariate(math.log(mean_value), config.order_sigma), 2)
            order_id = f"o-{new_id()[:13]}"
            if rng.random() < 0.7:
                docs.append(
                    _interaction(
                        new_id(),
                        cid,
                        max(t - rng.randint(60_000, 3_600_000), joined),
                        "visit",
                        channel,
                    )
                )
            docs.append(
                {
                    "event_id": new_id(),
                    "customer_id": cid,
                    "type": "purchase",
                    "occurred_at": t,
                    "amount": amount,
                    "currency": "USD",
                    "order_id": order_id,
                    "quantity": 1 + int(rng.expovariate(0.7)),
                    "category": rng.choice(CATEGORIES),
                    "channel": channel,
                }
            )
            if rng.random() < config.refund_rate:
                back = t + int(rng.uniform(1, 30) * DAY_MS)
                if back < end:
                    share = 1.0 if rng.random() < 0.6 else round(rng.uniform(0.2, 0.8), 2)
                    docs.append(
                        {
                            "event_id": new_id(),
                            "customer_id": cid,
                            "type": "refund",
                            "occurred_at": back,
                            "amount": -round(amount * share, 2),
                            "currency": "USD",
                            "order_id": order_id,
                            "channel": channel,
                        }
                    )
            if rng.random() < 0.05:
                docs.append(
                    _interaction(
                        new_id(),
                        cid,
                        t + int(rng.uniform(0.5, 20) * DAY_MS),
                        "support_ticket",
                        "phone",
                    )
                )

        # Browsing and e-mail engagement, correlated with buying; fades after churn.
        active_rate = (2.0 + 3.0 * rate_year) * engagement / YEAR_DAYS
        for t in _poisson_times(rng, active_rate, joined, buying_end):
            docs.append(_interaction(new_id(), cid, t, "visit", channel))
        for t in _poisson_times(rng, 12.0 * engagement / YEAR_DAYS, joined, buying_end):
            docs.append(_interaction(new_id(), cid, t, "email_open", "email"))
            if rng.random() < 0.25:
                docs.append(
                    _interaction(
                        new_id(), cid, t + rng.randint(5_000, 600_000), "email_click", "email"
                    )
                )
        if churned is not None:
            for t in _poisson_times(rng, 2.0 / YEAR_DAYS, churned, end):
                docs.append(_interaction(new_id(), cid, t, "email_open", "email"))
        for t in _poisson_times(rng, 0.3 / YEAR_DAYS, joined, end):
            docs.append(_interaction(new_id(), cid, t, "support_ticket", "phone"))

        kept = 0
        for doc in docs:
            if doc["occurred_at"] >= end:
                continue
            kept += 1
            rows.append((doc["occurred_at"], n, seq, doc))
            seq += 1
            if rng.random() < config.duplicate_rate:
                rows.append((doc["occurred_at"], n, seq, dict(doc)))
                seq += 1
        if not kept:
            # Nothing drawn for this customer within the period (one who joined and left
            # at once, or joined at the very end): the visit they joined with, so every
            # customer asked for is in the stream. Its id is derived, not drawn, so the
            # other customers' events stay what they were for this seed.
            event_id = str(uuid.uuid5(_JOIN_IDS, f"{config.seed}:{cid}"))
            rows.append((joined, n, seq, _interaction(event_id, cid, joined, "visit", channel)))
            seq += 1

    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    for t, _, _, doc in rows:
        doc["occurred_at"] = iso(t)
        sim.events.append(doc)
    return sim


def _profile(event_id: str, cid: str, t: int, attrs: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "customer_id": cid,
        "type": "profile",
        "occurred_at": t,
        "attributes": attrs,
    }


def _interaction(event_id: str, cid: str, t: int, typ: str, channel: str) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "customer_id": cid,
        "type": typ,
        "occurred_at": t,
        "channel": channel,
    }


def iter_events(config: SimulationConfig) -> Iterator[dict[str, Any]]:
    yield from simulate(config).events
