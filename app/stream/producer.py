"""Sending to Kafka from the worker: per-partition record batches straight to the producer
(:class:`BatchSender`), delivery awaited only where the order of effects needs it."""

from __future__ import annotations

import asyncio
from typing import Any


class BatchSender:
    """Sends records in per-partition record batches straight to the Kafka producer.

    One ``AIOKafkaProducer.send`` per record costs a future, a partitioner call and an
    accumulator lookup each (more than the core's work on an event); a batch per
    partition costs one future per ~16 kB. :meth:`send_open` hands the partly filled
    batches to the producer; :meth:`delivered` waits until every record sent so far is on
    the broker.
    """

    def __init__(self, producer: Any) -> None:
        self._producer = producer  # Faust's; its aiokafka producer exists once started
        self._kafka: Any = None
        self._open: dict[tuple[str, int], Any] = {}
        self.pending: list[Any] = []

    async def add(self, topic: str, partition: int, key: bytes, value: bytes) -> None:
        batch = self._open.get((topic, partition))
        if batch is None:
            batch = self._open[(topic, partition)] = self._create_batch()
        if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it
            await self._send(topic, partition, batch)
            batch = self._open[(topic, partition)] = self._create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:
                raise ValueError(f"a record of {len(value)} bytes does not fit a batch")

    async def add_with_headers(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        """One record with headers, partitioned by key (dead letters: rare)."""
        self.pending.append(await self._producer.send(topic, key, value, None, None, headers))

    def _create_batch(self) -> Any:
        if self._kafka is None:
            self._kafka = self._producer._ensure_producer()  # the aiokafka AIOKafkaProducer
        return self._kafka.create_batch()

    async def _send(self, topic: str, partition: int, batch: Any) -> None:
        self.pending.append(await self._kafka.send_batch(batch, topic, partition=partition))

    async def send_open(self) -> None:
        """Hand every partly filled batch to the producer (without awaiting delivery)."""
        for (topic, partition), batch in self._open.items():
            await self._send(topic, partition, batch)
        self._open.clear()

    async def delivered(self) -> None:
        """Send what is open and wait until everything sent so far is on the broker."""
        await self.send_open()
        if self.pending:
            pending, self.pending = self.pending, []
            await asyncio.gather(*pending)
