"""The limit: a bare aiokafka consumer that decodes every value with orjson and does no more."""

from __future__ import annotations

import time

import orjson
from aiokafka import AIOKafkaConsumer


async def run_raw(bootstrap: str, topic: str, events: int, timeout_s: float = 120.0) -> float:
    """Consume ``events`` records from the beginning of ``topic``; events/s from the first
    record to the last."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=16 * 1024 * 1024,
    )
    await consumer.start()
    try:
        n = 0
        first: float | None = None
        total = 0.0
        deadline = time.monotonic() + timeout_s
        loads = orjson.loads
        while n < events:
            if time.monotonic() > deadline:
                raise TimeoutError(f"raw consumer saw {n}/{events} events in {timeout_s:.0f}s")
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for records in batches.values():
                if first is None:
                    first = time.perf_counter()
                for record in records:
                    total += loads(record.value)["amount"]  # type: ignore[arg-type]
                n += sum(len(r) for r in batches.values())
        assert first is not None
        return events / (time.perf_counter() - first)
    finally:
        await consumer.stop()
