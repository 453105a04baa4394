"""The Faust app: topics, the customer-state table, the web page, taking batches and
publishing what they produce.

:func:`create_app` builds a :class:`TierstreamApp` from :class:`~app.settings.Settings`;
the agents (``agents/``) attach themselves to it. Everything on the hot path uses raw
bytes: the core's plumbing (:mod:`app.service.processor`) decodes and encodes.

Order of effects (at-least-once without losing outputs)
-------------------------------------------------------
Per batch: the core runs over the events; their tier changes and dead letters are sent
(delivery not awaited yet); the touched customers stay dirty in memory.
Per flush (every ``flush_interval_s``, sooner when many events are unflushed or a
rebalance waits):

1. the snapshot of every customer touched since the last flush is sent, and the delivery
   of everything sent so far (tier changes, dead letters, snapshots) is awaited;
2. then each of those customers' state is written to the table (store and changelog,
   whose delivery is awaited too), once;
3. then the events applied since the previous flush are acked; Faust commits them later.

A crash before 2 reprocesses the unflushed events from the old state: outputs repeat
with the same deterministic ids. A crash after 2 but before the commit reprocesses them
against the new state: the core drops them as duplicates (recent-event-id set). Writing
the table before the outputs were on the broker could lose outputs for good, so it is not
done; acking before the table write could lose state, so it is not done either.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import traceback
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import faust
from faust.types import TP

from app.domain.errors import InvalidEvent
from app.domain.events import Event
from app.domain.outputs import Trigger
from app.domain.policy import Policy
from app.domain.population import Cutoffs, PartitionSketches
from app.domain.state import CustomerState
from app.service.due import partition_clocks
from app.service.ordering import EventTimeOrder
from app.service.processor import (
    INPUT_KINDS,
    BatchOutcome,
    Counters,
    CustomerBatch,
    InputRecord,
    decode_state,
    table_key,
    wall_clock_ms,
)
from app.settings import Settings
from app.stream.consumer import RawTopic, StreamEvent, untrack
from app.stream.metrics import WorkerMetrics
from app.stream.producer import BatchSender
from app.stream.recovery import TierstreamRecovery, TierstreamTableManager, start_offsets
from app.stream.store import TableAccess
from schemas.topics import CUSTOMERS, DEAD_LETTER, EVENT_TOPICS

log = logging.getLogger(__name__)

#: The customer-state table; the version changes when the stored format breaks.
STATE_TABLE = "customer-state-v1"
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
        # partition before it resumes them (app.stream.recovery).
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


FlushReason = Literal["interval", "size", "rebalance"]

#: Flush sooner than ``flush_interval_s`` once this many events are unflushed (bounds the
#: memory they and the dirty states hold, and the work a crash repeats).
MAX_UNFLUSHED_EVENTS = 50_000
#: A wall-clock worker warns when it applies events older than this (30 days)...
OLD_EVENT_AGE_MS = 30 * 86_400_000
#: ... at most this often (seconds).
OLD_EVENTS_WARN_EVERY_S = 600.0
#: Customers the timer re-evaluates per run at most, so a backlog of due customers (after
#: downtime, or a wall clock far ahead of the events) is worked off between event batches.
TIMER_BATCH = 5_000


class TierstreamApp:
    """The Faust app and what the agents use: topics, the table, the batch processor."""

    def __init__(self, settings: Settings, policy: Policy) -> None:
        self.settings = settings
        self.policy = policy
        self.faust = faust.App(settings.app_id, **faust_config(settings))
        parts = settings.partitions
        self.inputs = RawTopic(
            self.faust,
            topics=[settings.topic(name) for name in INPUT_KINDS],
            partitions=parts,
            **_RAW,
        )
        #: The output event topics by name without the prefix (tier-changes, ...).
        self.output_topics = {
            name: self.faust.topic(settings.topic(name), partitions=parts, **_RAW)
            for name in EVENT_TOPICS
        }
        self._customers = settings.topic(CUSTOMERS.name)
        self._dead_letter = settings.topic(DEAD_LETTER.name)
        self.customers = self.faust.topic(
            self._customers, partitions=parts, compacting=CUSTOMERS.compacted, **_RAW
        )
        self.dead_letter = self.faust.topic(self._dead_letter, partitions=parts, **_RAW)
        self.customer_state = self.faust.Table(
            STATE_TABLE, partitions=parts, key_type=bytes, value_type=bytes
        )  # bytes -> raw serializers
        self.store = TableAccess(self.customer_state)
        self.batch = CustomerBatch(
            policy,
            {settings.topic(name): kind for name, kind in INPUT_KINDS.items()},
            settings.max_future_skew_s,
            cache_size=settings.state_cache_size,
        )
        self.counters = Counters()
        #: when this worker was created (epoch ms): the earlier of two workers with
        #: clashing settings runs on, the later refuses (:meth:`refuse`)
        self.started_at = wall_clock_ms()
        #: why this worker refused to run on (None: it did not)
        self.refused: str | None = None
        #: records taken but not processed yet: released in event-time order across the
        #: input topics of a partition (app.service.ordering)
        self.order: EventTimeOrder[tuple[StreamEvent, InputRecord, Event | InvalidEvent]] = (
            EventTimeOrder(self.batch.kinds, settings.order_wait_s)
        )
        #: per input topic-partition: the offset after the last record taken (this run)
        self._received: dict[tuple[str, int], int] = {}
        #: when a wall-clock worker last warned of events far older than its clock
        self._old_warned_at: float | None = None
        self._old_events = 0
        #: logical input topic name by full name
        self._input_names = {settings.topic(name): name for name in INPUT_KINDS}
        self.metrics = WorkerMetrics(
            kinds={settings.topic(name): kind for name, kind in INPUT_KINDS.items()}, view=self
        )
        self.sender = BatchSender(self.faust.producer)
        #: events handled since the last flush, in order: acked once a flush covers them
        self._unflushed: list[StreamEvent] = []
        self._flush_at: float | None = None
        self._abandoned = 0
        self._outputs_declared = False
        #: the due-time index must be rebuilt from the table before the timer runs again
        self._due_stale = True
        #: a policy or cut-offs read from the control topics, applied by the agent
        self._pending_policy: Policy | None = None
        self._pending_cutoffs: Cutoffs | None = None
        #: set once the control plane (agents.control) has read the control topics to
        #: their end: the policy and cut-offs in force are known
        self.control_loaded = asyncio.Event()
        self._timer_at = 0.0
        self._forget_on_revocation()

        @self.customer_state.on_recover
        async def _recovered() -> None:
            self._due_stale = True

    def _forget_on_revocation(self) -> None:
        async def _revoked(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
            # Faust waited for every taken event to be acked (Consumer.wait_empty), so
            # normally nothing is unflushed here. If something is (the wait was cut
            # short), it is dropped unacked: the partition's next owner consumes it again
            # from the committed offset, against the state in the table.
            if args and args[0]:
                self.counters.revocations += 1
            self.abandon("partitions revoked")

        self.faust.on_partitions_revoked.connect(_revoked)  # type: ignore[arg-type]

        async def _assigned(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
            self.metrics.add_rebalance()

        self.faust.on_partitions_assigned.connect(_assigned)  # type: ignore[arg-type]

    def abandon(self, why: str, level: int = logging.WARNING) -> None:
        """Forget everything unflushed (dirty customers, the events not yet acked) and the
        decoded-state cache: the events stay unacked, so they are consumed again (by this
        worker after a restart, or by the partitions' next owner) against the state in the
        table. After a revocation (another worker may change those customers meanwhile),
        and when the agent fails (its tier changes may not all have been sent: acking
        those events at a later flush could lose them)."""
        if self._unflushed:
            log.log(
                level,
                "%s with %d unflushed events; they will be consumed again",
                why,
                len(self._unflushed),
            )
        untrack(self.faust, self._unflushed)
        self._unflushed = []
        self._flush_at = None
        self._abandoned += 1
        self.batch.discard()
        self.drop_held()
        self._due_stale = True

    def drop_held(self) -> None:
        """Give up the records waiting for event-time order (:attr:`order`): unacked and
        untracked, they are read again from the committed offsets (a rebalance positions
        every source partition there; so does a restart)."""
        if self.order.held:
            untrack(self.faust, (event for event, _, _ in self.order.drop()))
        self._received.clear()

    @property
    def held(self) -> int:
        """Records taken and waiting for event-time order."""
        return self.order.held

    def refuse(self, why: str) -> None:
        """Refuse to run on (a setting clashes with the group's: app.stream.web's clock-mode
        check): log ``why`` once and stop the worker as on SIGTERM; ``tierstream worker``
        then reports ``why`` and exits with code 2 (:attr:`refused`)."""
        if self.refused is None:
            self.refused = why
            log.error("%s", why)
            os.kill(os.getpid(), signal.SIGTERM)

    async def fail(self, exc: BaseException) -> None:
        """The agent failed (a bug, or a broker error it cannot get past): stop the worker
        with an error rather than let Faust restart the agent. A restarted agent would
        take the events after the failed batch and apply them to states that miss the
        batch, and their acks could never be committed past it; a restarted *worker*
        reads everything uncommitted again, in order. Logged with where it failed, not
        the exception's message (it may hold customer data)."""
        where = "".join(traceback.format_tb(exc.__traceback__)) if exc.__traceback__ else ""
        log.error(
            "the customer-events agent failed with %s; stopping the worker (a restart "
            "consumes the uncommitted events again)\n%s",
            type(exc).__name__,
            where,
        )
        await self.faust.crash(exc)

    async def ready_to_process(self) -> None:
        """Before the first batch: output topics exist, and table recovery has finished
        (the table holds every changelog record, and the source partitions are
        positioned at their committed offsets: :mod:`app.stream.recovery`)."""
        await self.declare_outputs()
        tables: Any = self.faust.tables
        await tables.recovery.completed.wait()
        await self.control_loaded.wait()  # the policy and cut-offs in force (agents.control)
        await self.run_control()

    async def declare_outputs(self) -> None:
        """Create the output topics (Faust only creates the topics it consumes)."""
        if not self._outputs_declared:
            for topic in (*self.output_topics.values(), self.customers, self.dead_letter):
                await topic.maybe_declare()
            self._outputs_declared = True

    # -- per batch -----------------------------------------------------------------------
    def process(self, events: Sequence[StreamEvent]) -> BatchOutcome:
        """Decode a batch of stream events and queue them for event-time order
        (:attr:`order`); run the core over the ones released, in that order. The touched
        customers become dirty (see :meth:`flush`), the processed events unflushed."""
        messages = [e.message for e in events]
        records = [InputRecord(m.topic, m.partition, m.offset, m.key, m.value) for m in messages]
        order, received = self.order, self._received
        for event, record, decoded in zip(events, records, self.batch.decode(records), strict=True):
            time = None if isinstance(decoded, InvalidEvent) else decoded.occurred_at
            order.add(record.topic, record.partition, time, (event, record, decoded))
            received[(record.topic, record.partition)] = record.offset + 1
        loop = asyncio.get_running_loop()
        ready = order.release(self._caught_up, loop.time()) if order.held else []
        self.counters.order_forced = order.forced
        released = [event for event, _, _ in ready]
        get = self.store.get

        def load(key: bytes, index: int) -> bytes | None:
            return get(key, released[index])  # the event's partition's store

        outcome = self.batch.apply(
            [record for _, record, _ in ready], [decoded for _, _, decoded in ready], load
        )
        outcome.record_times = [event.message.timestamp for event in released]
        # In the same synchronous step as the processing: a revocation drops both or neither.
        self._unflushed.extend(released)
        if released and self._flush_at is None:
            self._flush_at = loop.time() + self.settings.flush_interval_s
        if outcome.oldest_event_time is not None and self.settings.clock_mode == "wall":
            self._warn_if_old(outcome.oldest_event_time, outcome.events)
        return outcome

    def _caught_up(self, tp: tuple[str, int]) -> bool:
        """Nothing left to read on an input topic-partition, as far as the consumer knows:
        the next offset to take has reached the high watermark of its last fetch."""
        hw = self._highwater(*tp)
        if hw is None:
            return False
        if hw == 0:
            return True
        nxt = self._received.get(tp)
        if nxt is None:
            nxt = start_offsets(self.faust).get(TP(*tp))
        return nxt is not None and nxt >= hw

    def until_order(self) -> float | None:
        """Seconds until records waiting for event-time order go on regardless."""
        deadline = self.order.next_deadline()
        if deadline is None:
            return None
        return max(deadline - asyncio.get_running_loop().time(), 0.0)

    def _warn_if_old(self, oldest: int, events: int) -> None:
        """A wall-clock worker fed history: say so, loudly but at most every
        :data:`OLD_EVENTS_WARN_EVERY_S`."""
        if wall_clock_ms() - oldest < OLD_EVENT_AGE_MS:
            return
        self._old_events += events
        loop = asyncio.get_running_loop()
        if self._old_warned_at is not None and loop.time() - self._old_warned_at < (
            OLD_EVENTS_WARN_EVERY_S
        ):
            return
        self._old_warned_at = loop.time()
        days = (wall_clock_ms() - oldest) // 86_400_000
        log.warning(
            "events up to %d days older than the wall clock (%d in batches with such events "
            "since the last warning): with TIERSTREAM_CLOCK_MODE=wall every customer is "
            "aged to today, so history replays end in the lowest tiers; to replay history "
            "run the workers with TIERSTREAM_CLOCK_MODE=event",
            days,
            self._old_events,
        )
        self._old_events = 0

    async def send(self, outcome: BatchOutcome) -> None:
        """Send a batch's tier changes and dead letters; their delivery is awaited by the
        next :meth:`flush`, before any state that reflects them is written.

        Records go to the Kafka producer directly (Faust's ``Producer.send``: enqueue, get
        the delivery future), not through ``Topic.send`` and not through Faust's
        ``send_soon`` buffer: ``Topic.send`` costs more than the whole core per record,
        and the buffer's ``flush`` gives up after 0.1 s without progress, so it is no
        barrier: a commit could overtake changelog or output records still in it.
        """
        out = self.sender
        for dl in outcome.dead_letters:
            await out.add_with_headers(self._dead_letter, dl.key, dl.value, dl.headers)
        for name, records in outcome.outputs.items():
            topic = self.settings.topic(name)
            for record in records:
                await out.add(topic, record.partition, record.key, record.value)
        await out.send_open()  # on its way now, not at the flush: changes are news
        self.counters.add(outcome)
        metrics = self.metrics
        metrics.add(outcome)
        if outcome.record_times:
            metrics.observe_latency(outcome.record_times)

    # -- policy and cut-offs (app.stream.control) ---------------------------------------------
    @property
    def cutoffs(self) -> Cutoffs:
        """The population cut-offs in force (or about to be)."""
        if self._pending_cutoffs is not None:
            return self._pending_cutoffs
        return self.batch.policy.cutoffs

    def current_policy(self) -> Policy:
        """The policy in force."""
        return self.batch.policy

    async def publish(self, topic: str, key: bytes, value: bytes) -> None:
        """Send one record to partition 0 of ``topic`` and wait for it (control topics)."""
        producer: Any = self.faust.producer
        await producer.send_and_wait(topic, key, value, 0, None, None)

    def offer_policy(self, policy: Policy, source: str) -> None:
        """A policy read from the policy topic: applied by the agent if it is new."""
        current = self._pending_policy or self.batch.policy
        if policy.key != current.key:
            log.info("policy %s from %s: switching", policy.key, source)
            self._pending_policy = policy

    def offer_cutoffs(self, cutoffs: Cutoffs) -> None:
        """Cut-offs read from the cut-offs topic: applied by the agent if newer."""
        if cutoffs.generation > self.cutoffs.generation:
            self._pending_cutoffs = cutoffs

    def recovered(self) -> bool:
        tables: Any = self.faust.tables
        return bool(tables.recovery.completed.is_set())

    @property
    def census_current(self) -> bool:
        """The customers per tier and stage count every owned partition (they are rebuilt
        from the table with the due-time index after a recovery or rebalance)."""
        return not self._due_stale

    def not_ready(self) -> str | None:
        """Why this worker cannot serve yet (``/readyz``); None: ready."""
        if self.assigned_partitions() == 0:
            return "no partitions assigned (joining the group, or more workers than partitions)"
        if self.recovering():
            return "recovering the customer table from its changelog"
        if self.faust.rebalancing:
            return "rebalancing"
        if not self.control_loaded.is_set():
            return "reading the control topics (policy, cut-offs)"
        return None

    # -- what the metrics ask at scrape time (app.stream.metrics.WorkerView) -------------------
    def tier_counts(self) -> tuple[Mapping[str, int], Mapping[str, int]]:
        return self.batch.census.totals(self.active_partitions())

    def event_times(self) -> Mapping[int, int]:
        clocks = self.batch.partition_clocks
        return {p: clocks[p] for p in self.active_partitions() if p in clocks}

    def _input_assignment(self) -> list[TP]:
        try:
            assigned = self.faust.consumer.assignment()
        except Exception:  # no consumer yet
            return []
        return [tp for tp in assigned if tp.topic in self._input_names]

    def consumer_lags(self) -> Mapping[tuple[str, int], int]:
        starts = start_offsets(self.faust)
        read = self.batch.read.next_offset
        out: dict[tuple[str, int], int] = {}
        for tp in self._input_assignment():
            hw = self._highwater(tp.topic, tp.partition)
            position = read.get((tp.topic, tp.partition), starts.get(tp))
            if hw is not None and position is not None:
                out[(self._input_names[tp.topic], tp.partition)] = max(hw - position, 0)
        return out

    def recovering(self) -> bool:
        if not self._input_assignment():
            return False
        tables: Any = self.faust.tables
        recovery = tables.recovery
        under_way = isinstance(recovery, TierstreamRecovery) and (
            recovery.recovery_started_at is not None
        )
        return under_way or not recovery.completed.is_set()

    def recovery_seconds(self) -> float | None:
        tables: Any = self.faust.tables
        recovery = tables.recovery
        return recovery.last_recovery_s if isinstance(recovery, TierstreamRecovery) else None

    def assigned_partitions(self) -> int:
        return len(self._input_assignment())

    def policy_in_force(self) -> tuple[str, str]:
        policy = self.batch.policy
        return policy.name, policy.version

    async def run_control(self) -> int:
        """Switch to a new policy or new cut-offs, if the control plane read one, and
        re-evaluate every customer of this worker (outputs with trigger
        ``policy_changed`` or ``cutoffs_changed``). Returns how many were re-evaluated."""
        policy, cutoffs = self._pending_policy, self._pending_cutoffs
        if (policy is None and cutoffs is None) or not self.recovered():
            return 0
        self._pending_policy = self._pending_cutoffs = None
        new = (policy or self.batch.policy).with_cutoffs(cutoffs or self.batch.policy.cutoffs)
        self.batch.policy = new
        trigger: Trigger
        if policy is not None:
            cause, trigger = f"policy:{new.key}", "policy_changed"
        else:
            assert cutoffs is not None
            cause, trigger = f"cutoffs:{cutoffs.generation}", "cutoffs_changed"
        outcome = self.batch.sweep(
            self.store.stored_items(self.active_partitions()), cause, trigger
        )
        await self.send(outcome)
        if self.batch.dirty_customers and self._flush_at is None:
            self._flush_at = asyncio.get_running_loop().time() + self.settings.flush_interval_s
        self.counters.sweeps += 1
        return outcome.ticked

    def population_sketches(self, partitions: set[int]) -> list[PartitionSketches]:
        """Sketches of the ranked metrics over the customers of ``partitions`` (each as of
        its last evaluation). Synchronous: a consistent view of the table and memory."""
        policy = self.batch.policy
        parts = {p: PartitionSketches(p, 0) for p in partitions}
        fresh = {state.customer_id: (p, state) for p, state in self.batch.unflushed_states()}
        states: list[tuple[int, CustomerState]] = list(fresh.values())
        for partition, key, raw in self.store.stored_items(partitions):
            customer_id = key.decode("utf-8")
            if customer_id not in fresh:
                state = self.batch.peek(customer_id) or decode_state(raw)
                states.append((partition, state))
        for partition, state in states:
            part = parts.get(partition)
            if part is None:
                continue
            at = max(state.clock, state.evaluated_at)
            part.as_of = max(part.as_of, at)
            for metric, value in policy.ranked_values(state, at).items():
                part.sketch(metric).add(value)
        return list(parts.values())

    # -- the timer path ----------------------------------------------------------------
    def until_timer(self) -> float:
        """Seconds until the timer should run again."""
        return max(self._timer_at - asyncio.get_running_loop().time(), 0.0)

    def until_wake(self) -> float:
        """How long the agent may wait for events: until a flush or the timer is due, or
        records waiting for event-time order go on regardless."""
        return min(
            t for t in (self.until_flush(), self.until_timer(), self.until_order()) if t is not None
        )

    async def run_timer(self, *, force: bool = False) -> int:
        """Re-evaluate the customers whose due time their partition's clock has reached
        (:mod:`app.service.due`), at most every ``timer_interval_s``; their outputs are sent
        and they are written at the next flush. Returns how many were re-evaluated."""
        loop = asyncio.get_running_loop()
        if not force and loop.time() < self._timer_at:
            return 0
        self._timer_at = loop.time() + self.settings.timer_interval_s
        tables: Any = self.faust.tables
        if not tables.recovery.completed.is_set():
            return 0
        partitions = self.active_partitions()
        if self._due_stale:
            self.batch.rebuild_due(self.store.stored_items(partitions))
            self._due_stale = False
        settings = self.settings
        starts = {(tp.topic, tp.partition): off for tp, off in start_offsets(self.faust).items()}
        clocks = partition_clocks(
            partitions,
            self.batch.kinds,
            self.batch.read,
            starts,
            self._highwater,
            self.batch.partition_clocks,
            wall_clock_ms() if settings.clock_mode == "wall" else None,
            int(settings.allowed_lateness_s * 1000),
        )
        outcome = self.batch.tick(clocks, self.store.load_at, TIMER_BATCH)
        self.metrics.add_timer(outcome.ticked)
        if outcome.more_due:  # a backlog of due customers: go on right after the next batch
            self._timer_at = loop.time()
        if outcome.ticked:
            await self.send(outcome)
            if self._flush_at is None:
                self._flush_at = loop.time() + settings.flush_interval_s
        return outcome.ticked

    def _highwater(self, topic: str, partition: int) -> int | None:
        """The end offset of an input partition as of the consumer's last fetch."""
        try:
            hw = self.faust.consumer.highwater(TP(topic, partition))
        except Exception:  # not assigned (any more), or no consumer yet
            return None
        return int(hw) if hw is not None else None

    def lookup(self, customer_id: str) -> CustomerState | None:
        """A customer's current state on this worker (memory first, then the table); None
        when this worker does not know the customer. Read only: for queries."""
        state = self.batch.peek(customer_id)
        if state is not None:
            return state
        raw = self.store.lookup(table_key(customer_id))
        return None if raw is None else decode_state(raw)

    def active_partitions(self) -> set[int]:
        """The table partitions this worker owns (actively) now."""
        changelog = self.customer_state.changelog_topic.get_topic_name()
        return {
            tp.partition for tp in self.faust.assignor.assigned_actives() if tp.topic == changelog
        }

    # -- per flush -----------------------------------------------------------------------
    def until_flush(self) -> float | None:
        """Seconds until the next flush is due; None when nothing is unflushed."""
        if self._flush_at is None:
            return None
        return max(self._flush_at - asyncio.get_running_loop().time(), 0.0)

    @property
    def unflushed(self) -> int:
        """Events handled since the last flush."""
        return len(self._unflushed)

    def flush_due(self, *, rebalancing: bool = False) -> FlushReason | None:
        """Why to flush now, if so: a rebalance waits for the unflushed events to be
        acked, too many are unflushed, or the interval passed."""
        if not self._unflushed and not self.batch.dirty_customers:
            return None
        if rebalancing:
            return "rebalance"
        if len(self._unflushed) >= MAX_UNFLUSHED_EVENTS:
            return "size"
        if self.until_flush() == 0.0:
            return "interval"
        return None

    async def flush(self, reason: FlushReason = "interval") -> list[StreamEvent]:
        """Make everything handled since the last flush durable; returns those events,
        which the caller may now ack (see the module docstring for the order).

        ``table[key] = value`` would send the changelog record through Faust's
        ``send_soon`` buffer (no barrier, see :meth:`send`), so the store and the
        changelog are written here directly, as Faust would.
        """
        events, self._unflushed = self._unflushed, []
        self._flush_at = None
        abandoned = self._abandoned
        flush = self.batch.flush()
        out = self.sender
        for record in flush.snapshots:
            await out.add(self._customers, record.partition, record.key, record.value)
        await out.delivered()  # tier changes, dead letters and snapshots are on the broker
        store, changelog = self.store, self.store.changelog
        for write in flush.writes:
            store.write(write.key, write.value, write.partition)
            await out.add(changelog, write.partition, write.key, write.value)
        await out.delivered()  # the states are on the broker
        if abandoned == self._abandoned:  # else the cache was cleared meanwhile
            self.batch.flushed(flush)
        self.counters.add_flush(flush, reason)
        self.metrics.add_flush(flush)
        if log.isEnabledFor(logging.DEBUG):
            done: dict[str, list[int]] = {}
            for e in events:
                done.setdefault(f"{e.message.topic}[{e.message.partition}]", []).append(
                    e.message.offset
                )
            log.debug("flushed %d customers, %d events: %s", len(flush.writes), len(events), done)
        return events


def create_app(settings: Settings, policy: Policy | None = None) -> TierstreamApp:
    """The app with its topics and table; agents are registered by ``agents.register``."""
    if policy is None:
        from app.adapters.policy_files import load_policy

        policy = load_policy(settings.policy_file)
    return TierstreamApp(settings, policy)
