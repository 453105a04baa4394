"""The Faust app: topics, the customer-state table, the web page and the batch publisher.

:func:`create_app` builds a :class:`TierstreamApp` from :class:`~app.settings.Settings`;
the agents (``agents/``) attach themselves to it. Everything on the hot path uses raw
bytes (``raw`` serializers): the core's plumbing (:mod:`app.batching`) decodes and encodes.

Order of effects for one batch (at-least-once without losing outputs):

1. dead letters, tier changes and snapshots are produced and their delivery awaited
   (they are on the broker);
2. then each touched customer's state is written to the table (store and changelog,
   whose delivery is awaited too), once; the decoded states go back to the cache;
3. the batch's events are acked when the agent asks for the next batch (:func:`take_batches`)
   and committed later by Faust.

A crash before 2 reprocesses the batch with the old state: outputs repeat with the same
deterministic ids. A crash after 2 but before the commit reprocesses the batch against the
new state: the core drops the events as duplicates (recent-event-id set). Writing the table
before the outputs were on the broker could lose outputs for good, so it is not done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import faust
from faust.streams import _current_event
from faust.types import EventT as _EventT
from mode.utils.aiter import aiter

from app.batching import (
    INPUT_KINDS,
    BatchOutcome,
    Counters,
    CustomerBatch,
    InputRecord,
)
from app.domain.policy import Policy
from app.recovery import TierstreamTableManager
from app.settings import Settings

log = logging.getLogger(__name__)

#: One consumed record as Faust hands it to a stream (raw bytes key and value).
StreamEvent = _EventT[Any]

#: The customer-state table; the version changes when the stored format breaks.
STATE_TABLE = "customer-state-v1"
OUTPUT_TOPICS = ("tier-changes", "customers", "dead-letter")
_RAW: dict[str, Any] = {
    "key_type": bytes,
    "value_type": bytes,
    "key_serializer": "raw",
    "value_serializer": "raw",
}


def faust_config(settings: Settings) -> dict[str, Any]:
    """Faust settings derived from ours."""
    conf: dict[str, Any] = {
        "broker": settings.broker_url,
        "store": settings.store,
        "datadir": str(settings.data_dir),
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        # The local broker has no idempotent/transactional producer; we do not rely on
        # exactly-once anyway (see module docstring).
        "processing_guarantee": "at_least_once",
        "broker_session_timeout": settings.session_timeout_s,
        "broker_heartbeat_interval": settings.heartbeat_interval_s,
        "broker_rebalance_timeout": max(settings.session_timeout_s, 5.0),
        # Wait this long after a rebalance before recovering tables: short-lived groups
        # (tests, demo) use short session timeouts, production keeps Faust's 3 s.
        "stream_recovery_delay": min(3.0, settings.session_timeout_s / 4),
        "consumer_auto_offset_reset": "earliest",
        "key_serializer": "raw",
        "value_serializer": "raw",
        "table_standby_replicas": 0,
        "web_enabled": True,
        "web_port": settings.web_port,
        "web_bind": settings.web_host,
        "web_host": settings.web_host,
        "autodiscover": False,
        # Recovery reads changelogs to their real end and positions every source
        # partition before it resumes them (app.recovery).
        "TableManager": TierstreamTableManager,
        "worker_redirect_stdouts": False,
    }
    if settings.security_protocol != "PLAINTEXT":
        conf["broker_credentials"] = _credentials(settings)
    return conf


def _credentials(settings: Settings) -> Any:
    import ssl

    ctx = (
        ssl.create_default_context(cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None)
        if settings.security_protocol in ("SSL", "SASL_SSL")
        else None
    )
    if settings.security_protocol == "SSL":
        return faust.SSLCredentials(ctx)
    password = settings.sasl_password.get_secret_value() if settings.sasl_password else ""
    return faust.SASLCredentials(
        username=settings.sasl_username or "",
        password=password,
        mechanism=settings.sasl_mechanism,
        ssl_context=ctx,
    )


@contextlib.contextmanager
def acting_for(event: StreamEvent) -> Iterator[None]:
    """Make ``event`` Faust's current event, as inside ``async for event in stream``.

    Faust tables pick the changelog partition (and the RocksDB store its per-partition
    database) from the current event; in a batch from ``take_events`` that is the batch's
    last event, not the one whose customer is being written.
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


async def take_batches(stream: Any, max_: int, within: float) -> AsyncIterator[list[StreamEvent]]:
    """Batches of up to ``max_`` events from the agent's stream, waiting at most ``within``
    seconds after the first event to fill one. Each batch is acked once the caller asks
    for the next one, i.e. after the loop body finished.

    Why not ``Stream.take_events``
    ------------------------------
    ``take_events`` runs every event through the stream's per-event iterator (context
    variable, processors, sensors, an event-loop turn per event): ~30 us an event, a
    quarter of the worker's time. It also acks in a ``finally``: when the worker stops
    (or the agent raises) mid-batch, closing the generator acks events that were never
    processed, Faust commits their offsets on shutdown and they are lost.

    What this does instead
    ----------------------
    It iterates the stream's channel itself: ``aiter(stream.channel)`` subscribes (the
    conductor then puts each decoded event into that channel's queue, as for any stream)
    and the batch is taken from the queue in bulk. Per event it does what
    ``Stream.__aiter__`` does (faust-streaming 0.15.3) that matters here:

    * events of an older consumer generation, or delivered while flow control is
      suspended (a rebalance), are skipped and acked, exactly as the stream skips them;
    * a message of an acking topic is tracked as unacked (``Consumer.unacked``) until acked,
      so a rebalance waits for it;
    * the ``on_message_in``/``on_message_out`` sensor calls are kept (Faust's monitor
      counts with them). Processors and per-stream sensors are not run: the agent has none.

    An abandoned batch (the worker stops, the body raises) stays unacked and is consumed
    again after a restart; the core drops what it had already applied.
    """
    app = stream.app
    channel: Any = aiter(stream.channel)  # registers with the conductor: events reach its queue
    queue = channel.queue
    consumer = app.consumer
    unacked_add = consumer.unacked.add
    acking_topics = app.topics.acking_topics
    flow_active = app.flow_control.is_active
    on_message_in = app.sensors.on_message_in
    on_message_out = app.sensors.on_message_out
    loop = asyncio.get_running_loop()
    skipped: list[StreamEvent] = []
    try:
        while not stream.should_stop:
            batch: list[StreamEvent] = []
            deadline: float | None = None
            while len(batch) < max_:
                if queue.empty():
                    timeout = None if deadline is None else deadline - loop.time()
                    if timeout is not None and timeout <= 0:
                        break
                    got, results, _ = await stream.wait_first(queue.get(), timeout=timeout)
                    if not got:  # timed out, or the stream stops
                        break
                    events: list[StreamEvent] = [results[0]]
                else:
                    events = [queue.get_nowait()]
                while len(batch) + len(events) < max_ and not queue.empty():
                    events.append(queue.get_nowait())
                generation = app.consumer_generation_id
                active = flow_active()
                for event in events:
                    message = event.message
                    if not active or message.generation_id != generation:
                        skipped.append(event)
                        continue
                    if message.topic in acking_topics and not message.tracked:
                        message.tracked = True  # as Consumer.track_message
                        unacked_add(message)
                        on_message_in(message.tp, message.offset, message)
                    batch.append(event)
                if deadline is None and batch:
                    deadline = loop.time() + within
            for event in skipped:
                _ack(event, on_message_out)
            skipped.clear()
            if stream.should_stop and not batch:
                break
            if batch:
                yield batch
                for event in batch:  # resumed normally: the batch is done
                    _ack(event, on_message_out)
    finally:
        channel.on_stop_iteration()


def _ack(event: StreamEvent, on_message_out: Any) -> None:
    """``Stream.ack`` without the per-stream sensor (see :func:`take_batches`)."""
    if event.ack():
        message = event.message
        on_message_out(message.tp, message.offset, message)


def record_of(event: StreamEvent) -> InputRecord:
    msg = event.message
    return InputRecord(msg.topic, msg.partition, msg.offset, msg.key, msg.value)


class BatchSender:
    """Sends records in per-partition record batches straight to the Kafka producer.

    One ``AIOKafkaProducer.send`` per record costs a future, a partitioner call and an
    accumulator lookup each (more than the core's work on an event); a batch per
    partition costs one future per ~16 kB. :meth:`delivered` waits until every record
    sent so far is on the broker.
    """

    def __init__(self, producer: Any) -> None:
        self._kafka = producer._ensure_producer()  # the aiokafka AIOKafkaProducer
        self._open: dict[tuple[str, int], Any] = {}
        self.pending: list[Any] = []

    async def add(self, topic: str, partition: int, key: bytes, value: bytes) -> None:
        batch = self._open.get((topic, partition))
        if batch is None:
            batch = self._open[(topic, partition)] = self._kafka.create_batch()
        if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it
            await self._send(topic, partition, batch)
            batch = self._open[(topic, partition)] = self._kafka.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:
                raise ValueError(f"a record of {len(value)} bytes does not fit a batch")

    async def _send(self, topic: str, partition: int, batch: Any) -> None:
        self.pending.append(await self._kafka.send_batch(batch, topic, partition=partition))

    async def delivered(self) -> None:
        for (topic, partition), batch in self._open.items():
            await self._send(topic, partition, batch)
        self._open.clear()
        if self.pending:
            await asyncio.gather(*self.pending)
            self.pending.clear()


class TierstreamApp:
    """The Faust app and what the agents use: topics, the table, the batch processor."""

    def __init__(self, settings: Settings, policy: Policy) -> None:
        self.settings = settings
        self.policy = policy
        self.faust = faust.App(settings.app_id, **faust_config(settings))
        parts = settings.partitions
        self.inputs = self.faust.topic(
            *(settings.topic(name) for name in INPUT_KINDS), partitions=parts, **_RAW
        )
        self.tier_changes = self.faust.topic(
            settings.topic("tier-changes"), partitions=parts, **_RAW
        )
        self.customers = self.faust.topic(
            settings.topic("customers"), partitions=parts, compacting=True, **_RAW
        )
        self.dead_letter = self.faust.topic(settings.topic("dead-letter"), partitions=parts, **_RAW)
        self._tier_changes = settings.topic("tier-changes")
        self._customers = settings.topic("customers")
        self._dead_letter = settings.topic("dead-letter")
        self.customer_state = self.faust.Table(
            STATE_TABLE, partitions=parts, key_type=bytes, value_type=bytes
        )  # bytes -> raw serializers
        self.batch = CustomerBatch(
            policy,
            {settings.topic(name): kind for name, kind in INPUT_KINDS.items()},
            settings.max_future_skew_s,
            cache_size=settings.state_cache_size,
        )
        self.counters = Counters()
        self._outputs_declared = False
        self._clear_cache_on_rebalance()
        self._add_pages()

    def _clear_cache_on_rebalance(self) -> None:
        cache = self.batch.cache

        async def _revoked(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
            cache.clear()

        self.faust.on_partitions_revoked.connect(_revoked)  # type: ignore[arg-type]

    def _add_pages(self) -> None:
        counters = self.counters

        @self.faust.page("/healthz")
        async def healthz(web: Any, request: Any) -> Any:
            return web.json({"status": "ok", "counters": counters.as_dict()})

    async def ready_to_process(self) -> None:
        """Before the first batch: output topics exist, and table recovery has finished
        (the table holds every changelog record, and the source partitions are
        positioned at their committed offsets: :mod:`app.recovery`)."""
        await self.declare_outputs()
        tables: Any = self.faust.tables
        await tables.recovery.completed.wait()

    async def declare_outputs(self) -> None:
        """Create the output topics (Faust only creates the topics it consumes)."""
        if not self._outputs_declared:
            for topic in (self.tier_changes, self.customers, self.dead_letter):
                await topic.maybe_declare()
            self._outputs_declared = True

    def process(self, events: Sequence[StreamEvent]) -> BatchOutcome:
        """Decode and run the core over a batch of stream events (no side effects yet)."""
        table = self.customer_state
        set_current, reset_current = _current_event.set, _current_event.reset

        def load(key: bytes, index: int) -> bytes | None:
            token = set_current(weakref.ref(events[index]))  # acting_for, inlined: hot
            try:
                value: bytes | None = table.get(key)
            finally:
                reset_current(token)
            return value

        return self.batch.process([record_of(e) for e in events], load)

    async def publish(self, outcome: BatchOutcome, events: Sequence[StreamEvent]) -> None:
        """Send the outputs and wait until they are on the broker, then write each touched
        customer to the table once and wait until the changelog records are on the broker
        too (see the module docstring for why in this order).

        Records go to the Kafka producer directly (Faust's ``Producer.send``: enqueue, get
        the delivery future), not through ``Topic.send`` and not through Faust's
        ``send_soon`` buffer: ``Topic.send`` costs more than the whole core per record,
        and the buffer's ``flush`` gives up after 0.1 s without progress, so it is no
        barrier: a commit could overtake changelog or output records still in it.
        ``table[key] = value`` uses that buffer for the changelog, so the store and the
        changelog are written here directly, as Faust would.
        """
        out = BatchSender(self.faust.producer)
        for dl in outcome.dead_letters:  # rare: one at a time, with their headers
            out.pending.append(
                await self.faust.producer.send(
                    self._dead_letter, dl.key, dl.value, None, None, dl.headers
                )
            )
        for record in outcome.tier_changes:
            await out.add(self._tier_changes, record.partition, record.key, record.value)
        for record in outcome.snapshots:
            await out.add(self._customers, record.partition, record.key, record.value)
        await out.delivered()
        table = self.customer_state
        store = table.data
        changelog = table.changelog_topic.get_topic_name()
        for write in outcome.writes:
            with acting_for(events[write.index]):
                store[write.key] = write.value
            await out.add(changelog, write.partition, write.key, write.value)
        await out.delivered()
        self.batch.done(outcome)
        self.counters.add(outcome)
        if log.isEnabledFor(logging.DEBUG):
            done: dict[str, list[int]] = {}
            for e in events:
                done.setdefault(f"{e.message.topic}[{e.message.partition}]", []).append(
                    e.message.offset
                )
            log.debug("batch of %d done, offsets %s", len(events), done)


def create_app(settings: Settings, policy: Policy | None = None) -> TierstreamApp:
    """The app with its topics and table; agents are registered by ``agents.register``."""
    if policy is None:
        from app.policy_files import load_policy

        policy = load_policy(settings.policy_file)
    return TierstreamApp(settings, policy)
