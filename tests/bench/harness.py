"""Shared pieces of the benchmark: input generation, producing, result records, the table.

Every pipeline reads the same pre-produced input topic (``<prefix>purchases``), keyed by
``customer_id`` so the partitioning is the one Faust and the worker use (murmur2 of the key).
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import random
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

#: 2026-01-01T00:00:00Z; events span ~180 days from here.
EPOCH_MS = 1_767_225_600_000
SPAN_MS = 180 * 86_400_000
CATEGORIES = ("electronics", "books", "garden", "grocery", "fashion", "toys", "sports")
CHANNELS = ("web", "app", "store", "phone")


def customer_weights(customers: int, skew: float = 1.05, offset: float = 20.0) -> list[float]:
    """Cumulative weights of a Zipf-like key distribution: a few heavy buyers, a long tail."""
    cum = list(itertools.accumulate(1.0 / (i + offset) ** skew for i in range(customers)))
    return cum


def purchase_events(n: int, customers: int, seed: int = 7) -> Iterator[tuple[bytes, bytes]]:
    """``n`` purchase events of ~210 bytes as ``(key, value)``, in event-time order."""
    rng = random.Random(seed)
    cum = customer_weights(customers)
    total = cum[-1]
    # Shuffle which customer id gets which popularity rank, so heavy keys spread over partitions.
    ids = [f"c-{i:06d}" for i in range(customers)]
    rng.shuffle(ids)
    step = SPAN_MS / max(n, 1)
    for i in range(n):
        cid = ids[bisect.bisect_left(cum, rng.random() * total)]
        refund = rng.random() < 0.02
        amount = round(rng.lognormvariate(3.5, 1.0), 2)
        doc = {
            "event_id": f"p-{i:010d}",
            "customer_id": cid,
            "type": "refund" if refund else "purchase",
            "occurred_at": EPOCH_MS + int(i * step),
            "amount": -amount if refund else amount,
            "currency": "EUR",
            "order_id": f"o-{i:010d}",
            "quantity": rng.randint(1, 5),
            "margin": round(rng.uniform(0.05, 0.45), 3),
            "category": rng.choice(CATEGORIES),
            "channel": rng.choice(CHANNELS),
        }
        yield cid.encode(), orjson.dumps(doc)


async def create_topics(bootstrap: str, names: Sequence[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in names]
        )
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, events: Iterator[tuple[bytes, bytes]]) -> int:
    """Produce all events (acks=1, batched); returns the count and total value bytes."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=20,
        max_batch_size=256 * 1024,
        enable_idempotence=False,
    )
    await producer.start()
    n = 0
    try:
        pending: list[asyncio.Future[Any]] = []
        for key, value in events:
            pending.append(await producer.send(topic, value, key=key))
            n += 1
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        await producer.flush()
    finally:
        await producer.stop()
    return n


@dataclass
class Result:
    """All repetitions of one pipeline."""

    pipeline: str
    description: str
    rates: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def median(self) -> float | None:
        return statistics.median(self.rates) if self.rates else None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["median"] = self.median
        d["min"] = min(self.rates) if self.rates else None
        d["max"] = max(self.rates) if self.rates else None
        return d


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}x" if a / b >= 0.1 else f"{a / b:.3f}x"


def render_table(results: Sequence[Result], reference: str, raw: str) -> str:
    """Pipeline, events/s median (min-max), ratio vs the idiomatic Faust reference and raw."""
    by_name = {r.pipeline: r for r in results}
    ref = by_name[reference].median if reference in by_name else None
    lim = by_name[raw].median if raw in by_name else None
    rows = [("pipeline", "events/s median (min-max)", "vs idiomatic Faust", "vs raw", "runs")]
    for r in results:
        spread = f"{_fmt(r.median)} ({_fmt(min(r.rates))}-{_fmt(max(r.rates))})" if r.rates else "-"
        rows.append(
            (
                r.pipeline,
                spread,
                _ratio(r.median, ref),
                _ratio(r.median, lim),
                f"{len(r.rates)}" + (f" ({len(r.errors)} failed)" if r.errors else ""),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for j, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def now_utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
