"""The app's flush bookkeeping (app.stream.app.TierstreamApp), without a broker: when a
flush is due and why, and what abandoning unflushed work forgets."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.settings import load_settings
from app.stream import app as faust_app
from app.stream.app import TierstreamApp, create_app


class FakeMessage:
    def __init__(self, offset: int, doc: dict[str, Any]) -> None:
        self.topic = "t.purchases"
        self.partition = 0
        self.offset = offset
        self.key = doc["customer_id"].encode()
        self.value = orjson.dumps(doc)
        self.timestamp = doc["occurred_at"] / 1000  # Kafka's, epoch seconds
        self.tracked = False
        self.acked = False


class FakeEvent:
    """What the agent gets from Faust, as far as the app reads it."""

    def __init__(self, offset: int, doc: dict[str, Any]) -> None:
        self.message = FakeMessage(offset, doc)


def purchase(n: int) -> FakeEvent:
    doc = {
        "event_id": f"e{n}",
        "customer_id": f"c{n % 3}",
        "type": "purchase",
        "occurred_at": 1_717_200_000_000 + n,
        "amount": 10.0,
    }
    return FakeEvent(n, doc)


@pytest.fixture
def tapp(tmp_path: Path) -> TierstreamApp:
    return create_app(
        load_settings(
            app_id="flush-check",
            topic_prefix="t.",
            data_dir=str(tmp_path),
            flush_interval_s=0.2,
            # no broker, so no high watermarks: nothing is known to be caught up, and
            # records would wait for the other input topics
            order_wait_s=0,
        )
    )


async def test_a_flush_is_due_after_the_interval_or_at_once_for_a_rebalance(
    tapp: TierstreamApp,
) -> None:
    assert tapp.flush_due() is None and tapp.until_flush() is None  # nothing to flush
    tapp.process([purchase(1), purchase(2)])  # type: ignore[list-item]
    assert tapp.unflushed == 2 and tapp.batch.dirty_customers == 2
    assert tapp.flush_due() is None
    assert 0 < (tapp.until_flush() or 0) <= 0.2
    assert tapp.flush_due(rebalancing=True) == "rebalance"
    await asyncio.sleep(0.25)
    assert tapp.until_flush() == 0.0 and tapp.flush_due() == "interval"


async def test_many_unflushed_events_make_a_flush_due(
    tapp: TierstreamApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(faust_app, "MAX_UNFLUSHED_EVENTS", 3)
    tapp.process([purchase(n) for n in range(3)])  # type: ignore[misc]
    assert tapp.flush_due() == "size"


async def test_abandon_forgets_unflushed_work(tapp: TierstreamApp) -> None:
    tapp.process([purchase(1), purchase(2)])  # type: ignore[list-item]
    tapp.batch.cache.put_back({"x": tapp.batch.flush().states["c1"]})
    tapp.process([purchase(4)])  # type: ignore[list-item]
    tapp.abandon("test")
    assert tapp.unflushed == 0 and tapp.until_flush() is None and tapp.flush_due() is None
    assert tapp.batch.dirty_customers == 0 and len(tapp.batch.cache) == 0


async def test_a_wall_clock_worker_warns_once_of_events_far_older_than_its_clock(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def app(mode: str) -> TierstreamApp:
        return create_app(
            load_settings(
                app_id=f"old-{mode}",
                topic_prefix="t.",
                data_dir=str(tmp_path),
                order_wait_s=0,
                clock_mode=mode,
            )
        )

    wall = app("wall")
    with caplog.at_level("WARNING", logger="app.stream.app"):
        wall.process([purchase(1), purchase(2)])  # type: ignore[list-item]  # 2024
        wall.process([purchase(3)])  # type: ignore[list-item]
    warnings = [
        r.getMessage() for r in caplog.records if "older than the wall clock" in r.getMessage()
    ]
    assert len(warnings) == 1, warnings  # loudly, but not per batch
    assert "TIERSTREAM_CLOCK_MODE=event" in warnings[0]
    assert "c1" not in warnings[0] and "c2" not in warnings[0]  # no customer ids in logs
    caplog.clear()
    with caplog.at_level("WARNING", logger="app.stream.app"):
        app("event").process([purchase(4)])  # type: ignore[list-item]
    assert not [r for r in caplog.records if "older than the wall clock" in r.getMessage()]


async def test_events_of_several_topics_are_processed_in_event_time_order(
    tapp: TierstreamApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app queues what it takes and runs the core over it in event-time order across
    the input topics of a partition (app.service.ordering), waiting for a topic that is behind."""
    highwater = {("t.purchases", 0): 10, ("t.interactions", 0): 10, ("t.profiles", 0): 0}
    monkeypatch.setattr(tapp, "_highwater", lambda topic, partition: highwater[(topic, partition)])
    tapp.order.max_wait_s = 60
    late = [purchase(n) for n in (5, 6)]  # purchases of times +5, +6 ms
    visit_doc = {"event_id": "v1", "customer_id": "c1", "type": "visit"}
    visit = FakeEvent(0, {**visit_doc, "occurred_at": 1_717_200_000_003})  # +3 ms
    visit.message.topic = "t.interactions"
    out = tapp.process(late)  # type: ignore[arg-type]
    assert out.events == 0 and tapp.held == 2  # interactions has unread records: wait
    out = tapp.process([visit])  # type: ignore[list-item]
    assert out.events == 1 and tapp.held == 2  # the visit (+3) first; purchases still wait
    highwater[("t.interactions", 0)] = 1  # interactions caught up
    out = tapp.process([])
    assert out.events == 2 and tapp.held == 0
    assert tapp.unflushed == 3
