"""Event-time order across a partition's input topics (stream-time synchronisation).

One customer's events arrive on three topics (purchases, interactions, profiles) that are
co-partitioned: partition *p* of each holds the same customers. Each topic-partition is
read in offset order, but the consumer interleaves *different* topic-partitions as the
fetches come back. Live, at the end of the log, that is event-time order anyway; while a
backlog is worked off (after a crash, a paused broker, a rebalance) it is not: a fetch
returns up to a megabyte per topic-partition, so purchases can run weeks of event time
ahead of interactions. Path-dependent state (churn episodes, tier history, re-arm
periods) would then depend on how the consumer happened to interleave the topics, and
differ from ``tierstream classify``, which replays in event-time order.

:class:`EventTimeOrder` does what Kafka Streams does for the partitions of one task
(``PartitionGroup``: always the record with the lowest timestamp among the task's
partitions; ``max.task.idle.ms``): records are queued per topic-partition in offset
order, and per partition number the head with the lowest event time is released next,
but only while every other topic-partition of that partition number either has a record
queued too (so its next record is known not to be earlier) or has nothing left to read
(its next offset has reached the high watermark the consumer last saw). A topic-partition
that is behind but has delivered nothing yet holds the others back for at most
``max_wait_s``; then they go on without it (counted in :attr:`EventTimeOrder.forced`).
The order within a topic-partition is never changed, so an event that is late within its
own topic is applied late, as it is in Kafka Streams.

Records without an event time (undecodable: they become dead letters) pass as soon as
they reach the head of their queue. Queued records are not processed, so they are not
acked, and their offsets are not committed; :meth:`EventTimeOrder.drop` forgets them (a
rebalance or a stop: they are read again from the committed offsets).

Nothing here imports Faust or Kafka: the caller passes the "nothing left to read" test.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
#: ``(topic, partition)``
TopicPartition = tuple[str, int]
#: True when the topic-partition has nothing left to read as far as the consumer knows.
CaughtUp = Callable[[TopicPartition], bool]

#: Sorts before every event time: records without one pass at once.
_NO_TIME = -(2**63)


@dataclass(slots=True)
class _Queued(Generic[T]):
    time: int
    rank: int
    item: T


class EventTimeOrder(Generic[T]):
    """Per partition number, release queued records in event-time order across topics.

    >>> order: EventTimeOrder[str] = EventTimeOrder(["purchases", "visits"], max_wait_s=5)
    >>> order.add("purchases", 0, 30, "p@30"); order.add("purchases", 0, 40, "p@40")
    >>> order.add("visits", 0, 10, "v@10")
    >>> behind = {("visits", 0)}   # the visits topic has unread records
    >>> order.release(lambda tp: tp not in behind, now=0.0)
    ['v@10']
    >>> order.release(lambda tp: tp not in behind, now=1.0)   # waits for visits
    []
    >>> order.add("visits", 0, 35, "v@35")
    >>> order.release(lambda tp: tp not in behind, now=1.5)
    ['p@30', 'v@35']
    >>> behind.clear()                                        # visits caught up
    >>> order.release(lambda tp: tp not in behind, now=2.0)
    ['p@40']
    """

    def __init__(self, topics: Iterable[str], max_wait_s: float, max_held: int = 200_000) -> None:
        #: the input topics, in the order that breaks ties between equal event times
        self.topics = tuple(topics)
        self._rank = {t: i for i, t in enumerate(self.topics)}
        self.max_wait_s = max_wait_s
        #: past this many queued records nobody waits any more (bounds memory)
        self.max_held = max_held
        self._queues: dict[int, dict[str, deque[_Queued[T]]]] = {}
        #: per partition number: since when (caller's clock) it has waited for a topic
        self._waiting_since: dict[int, float] = {}
        self.held = 0
        #: records released while a topic-partition that was behind had delivered nothing
        self.forced = 0

    def add(self, topic: str, partition: int, time: int | None, item: T) -> None:
        """Queue a record (in offset order per topic-partition); ``time`` None: it has no
        event time and passes as soon as it is at the head of its queue."""
        lanes = self._queues.get(partition)
        if lanes is None:
            lanes = self._queues[partition] = {t: deque() for t in self.topics}
        lanes[topic].append(_Queued(_NO_TIME if time is None else time, self._rank[topic], item))
        self.held += 1

    def release(self, caught_up: CaughtUp, now: float) -> list[T]:
        """The records that may be processed now, in processing order (per partition
        number in event-time order; partitions one after the other)."""
        out: list[T] = []
        for partition, lanes in self._queues.items():
            if self.held == 0:
                break
            out.extend(self._release_partition(partition, lanes, caught_up, now))
        return out

    def _release_partition(
        self,
        partition: int,
        lanes: dict[str, deque[_Queued[T]]],
        caught_up: CaughtUp,
        now: float,
    ) -> list[T]:
        out: list[T] = []
        queues = list(lanes.items())
        while True:
            best: deque[_Queued[T]] | None = None
            head: _Queued[T] | None = None
            behind = False
            for topic, queue in queues:
                if queue:
                    first = queue[0]
                    if head is None or (first.time, first.rank) < (head.time, head.rank):
                        best, head = queue, first
                elif not behind and not caught_up((topic, partition)):
                    behind = True
            if best is None or head is None:
                self._waiting_since.pop(partition, None)
                return out
            if behind and head.time != _NO_TIME:
                since = self._waiting_since.setdefault(partition, now)
                if now - since < self.max_wait_s and self.held < self.max_held:
                    return out  # the topic that is behind may still bring earlier records
                self.forced += 1
            elif not behind:
                self._waiting_since.pop(partition, None)
            best.popleft()
            self.held -= 1
            out.append(head.item)

    def next_deadline(self) -> float | None:
        """When (caller's clock) a partition that waits will go on regardless; None when
        none waits."""
        if not self._waiting_since:
            return None
        return min(self._waiting_since.values()) + self.max_wait_s

    def drop(self) -> list[T]:
        """Forget every queued record (returned, in no particular order)."""
        out = [q.item for lanes in self._queues.values() for lane in lanes.values() for q in lane]
        self._queues.clear()
        self._waiting_since.clear()
        self.held = 0
        return out
