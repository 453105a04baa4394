"""The control plane: the policy and the population cut-offs every worker decides with.

Three compacted single-partition topics, read from the beginning by every worker with a
plain consumer (no group: everyone reads everything):

``tierstream.policy``
    The policy in force (``tierstream policy apply FILE`` publishes one). It overrides the
    worker's policy file; a new ``name@version`` makes every worker switch at once and
    re-evaluate all its customers (outputs with trigger ``policy_changed``).
``tierstream.population-sketches``
    One record per table partition (key: the partition number): a mergeable quantile
    sketch of each metric the policy ranks (``percentile.<metric>``), over the
    partition's customers, published by the partition's owner every
    ``population_interval_s``.
``tierstream.cutoffs``
    The global cut-offs (:class:`app.domain.population.Cutoffs`). Only the owner of table
    partition 0 merges the partitions' sketches and publishes, with the next generation
    number, when the values moved; every worker applies what it reads from this one log,
    so all decide with the same cut-offs (they cannot diverge), and re-evaluates its
    customers (outputs with trigger ``cutoffs_changed``) without waiting for their events.

The control task only reads and publishes; the agent applies a new policy or cut-offs
between batches (:meth:`app.stream.app.TierstreamApp.run_control`), so a customer's state
is only ever touched by the agent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Protocol

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from app.adapters.policy_files import parse_policy
from app.domain.errors import PolicyError
from app.domain.policy import Policy
from app.domain.population import (
    Cutoffs,
    PartitionSketches,
    decode_partition_sketches,
    encode_partition_sketches,
    merge_cutoffs,
)
from app.settings import Settings
from schemas.topics import CONTROL, CUTOFFS, POLICY, SKETCHES

log = logging.getLogger(__name__)

POLICY_TOPIC = POLICY.name
SKETCH_TOPIC = SKETCHES.name
CUTOFF_TOPIC = CUTOFFS.name
CONTROL_TOPICS = tuple(t.name for t in CONTROL)
POLICY_KEY = b"policy"
CUTOFF_KEY = b"cutoffs"


@dataclass(frozen=True, slots=True)
class PublishedPolicy:
    """A policy as published on the policy topic."""

    policy: Policy
    text: str
    source: str
    applied_at: int


def encode_policy(text: str, source: str, policy: Policy, applied_at: int) -> bytes:
    return orjson.dumps(
        {"key": policy.key, "yaml": text, "source": source, "applied_at": applied_at}
    )


def decode_policy(raw: bytes) -> PublishedPolicy:
    """Raises PolicyError (a record that is not a valid policy)."""
    try:
        doc = orjson.loads(raw)
        text, source, applied_at = str(doc["yaml"]), str(doc["source"]), int(doc["applied_at"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise PolicyError("policy topic", [("$", f"not a published policy: {exc!r}")]) from None
    return PublishedPolicy(parse_policy(text, f"policy topic ({source})"), text, source, applied_at)


def encode_cutoffs(cutoffs: Cutoffs, policy_key: str) -> bytes:
    return orjson.dumps({"policy": policy_key, **cutoffs.to_dict()})


def decode_cutoffs(raw: bytes) -> Cutoffs:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise PolicyError("cutoffs topic", [("$", f"not JSON: {exc}")]) from None
    return Cutoffs.from_dict(doc)


async def ensure_control_topics(settings: Settings) -> None:
    """Create the control topics (1 partition, compacted) that do not exist yet."""
    admin = AIOKafkaAdminClient(**settings.kafka_client_kwargs())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [settings.topic(t) for t in CONTROL_TOPICS if settings.topic(t) not in existing]
        if missing:
            await admin.create_topics(
                [
                    NewTopic(
                        n,
                        1,
                        settings.replication_factor,
                        topic_configs={"cleanup.policy": "compact"},
                    )
                    for n in missing
                ]
            )
    finally:
        await admin.close()


async def publish_policy(settings: Settings, text: str, source: str) -> Policy:
    """Validate ``text`` and publish it on the policy topic (``tierstream policy apply``).
    Raises PolicyError when invalid, or when the version in force has the same
    ``name@version`` but other content (a change needs a new version)."""
    from app.adapters.kafka import make_producer

    policy = parse_policy(text, source)
    await ensure_control_topics(settings)
    current = await read_latest(settings, POLICY_TOPIC)
    if current is not None:
        try:
            old = decode_policy(current)
        except PolicyError:
            old = None
        if old is not None and old.policy.key == policy.key and old.text != text:
            raise PolicyError(
                source,
                [("version", f"{policy.key} is already in force with other content: bump it")],
            )
    producer = make_producer(settings)
    await producer.start()
    try:
        value = encode_policy(text, source, policy, int(time.time() * 1000))
        await producer.send_and_wait(
            settings.topic(POLICY_TOPIC), value, key=POLICY_KEY, partition=0
        )
    finally:
        await producer.stop()
    return policy


async def read_latest(settings: Settings, name: str) -> bytes | None:
    """The last record's value of a control topic (None: empty)."""
    consumer = AIOKafkaConsumer(**settings.kafka_client_kwargs(), enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(settings.topic(name), 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        last: bytes | None = None
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000)
            for record in batch.get(tp, []):
                last = record.value
        return last
    finally:
        await consumer.stop()


class ControlHost(Protocol):
    """What the control plane needs from a worker (:class:`app.stream.app.TierstreamApp`
    implements it): a port instead of a back-import."""

    settings: Settings
    #: set once the control topics were read to their end (the worker waits for it)
    control_loaded: asyncio.Event

    @property
    def cutoffs(self) -> Cutoffs: ...
    def current_policy(self) -> Policy: ...
    def recovered(self) -> bool: ...
    def active_partitions(self) -> set[int]: ...
    def population_sketches(self, partitions: set[int]) -> list[PartitionSketches]: ...
    def offer_policy(self, policy: Policy, source: str) -> None: ...
    def offer_cutoffs(self, cutoffs: Cutoffs) -> None: ...
    async def publish(self, topic: str, key: bytes, value: bytes) -> None: ...


class ControlPlane:
    """Reads the control topics for one worker, publishes its partitions' sketches and,
    on the owner of table partition 0, the merged cut-offs."""

    def __init__(self, app: ControlHost) -> None:
        self.app = app
        self.settings = app.settings
        self.sketches: dict[int, PartitionSketches] = {}
        self.loaded = app.control_loaded
        self._next_sketch = 0.0

    async def run(self) -> None:
        """Read the control topics for ever; a failure (the broker away) is logged and the
        reading starts over a second later."""
        while True:
            try:
                await self._run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("control topics: %s: %s; retrying", type(exc).__name__, exc)
                await asyncio.sleep(1.0)

    async def _run(self) -> None:
        settings = self.settings
        await ensure_control_topics(settings)
        consumer = AIOKafkaConsumer(**settings.kafka_client_kwargs(), enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(settings.topic(t), 0) for t in CONTROL_TOPICS]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            while True:
                batch = await consumer.getmany(timeout_ms=200)
                for tp, records in batch.items():
                    for record in records:
                        self._handle(tp.topic, record.key, record.value)
                if not self.loaded.is_set():
                    if all([await consumer.position(tp) >= ends[tp] for tp in tps]):
                        self.loaded.set()
                    continue
                await self._maybe_publish()
        finally:
            await consumer.stop()

    def _handle(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        if value is None:
            return
        s = self.settings
        try:
            if topic == s.topic(POLICY_TOPIC):
                published = decode_policy(value)
                self.app.offer_policy(published.policy, published.source)
            elif topic == s.topic(CUTOFF_TOPIC):
                self.app.offer_cutoffs(decode_cutoffs(value))
            elif topic == s.topic(SKETCH_TOPIC):
                part = decode_partition_sketches(value)
                self.sketches[part.partition] = part
        except (PolicyError, ValueError) as exc:
            log.error("ignored an invalid record on %s: %s", topic, exc)

    async def _maybe_publish(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() < self._next_sketch:
            return
        self._next_sketch = loop.time() + self.settings.population_interval_s
        app = self.app
        policy = app.current_policy()
        if not policy.ranked or not app.recovered():
            return
        topic = self.settings.topic(SKETCH_TOPIC)
        partitions = app.active_partitions()
        for part in app.population_sketches(partitions):
            await app.publish(topic, str(part.partition).encode(), encode_partition_sketches(part))
            self.sketches[part.partition] = part  # ours are current: no need to wait
        if 0 in partitions:
            await self._merge(policy)

    async def _merge(self, policy: Policy) -> None:
        if len(self.sketches) < self.settings.partitions:
            return  # not every partition has reported yet
        current = self.app.cutoffs
        merged = merge_cutoffs(
            self.sketches.values(),
            policy.ranked,
            current.generation + 1,
            max(p.as_of for p in self.sketches.values()),
        )
        if merged.values == current.values:
            return
        await self.app.publish(
            self.settings.topic(CUTOFF_TOPIC), CUTOFF_KEY, encode_cutoffs(merged, policy.key)
        )
        log.info("published cut-offs generation %d", merged.generation)
