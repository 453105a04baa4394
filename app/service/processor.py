"""Batch plumbing between Faust and the pure core: no Faust, no Kafka, no IO here.

The agent hands a batch of raw input records (topic, partition, offset, key, value) to
:meth:`CustomerBatch.process`, which decodes each record, runs
:func:`app.domain.engine.step` per event in order, and returns a :class:`BatchOutcome`:

- the encoded tier-change events, in the order the core produced them;
- the dead letters: records that failed to decode (``InvalidEvent``), whose key is not the
  event's customer id (``key_mismatch``), or that made the core raise (``processing_error``).

Touched customers are kept *dirty* in memory, not written per batch. :meth:`CustomerBatch.flush`
(the agent calls it every ``flush_interval_s``) returns one table write and one snapshot per
customer touched since the previous flush, however many events and batches touched them,
like the record cache of Kafka Streams: a heavy buyer seen in every batch is encoded and
written once per flush instead of once per batch. The agent acks the events only once a
flush that covers them is on the broker (see :mod:`app.stream.app`).

Ordering: the records of a batch are processed in the order given, which for one
partition is offset order; a customer's events all live on one partition per topic (key =
customer_id), so each customer sees their events of a topic in offset order.
"""

from __future__ import annotations

import itertools
import logging
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from app.domain.engine import StepResult, reevaluate, step, tick
from app.domain.errors import InvalidEvent
from app.domain.events import Event, EventKind
from app.domain.outputs import (
    ChurnWarning,
    LifecycleChange,
    Output,
    TierChange,
    Trigger,
    snapshot,
)
from app.domain.policy import Policy
from app.domain.state import CustomerState, state_from_dict, state_to_dict
from app.service.census import NONE, Census, Place
from app.service.due import DueIndex, ReadProgress
from schemas import OUTPUT_TOPICS, decode_event, encode_output, encode_snapshot
from schemas.topics import INPUTS

log = logging.getLogger(__name__)

#: Input topics by logical name, and the event kind each one carries (schemas.topics).
INPUT_KINDS: dict[str, EventKind] = {t.name: t.kind for t in INPUTS}
#: The topic of tier changes (logical name).
TIER_CHANGES = OUTPUT_TOPICS["tier_change"]

Header = tuple[str, bytes]
StepFn = Callable[[CustomerState | None, Event, int, Policy], StepResult]
#: Reads a customer's stored state (encoded bytes) by table key, for the record at the
#: given position of the batch (a store may need the record's partition); None: absent.
StateLoader = Callable[[bytes, int], bytes | None]
#: Reads a stored state by key from the store of a partition (the timer path).
PartitionLoader = Callable[[bytes, int], bytes | None]


class InputRecord(NamedTuple):
    """One consumed record, as far as the core's plumbing needs it (a tuple: one is built
    per consumed record, and a frozen dataclass costs several times as much to create)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that could not be processed: original key and bytes, error headers."""

    key: bytes | None
    value: bytes | None
    headers: list[Header]
    reason: str
    #: the topic the record came from
    topic: str = ""


class OutputRecord(NamedTuple):
    """An output record for the customer's partition (outputs are co-partitioned)."""

    key: bytes
    value: bytes
    partition: int


@dataclass(slots=True)
class BatchOutcome:
    #: Output records by topic name without the prefix (``tier-changes``, ...).
    outputs: dict[str, list[OutputRecord]] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    events: int = 0
    duplicates: int = 0
    #: customers re-evaluated by the timer path
    ticked: int = 0
    #: the timer stopped at its limit: more customers are due already
    more_due: bool = False
    #: input records of the batch by topic (decoded or not)
    records: dict[str, int] = field(default_factory=dict)
    #: duplicates dropped by event kind
    duplicates_by_kind: dict[str, int] = field(default_factory=dict)
    #: outputs by what they say, for the metrics: ``(kind, a, b)`` -> count, where for a
    #: tier change a/b are the from ("none" the first time) and to tier, for a lifecycle
    #: change the from and to stage, for a churn warning a is the severity, else empty
    said: dict[tuple[str, str, str], int] = field(default_factory=dict)
    #: Kafka timestamps (epoch seconds) of the batch's input records, set by the caller
    #: (the latency metric)
    record_times: list[float | None] = field(default_factory=list)
    #: the earliest event time applied (None: no event applied)
    oldest_event_time: int | None = None

    @property
    def tier_changes(self) -> list[OutputRecord]:
        """The tier-change records (read only: add with :meth:`add`)."""
        return list(self.outputs.get(TIER_CHANGES, ()))

    def add(self, output: Output, partition: int) -> None:
        record = OutputRecord(table_key(output.customer_id), encode_output(output), partition)
        self.outputs.setdefault(OUTPUT_TOPICS[output.kind], []).append(record)
        said: tuple[str, str, str]
        if isinstance(output, TierChange):
            said = (output.kind, output.from_tier or NONE, output.to_tier)
        elif isinstance(output, LifecycleChange):
            said = (output.kind, output.from_stage or NONE, output.to_stage)
        elif isinstance(output, ChurnWarning):
            said = (output.kind, output.severity, "")
        else:
            said = (output.kind, "", "")
        self.said[said] = self.said.get(said, 0) + 1


@dataclass(slots=True)
class Flush:
    """What :meth:`CustomerBatch.flush` hands out: per customer touched since the previous
    flush, the new table value (``writes``) and the snapshot, both for the customer's
    partition, in the order the customers were first touched."""

    writes: list[OutputRecord] = field(default_factory=list)
    snapshots: list[OutputRecord] = field(default_factory=list)
    #: the flushed states by customer id (they enter :class:`StateCache` once written)
    states: dict[str, CustomerState] = field(default_factory=dict)
    #: per write: ``(partition, (tier, stage) the table held or None, (tier, stage) now)``
    #: (:class:`app.service.census.Census`)
    moves: list[tuple[int, Place, tuple[str | None, str | None]]] = field(default_factory=list)


def _evaluation(state: CustomerState) -> tuple[Any, ...]:
    """What an evaluation decides (to tell whether a re-evaluation changed anything)."""
    return (
        state.tier,
        state.stage,
        state.pending_tier,
        state.pending_since,
        state.upgrade_since,
        state.churn_severity,
        state.churn_since,
        state.churn_cleared_at,
        state.next_due,
        state.policy,
    )


def encode_state(state: CustomerState) -> bytes:
    """The table value of a customer (the changelog format of :mod:`app.domain.state`)."""
    return orjson.dumps(state_to_dict(state))


def decode_state(raw: bytes) -> CustomerState:
    return state_from_dict(orjson.loads(raw))


def table_key(customer_id: str) -> bytes:
    return customer_id.encode("utf-8")


def dead_letter_headers(reason: str, detail: str, record: InputRecord) -> list[Header]:
    """Headers of a dead letter: why (``error.*``) and where it came from (``origin.*``)."""
    return [
        ("error.reason", reason.encode("utf-8")),
        ("error.detail", detail.encode("utf-8")),
        ("origin.topic", record.topic.encode("utf-8")),
        ("origin.partition", str(record.partition).encode("ascii")),
        ("origin.offset", str(record.offset).encode("ascii")),
    ]


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


class StateCache:
    """Decoded states of this worker's customers that are written (clean), least recently
    used first.

    Decoding a stored state costs more than running the core on an event, so hot
    customers stay decoded between flushes. A customer's state is *taken* out of the cache
    when an event of theirs is applied (``step`` changes it in place; it is then dirty) and
    *put back* only once a flush has written it; a state whose flush fails never comes
    back, and the next load decodes the stored state again. Cleared when partitions
    are revoked: another worker may change those customers before they come back.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._states: dict[str, CustomerState] = {}

    def __len__(self) -> int:
        return len(self._states)

    def take(self, customer_id: str) -> CustomerState | None:
        return self._states.pop(customer_id, None)

    def peek(self, customer_id: str) -> CustomerState | None:
        """The cached state without taking it (nor making it recently used)."""
        return self._states.get(customer_id)

    def put_back(self, states: Mapping[str, CustomerState]) -> None:
        cached = self._states
        cached.update(states)  # taken entries re-enter last: most recently used
        excess = len(cached) - self.capacity
        if excess > 0:
            for customer_id in list(itertools.islice(cached, excess)):
                del cached[customer_id]

    def clear(self) -> None:
        self._states.clear()


@dataclass(slots=True)
class _Dirty:
    """A customer touched since the last flush: the state in memory is ahead of the table
    by ``applied`` (in order), all from partition ``partition``."""

    state: CustomerState
    partition: int
    applied: list[Event] = field(default_factory=list)
    #: the (tier, stage) the table holds for the customer (None: not stored yet)
    before: Place = None


class CustomerBatch:
    """Runs the core over batches of input records; keeps the partition clocks and the
    customers touched since the last flush.

    ``kinds`` maps a full topic name to the kind of event it carries. ``now`` given to the
    core is the partition clock: the largest event time seen on that partition (of any
    input topic: they are co-partitioned) by this process.

    Between :meth:`flush` and :meth:`flushed` (the flush's records are being delivered)
    no batch may be processed: the table does not hold the flushed states yet.
    """

    def __init__(
        self,
        policy: Policy,
        kinds: Mapping[str, EventKind],
        max_future_skew_s: float,
        *,
        step_fn: StepFn = step,
        clock: Callable[[], int] = wall_clock_ms,
        cache_size: int = 0,
    ) -> None:
        self.policy = policy
        self.kinds = dict(kinds)
        self.max_future_skew_ms = int(max_future_skew_s * 1000)
        self.partition_clocks: dict[int, int] = {}
        self._step = step_fn
        self._clock = clock
        self.cache = StateCache(cache_size)
        #: when this worker's customers next fall due (see :mod:`app.service.due`)
        self.due = DueIndex()
        #: how far each input topic-partition has been read (the timer's watermark)
        self.read = ReadProgress()
        #: customers per tier and stage per partition, as the table holds them
        self.census = Census()
        self._dirty: dict[str, _Dirty] = {}
        #: events applied since the last flush (what a flush will make durable)
        self.unflushed_events = 0

    @property
    def dirty_customers(self) -> int:
        """Customers touched since the last flush."""
        return len(self._dirty)

    def process(self, records: Sequence[InputRecord], load: StateLoader) -> BatchOutcome:
        """Decode and apply ``records`` in the order given (:meth:`decode`, :meth:`apply`)."""
        return self.apply(records, self.decode(records), load)

    def decode(self, records: Sequence[InputRecord]) -> list[Event | InvalidEvent]:
        """Each record as an event, or as the reason it cannot be one (a dead letter)."""
        max_ts = self._clock() + self.max_future_skew_ms
        out: list[Event | InvalidEvent] = []
        for record in records:
            try:
                out.append(self._decode(record, max_ts))
            except InvalidEvent as exc:
                out.append(exc.with_traceback(None))  # kept a while: no frames with it
        return out

    def apply(
        self,
        records: Sequence[InputRecord],
        decoded: Sequence[Event | InvalidEvent],
        load: StateLoader,
    ) -> BatchOutcome:
        """Run the core over decoded records (:meth:`decode`), in the order given; the
        touched customers become dirty."""
        out = BatchOutcome()
        dirty = self._dirty
        clocks = self.partition_clocks
        read, read_time = self.read.next_offset, self.read.event_time
        seen = out.records
        for index, record in enumerate(records):
            topic = record.topic
            seen[topic] = seen.get(topic, 0) + 1
            tp = (topic, record.partition)
            read[tp] = record.offset + 1
            event = decoded[index]
            if isinstance(event, InvalidEvent):
                out.dead_letters.append(_dead_letter(record, event.reason, event.detail))
                continue
            out.events += 1
            partition = record.partition
            if event.occurred_at > read_time.get(tp, 0):
                read_time[tp] = event.occurred_at
            if out.oldest_event_time is None or event.occurred_at < out.oldest_event_time:
                out.oldest_event_time = event.occurred_at
            now = clocks.get(partition, 0)
            if event.occurred_at > now:
                now = clocks[partition] = event.occurred_at
            customer_id = event.customer_id
            entry = dirty.get(customer_id)
            state: CustomerState | None = None
            before: Place = None
            try:
                if entry is None:
                    state = self._load(customer_id, load, index)
                    if state is not None:
                        before = (state.tier, state.stage)
                else:
                    state = entry.state
                result = self._step(state, event, now, self.policy)
            except Exception as exc:
                self._on_error(record, exc, out)
                if entry is not None:
                    entry.state = self._rebuild(entry, customer_id, load, index, now)
                # A clean state may be half-applied now: it stays out of the cache, and
                # the next load decodes the stored one.
                continue
            if result.duplicate:
                out.duplicates += 1
                dup = out.duplicates_by_kind
                dup[event.kind] = dup.get(event.kind, 0) + 1
                if entry is None and state is not None:  # still clean: back to the cache
                    self.cache.put_back({customer_id: state})
                continue
            if entry is None:
                entry = dirty[customer_id] = _Dirty(result.state, partition, before=before)
            else:
                entry.state = result.state
            entry.applied.append(event)
            self.unflushed_events += 1
            self.due.put(customer_id, partition, result.state.next_due)
            for output in result.outputs:
                out.add(output, partition)
        return out

    def tick(
        self, clocks: Mapping[int, int], load: PartitionLoader, limit: int | None = None
    ) -> BatchOutcome:
        """The timer path: every customer of a partition in ``clocks`` whose due time the
        partition clock has reached is re-evaluated (the core's ``tick``); they become
        dirty like customers with events, so the next flush writes them. At most
        ``limit`` customers (earliest due first per partition): the caller runs the timer
        again soon when ``more_due`` says so, and events are not held up meanwhile."""
        out = BatchOutcome()
        dirty = self._dirty
        share = None if limit is None else max(1, limit // max(1, len(clocks)))
        for partition, clock in clocks.items():
            # Up to and including the clock: at an instant, time passes before its events
            # (app.domain.engine, "Due times and the clock"). An event of that very
            # millisecond arriving later finds the due time run, as engine.step would have
            # run it first, so the order does not matter; classify does the same.
            now = clock
            due = self.due.pop_due(partition, now, share)
            if share is not None and len(due) == share:
                out.more_due = True
            for customer_id in due:
                entry = dirty.get(customer_id)
                try:
                    state = (
                        entry.state
                        if entry is not None
                        else self._load_at(customer_id, load, partition)
                    )
                    if state is None:
                        continue
                    was = (state.tier, state.stage)
                    result = tick(state, now, self.policy)
                except Exception as exc:  # a bug: logged without the customer, skipped
                    log.error("timer error on partition %d: %s", partition, type(exc).__name__)
                    if entry is not None:
                        del dirty[customer_id]  # its events stay unacked: consumed again
                    continue
                out.ticked += 1
                if entry is None:
                    entry = dirty[customer_id] = _Dirty(result.state, partition, before=was)
                self.due.put(customer_id, partition, result.state.next_due)
                for output in result.outputs:
                    out.add(output, partition)
        return out

    def sweep(
        self, stored: Iterable[tuple[int, bytes, bytes]], cause: str, trigger: Trigger
    ) -> BatchOutcome:
        """Re-evaluate every customer (the table's ``(partition, key, value)`` and the
        unflushed ones) because the policy or the cut-offs changed; those whose state
        changed become dirty."""
        out = BatchOutcome()
        seen: set[str] = set()
        for partition, key, raw in stored:
            customer_id = key.decode("utf-8")
            seen.add(customer_id)
            self._sweep_one(customer_id, partition, raw, cause, trigger, out)
        for customer_id, entry in list(self._dirty.items()):
            if customer_id not in seen:
                self._sweep_one(customer_id, entry.partition, None, cause, trigger, out)
        return out

    def _sweep_one(
        self,
        customer_id: str,
        partition: int,
        raw: bytes | None,
        cause: str,
        trigger: Trigger,
        out: BatchOutcome,
    ) -> None:
        entry = self._dirty.get(customer_id)
        state = entry.state if entry is not None else self.cache.take(customer_id)
        if state is None:
            if raw is None:
                return
            state = decode_state(raw)
        before = _evaluation(state)
        try:
            result = reevaluate(state, self.policy, cause, trigger)
        except Exception as exc:  # a bug: logged without the customer, skipped
            log.error("re-evaluation error on partition %d: %s", partition, type(exc).__name__)
            if entry is not None:
                del self._dirty[customer_id]  # its events stay unacked: consumed again
            return
        out.ticked += 1
        if entry is None:
            if result.outputs or _evaluation(state) != before:
                self._dirty[customer_id] = _Dirty(state, partition, before=(before[0], before[1]))
            else:
                self.cache.put_back({customer_id: state})
        self.due.put(customer_id, partition, state.next_due)
        for output in result.outputs:
            out.add(output, partition)

    def unflushed_states(self) -> list[tuple[int, CustomerState]]:
        """``(partition, state)`` of every customer touched since the last flush."""
        return [(e.partition, e.state) for e in self._dirty.values()]

    def peek(self, customer_id: str) -> CustomerState | None:
        """The customer's newest state in memory (unflushed, else cached), untouched; None
        when only the table has it. For reads (queries), never to step on."""
        entry = self._dirty.get(customer_id)
        if entry is not None:
            return entry.state
        return self.cache.peek(customer_id)

    def rebuild_due(self, stored: Iterable[tuple[int, bytes, bytes]]) -> None:
        """Rebuild the due-time index from the table's ``(partition, key, value)`` (after
        a recovery), keeping what the unflushed customers say, and resume each partition
        clock from the latest customer clock stored (a restart knows no events yet). The
        same pass rebuilds the :attr:`census` (customers per tier and stage)."""
        clocks = self.due.rebuild(self.census.rebuild(stored))
        for customer_id, entry in self._dirty.items():
            self.due.put(customer_id, entry.partition, entry.state.next_due)
        for partition, clock in clocks.items():
            if clock > self.partition_clocks.get(partition, 0):
                self.partition_clocks[partition] = clock

    def _load_at(
        self, customer_id: str, load: PartitionLoader, partition: int
    ) -> CustomerState | None:
        state = self.cache.take(customer_id)
        if state is not None:
            return state
        raw = load(table_key(customer_id), partition)
        return None if raw is None else decode_state(raw)

    def flush(self) -> Flush:
        """The table writes and snapshots of every customer touched since the last flush;
        afterwards nothing is dirty. Call :meth:`flushed` once they are on the broker."""
        dirty, self._dirty = self._dirty, {}
        self.unflushed_events = 0
        out = Flush()
        for customer_id, entry in dirty.items():
            key = table_key(customer_id)
            out.writes.append(OutputRecord(key, encode_state(entry.state), entry.partition))
            out.snapshots.append(
                OutputRecord(key, encode_snapshot(snapshot(entry.state)), entry.partition)
            )
            out.states[customer_id] = entry.state
            state = entry.state
            out.moves.append((entry.partition, entry.before, (state.tier, state.stage)))
        return out

    def flushed(self, flush: Flush) -> None:
        """The flush's writes are on the broker: keep its states decoded, count them."""
        self.census.apply(flush.moves)
        if self.cache.capacity:
            self.cache.put_back(flush.states)

    def discard(self) -> None:
        """Forget every dirty customer and every cached state (partitions were revoked, or
        processing failed): the next load reads the table. The caller must not ack the
        events applied since the last flush; they will be consumed again."""
        self._dirty.clear()
        self.unflushed_events = 0
        self.cache.clear()
        self.due.clear()  # the owner rebuilds it from the table (see app.stream.app)
        self.read.clear()  # reading restarts where the partitions' next owner commits

    def _decode(self, record: InputRecord, max_ts: int) -> Event:
        if record.value is None:
            raise InvalidEvent("missing_value", "the record has no value (a tombstone?)")
        event = decode_event(record.value, kind=self.kinds[record.topic], max_ts=max_ts)
        if record.key != table_key(event.customer_id):
            raise InvalidEvent(
                "key_mismatch",
                "the record key is not the event's customer_id (inputs are keyed by customer)",
            )
        return event

    def _load(self, customer_id: str, load: StateLoader, index: int) -> CustomerState | None:
        state = self.cache.take(customer_id)
        if state is not None:
            return state
        raw = load(table_key(customer_id), index)
        return None if raw is None else decode_state(raw)

    def _rebuild(
        self, entry: _Dirty, customer_id: str, load: StateLoader, index: int, now: int
    ) -> CustomerState:
        """The customer's state before the failed event: the stored state (as of the last
        flush) plus the events applied since (``step`` updates the state in place, so a
        raise may leave a half-applied state behind). Their outputs were already taken."""
        raw = load(table_key(customer_id), index)  # the stored state, never the cache's
        state = None if raw is None else decode_state(raw)
        for event in entry.applied:
            state = self._step(state, event, now, self.policy).state
        assert state is not None  # at least one event was applied
        return state

    def _on_error(self, record: InputRecord, exc: Exception, out: BatchOutcome) -> None:
        # Privacy: topic/partition/offset and where it failed, never the key or payload.
        where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
        at = f"{where[0].filename}:{where[0].lineno}" if where else "?"
        log.error(
            "processing error on %s[%d]@%d: %s at %s; sent to dead-letter",
            record.topic,
            record.partition,
            record.offset,
            type(exc).__name__,
            at,
        )
        out.dead_letters.append(
            _dead_letter(record, "processing_error", f"{type(exc).__name__}: {exc}")
        )


#: A dead letter's key and value together stay below this many bytes, so that it fits one
#: produce request (the producer's ``max_request_size``, 1,000,000 by default in Faust, and
#: the broker's ``message.max.bytes``, 1,048,588 by default, with room for the headers).
DEAD_LETTER_MAX_BYTES = 512 * 1024
#: ``error.detail`` is cut to this many characters.
DEAD_LETTER_MAX_DETAIL = 1000


def _dead_letter(record: InputRecord, reason: str, detail: str) -> DeadLetter:
    """The dead letter of ``record``: its key and bytes as they came, unless together they
    exceed :data:`DEAD_LETTER_MAX_BYTES`; then the value (and if need be the key) is cut
    to fit, and the header ``error.truncated`` gives the original sizes. A record the
    producer refused would stop the partition: it could be neither sent nor skipped."""
    key, value = record.key, record.value
    if len(detail) > DEAD_LETTER_MAX_DETAIL:
        detail = detail[: DEAD_LETTER_MAX_DETAIL - 1] + "…"
    headers = dead_letter_headers(reason, detail, record)
    size = len(key or b"") + len(value or b"")
    if size > DEAD_LETTER_MAX_BYTES:
        headers.append(
            (
                "error.truncated",
                f"key {len(key or b'')} bytes, value {len(value or b'')} bytes".encode("ascii"),
            )
        )
        if key is not None and len(key) > DEAD_LETTER_MAX_BYTES // 2:
            key = key[: DEAD_LETTER_MAX_BYTES // 2]
        if value is not None:
            value = value[: DEAD_LETTER_MAX_BYTES - len(key or b"")]
    return DeadLetter(key, value, headers, reason, record.topic)


@dataclass(slots=True)
class Counters:
    """Running totals of this process (metrics come later; /healthz shows them)."""

    batches: int = 0
    events: int = 0
    duplicates: int = 0
    #: customers re-evaluated by the timer path
    ticked: int = 0
    #: output records by topic (tier-changes, lifecycle-changes, upgrade-candidates)
    outputs: dict[str, int] = field(default_factory=dict)
    #: flushes by why they happened (interval, size, rebalance)
    flushes: dict[str, int] = field(default_factory=dict)
    customers_written: int = 0
    #: rebalances that took partitions from this worker
    revocations: int = 0
    #: re-evaluations of every customer (a new policy or new cut-offs)
    sweeps: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    #: records processed out of event-time order because a co-partitioned input topic
    #: with unread records delivered none within ``order_wait_s`` (app.service.ordering)
    order_forced: int = 0

    def add(self, outcome: BatchOutcome) -> None:
        self.batches += 1
        self.events += outcome.events
        self.duplicates += outcome.duplicates
        self.ticked += outcome.ticked
        for topic, records in outcome.outputs.items():
            self.outputs[topic] = self.outputs.get(topic, 0) + len(records)
        for dl in outcome.dead_letters:
            self.dead_letters[dl.reason] = self.dead_letters.get(dl.reason, 0) + 1

    def add_flush(self, flush: Flush, reason: str) -> None:
        self.flushes[reason] = self.flushes.get(reason, 0) + 1
        self.customers_written += len(flush.writes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "events": self.events,
            "duplicates": self.duplicates,
            "ticked": self.ticked,
            "outputs": dict(self.outputs),
            "flushes": dict(self.flushes),
            "customers_written": self.customers_written,
            "revocations": self.revocations,
            "sweeps": self.sweeps,
            "dead_letters": dict(self.dead_letters),
            "order_forced": self.order_forced,
        }
