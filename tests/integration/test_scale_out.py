"""Scale out and in mid-stream: a second worker joins the group while the first one has
unflushed work (the first flushes and acks it before it hands partitions over), then the
first leaves with unflushed work again (its partitions' next owner consumes that again from
the committed offsets). The final per-customer state equals the batch replay: nothing
lost, nothing counted twice.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from app.adapters.policy_files import load_policy
from tests.integration._worker_data import (
    Doc,
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


async def produce_slowly(names: Names, docs: list[Doc], seconds: float) -> None:
    chunks = 24
    size = -(-len(docs) // chunks)
    for i in range(0, len(docs), size):
        await produce(names, docs[i : i + size])
        await asyncio.sleep(seconds / chunks)


def wait_revoked(worker: WorkerProcess, timeout: float = 60.0) -> dict[str, Any]:
    """Wait until a rebalance has taken partitions from ``worker``; its counters then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = worker.healthz()
        if body is not None and body["counters"]["revocations"] >= 1:
            return dict(body["counters"])
        time.sleep(0.1)
    raise AssertionError(f"no rebalance took partitions in {timeout}s:\n{worker.log()}")


def test_workers_join_and_leave_mid_stream(names: Names, tmp_path: Path) -> None:
    docs = generate(customers=200, seed=23, duplicates=10)
    policy = load_policy()
    exp = expected(docs, policy, partitions_of(docs, PARTITIONS))
    asyncio.run(create_topics(names, INPUT_TOPICS))
    head, tail = docs[: len(docs) // 3], docs[len(docs) // 3 :]
    asyncio.run(produce(names, head))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    # The first worker would not flush for a minute on its own: when the second one joins,
    # everything it did is unflushed, and the rebalance must make it flush.
    first = WorkerProcess(
        names, tmp_path / "a", TIERSTREAM_BATCH_SIZE="40", TIERSTREAM_FLUSH_INTERVAL_S="60"
    )
    second = WorkerProcess(names, tmp_path / "b", TIERSTREAM_BATCH_SIZE="40")
    try:
        first.start().wait_healthy()
        wait_processed(first, len(head))
        second.start().wait_healthy()
        at_rebalance = wait_revoked(first)
        assert at_rebalance["flushes"] == {"rebalance": 1}, at_rebalance
        assert at_rebalance["customers_written"] > 0
        # The rest arrives while both work; the first leaves (SIGTERM) half-way, with
        # unflushed work again: the second consumes that again from the committed offsets.
        half = len(tail) // 2
        asyncio.run(produce_slowly(names, tail[:half], seconds=4.0))
        assert first.stop() == 0, first.log()
        asyncio.run(produce_slowly(names, tail[half:], seconds=4.0))
        snap_records = asyncio.run(consume(names, "customers", until=caught_up(exp), timeout_s=60))
        change_records = asyncio.run(consume(names, "tier-changes", idle_s=0.5))
        health = second.healthz()
    finally:
        codes = [second.stop(), first.stop()]
    assert codes == [0, 0], first.log() + second.log()
    assert health is not None and health["counters"]["events"] > 0, health
    assert_final_state_equals_replay(exp, snap_records, change_records)


def test_a_worker_of_the_other_clock_mode_refuses_to_join(names: Names, tmp_path: Path) -> None:
    """Workers of one group must share TIERSTREAM_CLOCK_MODE (a partition's clock would
    otherwise change with its owner): the later worker stops with exit code 2 and one
    line saying why; the earlier one runs on."""
    asyncio.run(create_topics(names, INPUT_TOPICS))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = WorkerProcess(names, tmp_path / "a")  # event clock (the tests' default)
    later = WorkerProcess(names, tmp_path / "b", TIERSTREAM_CLOCK_MODE="wall")
    try:
        first.start().wait_healthy()
        later.start()
        assert later.proc is not None
        code = later.proc.wait(60)
        assert code == 2, later.log()
        errors = [
            line for line in later.log(tail=100_000).splitlines() if line.startswith("error:")
        ]
        assert len(errors) == 1 and "TIERSTREAM_CLOCK_MODE=event" in errors[0], later.log()
        assert "Traceback" not in later.log(tail=100_000)
        assert first.proc is not None and first.proc.poll() is None
        assert first.healthz() is not None
    finally:
        later.stop()
        assert first.stop() == 0, first.log()
