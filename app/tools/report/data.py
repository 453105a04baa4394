"""The input of ``tierstream report``: the CloudEvents a ``classify --out`` file or the
output topics carry (tier changes, lifecycle changes, upgrade candidates, churn warnings
and clearings) reduced to :class:`Outputs`, and customer snapshots (``classify
--customers-out`` or the compacted ``customers`` topic) reduced to the latest per
customer. Customer ids are kept only to follow customers, never written.

:func:`load_outputs` / :func:`load_snapshots` read files, :func:`parse_outputs` /
:func:`parse_snapshots` read lines from anywhere (the demo passes what it consumed),
:func:`load_from_broker` reads the topics of a running deployment (:func:`read_topics`).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from app.domain.errors import InvalidEvent, TierstreamError
from schemas.codec import EVENT_TYPES, parse_timestamp
from schemas.topics import CUSTOMERS, EVENT_TOPICS

TIER_CHANGED = EVENT_TYPES["tier_change"]
LIFECYCLE_CHANGED = EVENT_TYPES["lifecycle_change"]
UPGRADE_CANDIDATE = EVENT_TYPES["upgrade_candidate"]
CHURN_WARNING = EVENT_TYPES["churn_warning"]
CHURN_CLEARED = EVENT_TYPES["churn_cleared"]
#: Every output type: one the report has no view of yet is still counted (by policy).
KNOWN_TYPES = frozenset(EVENT_TYPES.values())
#: The output topics (logical names) whose events the report reads: all of them.
OUTPUT_TOPICS = EVENT_TOPICS
CUSTOMERS_TOPIC = CUSTOMERS.name


class ReportError(TierstreamError):
    """The input cannot be read or holds nothing to report on."""


# --- input ------------------------------------------------------------------------------


@dataclass(slots=True)
class Outputs:
    """The outputs of a run, reduced to what the report needs. Customer ids are kept
    only to follow customers (their latest tier and stage), never shown."""

    #: (time ms, customer, from tier or None, to tier, direction)
    tier_changes: list[tuple[int, str, str | None, str, str]] = field(default_factory=list)
    #: (time ms, customer, from stage or None, to stage, tier or None)
    lifecycle: list[tuple[int, str, str | None, str, str | None]] = field(default_factory=list)
    upgrades: int = 0
    #: (time ms, severity, previous severity or None)
    warnings: list[tuple[int, str, str | None]] = field(default_factory=list)
    #: (time ms, the highest severity the episode reached)
    cleared: list[tuple[int, str]] = field(default_factory=list)
    #: "name vVERSION" -> events carrying it
    policies: Counter[str] = field(default_factory=Counter)
    lines: int = 0
    skipped: int = 0
    sources: list[str] = field(default_factory=list)

    @property
    def events(self) -> int:
        return (
            len(self.tier_changes)
            + len(self.lifecycle)
            + self.upgrades
            + len(self.warnings)
            + len(self.cleared)
        )


def _policy_label(data: Mapping[str, Any]) -> str | None:
    pol = data.get("policy")
    if isinstance(pol, Mapping) and pol.get("name") is not None:
        return f"{pol.get('name')} v{pol.get('version')}"
    return None


def as_number(value: Any) -> float:
    """A finite int or float as a float; anything else (bools, strings, NaN) 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value) if math.isfinite(value) else 0.0


def parse_outputs(
    lines: Iterable[bytes | str], into: Outputs | None = None, exclude: Iterable[str] = ()
) -> Outputs:
    """Add the CloudEvents of ``lines`` (JSON, one per line; blank lines ignored) to
    ``into``. Lines that are not JSON objects, of a type that is no tierstream output
    (:data:`KNOWN_TYPES`) or missing the fields used are counted in ``skipped``; an output
    the report has no view of yet counts only by its policy. Customers in ``exclude`` are
    left out."""
    out = into if into is not None else Outputs()
    excluded = set(exclude)
    for raw in lines:
        if not raw.strip():
            continue
        out.lines += 1
        try:
            ce = orjson.loads(raw)
            typ = ce["type"]
            data = ce["data"]
            cid = str(data["customer_id"])
            if cid in excluded:
                continue
            at = parse_timestamp(ce["time"], "time")
            if typ == TIER_CHANGED:
                frm = data.get("from_tier")
                out.tier_changes.append(
                    (
                        at,
                        cid,
                        None if frm is None else str(frm),
                        str(data["to_tier"]),
                        str(data.get("direction") or ""),
                    )
                )
            elif typ == LIFECYCLE_CHANGED:
                frm = data.get("from_stage")
                tier = data.get("tier")
                out.lifecycle.append(
                    (
                        at,
                        cid,
                        None if frm is None else str(frm),
                        str(data["to_stage"]),
                        None if tier is None else str(tier),
                    )
                )
            elif typ == UPGRADE_CANDIDATE:
                out.upgrades += 1
            elif typ == CHURN_WARNING:
                prev = data.get("previous_severity")
                out.warnings.append(
                    (at, str(data["severity"]), None if prev is None else str(prev))
                )
            elif typ == CHURN_CLEARED:
                out.cleared.append((at, str(data.get("severity") or "?")))
            elif typ not in KNOWN_TYPES:
                out.skipped += 1
                continue
        except (orjson.JSONDecodeError, KeyError, TypeError, InvalidEvent):
            out.skipped += 1
            continue
        label = _policy_label(data)
        if label is not None:
            out.policies[label] += 1
    return out


def parse_snapshots(
    lines: Iterable[bytes | str], exclude: Iterable[str] = ()
) -> tuple[dict[str, dict[str, Any]], int]:
    """Customer snapshots (JSON, one per line) -> the latest per customer (by ``as_of``,
    a later line winning ties, as compaction keeps the last record) and the number of
    lines skipped (not an object with a ``customer_id``)."""
    latest: dict[str, dict[str, Any]] = {}
    skipped = 0
    excluded = set(exclude)
    for raw in lines:
        if not raw.strip():
            continue
        try:
            doc = orjson.loads(raw)
            cid = str(doc["customer_id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            skipped += 1
            continue
        if not isinstance(doc, dict):
            skipped += 1
            continue
        if cid in excluded:
            continue
        prev = latest.get(cid)
        if prev is None or as_number(doc.get("as_of")) >= as_number(prev.get("as_of")):
            latest[cid] = doc
    return latest, skipped


def _read_lines(path: Path) -> list[bytes]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ReportError(f"cannot read {path}: {exc.strerror or exc}") from None
    return data.splitlines()


def load_outputs(path: Path) -> Outputs:
    """Read a ``classify --out`` file (CloudEvents JSON Lines)."""
    lines = _read_lines(path)
    out = parse_outputs(lines)
    out.sources.append(path.name)
    if out.lines and out.events == 0:
        raise ReportError(
            f"{path} holds no tierstream outputs ({out.lines} lines, none a tier change, "
            "lifecycle change, upgrade candidate or churn warning CloudEvent)"
        )
    return out


def load_snapshots(path: Path) -> dict[str, dict[str, Any]]:
    """Read customer snapshots (``classify --customers-out``, or the customers topic
    dumped as JSON Lines)."""
    lines = _read_lines(path)
    snaps, skipped = parse_snapshots(lines)
    if skipped and not snaps:
        raise ReportError(f"{path} holds no customer snapshots ({skipped} unreadable lines)")
    return snaps


async def read_topics(
    settings: Any, logical: Sequence[str], idle_s: float = 1.5, timeout_s: float = 60.0
) -> dict[str, list[bytes]]:
    """The values of each topic (``settings.topic(name)``) from the beginning, without a
    consumer group: until every partition is past the end offset it had at the call and
    nothing new came for ``idle_s`` (the local broker's end offsets can lag the records
    it serves), or ``timeout_s`` passed. A topic that does not exist gives an empty list."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        **settings.kafka_client_kwargs(), group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    result: dict[str, list[bytes]] = {name: [] for name in logical}
    try:
        existing = await consumer.topics()
        tps: list[Any] = []
        topic_of: dict[str, str] = {}
        for name in logical:
            topic = settings.topic(name)
            if topic not in existing:
                continue
            topic_of[topic] = name
            tps.extend(
                TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
            )
        if not tps:
            return result
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout_s
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            for tp, records in batch.items():
                if records:
                    last_new = time.monotonic()
                for r in records:
                    if r.value is not None:
                        result[topic_of[tp.topic]].append(r.value)
            if time.monotonic() - last_new >= idle_s:
                positions = [await consumer.position(tp) for tp in tps]
                if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                    break
    finally:
        await consumer.stop()
    return result


def load_from_broker(settings: Any) -> tuple[Outputs, dict[str, dict[str, Any]]]:
    """Outputs and the latest snapshots read from the topics of a running deployment."""
    topics = asyncio.run(
        asyncio.wait_for(read_topics(settings, [*OUTPUT_TOPICS, CUSTOMERS_TOPIC]), 90)
    )
    out = Outputs()
    for name in OUTPUT_TOPICS:
        parse_outputs(topics[name], out)
    out.sources.append(f"topics {settings.topic('*')} on {settings.broker}")
    snaps, _ = parse_snapshots(topics[CUSTOMERS_TOPIC])
    return out, snaps
