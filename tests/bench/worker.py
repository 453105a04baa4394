"""The product: the tierstream worker app (``app.worker.build_worker``, exactly what
``tierstream worker`` runs) in a subprocess.

Measured from outside, the same way for both: the benchmark consumes the worker's
``customers`` and ``tier-changes`` outputs and watches the consumer group's committed
offsets on the input. Once the committed offsets reach the end of the input (every event
processed and acked), events/s = input events / (last output timestamp - first output
timestamp); the timestamps are the worker producer's, taken when each output is sent.

    python -m tests.bench.worker      # the child; configured by TIERSTREAM_* env
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from app.adapters.broker import free_port
from tests.bench.subproc import stop_process

INPUTS = ("purchases", "interactions", "profiles")
OUTPUTS = ("customers", "tier-changes")


async def _ensure_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for name in names:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def _committed_total(group_reader: AIOKafkaConsumer, tps: list[TopicPartition]) -> int:
    """Sum of the group's committed offsets (OffsetFetch; the reader never joins)."""
    total = 0
    for tp in tps:
        try:
            offset = await group_reader.committed(tp)
        except Exception:
            return 0
        total += offset or 0
    return total


async def _measure(
    bootstrap: str,
    prefix: str,
    group: str,
    events: int,
    partitions: int,
    proc: subprocess.Popen[bytes],
    timeout_s: float,
    since_ms: int,
) -> float:
    outputs = [f"{prefix}{name}" for name in OUTPUTS]
    tps = [TopicPartition(t, p) for t in outputs for p in range(partitions)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    # Tansu answers the admin client's OffsetFetch badly; a group consumer's is fine.
    group_reader = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    input_tps = [TopicPartition(f"{prefix}purchases", p) for p in range(partitions)]
    await consumer.start()
    await group_reader.start()
    try:
        consumer.assign(tps)
        # Earlier repetitions wrote to the same output topics: start after them.
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, ends[tp])
        first_ts: int | None = None
        last_ts = 0
        outputs_seen = 0
        deadline = time.monotonic() + timeout_s
        next_check = 0.0
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited with code {proc.returncode}")
            batch = await consumer.getmany(timeout_ms=200, max_records=50_000)
            for records in batch.values():
                for r in records:
                    if r.timestamp < since_ms:
                        continue  # an earlier run's (Tansu's "latest" offset can lag)
                    outputs_seen += 1
                    first_ts = r.timestamp if first_ts is None else min(first_ts, r.timestamp)
                    last_ts = max(last_ts, r.timestamp)
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + 0.5
                if await _committed_total(group_reader, input_tps) >= events:
                    # Everything acked and committed; drain outputs still in flight.
                    for _ in range(5):
                        more = await consumer.getmany(timeout_ms=200)
                        for records in more.values():
                            for r in records:
                                if r.timestamp >= since_ms:
                                    last_ts = max(last_ts, r.timestamp)
                    if first_ts is None or last_ts <= first_ts:
                        raise RuntimeError("worker committed the input but sent no outputs")
                    return events / ((last_ts - first_ts) / 1000.0)
        raise TimeoutError(f"worker did not commit {events} events in {timeout_s:.0f}s")
    finally:
        await consumer.stop()
        await group_reader.stop()


def run_worker_bench(
    bootstrap: str,
    prefix: str,
    events: int,
    partitions: int,
    timeout_s: float,
) -> float:
    """One repetition: a fresh app id (consumer group) reads the whole input."""
    asyncio.run(_ensure_topics(bootstrap, [f"{prefix}{n}" for n in INPUTS + OUTPUTS], partitions))
    app_id = f"bench-worker-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="tierstream-bench-") as tmp:
        env = {
            **os.environ,
            "TIERSTREAM_BROKER": bootstrap,
            "TIERSTREAM_APP_ID": app_id,
            "TIERSTREAM_TOPIC_PREFIX": prefix,
            "TIERSTREAM_PARTITIONS": str(partitions),
            "TIERSTREAM_WEB_PORT": str(free_port()),
            "TIERSTREAM_DATA_DIR": tmp,
            "TIERSTREAM_LOG_LEVEL": "WARNING",
            # The input is dated in the past: event-time partition clocks, as for any
            # replay of history (a wall clock would age every customer by years first).
            "TIERSTREAM_CLOCK_MODE": "event",
        }
        cmd = [sys.executable, "-m", "tests.bench.worker"]
        with open(os.path.join(tmp, "worker.log"), "wb") as log:
            since_ms = int(time.time() * 1000)
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
            try:
                return asyncio.run(
                    _measure(
                        bootstrap, prefix, app_id, events, partitions, proc, timeout_s, since_ms
                    )
                )
            except Exception as exc:
                log.flush()
                with open(os.path.join(tmp, "worker.log"), "rb") as f:
                    tail = f.read()[-1500:].decode(errors="replace")
                raise RuntimeError(f"{exc}; worker log tail:\n{tail}") from exc
            finally:
                stop_process(proc)


def main() -> None:
    """The child: build the worker exactly as ``tierstream worker`` does and run it."""
    from app.settings import load_settings
    from app.worker import build_worker

    asyncio.set_event_loop(asyncio.new_event_loop())
    worker = build_worker(load_settings())
    worker.execute_from_commandline()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
