"""Publishing input events into the input topics (``tierstream produce`` and the demo).

Routing: ``schemas.kind_of(doc)`` -> ``purchases``/``interactions``/``profiles`` (with the
settings' topic prefix); key = ``customer_id`` as UTF-8; value = the document re-encoded
with orjson. Content is not validated here (the worker dead-letters bad events); only
records that cannot be keyed (not a JSON object, no ``customer_id``) are skipped.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer

from app.adapters.kafka import ensure_topics, make_producer
from app.service.source import SourceLine
from app.settings import Settings
from schemas.codec import encode_input, kind_of
from schemas.topics import INPUTS

#: Input kind -> logical topic name (schemas.topics).
INPUT_TOPICS = {t.kind: t.name for t in INPUTS}


@dataclass(frozen=True, slots=True)
class Skipped:
    line: int
    reason: str
    detail: str


@dataclass(slots=True)
class ProduceReport:
    sent: int = 0
    per_topic: Counter[str] = field(default_factory=Counter)
    skipped: list[Skipped] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    key: bytes
    value: bytes


def to_record(doc: Mapping[str, Any], settings: Settings) -> Record:
    """Topic, key and value of one input document (it must have a ``customer_id``)."""
    topic = settings.topic(INPUT_TOPICS[kind_of(doc)])
    return Record(topic, str(doc["customer_id"]).encode(), encode_input(doc))


def to_records(
    lines: Iterable[SourceLine], settings: Settings
) -> tuple[list[tuple[int, Record]], list[Skipped]]:
    """Records to send (with their line numbers) and the lines skipped, with reasons."""
    records: list[tuple[int, Record]] = []
    skipped: list[Skipped] = []
    for sl in lines:
        if sl.doc is None:
            skipped.append(Skipped(sl.line, sl.reason or "invalid", sl.detail or ""))
            continue
        cid = sl.doc.get("customer_id")
        if cid is None or cid == "" or isinstance(cid, dict | list):
            skipped.append(Skipped(sl.line, "missing_field", "no customer_id to key the record by"))
            continue
        records.append((sl.line, to_record(sl.doc, settings)))
    return records, skipped


def input_topic_names(settings: Settings) -> list[str]:
    return [settings.topic(t) for t in INPUT_TOPICS.values()]


class Pacer:
    """Spreads sends evenly at ``rate`` per second (``None``: as fast as possible)."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate if rate and rate > 0 else None
        self.start = time.monotonic()
        self.count = 0

    async def wait(self) -> None:
        if self.rate is None:
            self.count += 1
            if self.count % 1000 == 0:
                await asyncio.sleep(0)
            return
        due = self.start + self.count / self.rate
        self.count += 1
        delay = due - time.monotonic()
        if delay > 0.002:
            await asyncio.sleep(delay)


async def send_records(
    producer: AIOKafkaProducer,
    records: Iterable[Record] | AsyncIterator[Record],
    rate: float | None = None,
    on_sent: Callable[[Record], None] | None = None,
    in_flight: int = 5000,
) -> int:
    """Send records in order, paced at ``rate``; waits for every acknowledgement."""
    pacer = Pacer(rate)
    pending: deque[tuple[Record, asyncio.Future[Any]]] = deque()
    sent = 0

    async def drain(keep: int) -> None:
        nonlocal sent
        while len(pending) > keep:
            rec, fut = pending.popleft()
            await fut
            sent += 1
            if on_sent is not None:
                on_sent(rec)

    async def one(rec: Record) -> None:
        await pacer.wait()
        fut = await producer.send(rec.topic, value=rec.value, key=rec.key)
        pending.append((rec, fut))
        if len(pending) >= in_flight or rate is not None:
            await drain(in_flight // 2 if rate is None else _settled(pending))

    if isinstance(records, AsyncIterator):
        async for rec in records:
            await one(rec)
    else:
        for rec in records:
            await one(rec)
    await drain(0)
    return sent


def _settled(pending: deque[tuple[Record, asyncio.Future[Any]]]) -> int:
    """How many pending sends to keep: report the ones already acknowledged, in order."""
    done = 0
    for _, fut in pending:
        if not fut.done():
            break
        done += 1
    return len(pending) - done


async def produce_lines(
    lines: Iterable[SourceLine],
    settings: Settings,
    rate: float | None = None,
    on_sent: Callable[[Record], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    create_topics: bool = True,
) -> ProduceReport:
    """Publish a file's lines; see the module docstring for routing and skipping."""
    t0 = time.monotonic()
    records, skipped = to_records(lines, settings)
    report = ProduceReport(skipped=skipped)
    if on_total is not None:
        on_total(len(records))
    if create_topics:
        await ensure_topics(settings, input_topic_names(settings))
    producer = make_producer(settings)
    await producer.start()
    try:

        def counted(rec: Record) -> None:
            report.per_topic[rec.topic] += 1
            if on_sent is not None:
                on_sent(rec)

        report.sent = await send_records(producer, (r for _, r in records), rate, counted)
    finally:
        await producer.stop()
    report.seconds = time.monotonic() - t0
    return report
