"""BatchTaker (app.stream.app): what it takes, tracks and acks, with fakes for Faust's
stream, channel and consumer (no broker)."""

from __future__ import annotations

import asyncio
from typing import Any

from app.stream.consumer import BatchTaker


class Message:
    def __init__(self, offset: int, generation: int) -> None:
        self.topic = "t.purchases"
        self.partition = 0
        self.offset = offset
        self.generation_id = generation
        self.tracked = False
        self.acked = False


class Event:
    def __init__(self, message: Message) -> None:
        self.message = message
        self.acks = 0

    def ack(self) -> None:
        self.acks += 1
        self.message.acked = True


class Channel:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Event] = asyncio.Queue()

    def __aiter__(self) -> Channel:
        return self

    async def __anext__(self) -> Event:  # pragma: no cover - not iterated
        raise StopAsyncIteration

    def on_stop_iteration(self) -> None:
        pass


class FlowControl:
    def __init__(self) -> None:
        self.active = True

    def is_active(self) -> bool:
        return self.active


class App:
    def __init__(self) -> None:
        self.consumer_generation_id = 2
        self.flow_control = FlowControl()
        self.topics = type("Topics", (), {"acking_topics": {"t.purchases"}})()
        self.consumer = type("Consumer", (), {"suspend_flow": asyncio.Event(), "unacked": set()})()


class Stream:
    def __init__(self) -> None:
        self.app = App()
        self.channel = Channel()

    async def wait_first(self, *coros: Any, timeout: float | None = None) -> Any:
        tasks = [asyncio.ensure_future(c) for c in coros]
        done, pending = await asyncio.wait(
            tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        for t in pending:
            t.cancel()
        got = [t for t in tasks if t in done]
        return got, [t.result() for t in got], False


def put(stream: Stream, *events: Event) -> None:
    for e in events:
        stream.channel.queue.put_nowait(e)


async def test_events_skipped_in_a_rebalance_are_neither_taken_nor_acked() -> None:
    """An event nobody applied must never be committed: Faust's stream acks what it skips
    (an old generation, or flow control suspended by a rebalance), and the revocation's
    commit could then commit it -- a purchase lost in a rebalance (issue 13, fault 4)."""
    stream = Stream()
    taker = BatchTaker(stream, max_=100, within=0.01)
    consumer = stream.app.consumer
    old, current = Event(Message(0, generation=1)), Event(Message(1, generation=2))
    put(stream, old, current)
    taken = await taker.take(0.05)
    assert taken == [current]
    assert old.acks == 0 and not old.message.tracked  # skipped: not acked, not waited for
    assert current.message.tracked and current.message in consumer.unacked
    stream.app.flow_control.active = False  # a rebalance suspended the flow
    during = Event(Message(2, generation=2))
    put(stream, during)
    assert await taker.take(0.05) == []
    assert during.acks == 0 and not during.message.tracked


async def test_untracked_events_are_not_acked_and_not_waited_for() -> None:
    stream = Stream()
    taker = BatchTaker(stream, max_=100, within=0.01)
    events = [Event(Message(n, generation=2)) for n in range(3)]
    put(stream, *events)
    taken = await taker.take(0.05)
    assert len(taken) == 3 and len(stream.app.consumer.unacked) == 3
    taker.untrack(taken[1:])  # given up (a rebalance, a stop): read again later
    assert stream.app.consumer.unacked == {events[0].message}
    assert [e.acks for e in events] == [0, 0, 0]
    taker.ack(taken[:1])
    assert [e.acks for e in events] == [1, 0, 0]


async def test_a_stopping_stream_ends_the_taking_without_an_error() -> None:
    """The channel raises StopAsyncIteration into a waiting ``get`` when the worker stops;
    it used to escape and Faust logged 'Agent Crashed' at ERROR on every normal stop."""
    stream = Stream()
    taker = BatchTaker(stream, max_=100, within=0.01)

    async def stopping(*coros: Any, timeout: float | None = None) -> Any:
        for c in coros:
            c.close()
        raise StopAsyncIteration

    stream.wait_first = stopping  # type: ignore[method-assign]
    assert await taker.take(1.0) == []
    assert taker.stopped
