"""The timer path: a due-time index per partition and the partition clocks.

Customers whose tier, stage or flags can change with time alone (a day leaving a rolling
window, silence crossing a threshold, a demotion's grace ending) carry ``next_due`` in
their state (:mod:`app.domain.engine`). The worker keeps those times in a
:class:`DueIndex` per partition and, as the partition clock reaches them, runs the core's
``tick`` for exactly those customers: nobody is scanned. The index is rebuilt from the
table after every recovery (:func:`peek_next_due` reads the due time out of a stored
state without decoding it), so it survives restarts and rebalances.

The partition clock (DESIGN.md "Time") is the largest event time seen on the partition
minus the allowed lateness; with ``clock_mode`` ``wall`` (live) it also advances with the
wall clock, so silence is detected when no events arrive at all. ``event`` (replays of
history, tests) uses event time only, so a replay raises what fell due at the event times
it would have happened.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

_NEXT_DUE = b'"next_due":'
_CLOCK = b'"clock":'


class DueIndex:
    """Customers by the time they next fall due, per partition (a lazy-deletion heap)."""

    def __init__(self) -> None:
        self._heaps: dict[int, list[tuple[int, str]]] = {}
        self._due: dict[str, tuple[int, int]] = {}  # customer -> (partition, due)

    def __len__(self) -> int:
        return len(self._due)

    def put(self, customer_id: str, partition: int, due: int | None) -> None:
        """Record (or with ``None`` forget) when the customer next falls due."""
        current = self._due.get(customer_id)
        if due is None:
            if current is not None:
                del self._due[customer_id]
            return
        if current == (partition, due):
            return
        self._due[customer_id] = (partition, due)
        heap = self._heaps.setdefault(partition, [])
        heapq.heappush(heap, (due, customer_id))
        if len(heap) > 2 * len(self._due) + 1024:  # mostly stale entries: compact
            self._compact()

    def pop_due(self, partition: int, until: int, limit: int | None = None) -> list[str]:
        """The customers of ``partition`` due at or before ``until``, earliest first (at
        most ``limit``); they leave the index (the caller sets their new due time)."""
        heap = self._heaps.get(partition)
        out: list[str] = []
        if not heap:
            return out
        due_of = self._due
        while heap and heap[0][0] <= until and (limit is None or len(out) < limit):
            due, customer_id = heapq.heappop(heap)
            if due_of.get(customer_id) == (partition, due):
                del due_of[customer_id]
                out.append(customer_id)
        return out

    def next_due(self, partition: int) -> int | None:
        """The earliest due time of ``partition`` (None: nobody is due)."""
        heap = self._heaps.get(partition)
        due_of = self._due
        while heap:
            due, customer_id = heap[0]
            if due_of.get(customer_id) == (partition, due):
                return due
            heapq.heappop(heap)  # stale
        return None

    def partitions(self) -> set[int]:
        return {p for p, _ in self._due.values()}

    def keep_only(self, partitions: Iterable[int]) -> None:
        """Forget every partition but ``partitions`` (after a rebalance)."""
        keep = set(partitions)
        self._due = {c: pd for c, pd in self._due.items() if pd[0] in keep}
        self._compact()

    def clear(self) -> None:
        self._heaps.clear()
        self._due.clear()

    def rebuild(self, items: Iterable[tuple[int, bytes, bytes]]) -> dict[int, int]:
        """Replace the index with the due times of stored states ``(partition, key,
        value)``; returns the latest customer clock (event time) seen per partition, the
        partition clocks a restarted worker resumes from."""
        self.clear()
        clocks: dict[int, int] = {}
        for partition, key, value in items:
            due = peek_next_due(value)
            if due is not None:
                self._due[key.decode("utf-8")] = (partition, due)
            clock = _peek_int(value, _CLOCK)
            if clock is not None and clock > clocks.get(partition, 0):
                clocks[partition] = clock
        self._compact()
        return clocks

    def _compact(self) -> None:
        heaps: dict[int, list[tuple[int, str]]] = {}
        for customer_id, (partition, due) in self._due.items():
            heaps.setdefault(partition, []).append((due, customer_id))
        for heap in heaps.values():
            heapq.heapify(heap)
        self._heaps = heaps


def peek_next_due(raw: bytes) -> int | None:
    """``next_due`` of a stored state (the JSON of :func:`app.domain.state.state_to_dict`)
    without decoding it; a state from before due times (schema v3) is due at once (0)."""
    if raw.find(_NEXT_DUE) < 0:
        return 0 if raw.startswith(b"{") and b'"tier":null' not in raw else None
    return _peek_int(raw, _NEXT_DUE)


def _peek_int(raw: bytes, name: bytes) -> int | None:
    """The integer (or null) value of the first top-level ``name`` in a state's JSON: the
    scalars come first, and a string cannot hold an unescaped quote."""
    i = raw.find(name)
    if i < 0:
        return None
    i += len(name)
    j = i
    n = len(raw)
    while j < n and raw[j] not in b",}":
        j += 1
    token = raw[i:j].strip()
    if token == b"null" or not token:
        return None
    return int(token)


@dataclass(slots=True)
class ReadProgress:
    """Per input ``(topic, partition)``: the next offset to process and the latest event
    time processed (this run)."""

    next_offset: dict[tuple[str, int], int] = field(default_factory=dict)
    event_time: dict[tuple[str, int], int] = field(default_factory=dict)

    def clear(self) -> None:
        self.next_offset.clear()
        self.event_time.clear()


def partition_clocks(
    partitions: Iterable[int],
    topics: Iterable[str],
    read: ReadProgress,
    start: Mapping[tuple[str, int], int],
    highwater: Callable[[str, int], int | None],
    latest: Mapping[int, int],
    wall_ms: int | None,
    lateness_ms: int,
) -> dict[int, int]:
    """The clock of each of ``partitions``: a watermark over its input topics.

    The input topics of a partition are read independently, so one can be months of
    event time ahead of another while a backlog is worked off. A topic-partition with
    records left to process (its next offset, this run's or ``start``, is below the
    ``highwater`` the consumer last saw) holds the clock at the latest event time
    processed on it; one with none left does not hold it. When none holds it, the clock
    is the ``latest`` event time of the partition (its events, or the customers stored),
    and with a wall clock (``wall_ms``, live) never behind the wall clock: an idle
    partition's clock moves on. A partition with a topic that has records left and none
    processed yet has no clock. The allowed lateness is subtracted last.
    """
    topics = tuple(topics)
    out: dict[int, int] = {}
    for p in partitions:
        held: int | None = None
        blocked = False
        for t in topics:
            tp = (t, p)
            nxt = read.next_offset.get(tp, start.get(tp))
            hw = highwater(t, p)
            if hw is not None and (hw == 0 or (nxt is not None and nxt >= hw)):
                continue  # nothing (left) to read
            seen = read.event_time.get(tp)
            if seen is None:
                blocked = True
                break
            held = seen if held is None else min(held, seen)
        if blocked:
            continue
        clock = held
        if clock is None:
            clock = latest.get(p)
            if wall_ms is not None and (clock is None or wall_ms > clock):
                clock = wall_ms
        if clock is not None:
            out[p] = clock - lateness_ms
    return out
