"""Table recovery that at-least-once can rely on (``app.conf.TableManager``).

Three faults of faust-streaming 0.15.3 + aiokafka 0.14 (the second and third also on
Kafka, the first only with the local Tansu broker) lost events across a worker restart,
each shown by ``tests/integration/test_restart.py``. :class:`TierstreamRecovery` fixes
them where they arise, in Faust's ``Recovery`` (``faust/tables/recovery.py``):

1. **Changelog recovery stopped short of the last records** (:func:`true_end_offsets`).
   ``Recovery._build_highwaters`` (faust/tables/recovery.py:669) takes the end offsets
   from ``ListOffsets`` (aiokafka ``end_offsets``). Tansu 0.6 answers with the base
   offset of the partition's *last record batch* plus one, not the log end offset:
   after one produce request with the records 331, 332, 333 it lists 332 (its ``Fetch``
   responses carry the true high watermark, 334). Recovery ends once offset 331 is read
   (``need_recovery``, recovery.py:796, which also flushes the buffers); 332 and 333
   still arrive but only reach Faust's recovery buffer, which nothing applies after
   recovery ended (``_slurp_changelogs``). Those customers are then processed from the
   state *before* their last write, and writing the result overwrites the newer state:
   the events of that last write are gone (``lifetime.purchases: 35 != 36``).

2. **Records fetched between resume and seek were dropped**
   (:meth:`TierstreamRecovery._seek_then_resume`). ``on_recovery_completed``
   (recovery.py:649-659; ``_resume_streams``, :316-328) resumes the source partitions,
   then awaits ``perform_seek()``, then calls ``flow_control.resume()``. While the seek
   awaits the broker, the drain loop delivers the records aiokafka already holds for
   the resumed partitions into the agent's channel and moves its read offset past them
   (it goes on through the batch it had fetched after ``perform_seek`` reset the read
   offset); ``flow_control.resume()`` then clears the channel queues
   (mode/utils/queues.py:101; channels are ``clear_on_resume``) and the re-fetched
   copies are below the read offset, so they are dropped as already read
   (faust/transport/consumer.py:1209, :1223). Seen as ~110 offsets per partition right
   after the committed ones never processed, and committed over. Here the partitions
   are positioned first and resumed after, with nothing awaited in between.

3. **A restart without committed offsets processed nothing** (the "stall";
   :func:`position_at_committed`). Faust hands aiokafka its *live* set of active
   partitions (faust/transport/consumer.py:802 -> aiokafka ``Fetcher.fetched_records``).
   When changelog reading ends the set becomes empty while a fetch is pending, and
   aiokafka reads an empty set as "every partition" (``if partitions and tp not in
   partitions``, aiokafka/consumer/fetcher.py:1221): it returns all buffered records of
   the *paused* source partitions, advancing their positions to the end, and Faust's
   ``getmany`` drops them (partition not active, consumer.py:761). ``perform_seek``
   repairs that only for partitions with a committed offset (aiokafka's
   ``seek_to_committed`` skips the others, consumer/consumer.py:901), so after a worker was killed
   before its first commit the source partitions stay at their end: 0 events. Here every
   source partition is positioned explicitly: at its committed offset, or else where
   ``consumer_auto_offset_reset`` says.

The bodies of ``_resume_streams`` and ``on_recovery_completed`` are Faust's
(BSD-3-Clause) with the order of seek and resume changed.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any, cast

from aiokafka import TopicPartition
from aiokafka.protocol.fetch import FetchRequest
from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.types.tuples import TP

log = logging.getLogger(__name__)


_FETCH_MAX_WAIT_MS = 100


async def fetch_high_watermarks(client: Any, positions: Mapping[TP, int]) -> dict[TP, int]:
    """The high watermark of each partition, as a ``Fetch`` response states it.

    One small ``Fetch`` per leader (``min_bytes`` 0: no waiting for data; at most 1 byte
    per partition) at the given positions, on an aiokafka client. ``max_wait_time`` is
    not 0: Tansu answers a Fetch with no wait time with no partitions at all. Partitions
    whose leader is unknown or whose response has an error are left out.
    """
    by_node: dict[int, dict[str, list[tuple[int, int, int]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for tp, position in positions.items():
        node = client.cluster.leader_for_partition(TopicPartition(tp.topic, tp.partition))
        if node is not None and node >= 0:
            by_node[node][tp.topic].append((tp.partition, max(position, 0), 1))
    out: dict[TP, int] = {}
    for node, topics in by_node.items():
        request = FetchRequest(_FETCH_MAX_WAIT_MS, 0, 1, 0, list(topics.items()))
        response = await client.send(node, request)
        for topic, partitions in response.topics:
            for partition, error_code, highwater, *_ in partitions:
                if error_code == 0 and highwater is not None and highwater >= 0:
                    out[TP(topic, partition)] = highwater
    return out


async def true_end_offsets(consumer: Any, tps: Iterable[TP]) -> dict[TP, int | None]:
    """End offsets of ``tps`` (Faust's aiokafka consumer): the larger of what
    ``ListOffsets`` lists and the high watermark of a ``Fetch`` at that offset (see the
    module docstring, 1). On Kafka the two agree."""
    ends: dict[TP, int | None] = dict(await consumer.highwaters(*tps))
    listed = {tp: end for tp, end in ends.items() if end is not None}
    thread = consumer._thread
    fetched = await thread.call_thread(
        fetch_high_watermarks, thread._ensure_consumer()._client, listed
    )
    for tp, end in fetched.items():
        if end > listed.get(tp, -1):
            log.info("%s: listed end offset %s, fetch high watermark %s", tp, listed[tp], end)
            ends[tp] = end
    missing = set(listed) - set(fetched)
    if missing:
        log.warning("No fetch high watermark for %s: trusting the listed end offsets", missing)
    return ends


#: Per Faust app: the offset each source partition was positioned at by the last recovery
#: (the timer's watermark, :mod:`app.service.due`, needs to know where reading started).
_START_OFFSETS: weakref.WeakKeyDictionary[Any, dict[TP, int]] = weakref.WeakKeyDictionary()


def start_offsets(app: Any) -> dict[TP, int]:
    """Where the last recovery positioned each source partition of ``app``."""
    return _START_OFFSETS.get(app, {})


async def position_at_committed(
    aio_consumer: Any, tps: Iterable[TP], reset: str, positions: dict[TP, int] | None = None
) -> dict[TP, int | None]:
    """Seek each partition to its committed offset, or by the ``reset`` policy
    (``earliest``/``latest``) when it has none (module docstring, 3). Runs in the
    consumer thread; returns the committed offsets (None: none), and fills ``positions``
    with the offset each partition will be read from."""
    committed: dict[TP, int | None] = {}
    uncommitted = []
    for tp in tps:
        atp = TopicPartition(tp.topic, tp.partition)
        offset = await aio_consumer.committed(atp)
        committed[tp] = offset
        if offset is not None and offset >= 0:
            aio_consumer.seek(atp, offset)
        else:
            uncommitted.append(atp)
    if uncommitted:
        if reset == "latest":
            await aio_consumer.seek_to_end(*uncommitted)
        else:
            await aio_consumer.seek_to_beginning(*uncommitted)
    if positions is not None:
        for tp in committed:
            positions[tp] = await aio_consumer.position(TopicPartition(tp.topic, tp.partition))
    return committed


class TierstreamRecovery(Recovery):  # type: ignore[misc]
    """Faust's ``Recovery`` with the three fixes of the module docstring; it also times
    each recovery, from the assignment to the worker being ready (``/metrics``)."""

    #: monotonic time the recovery under way started (None: none under way)
    recovery_started_at: float | None = None
    #: how long the last finished recovery took, seconds
    last_recovery_s: float | None = None

    async def on_rebalance(
        self, assigned: Any, revoked: Any, newly_assigned: Any, generation_id: int = 0
    ) -> None:
        self.recovery_started_at = time.monotonic()
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)

    async def _build_highwaters(
        self, consumer: Any, tps: set[TP], destination: Counter[TP], title: str
    ) -> None:
        ends = await true_end_offsets(consumer, tps)
        # As Faust: the offset of the last record (its FIXME: -1 is how it commits).
        highwaters = {tp: end - 1 if end is not None else -1 for tp, end in ends.items()}
        self.log.info(
            "Highwater for %s changelog partitions:\n%s",
            title,
            self._highwater_logtable(highwaters, title=title),
        )
        destination.clear()
        destination.update(highwaters)

    async def _seek_stream_partitions(self, tps: set[TP]) -> None:
        """``Consumer.perform_seek`` for the source partitions, but every one of them is
        positioned (committed offset, else the reset policy), not only the committed."""
        consumer: Any = self.app.consumer
        thread = consumer._thread
        positions: dict[TP, int] = {}
        committed: dict[TP, int | None] = await thread.call_thread(
            position_at_committed,
            thread._ensure_consumer(),
            tps,
            self.app.conf.consumer_auto_offset_reset,
            positions,
        )
        _START_OFFSETS[self.app] = positions
        # Faust's bookkeeping, as in Consumer.perform_seek.
        consumer._read_offset.update(
            {tp: off if off is not None and off >= 0 else None for tp, off in committed.items()}
        )
        consumer._committed_offset.update(
            {tp: off if off else None for tp, off in committed.items() if off is not None}
        )

    async def _seek_then_resume(self) -> None:
        consumer = self.app.consumer
        streams = {tp for tp in consumer.assignment() if not self._is_changelog_tp(tp)}
        if streams:
            self.log.info("Seek stream partitions to committed offsets.")
            await self._wait(
                self._seek_stream_partitions(streams),
                timeout=self.app.conf.broker_request_timeout,
            )
            consumer.resume_partitions(streams)

    async def _resume_streams(self, generation_id: int = 0) -> None:
        app = self.app
        await app.on_rebalance_complete.send()
        if app.consumer_generation_id != generation_id:
            self.log.warning("Recovery rebalancing again")
            return
        await self._seek_then_resume()
        await self._resume_processing(standbys_ready=True)

    async def _resume_processing(self, standbys_ready: bool) -> None:
        """Faust's tail of both methods: nothing in it awaits before the flow is on."""
        app = self.app
        self.completed.set()
        started, self.recovery_started_at = self.recovery_started_at, None
        if started is not None:
            self.last_recovery_s = time.monotonic() - started
        app.flow_control.resume()
        app.consumer.resume_flow()
        await cast(Any, app)._fetcher.maybe_start()
        self.tables.on_actives_ready()
        if standbys_ready or not app.assignor.assigned_standbys():
            self.tables.on_standbys_ready()
        app.on_rebalance_end()
        self.log.info("Worker ready")

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        app = self.app
        self.log.info("Restore complete!")
        await app.on_rebalance_complete.send()
        self._set_recovery_ended()
        callbacks = [
            asyncio.ensure_future(
                table.on_recovery_completed(
                    self.actives_for_table[table], self.standbys_for_table[table]
                )
            )
            for table in self.tables.values()
        ]
        if callbacks:
            await asyncio.wait(callbacks)
        if app.consumer_generation_id != generation_id:
            self.log.warning(
                "Recovery rebalancing again app id %r param %r",
                app.consumer_generation_id,
                generation_id,
            )
            return
        await self._seek_then_resume()
        await self._resume_processing(standbys_ready=False)


class TierstreamTableManager(TableManager):  # type: ignore[misc]
    """Faust's table manager with :class:`TierstreamRecovery` (``app.conf.TableManager``)."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = TierstreamRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
