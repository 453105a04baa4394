"""``tierstream produce`` against the real local broker: every event on the right input
topic with the customer id as key, the skipped lines reported."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from typer.testing import CliRunner

from app.adapters.broker import LocalBroker
from app.cli.main import cli
from app.tools.simulate import SimulationConfig, simulate
from schemas.codec import kind_of

pytestmark = pytest.mark.integration

TOPIC = {"purchase": "purchases", "interaction": "interactions", "profile": "profiles"}


async def consume_all(
    bootstrap: str, topics: list[str], expected: int, timeout: float = 30.0
) -> list[tuple[str, int, bytes, bytes]]:
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    got: list[tuple[str, int, bytes, bytes]] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(got) < expected and loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for messages in batches.values():
                got.extend((m.topic, m.partition, m.key, m.value) for m in messages)
        # A little longer: nothing more than expected may arrive.
        batches = await consumer.getmany(timeout_ms=500)
        for messages in batches.values():
            got.extend((m.topic, m.partition, m.key, m.value) for m in messages)
    finally:
        await consumer.stop()
    return got


def test_produce_routes_and_keys_every_event(broker: LocalBroker, tmp_path: Path) -> None:
    docs = simulate(SimulationConfig(customers=40, days=60, seed=9)).events
    path = tmp_path / "events.jsonl"
    bad = [
        b"{oops",
        b'{"event_id":"n1","type":"visit","occurred_at":"2024-01-02"}',
        b'["not", "an", "object"]',
        # Sent although invalid: the worker is the one that dead-letters.
        b'{"event_id":"n2","customer_id":"c-bad","type":"purchase","occurred_at":"nope"}',
    ]
    lines = [orjson.dumps(d) for d in docs]
    lines[5:5] = bad
    path.write_bytes(b"\n".join(lines) + b"\n")
    prefix = f"t{uuid.uuid4().hex[:8]}."

    result = CliRunner().invoke(
        cli,
        [
            "produce",
            str(path),
            "--broker",
            broker.bootstrap,
            "--topic-prefix",
            prefix,
            "--partitions",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "3 invalid line(s)" in result.output
    assert "line 6: malformed_json" in result.output
    assert "line 7: missing_field: no customer_id" in result.output
    sent = len(docs) + 1
    assert f"sent {sent:,} events" in result.output

    topics = [prefix + t for t in TOPIC.values()]
    got = asyncio.run(consume_all(broker.bootstrap, topics, sent))
    assert len(got) == sent
    assert {p for _, p, _, _ in got} == {0, 1, 2}  # the topics were created with 3

    expected = [*docs, orjson.loads(bad[3])]
    by_topic: dict[str, list[dict[str, object]]] = defaultdict(list)
    for topic, _, key, value in got:
        doc = orjson.loads(value)
        assert key == str(doc["customer_id"]).encode()
        by_topic[topic].append(doc)
    for kind, name in TOPIC.items():
        want = [d for d in expected if kind_of(d) == kind]
        assert want, kind
        have = by_topic[prefix + name]
        # Same multiset of events (duplicates included); per key the order is the file's.
        assert sorted(orjson.dumps(d) for d in have) == sorted(orjson.dumps(d) for d in want)
        for cid in {str(d["customer_id"]) for d in want}:
            assert [d for d in have if d["customer_id"] == cid] == [
                d for d in want if d["customer_id"] == cid
            ]


def test_produce_rate_limits(broker: LocalBroker, tmp_path: Path) -> None:
    path = tmp_path / "few.csv"
    rows = [f"c{i % 3},2024-01-{1 + i:02d},{10 + i}" for i in range(20)]
    path.write_text("customer_id,occurred_at,amount\n" + "\n".join(rows) + "\n")
    prefix = f"t{uuid.uuid4().hex[:8]}."
    started = time.monotonic()
    args = ["produce", str(path), "--broker", broker.bootstrap, "--topic-prefix", prefix]
    result = CliRunner().invoke(cli, [*args, "--rate", "20", "--quiet"])
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started >= 0.9  # 20 events at 20/s
    got = asyncio.run(consume_all(broker.bootstrap, [prefix + "purchases"], 20))
    assert len(got) == 20
    doc = orjson.loads(got[0][3])
    assert doc["type"] == "purchase" and isinstance(doc["amount"], int)
    assert str(doc["event_id"]).startswith("few.csv:")
