"""A faster consumer hand-off for Faust, with Faust's commit/ack semantics unchanged.

Where stock Faust spends its time
---------------------------------
``faust.transport.consumer.Consumer._drain_messages`` hands every fetched message to the
conductor with::

    await self.wait_first(callback(message), self.suspend_flow.wait())

``Service.wait_first`` wraps its arguments *and* the service's ``stopped``/``crashed``
events in four tasks and runs ``asyncio.wait`` over them, then cancels the three losers:
four task creations, an ``asyncio.wait`` and at least one event-loop turn per message,
although the callback (``Conductor.on_message``: decode, put into the stream's queue)
almost never has anything to wait for. Profiled (py-spy) on a bare ``async for`` agent,
this drain loop is a third of the event-loop thread's time, ``wait_first`` alone ~27 %.
``getmany`` also asks the consumer thread for the high-water mark once per message.

What this module changes
------------------------
:class:`Consumer` replaces only ``_drain_messages``:

* It takes one fetched batch at a time (same ``_wait_next_records`` as stock: flow
  control, active/paused/buffered partitions, seek-to-committed when the flow is
  stopped), records high-water marks once per partition per batch, and delivers the
  messages in the scheduler's round-robin order.
* Each delivery runs ``callback(message)`` (the unchanged ``Conductor.on_message``) *inline*:
  the coroutine is stepped once; if it finishes without suspending -- the common case --
  the message is delivered at the cost of a function call. Only if it suspends (flow
  control, producer buffer full, a stream queue full) is the rest of that same coroutine
  wrapped in a task and raced against ``suspend_flow`` with ``wait_first``, exactly as
  stock Faust does for every message. So a rebalance still abandons a blocked delivery.
* Backpressure is batch-wise instead of message-wise: when a partition's stream queue
  reports high pressure (``on_buffer_full``, the hook the conductor already calls), the
  drain loop, before delivering that partition's next message, waits until the queue has
  drained (``on_buffer_drop``) instead of trickling one message per event-loop turn into
  a full queue.

Why commit/ack semantics are unchanged
--------------------------------------
Nothing here acks or commits. Messages reach streams through the same conductor callback,
streams ack them as before, offsets are committed by the stock ``commit()`` from the
acked offsets (``_acked``/gaps), so an offset is committed only after its message has
been acked by every stream: at-least-once, as in stock Faust. Per partition, messages
are delivered in offset order, each at most once per fetch; the read offset, gap and
``broker_commit_every`` bookkeeping are the stock code's, line for line. A generation
change or stopped flow stops delivery of the rest of the batch, as stock ``getmany`` does.

Use: ``fastpath.install(app)`` before the worker starts (see :func:`install`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator, Iterable
from types import CoroutineType
from typing import Any

import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, ConsumerMessage
from mode import ServiceT

__all__ = ["Consumer", "Transport", "install", "installed"]

#: Release the event loop at least this often while delivering one large batch.
YIELD_EVERY = 1000
#: Longest wait for stream queues to drain before delivering again regardless (a queue
#: cleared by a rebalance never reports its drop; waiting longer would only stall).
PRESSURE_WAIT_S = 1.0


class _Resume:
    """Awaitable that continues a coroutine that has already been stepped once.

    ``__await__`` is what ``await coro`` (``yield from``) does, starting from the value
    the first step yielded, so the enclosing task waits on the same future."""

    __slots__ = ("coro", "first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, pending = self.coro, self.first
        while True:
            try:
                sent = yield pending
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                try:
                    pending = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    pending = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


async def _resume(coro: Coroutine[Any, Any, Any], first: Any) -> Any:
    return await _Resume(coro, first)


class Consumer(faust_aiokafka.Consumer):  # type: ignore[misc]
    """The aiokafka consumer of Faust with a batch-wise drain loop (see module doc)."""

    #: Partitions whose stream queue reported high pressure and has not drained yet.
    _pressured: set[TP]
    #: Set whenever a partition leaves :attr:`_pressured`.
    _pressure_dropped: asyncio.Event

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pressured = set()
        self._pressure_dropped = asyncio.Event()

    # -- backpressure ------------------------------------------------------------------
    def on_buffer_full(self, tp: TP) -> None:
        super().on_buffer_full(tp)
        self._pressured.add(tp)

    def on_buffer_drop(self, tp: TP) -> None:
        super().on_buffer_drop(tp)
        self._release_pressure((tp,))

    def _release_pressure(self, tps: Iterable[TP]) -> None:
        self._pressured.difference_update(tps)
        self._pressure_dropped.set()

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        # A revoked partition's queue is cleared without a pressure-drop callback.
        self._release_pressure(revoked)
        await super().on_partitions_revoked(revoked)

    async def _wait_for_pressure_drop(self, tp: TP) -> None:
        """Wait until ``tp``'s stream queue has drained (or the flow is suspended, or the
        service stops). After :data:`PRESSURE_WAIT_S` deliver anyway: a full queue still
        blocks the conductor, and the slow path then waits per message as stock does."""
        deadline = self.loop.time() + PRESSURE_WAIT_S
        while tp in self._pressured and not self.suspend_flow.is_set():
            remaining = deadline - self.loop.time()
            if remaining <= 0:
                self._pressured.discard(tp)
                break
            self._pressure_dropped.clear()
            done, _, stopped = await self.wait_first(
                self._pressure_dropped.wait(), self.suspend_flow.wait(), timeout=remaining
            )
            if stopped and not done and self.should_stop:
                break

    # -- delivery ----------------------------------------------------------------------
    async def _deliver_blocked(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        """The slow path: the callback suspended; finish it unless the flow is suspended
        first (the stock per-message behaviour)."""
        task = asyncio.ensure_future(_resume(coro, first))
        await self.wait_first(task, self.suspend_flow.wait())

    async def _fetch_batch(self) -> tuple[list[tuple[TP, ConsumerMessage]], set[TP] | None]:
        """One fetched batch as ``(tp, message)`` in the scheduler's round-robin order, and
        the active partitions it was fetched for (stock ``getmany``, except that high-water
        marks are read once per partition per batch instead of once per message)."""
        records, active_partitions = await self._wait_next_records(1.0)
        if records is None or self.should_stop:
            return [], active_partitions
        if not self.flow_active:
            self.log.dev("getmany called while flow not active. Seek back to committed offsets.")
            try:
                await self.perform_seek()
            except Exception as ex:
                self.log.warning(f"exception performing seek when flow not active {ex}")
            return [], active_partitions
        track_end_offset = self.app.monitor.track_tp_end_offset
        for tp in records:
            track_end_offset(tp, self.highwater(tp))
        to_message = self._to_message
        batch = [(tp, to_message(tp, record)) for tp, record in self.scheduler.iterate(records)]
        return batch, active_partitions

    async def _drain_messages(self, fetcher: ServiceT) -> None:  # pragma: no cover - loop
        callback = self.callback
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set  # type: ignore[attr-defined]
        read_offset = self._read_offset
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        app = self.app
        pressured = self._pressured
        buffered = self._buffered_partitions
        sleep = asyncio.sleep
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                batch, active = await self._fetch_batch()
                generation_id = app.consumer_generation_id
                since_yield = 0
                for tp, message in batch:
                    if not self.flow_active or app.consumer_generation_id != generation_id:
                        break  # the rest is fetched again from the committed offsets
                    if active is not None and tp not in active and tp not in buffered:
                        continue  # paused or revoked meanwhile (stock getmany skips it too)
                    if tp in pressured:
                        await self._wait_for_pressure_drop(tp)
                        if not self.flow_active or self.should_stop:
                            break
                    since_yield += 1
                    if since_yield >= YIELD_EVERY:
                        since_yield = 0
                        await sleep(0)
                    offset = message.offset
                    r_offset = read_offset[tp]
                    if r_offset is None or offset >= r_offset:
                        gap = offset - (r_offset or 0)
                        if gap > 1 and r_offset and acks_enabled_for(message.topic):
                            await self._add_gap(tp, r_offset + 1, offset)
                        if commit_every is not None and self._n_acked >= commit_every:
                            self._n_acked = 0
                            await self.commit()
                        coro = callback(message)
                        if type(coro) is not CoroutineType:  # not the stock conductor's
                            await self.wait_first(coro, self.suspend_flow.wait())
                        else:
                            try:
                                first = coro.send(None)
                            except StopIteration:
                                pass  # delivered without suspending: the common case
                            else:
                                await self._deliver_blocked(coro, first)
                        read_offset[tp] = offset
                    else:
                        self.log.dev("DROPPED MESSAGE ROFF %r", offset)
                unset_flag(CONSUMER_FETCHING)
                # Once per batch: let the streams run on what was just delivered.
                await sleep(0)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)


class Transport(faust_aiokafka.Transport):  # type: ignore[misc]
    """Faust's aiokafka transport with :class:`Consumer` as its consumer."""

    Consumer = Consumer


def install(app: faust.App) -> None:
    """Make ``app`` consume through :class:`Consumer`. Call it once the app is built and
    before the worker starts (before anything creates ``app.consumer``)."""
    if installed(app):
        return
    if app._consumer is not None:
        raise RuntimeError("fastpath.install(app) must run before the app's consumer exists")
    app.transport = Transport(app.conf.broker_consumer, app)


def installed(app: faust.App) -> bool:
    """True when ``app`` consumes through :class:`Consumer`."""
    return isinstance(app._transport, Transport)
