"""Plain aiokafka clients for the commands (not the worker: Faust has its own): topics
created when missing, and the producer the tools send with."""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from app.settings import Settings


async def ensure_topics(settings: Settings, names: Iterable[str]) -> list[str]:
    """Create the topics that do not exist yet (``settings.partitions`` partitions);
    returns the names created."""
    admin = AIOKafkaAdminClient(**settings.kafka_client_kwargs())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in dict.fromkeys(names) if n not in existing]
        if missing:
            await admin.create_topics(
                [NewTopic(n, settings.partitions, settings.replication_factor) for n in missing]
            )
        return missing
    finally:
        await admin.close()


def make_producer(settings: Settings) -> AIOKafkaProducer:
    """A throughput-oriented producer; idempotence off (the local broker has none)."""
    return AIOKafkaProducer(
        **settings.kafka_client_kwargs(),
        enable_idempotence=False,
        acks=1,
        linger_ms=20,
        max_batch_size=256 * 1024,
        request_timeout_ms=30_000,
    )
