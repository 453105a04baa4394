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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from app.adapters.broker import free_port
from schemas.topics import INPUTS
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
INPUT_TOPICS = tuple(t.name for t in INPUTS)
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


def consumed(r: Any) -> Consumed:
    """A consumed aiokafka record as :class:`Consumed`."""
    return Consumed(r.key, r.value, {k: v for k, v in (r.headers or ())}, r.partition, r.offset)


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
                out.extend(map(consumed, records))
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


# -- the fault-injection suite's checks (tests/integration/test_faults.py) ------------------


def ready_partitions(worker: WorkerProcess) -> list[int] | None:
    """The partitions ``/readyz`` says the worker serves (None: not ready or no answer)."""
    try:
        url = f"http://127.0.0.1:{worker.web_port}/readyz"
        with urllib.request.urlopen(url, timeout=1) as resp:
            body = orjson.loads(resp.read())
    except OSError:  # 503 (HTTPError is an OSError) or not listening
        return None
    return list(body["partitions"]) if body.get("ready") else None


def wait_until(condition: Any, timeout: float, every: float = 0.1) -> bool:
    """Poll ``condition()`` until it is true (True) or ``timeout`` passed (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(every)


@dataclass
class InputRead:
    """A record read back from an input topic (``topic`` is the logical name)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


def _reader(names: Names) -> AIOKafkaConsumer:
    """A consumer without a group that takes large fetches (1 MB+ records included)."""
    return AIOKafkaConsumer(
        bootstrap_servers=names.bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=16 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )


async def read_input(
    names: Names, logical: Sequence[str], timeout_s: float = 60.0
) -> tuple[list[InputRead], dict[TopicPartition, int]]:
    """Every record of the ``logical`` topics, and each partition's end offset: the high
    watermark of a ``Fetch`` (the local broker's ``ListOffsets`` does not give the log
    end, see ``app.stream.recovery``). Call it once nothing more is being produced."""
    consumer = _reader(names)
    await consumer.start()
    out: list[InputRead] = []
    try:
        tps = [TopicPartition(names.topic(t), p) for t in logical for p in range(PARTITIONS)]
        logical_of = {names.topic(t): t for t in logical}
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout_s
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                out += [
                    InputRead(
                        logical_of[r.topic],
                        r.partition,
                        r.offset,
                        r.key,
                        r.value,
                        {k: v for k, v in (r.headers or ())},
                    )
                    for r in records
                ]
            ends = {tp: consumer.highwater(tp) for tp in tps}
            done = [hw is not None and await consumer.position(tp) >= hw for tp, hw in ends.items()]
            if all(done):
                return out, {tp: int(hw) for tp, hw in ends.items() if hw is not None}
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read the input topics to their end: {ends}")
    finally:
        await consumer.stop()


async def committed_offsets(
    names: Names, group: str, tps: Iterable[TopicPartition]
) -> dict[TopicPartition, int | None]:
    """The consumer group's committed offsets (None: nothing committed)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=names.bootstrap)
    await admin.start()
    try:
        got = await admin.list_consumer_group_offsets(group, partitions=list(tps))
    finally:
        await admin.close()
    return {
        tp: (None if got.get(tp) is None or got[tp].offset < 0 else got[tp].offset) for tp in tps
    }


def input_commit_problems(
    names: Names, ends: Mapping[TopicPartition, int], timeout_s: float = 20.0
) -> list[str]:
    """Wait up to ``timeout_s`` for the app's group (group id = app id) to have committed
    every input partition to its end; what is still behind then (empty: all committed)."""
    behind: dict[TopicPartition, tuple[int | None, int]] = {}

    def all_committed() -> bool:
        nonlocal behind
        got = asyncio.run(committed_offsets(names, names.app_id, ends))
        behind = {tp: (got[tp], end) for tp, end in ends.items() if got[tp] != end}
        return not behind

    if wait_until(all_committed, timeout_s, every=0.5):
        return []
    lag = sum(end - (c or 0) for c, end in behind.values())
    parts = ", ".join(
        f"{tp.topic.removeprefix(names.prefix)}[{tp.partition}] {c}/{end}"
        for tp, (c, end) in sorted(behind.items())
    )
    return [
        f"input not fully committed after {timeout_s:.0f}s: {len(behind)} of {len(ends)} "
        f"partitions behind, {lag} records uncommitted (committed/end: {parts})"
    ]


async def consume_until(
    names: Names,
    logical: str,
    until: Any,
    *,
    idle_s: float = 1.0,
    stall_s: float = 20.0,
    timeout_s: float = 120.0,
) -> tuple[list[Consumed], bool]:
    """Read the whole topic from the start until ``until(records)`` holds and nothing new
    arrived for ``idle_s`` (then ``(records, True)``), or until nothing new arrived for
    ``stall_s`` or ``timeout_s`` passed (``(records, False)``): a stalled worker fails
    the wait quickly instead of running into a long timeout."""
    consumer = _reader(names)
    await consumer.start()
    out: list[Consumed] = []
    try:
        topic = names.topic(logical)
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        start = last_new = time.monotonic()
        held = False
        while True:
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                out.extend(map(consumed, records))
                last_new = time.monotonic()
            now = time.monotonic()
            if batch or not held:
                held = bool(until(out))
            if held and now - last_new >= idle_s:
                return out, True
            if now - last_new >= stall_s or now - start >= timeout_s:
                return out, False
    finally:
        await consumer.stop()


class RssSampler:
    """Samples the resident set size (``VmRSS``) of the processes ``pids()`` names, every
    ``every`` seconds in a thread, and keeps the peak per process."""

    def __init__(self, pids: Any, every: float = 0.1) -> None:
        import threading

        self._pids = pids
        self._every = every
        self.peak_kb: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")

    @staticmethod
    def rss_kb(pid: int) -> int | None:
        try:
            with open(f"/proc/{pid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in self._pids():
                kb = self.rss_kb(pid)
                if kb is not None and kb > self.peak_kb.get(pid, 0):
                    self.peak_kb[pid] = kb
            self._stop.wait(self._every)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def peak_mb(self) -> float:
        return max(self.peak_kb.values(), default=0) / 1024


def _brief_changes(seq: Iterable[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (c["time"], f"{c['data']['from_tier']}->{c['data']['to_tier']}", c["data"]["trigger"])
        for c in seq
    ]


def strict_replay_problems(
    exp: Expected, snap_records: Iterable[Consumed], change_records: Iterable[Consumed]
) -> list[str]:
    """What differs between the worker's final outputs and the batch replay, for EVERY
    customer (no allowance for customers whose events span several topics): the last
    snapshot, ``tier_since`` and ``stage_since`` included, exactly; and the tier changes,
    de-duplicated by id (a crash may repeat outputs, with the same ids), equal to the
    replay's, in order. One summary line per kind of problem (empty: none)."""
    snaps = last_by_key(snap_records)
    emitted = by_key_in_order(change_records)
    multi = {cid for cid, evs in exp.events.items() if len(topics_of(evs)) > 1}
    problems: list[str] = []

    def split(cids: Iterable[str]) -> str:
        cids = set(cids)
        return f"{len(cids & multi)} multi-topic, {len(cids - multi)} single-topic"

    missing = sorted(set(exp.snapshots) - set(snaps))
    if missing:
        problems.append(
            f"snapshots: {len(missing)} of {len(exp.snapshots)} customers have none "
            f"({split(missing)}), e.g. {missing[:5]}"
        )
    unexpected = sorted(set(snaps) - set(exp.snapshots))
    if unexpected:
        problems.append(
            f"snapshots: {len(unexpected)} customers the replay does not know (a bad record "
            f"applied?), e.g. {[c[:40] for c in unexpected[:5]]}"
        )
    diffs: dict[str, list[str]] = {}
    for cid, want in exp.snapshots.items():
        if cid in snaps:
            d = differences(snaps[cid], normalize(want))
            if d:
                diffs[cid] = sorted(d)
    if diffs:
        fields: dict[str, set[str]] = {}
        for cid, ds in diffs.items():
            for d in ds:
                fields.setdefault(d.split(":", 1)[0], set()).add(cid)
        by_field = ", ".join(
            f"{path} {len(cids)} ({len(cids & multi)} multi-topic)"
            for path, cids in sorted(fields.items(), key=lambda kv: -len(kv[1]))[:12]
        )
        examples = "; ".join(f"{cid}: {ds[:3]}" for cid, ds in sorted(diffs.items())[:4])
        problems.append(
            f"snapshots: {len(diffs)} of {len(exp.snapshots)} customers differ from the replay "
            f"({split(diffs)}); customers per field: {by_field}; e.g. {examples}"
        )
    wrong: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
    for cid in sorted(set(exp.changes) | set(emitted)):
        got, want = dedupe_by_id(emitted.get(cid, [])), exp.changes.get(cid, [])
        if got != want:
            wrong[cid] = (got, want)
    if wrong:
        other_ids = {
            cid for cid, (g, w) in wrong.items() if [c["id"] for c in g] != [c["id"] for c in w]
        }
        last_tier_wrong = sorted(
            cid
            for cid, (g, w) in wrong.items()
            if cid in snaps and g and g[-1]["data"]["to_tier"] != snaps[cid]["tier"]
        )
        examples = "; ".join(
            f"{cid}: got {_brief_changes(g)[-3:]} want {_brief_changes(w)[-3:]}"
            for cid, (g, w) in list(wrong.items())[:3]
        )
        problems.append(
            f"tier changes: {len(wrong)} customers' de-duplicated tier changes differ from the "
            f"replay ({split(wrong)}; {len(other_ids)} with other ids, "
            f"{len(last_tier_wrong)} whose last tier change does not name the snapshot's "
            f"tier{', e.g. ' + str(last_tier_wrong[:3]) if last_tier_wrong else ''}); "
            f"e.g. {examples}"
        )
    return problems


def assert_final_state_strictly_equals_replay(
    exp: Expected, snap_records: Iterable[Consumed], change_records: Iterable[Consumed]
) -> None:
    """:func:`strict_replay_problems` as an assertion."""
    problems = strict_replay_problems(exp, snap_records, change_records)
    assert not problems, "\n".join(problems)


_COUNTS = ("purchases", "refunds", "interactions")


def counting_problems(exp: Expected, snap_records: Iterable[Consumed]) -> list[str]:
    """Events lost or counted twice: per customer, the lifetime counts (purchases,
    refunds, interactions) and spend of the last snapshot against the replay's."""
    snaps = last_by_key(snap_records)
    lost: dict[str, int] = {}
    extra: dict[str, int] = {}
    spend: list[str] = []
    for cid, want in exp.snapshots.items():
        w = normalize(want)["lifetime"]
        g = snaps.get(cid, {}).get("lifetime", dict.fromkeys(_COUNTS, 0) | {"spend": 0.0})
        short = sum(max(0, w[k] - g[k]) for k in _COUNTS)
        over = sum(max(0, g[k] - w[k]) for k in _COUNTS)
        if short:
            lost[cid] = short
        if over:
            extra[cid] = over
        if g["spend"] != w["spend"]:
            spend.append(f"{cid}: {g['spend']!r} != {w['spend']!r}")
    problems = []
    if lost:
        problems.append(
            f"events lost: {sum(lost.values())} events of {len(lost)} customers are not "
            f"counted in their last snapshot, e.g. {sorted(lost.items())[:5]}"
        )
    if extra:
        problems.append(
            f"events counted twice (or bad records applied): {sum(extra.values())} extra "
            f"events for {len(extra)} customers, e.g. {sorted(extra.items())[:5]}"
        )
    if spend:
        problems.append(f"lifetime spend differs for {len(spend)} customers, e.g. {spend[:3]}")
    return problems


@dataclass(frozen=True)
class BadRecord:
    """A record the worker must dead-letter: what it is, the reasons that describe it
    (``error.reason`` must be one of them), its key and value."""

    label: str
    reasons: frozenset[str]
    key: bytes | None
    value: bytes | None


#: Dead letters of records over this size may carry a shortened value (Kafka's default
#: largest message is 1 MB: the original bytes may not fit back onto the broker).
DEAD_LETTER_VALUE_LIMIT = 900_000


def dead_letter_problems(
    names: Names, bad: Mapping[tuple[str, int, int], BadRecord], dead: Iterable[Consumed]
) -> tuple[list[str], int]:
    """Check the dead-letter topic against the bad records by origin (full topic name,
    partition, offset). Each bad record must be there with one of its reasons, an
    ``error.detail``, its key and its bytes (for a value over
    :data:`DEAD_LETTER_VALUE_LIMIT`: the bytes or a prefix of them); no dead letter may
    come from a good record. A dead letter may repeat (the worker crashed after sending
    it but before committing the record): duplicates of one origin are tolerated, and
    counted. Returns the problems and the number of duplicates."""
    seen: dict[tuple[str, int, int], int] = {}
    problems: list[str] = []
    wrong_reason: list[str] = []
    wrong_bytes: list[str] = []
    strangers: list[str] = []
    for d in dead:
        h = d.headers
        try:
            origin = (
                h["origin.topic"].decode(),
                int(h["origin.partition"]),
                int(h["origin.offset"]),
            )
        except (KeyError, ValueError):
            problems.append(f"a dead letter without origin headers: {sorted(h)}")
            continue
        seen[origin] = seen.get(origin, 0) + 1
        want = bad.get(origin)
        if want is None:
            strangers.append(f"{origin} reason={h.get('error.reason')!r}")
            continue
        reason = h.get("error.reason", b"").decode()
        if reason not in want.reasons or not h.get("error.detail"):
            wrong_reason.append(f"{want.label}: reason {reason!r} (want {sorted(want.reasons)})")
        value_ok = d.value == want.value or (
            want.value is not None
            and len(want.value) > DEAD_LETTER_VALUE_LIMIT
            and d.value is not None
            and want.value.startswith(d.value)
        )
        if d.key != want.key or not value_ok:
            wrong_bytes.append(want.label)
    missing = [b.label for origin, b in bad.items() if origin not in seen]
    if missing:
        problems.append(
            f"dead letters missing: {len(missing)} of {len(bad)} bad records are not in the "
            f"dead-letter topic: {sorted(set(missing))[:12]}"
        )
    if wrong_reason:
        problems.append(f"dead letters with a wrong reason: {wrong_reason[:8]}")
    if wrong_bytes:
        problems.append(f"dead letters without the original key/bytes: {wrong_bytes[:8]}")
    if strangers:
        problems.append(f"dead letters of records that are not bad: {strangers[:8]}")
    return problems, sum(n - 1 for n in seen.values())
