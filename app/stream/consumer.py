"""Taking events from Faust: batches straight from an agent's channel queue
(:class:`BatchTaker`), acked only when the pipeline says so, and raw-bytes input topics
(:class:`RawTopic`)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

import faust
from faust.types import EventT as _EventT
from mode.utils.aiter import aiter

#: One consumed record as Faust hands it to a stream (raw bytes key and value).
StreamEvent = _EventT[Any]


class BatchTaker:
    """Batches of events from an agent's stream, taken straight from its channel queue,
    acked only when the caller says so.

    Why not ``Stream.take_events``
    ------------------------------
    ``take_events`` runs every event through the stream's per-event iterator (context
    variable, processors, sensors, an event-loop turn per event): ~30 us an event, a
    quarter of the worker's time. It also acks a batch as soon as the next one is asked
    for, or in a ``finally`` when the worker stops mid-batch: events that were never
    processed (or whose state was not written yet) get committed and are lost.

    What this does instead
    ----------------------
    It iterates the stream's channel itself: ``aiter(stream.channel)`` subscribes (the
    conductor then puts each decoded event into that channel's queue, as for any stream)
    and :meth:`take` takes events from the queue in bulk. Per event it does what
    ``Stream.__aiter__`` does (faust-streaming 0.15.3) that matters here:

    * events of an older consumer generation, or delivered while flow control is
      suspended (a rebalance), are skipped, as the stream skips them -- but, unlike the
      stream, *not acked*: an event nobody applied must never be committed. (Acking them
      lost events: a worker that joined, was handed a partition and revoked again before
      it processed anything acked what it skipped, and the revocation committed it.)
      After the rebalance every source partition is positioned at its committed offset
      again (:mod:`app.stream.recovery`), so skipped events are read again;
    * a message of an acking topic is tracked as unacked (``Consumer.unacked``) until
      acked, so a rebalance (``Consumer.wait_empty``) waits for it; events taken and then
      given up (:meth:`untrack`: a rebalance, a stop, a failure) stop being tracked
      without being acked, so the rebalance does not wait for them and nothing commits
      them.

    Processors are not run (the agent has none), and neither are Faust's sensor hooks
    (``on_message_in/out``, ``on_stream_event_in/out``: ~2 us an event for counters of
    Faust's own monitor, which tierstream does not use; its metrics are its own).
    Events taken and never acked (the worker stops, the agent raises) are consumed again
    after a restart; the core drops what it had already applied.
    """

    def __init__(self, stream: Any, max_: int, within: float) -> None:
        self.stream = stream
        self.max = max_
        self.within = within
        app = stream.app
        self._app = app
        channel: Any = aiter(stream.channel)  # subscribes: events reach its queue
        self._channel = channel
        self._queue = channel.queue
        self._suspend_flow: asyncio.Event = app.consumer.suspend_flow
        self._loop = asyncio.get_running_loop()
        #: the stream ended (the worker stops): no more events will come
        self.stopped = False

    @property
    def suspended(self) -> bool:
        """Flow control is suspended: a rebalance is waiting for unacked events."""
        return self._suspend_flow.is_set()

    async def take(
        self, timeout: float | None = None, *, wake_on_suspend: bool = False
    ) -> list[StreamEvent]:
        """Up to ``max`` events: waits for the first one at most ``timeout`` seconds (None:
        as long as it takes), then at most ``within`` seconds for more. Returns an empty
        list when the timeout passes, the stream stops, or (``wake_on_suspend``) flow
        control is suspended."""
        batch: list[StreamEvent] = []
        try:
            await self._fill(batch, timeout, wake_on_suspend)
        except StopAsyncIteration:  # the channel's way of saying that the stream stopped
            self.stopped = True
        return batch

    async def _fill(
        self, batch: list[StreamEvent], timeout: float | None, wake_on_suspend: bool
    ) -> None:
        app, queue, loop, stream = self._app, self._queue, self._loop, self.stream
        acking_topics = app.topics.acking_topics
        unacked_add = app.consumer.unacked.add
        deadline = None if timeout is None else loop.time() + timeout
        filling = False
        while len(batch) < self.max:
            if queue.empty():
                if wake_on_suspend and self._suspend_flow.is_set():
                    break
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    if not batch:
                        await asyncio.sleep(0)  # never return without letting others run
                    break
                waits: list[Any] = [queue.get()]
                if wake_on_suspend:
                    waits.append(self._suspend_flow.wait())
                got, results, _ = await stream.wait_first(*waits, timeout=left)
                if not got or got[0] is not waits[0]:  # timed out, stopping, or suspended
                    break
                events: list[StreamEvent] = [results[0]]
            else:
                events = [queue.get_nowait()]
            while len(batch) + len(events) < self.max and not queue.empty():
                events.append(queue.get_nowait())
            generation = app.consumer_generation_id
            active = app.flow_control.is_active()
            for event in events:
                message = event.message
                if not active or message.generation_id != generation:
                    continue  # skipped, not acked: read again after the rebalance
                if message.topic in acking_topics and not message.tracked:
                    message.tracked = True  # as Consumer.track_message
                    unacked_add(message)
                batch.append(event)
            if batch and not filling:
                filling = True
                deadline = loop.time() + self.within

    @staticmethod
    def ack(events: Sequence[StreamEvent]) -> None:
        """Mark the events done: Faust commits their offsets on its next commit."""
        for event in events:
            event.ack()

    def untrack(self, events: Iterable[StreamEvent]) -> None:
        """Give events up without acking them: they are no longer waited for by a
        rebalance, and their offsets are not committed (they are read again)."""
        untrack(self._app, events)

    def close(self) -> None:
        self._channel.on_stop_iteration()


def untrack(app: faust.App, events: Iterable[StreamEvent]) -> None:
    """Stop tracking taken events as unacked, without acking them (see
    :meth:`BatchTaker.untrack`)."""
    unacked = app.consumer.unacked
    for event in events:
        message = event.message
        if message.tracked and not message.acked:
            unacked.discard(message)
            message.tracked = False


class RawTopic(faust.Topic):  # type: ignore[misc]
    """A topic of raw bytes: events are built without Faust's schema machinery (the
    conductor calls :meth:`decode` once per message; the core's plumbing decodes)."""

    async def decode(self, message: Any, *, propagate: bool = False) -> StreamEvent:
        event: StreamEvent = self.app.create_event(
            message.key, message.value, message.headers, message
        )
        return event
