"""Stop the worker mid-stream (SIGKILL, then SIGTERM), start it again with the same app
id: state comes back from the changelog, the uncommitted tail is replayed and the core
drops what it had already applied. The final per-customer state equals the batch replay:
nothing lost, nothing counted twice.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faust.types.tuples import TP

from app.adapters.policy_files import load_policy
from app.stream.recovery import fetch_high_watermarks
from tests.integration._worker_data import (
    expected,
    generate,
    partitions_of,
)
from tests.integration._worker_proc import (
    INPUT_TOPICS,
    PARTITIONS,
    Names,
    WorkerProcess,
    assert_final_state_equals_replay,
    consume,
    create_topics,
    produce,
    wait_processed,
)
from tests.integration.test_pipeline import caught_up

pytestmark = pytest.mark.integration


def test_restart_after_kill_and_term_loses_nothing_and_counts_once(
    names: Names, tmp_path: Path
) -> None:
    docs = generate(customers=200, seed=11, duplicates=10)
    policy = load_policy()
    exp = expected(docs, policy, partitions_of(docs, PARTITIONS))
    asyncio.run(create_topics(names, INPUT_TOPICS))
    asyncio.run(produce(names, docs))
    # small batches so that the stops land mid-stream
    worker = WorkerProcess(names, tmp_path, TIERSTREAM_BATCH_SIZE="40")
    runs: list[int] = []
    try:
        worker.start().wait_healthy()
        runs.append(wait_processed(worker, len(docs) // 4))
        assert worker.stop(signal.SIGKILL) == -signal.SIGKILL

        worker.start().wait_healthy()
        runs.append(wait_processed(worker, len(docs) // 4))
        assert worker.stop(signal.SIGTERM) == 0, worker.log()

        worker.start().wait_healthy()
        snap_records = asyncio.run(consume(names, "customers", until=caught_up(exp), timeout_s=30))
        change_records = asyncio.run(consume(names, "tier-changes", idle_s=0.5))
    finally:
        code = worker.stop()
    assert code == 0, worker.log()
    assert all(n < len(docs) for n in runs), f"a run processed everything: {runs}"
    assert_final_state_equals_replay(exp, snap_records, change_records)


def test_changelog_end_is_the_fetch_high_watermark(names: Names) -> None:
    """Recovery reads a changelog partition up to the high watermark a ``Fetch`` reports:
    the local broker's ``ListOffsets`` gives the base offset of the last record batch
    plus one instead of the log end (``app.stream.recovery``, fault 1)."""
    topic = names.topic("end-check")

    async def run() -> tuple[int, dict[TP, int]]:
        await create_topics(names, ["end-check"])
        producer = AIOKafkaProducer(
            bootstrap_servers=names.bootstrap, enable_idempotence=False, linger_ms=50
        )
        await producer.start()
        try:
            await (await producer.send(topic, b"one", partition=0))
            batch = [await producer.send(topic, b"x%d" % i, partition=0) for i in range(3)]
            await asyncio.gather(*batch)  # one produce request: records 1, 2, 3
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=names.bootstrap)
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            listed = (await consumer.end_offsets([tp]))[tp]
            await consumer._client.force_metadata_update()
            fetched = await fetch_high_watermarks(consumer._client, {TP(topic, 0): listed})
            return listed, fetched
        finally:
            await consumer.stop()

    listed, fetched = asyncio.run(run())
    assert fetched == {TP(topic, 0): 4}, (listed, fetched)
    assert listed <= 4
