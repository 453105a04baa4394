"""The Faust app: topics, the customer-state table, the web page and the batch publisher.

:func:`create_app` builds a :class:`TierstreamApp` from :class:`~app.settings.Settings`;
the agents (``agents/``) attach themselves to it. Everything on the hot path uses raw
bytes (``raw`` serializers): the core's plumbing (:mod:`app.batching`) decodes and encodes.

Order of effects for one batch (at-least-once without losing outputs):

1. dead letters, tier changes and snapshots are produced and the producer is flushed
   (awaited: they are on the broker);
2. then each touched customer's state is written to the table (changelog), once;
3. the batch's offsets are acked by ``Stream.take_events`` after the agent's loop body, and
   committed later by Faust, which flushes the producer (changelog included) first.

A crash before 2 reprocesses the batch with the old state: outputs repeat with the same
deterministic ids. A crash after 2 but before the commit reprocesses the batch against the
new state: the core drops the events as duplicates (recent-event-id set). Writing the table
before the outputs were on the broker could lose outputs for good, so it is not done.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import faust
from faust.streams import _current_event
from faust.types import EventT as _EventT

from app.batching import (
    INPUT_KINDS,
    BatchOutcome,
    Counters,
    CustomerBatch,
    InputRecord,
)
from app.domain.policy import Policy
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


def record_of(event: StreamEvent) -> InputRecord:
    msg = event.message
    return InputRecord(msg.topic, msg.partition, msg.offset, msg.key, msg.value)


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
        self.customer_state = self.faust.Table(
            STATE_TABLE, partitions=parts, key_type=bytes, value_type=bytes
        )  # bytes -> raw serializers
        self.batch = CustomerBatch(
            policy,
            {settings.topic(name): kind for name, kind in INPUT_KINDS.items()},
            settings.max_future_skew_s,
        )
        self.counters = Counters()
        self._outputs_declared = False
        self._add_pages()

    def _add_pages(self) -> None:
        counters = self.counters

        @self.faust.page("/healthz")
        async def healthz(web: Any, request: Any) -> Any:
            return web.json({"status": "ok", "counters": counters.as_dict()})

    async def declare_outputs(self) -> None:
        """Create the output topics (Faust only creates the topics it consumes)."""
        if not self._outputs_declared:
            for topic in (self.tier_changes, self.customers, self.dead_letter):
                await topic.maybe_declare()
            self._outputs_declared = True

    def process(self, events: Sequence[StreamEvent]) -> BatchOutcome:
        """Decode and run the core over a batch of stream events (no side effects yet)."""
        table = self.customer_state

        def load(key: bytes, index: int) -> bytes | None:
            with acting_for(events[index]):
                value: bytes | None = table.get(key)
                return value

        return self.batch.process([record_of(e) for e in events], load)

    async def publish(self, outcome: BatchOutcome, events: Sequence[StreamEvent]) -> None:
        """Send the outputs, wait until they are on the broker, then write each touched
        customer to the table once (see the module docstring for why in this order)."""
        for dl in outcome.dead_letters:
            self.dead_letter.send_soon(key=dl.key, value=dl.value, headers=dl.headers)
        for key, value in outcome.tier_changes:
            self.tier_changes.send_soon(key=key, value=value)
        for key, value in outcome.snapshots:
            self.customers.send_soon(key=key, value=value)
        if outcome.dead_letters or outcome.tier_changes or outcome.snapshots:
            await self.faust.producer.flush()
        table = self.customer_state
        for write in outcome.writes:
            with acting_for(events[write.index]):
                table[write.key] = write.value
        self.counters.add(outcome)


def create_app(settings: Settings, policy: Policy | None = None) -> TierstreamApp:
    """The app with its topics and table; agents are registered by ``agents.register``."""
    if policy is None:
        from app.policy_files import load_policy

        policy = load_policy(settings.policy_file)
    return TierstreamApp(settings, policy)
