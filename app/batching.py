"""Batch plumbing between Faust and the pure core: no Faust, no Kafka, no IO here.

The agent hands a batch of raw input records (topic, partition, offset, key, value) to
:meth:`CustomerBatch.process`, which decodes each record, runs
:func:`app.domain.engine.step` per event in order, and returns a :class:`BatchOutcome`:

- the encoded tier-change events, in the order the core produced them;
- one write (key, partition, encoded state) and one snapshot per *touched* customer,
  however many of the batch's events were theirs (a duplicate does not touch);
- the dead letters: records that failed to decode (``InvalidEvent``), whose key is not the
  event's customer id (``key_mismatch``), or that made the core raise (``processing_error``).

Ordering: the records of a batch are processed in the order given, which for one
partition is offset order; a customer's events all live on one partition per topic (key =
customer_id), so each customer sees their events of a topic in offset order.
"""

from __future__ import annotations

import itertools
import logging
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from app.domain.engine import StepResult, step
from app.domain.errors import InvalidEvent
from app.domain.events import Event, EventKind
from app.domain.outputs import snapshot
from app.domain.policy import Policy
from app.domain.state import CustomerState, state_from_dict, state_to_dict
from schemas import decode_event, encode_snapshot, encode_tier_change

log = logging.getLogger(__name__)

#: Input topics by logical name, and the event kind each one carries.
INPUT_KINDS: dict[str, EventKind] = {
    "purchases": "purchase",
    "interactions": "interaction",
    "profiles": "profile",
}

Header = tuple[str, bytes]
StepFn = Callable[[CustomerState | None, Event, int, Policy], StepResult]
#: Reads a customer's stored state (encoded bytes) by table key, for the record at the
#: given position of the batch (a store may need the record's partition); None: absent.
StateLoader = Callable[[bytes, int], bytes | None]


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


@dataclass(frozen=True, slots=True)
class CustomerWrite:
    """The new stored state of one customer. ``index`` is the position in the batch of
    the last record that touched the customer (its partition is the table partition)."""

    key: bytes
    value: bytes
    partition: int
    index: int


class OutputRecord(NamedTuple):
    """An output record for the customer's partition (outputs are co-partitioned)."""

    key: bytes
    value: bytes
    partition: int


@dataclass(slots=True)
class BatchOutcome:
    tier_changes: list[OutputRecord] = field(default_factory=list)
    snapshots: list[OutputRecord] = field(default_factory=list)
    writes: list[CustomerWrite] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    #: every customer state the batch loaded, by customer id (for :class:`StateCache`)
    states: dict[str, CustomerState] = field(default_factory=dict)
    events: int = 0
    duplicates: int = 0


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
    """Decoded states of this worker's customers, least recently used first.

    Decoding a stored state costs more than running the core on an event, so hot
    customers stay decoded between batches. A batch *takes* its customers' states out of
    the cache (``step`` changes them in place) and they are *put back* only once the batch's
    outputs and table writes are on the broker; a batch that fails or is abandoned leaves
    them out, and the next load decodes the stored state again. Cleared when partitions
    are revoked: another worker may change those customers before they come back.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._states: dict[str, CustomerState] = {}

    def __len__(self) -> int:
        return len(self._states)

    def take(self, customer_id: str) -> CustomerState | None:
        return self._states.pop(customer_id, None)

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
class _Customer:
    """Working copy of one customer during a batch."""

    state: CustomerState | None
    applied: list[Event] = field(default_factory=list)
    partition: int = 0
    index: int = -1


class CustomerBatch:
    """Runs the core over batches of input records; keeps the partition clocks.

    ``kinds`` maps a full topic name to the kind of event it carries. ``now`` given to the
    core is the partition clock: the largest event time seen on that partition (of any
    input topic: they are co-partitioned) by this process.
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

    def process(self, records: Sequence[InputRecord], load: StateLoader) -> BatchOutcome:
        out = BatchOutcome()
        customers: dict[str, _Customer] = {}
        max_ts = self._clock() + self.max_future_skew_ms
        clocks = self.partition_clocks
        for index, record in enumerate(records):
            try:
                event = self._decode(record, max_ts)
            except InvalidEvent as exc:
                out.dead_letters.append(_dead_letter(record, exc.reason, exc.detail))
                continue
            out.events += 1
            now = clocks.get(record.partition, 0)
            if event.occurred_at > now:
                now = clocks[record.partition] = event.occurred_at
            cust = customers.get(event.customer_id)
            try:
                if cust is None:
                    cust = customers[event.customer_id] = _Customer(
                        self._load(event.customer_id, load, index)
                    )
                result = self._step(cust.state, event, now, self.policy)
            except Exception as exc:
                self._on_error(record, exc, out)
                if cust is not None:
                    cust.state = self._rebuild(cust, event.customer_id, load, index, now)
                continue
            if result.duplicate:
                out.duplicates += 1
                continue
            cust.state = result.state
            cust.applied.append(event)
            cust.partition = record.partition
            cust.index = index
            for change in result.outputs:
                out.tier_changes.append(
                    OutputRecord(
                        table_key(change.customer_id), encode_tier_change(change), record.partition
                    )
                )
        for customer_id, cust in customers.items():
            if not cust.applied or cust.state is None:
                continue
            key = table_key(customer_id)
            out.writes.append(
                CustomerWrite(key, encode_state(cust.state), cust.partition, cust.index)
            )
            out.snapshots.append(
                OutputRecord(key, encode_snapshot(snapshot(cust.state)), cust.partition)
            )
        out.states = {cid: c.state for cid, c in customers.items() if c.state is not None}
        return out

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

    def done(self, outcome: BatchOutcome) -> None:
        """The batch's outputs and writes are on the broker: keep its states decoded."""
        if self.cache.capacity:
            self.cache.put_back(outcome.states)

    def _load(self, customer_id: str, load: StateLoader, index: int) -> CustomerState | None:
        state = self.cache.take(customer_id)
        if state is not None:
            return state
        raw = load(table_key(customer_id), index)
        return None if raw is None else decode_state(raw)

    def _rebuild(
        self, cust: _Customer, customer_id: str, load: StateLoader, index: int, now: int
    ) -> CustomerState | None:
        """The customer's state before the failed event: the stored state plus this
        batch's events that were applied (``step`` updates the state in place, so a raise
        may leave a half-applied state behind). Their outputs were already taken."""
        raw = load(table_key(customer_id), index)  # the stored state, never the cache's
        state = None if raw is None else decode_state(raw)
        for event in cust.applied:
            state = self._step(state, event, now, self.policy).state
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


def _dead_letter(record: InputRecord, reason: str, detail: str) -> DeadLetter:
    return DeadLetter(record.key, record.value, dead_letter_headers(reason, detail, record), reason)


@dataclass(slots=True)
class Counters:
    """Running totals of this process (metrics come later; /healthz shows them)."""

    batches: int = 0
    events: int = 0
    duplicates: int = 0
    tier_changes: int = 0
    customers_written: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: BatchOutcome) -> None:
        self.batches += 1
        self.events += outcome.events
        self.duplicates += outcome.duplicates
        self.tier_changes += len(outcome.tier_changes)
        self.customers_written += len(outcome.writes)
        for dl in outcome.dead_letters:
            self.dead_letters[dl.reason] = self.dead_letters.get(dl.reason, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "events": self.events,
            "duplicates": self.duplicates,
            "tier_changes": self.tier_changes,
            "customers_written": self.customers_written,
            "dead_letters": dict(self.dead_letters),
        }
