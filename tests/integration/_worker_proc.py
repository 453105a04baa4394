"""A real ``tierstream worker`` subprocess, and producing/consuming with aiokafka."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from app.broker import free_port
from tests.integration._worker_data import (
    Doc,
    Expected,
    differences,
    normalize,
    same,
    topics_of,
)

TIERSTREAM = str(Path(sys.executable).with_name("tierstream"))
#: The repository root, first on the worker's path: the code under test is this tree's
#: (an editable install made before a package gained its ``__init__.py`` would otherwise
#: resolve that package as an empty namespace).
REPO = Path(__file__).resolve().parents[2]
INPUT_TOPICS = ("purchases", "interactions", "profiles")
PARTITIONS = 4


@dataclass
class Names:
    """Unique app id and topic prefix of one test."""

    bootstrap: str
    app_id: str = field(default_factory=lambda: f"ts-{uuid.uuid4().hex[:10]}")
    prefix: str = ""

    def __post_init__(self) -> None:
        if not self.prefix:
            self.prefix = f"{self.app_id}."

    def topic(self, name: str) -> str:
        return f"{self.prefix}{name}"


class WorkerProcess:
    """``tierstream worker`` in a subprocess with its own app id, topics and web port."""

    def __init__(self, names: Names, workdir: Path, **env: str) -> None:
        self.names = names
        self.workdir = workdir
        self.web_port = free_port()
        self.extra_env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"worker-{names.app_id}.log"
        self.runs = 0

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIERSTREAM_")}
        env.update(
            TIERSTREAM_BROKER=self.names.bootstrap,
            TIERSTREAM_APP_ID=self.names.app_id,
            TIERSTREAM_TOPIC_PREFIX=self.names.prefix,
            TIERSTREAM_WEB_PORT=str(self.web_port),
            TIERSTREAM_PARTITIONS=str(PARTITIONS),
            TIERSTREAM_DATA_DIR=str(self.workdir / "data"),
            TIERSTREAM_SESSION_TIMEOUT_S="6",
            TIERSTREAM_HEARTBEAT_INTERVAL_S="0.5",
            TIERSTREAM_LOG_LEVEL="WARNING",
            # Historical events: the partition clock is event time (the wall clock would
            # age everyone by years), and the timer runs often.
            TIERSTREAM_CLOCK_MODE="event",
            TIERSTREAM_TIMER_INTERVAL_S="0.2",
            PYTHONUNBUFFERED="1",
            PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
        )
        env.update(self.extra_env)
        return env

    def start(self) -> WorkerProcess:
        self.runs += 1
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed by the child's exit
        log.write(f"\n===== run {self.runs} =====\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            [TIERSTREAM, "worker"],
            env=self.env(),
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    def healthz(self) -> dict[str, Any] | None:
        try:
            url = f"http://127.0.0.1:{self.web_port}/healthz"
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status != 200:
                    return None
                return dict(orjson.loads(resp.read()))
        except OSError:
            return None

    def wait_healthy(self, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log()}")
            body = self.healthz()
            if body is not None:
                return body
            time.sleep(0.2)
        raise AssertionError(f"worker not healthy within {timeout}s:\n{self.log()}")

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send ``sig`` and wait for the exit code."""
        proc, self.proc = self.proc, None
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            raise AssertionError(
                f"worker ignored {sig.name} for {timeout}s:\n{self.log()}"
            ) from None

    def log(self, tail: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return "<no log>"


async def create_topics(names: Names, logical: Iterable[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=names.bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(names.topic(n), PARTITIONS, 1) for n in logical], timeout_ms=10_000
        )
    finally:
        await admin.close()


async def produce(
    names: Names,
    docs: Sequence[Doc],
    raw: Sequence[tuple[str, bytes | None, bytes | None]] = (),
) -> list[Any]:
    """Send ``docs`` in order (key = customer_id), then the ``raw`` (topic, key, value);
    returns the record metadata (topic, partition, offset) of everything sent, in order."""
    producer = AIOKafkaProducer(
        bootstrap_servers=names.bootstrap, enable_idempotence=False, linger_ms=5
    )
    await producer.start()
    try:
        futs = [
            await producer.send(
                names.topic(d.topic), orjson.dumps(d.doc), key=d.key.encode("utf-8")
            )
            for d in docs
        ]
        futs += [await producer.send(names.topic(t), v, key=k) for t, k, v in raw]
        await producer.flush()
        return list(await asyncio.gather(*futs))
    finally:
        await producer.stop()


@dataclass
class Consumed:
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]
    partition: int
    offset: int


async def consume(
    names: Names,
    logical: str,
    *,
    until: Any = None,
    idle_s: float = 3.0,
    timeout_s: float = 60.0,
) -> list[Consumed]:
    """Read the whole topic from the start (no consumer group) until ``until(records)`` is
    true and nothing new arrived for ``idle_s``, or ``timeout_s`` passed."""
    topic = names.topic(logical)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=names.bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    out: list[Consumed] = []
    try:
        deadline = time.monotonic() + timeout_s
        parts: set[int] | None = None
        while parts is None and time.monotonic() < deadline:
            parts = consumer.partitions_for_topic(topic)
            if not parts:
                parts = None
                await consumer._client.force_metadata_update()  # topic may not exist yet
                await asyncio.sleep(0.3)
        if parts is None:
            return out
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                for r in records:
                    out.append(
                        Consumed(
                            r.key,
                            r.value,
                            {k: v for k, v in (r.headers or ())},
                            r.partition,
                            r.offset,
                        )
                    )
                    last_new = time.monotonic()
            if time.monotonic() - last_new >= idle_s and (until is None or until(out)):
                break
        return out
    finally:
        await consumer.stop()


def last_by_key(records: Iterable[Consumed]) -> dict[str, dict[str, Any]]:
    """Latest JSON value per key (records of a key are on one partition, in order)."""
    latest: dict[str, dict[str, Any]] = {}
    for r in records:
        assert r.key is not None and r.value is not None
        latest[r.key.decode()] = orjson.loads(r.value)
    return latest


def by_key_in_order(records: Iterable[Consumed]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        assert r.key is not None and r.value is not None
        out.setdefault(r.key.decode(), []).append(orjson.loads(r.value))
    return out


def wait_processed(worker: WorkerProcess, events: int, timeout: float = 60.0) -> int:
    """Wait until this worker process has handled at least ``events`` input events."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = worker.healthz()
        if body is not None and body["counters"]["events"] >= events:
            return int(body["counters"]["events"])
        assert worker.proc is not None and worker.proc.poll() is None, worker.log()
        time.sleep(0.05)
    raise AssertionError(
        f"worker did not process {events} events in {timeout}s "
        f"(health: {worker.healthz()}):\n{worker.log()}"
    )


def dedupe_by_id(seq: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep the first of each output id (downstream de-duplication)."""
    seen: set[str] = set()
    out = []
    for c in seq:
        if c["id"] not in seen:
            seen.add(c["id"])
            out.append(c)
    return out


def assert_final_state_equals_replay(
    exp: Expected, snap_records: Iterable[Consumed], change_records: Iterable[Consumed]
) -> None:
    """After stops, restarts or rebalances (some events processed twice): the last snapshot
    of every customer equals the batch replay's. Customers of one topic: exactly, and their
    tier changes, de-duplicated by id, are the replay's. Customers of several topics (order
    across topics is the order the worker fetched them, so a replay may interleave them
    differently and emit other transitions): all but ``tier_since`` and ``stage_since``
    equal, and the last
    tier change emitted names the final tier."""
    snaps = last_by_key(snap_records)
    emitted = by_key_in_order(change_records)  # per customer, in the order emitted
    assert set(snaps) == set(exp.snapshots)
    for cid, want in exp.snapshots.items():
        got, norm = snaps[cid], normalize(want)
        if len(topics_of(exp.events[cid])) == 1:
            assert got == norm, (cid, differences(got, norm))
            assert dedupe_by_id(emitted.get(cid, [])) == exp.changes.get(cid, []), cid
        else:
            got, norm = dict(got), dict(norm)
            for since in ("tier_since", "stage_since"):
                got.pop(since), norm.pop(since)
            assert same(got, norm), (cid, differences(got, norm))
            assert emitted[cid][-1]["data"]["to_tier"] == norm["tier"], cid
