"""``tierstream report``: a self-contained HTML page about a run's outputs.

Input: the CloudEvents a ``classify --out`` file (or the output topics) carries — tier
changes, lifecycle changes, upgrade candidates, churn warnings and clearings — and,
optionally, customer snapshots (``classify --customers-out`` or the compacted
``customers`` topic). Output: one HTML file with inline CSS and inline SVG charts drawn
here (no scripts, fonts, images or network), showing aggregates only: customer ids are
read to follow each customer but never written.

The page: a header (policy, period, counts), tier population over time, the tier
transition matrix, churn warnings over time by severity (and clearings), per-tier revenue
share (needs snapshots) and lifecycle stages by tier.

:func:`load_outputs` / :func:`load_snapshots` read files, :func:`parse_outputs` /
:func:`parse_snapshots` read lines from anywhere (the demo passes what it consumed),
:func:`build_report` computes; :mod:`app.tools.report.page` draws the page
(:func:`~app.tools.report.page.render_html`) and writes it
(:func:`~app.tools.report.page.write_report`).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from app.domain.errors import InvalidEvent, TierstreamError
from app.domain.lifecycle import STAGES
from schemas.codec import parse_timestamp

TIER_CHANGED = "io.tierstream.tier.changed.v1"
LIFECYCLE_CHANGED = "io.tierstream.lifecycle.changed.v1"
UPGRADE_CANDIDATE = "io.tierstream.upgrade.candidate.v1"
CHURN_WARNING = "io.tierstream.churn.warning.v1"
CHURN_CLEARED = "io.tierstream.churn.cleared.v1"
KNOWN_TYPES = (TIER_CHANGED, LIFECYCLE_CHANGED, UPGRADE_CANDIDATE, CHURN_WARNING, CHURN_CLEARED)
#: The output topics (logical names) whose events the report reads.
OUTPUT_TOPICS = ("tier-changes", "lifecycle-changes", "upgrade-candidates", "churn-warnings")
CUSTOMERS_TOPIC = "customers"

NO_TIER = "none"  # the "from" of a customer's first tier
DAY_MS = 86_400_000

DEFAULT_SEVERITIES = ("critical", "warning", "watch")


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


def parse_outputs(
    lines: Iterable[bytes | str], into: Outputs | None = None, exclude: Iterable[str] = ()
) -> Outputs:
    """Add the CloudEvents of ``lines`` (JSON, one per line; blank lines ignored) to
    ``into``. Lines that are not JSON objects, of an unknown type or missing the fields
    used are counted in ``skipped``. Customers in ``exclude`` are left out."""
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
            else:
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
        if prev is None or _num(doc.get("as_of")) >= _num(prev.get("as_of")):
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

    from app.produce import client_kwargs

    consumer = AIOKafkaConsumer(**client_kwargs(settings), group_id=None, enable_auto_commit=False)
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


# --- computation ------------------------------------------------------------------------


def infer_order(
    items: Iterable[str], better: Iterable[tuple[str, str]], fallback: Sequence[str] = ()
) -> list[str]:
    """Order ``items`` best (or most severe) first from observed pairs (a, b) meaning
    "a ranks above b": a topological order, ties (and cycles) broken by the position in
    ``fallback``, then by name."""
    names = set(items)
    above: dict[str, set[str]] = defaultdict(set)  # b -> the a's ranking above it
    for a, b in better:
        if a != b and a in names and b in names:
            above[b].add(a)

    def key(name: str) -> tuple[int, str]:
        return (fallback.index(name) if name in fallback else len(fallback), name)

    order: list[str] = []
    left = set(names)
    while left:
        free = [n for n in left if not (above[n] & left)]
        pick = min(free or left, key=key)
        order.append(pick)
        left.discard(pick)
    return order


@dataclass(frozen=True, slots=True)
class Series:
    """Values per time bucket: ``starts[i]`` is the bucket's first ms."""

    bucket_days: int
    starts: list[int]
    values: dict[str, list[int]]


@dataclass(slots=True)
class Report:
    title: str
    policies: list[str]
    sources: list[str]
    period: tuple[int, int] | None
    tiers: list[str]
    customers: int
    counts: dict[str, int]
    directions: Counter[str]
    population: Series | None
    final_tiers: Counter[str]
    #: (from tier or NO_TIER, to tier) -> count
    transitions: Counter[tuple[str, str]]
    severities: list[str]
    churn: Series | None
    cleared: Series | None
    #: None when there are no snapshots
    revenue: list[RevenueRow] | None
    stages: list[str]
    #: stage -> tier -> customers (final stage and tier of each customer)
    stage_tiers: dict[str, Counter[str]]
    stage_source: str
    skipped: int
    snapshot_customers: int


@dataclass(frozen=True, slots=True)
class RevenueRow:
    tier: str
    customers: int
    spend_365d: float
    lifetime_spend: float


def _num(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value) if math.isfinite(value) else 0.0


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def bucket_days_for(span_ms: int) -> int:
    days = span_ms / DAY_MS
    if days <= 120:
        return 1
    if days <= 1500:
        return 7
    return 30


def _day_start(ms: int) -> int:
    return ms - ms % DAY_MS


def population_series(
    changes: Sequence[tuple[int, str, str | None, str, str]],
    tiers: Sequence[str],
    t0: int,
    t1: int,
    bucket_days: int,
) -> Series:
    """Customers per tier at the end of each bucket (the tier changes replayed in time
    order: a customer counts in their latest tier)."""
    width = bucket_days * DAY_MS
    start = _day_start(t0)
    n = max(1, (t1 - start) // width + 1)
    starts = [start + i * width for i in range(n)]
    values = {t: [0] * n for t in tiers}
    current: dict[str, str] = {}
    counts: Counter[str] = Counter()
    ordered = sorted(changes, key=lambda c: c[0])
    j = 0
    for i in range(n):
        end = starts[i] + width
        while j < len(ordered) and ordered[j][0] < end:
            _, cid, _, to, _ = ordered[j]
            old = current.get(cid)
            if old is not None:
                counts[old] -= 1
            current[cid] = to
            counts[to] += 1
            j += 1
        for t in tiers:
            values[t][i] = counts[t]
    return Series(bucket_days, starts, values)


def count_series(
    items: Iterable[tuple[int, str]], names: Sequence[str], t0: int, t1: int, bucket_days: int
) -> Series:
    """How many items of each name fall in each bucket."""
    width = bucket_days * DAY_MS
    start = _day_start(t0)
    n = max(1, (t1 - start) // width + 1)
    values = {name: [0] * n for name in names}
    for at, name in items:
        i = min(max((at - start) // width, 0), n - 1)
        if name in values:
            values[name][i] += 1
    return Series(bucket_days, [start + i * width for i in range(n)], values)


def build_report(
    outputs: Outputs,
    snapshots: Mapping[str, Mapping[str, Any]] | None = None,
    tier_order: Sequence[str] | None = None,
    severity_order: Sequence[str] | None = None,
    title: str = "tierstream report",
) -> Report:
    """Everything the page shows, computed from the outputs (and snapshots)."""
    snaps = dict(snapshots or {})
    changes = sorted(outputs.tier_changes, key=lambda c: c[0])
    # Tiers: every tier seen, best first.
    seen: set[str] = {c[3] for c in changes}
    seen.update(c[2] for c in changes if c[2] is not None)
    seen.update(str(s["tier"]) for s in snaps.values() if s.get("tier") is not None)
    pairs: list[tuple[str, str]] = []
    for _, _, frm, to, direction in changes:
        if frm is None:
            continue
        if direction == "up":
            pairs.append((to, frm))
        elif direction == "down":
            pairs.append((frm, to))
    if tier_order:
        tiers = list(dict.fromkeys(tier_order)) + sorted(seen - set(tier_order))
    else:
        tiers = infer_order(seen, pairs)

    times = [c[0] for c in changes]
    times += [c[0] for c in outputs.lifecycle]
    times += [w[0] for w in outputs.warnings] + [c[0] for c in outputs.cleared]
    period = (min(times), max(times)) if times else None

    # The latest tier and stage of every customer.
    final_tier: dict[str, str] = {cid: to for _, cid, _, to, _ in changes}
    final_stage: dict[str, str] = {}
    for _, cid, _, to, tier in sorted(outputs.lifecycle, key=lambda c: c[0]):
        final_stage[cid] = to
        if tier is not None and cid not in final_tier:
            final_tier[cid] = tier
    stage_source = "lifecycle changes"
    if snaps:
        stage_source = "customer snapshots"
        for cid, s in snaps.items():
            if s.get("tier") is not None:
                final_tier[cid] = str(s["tier"])
            if s.get("stage") is not None:
                final_stage[cid] = str(s["stage"])
    customers = len(set(final_tier) | set(final_stage) | set(snaps))

    transitions: Counter[tuple[str, str]] = Counter(
        (NO_TIER if frm is None else frm, to) for _, _, frm, to, _ in changes
    )

    population: Series | None = None
    churn: Series | None = None
    cleared: Series | None = None
    severity_seen = {w[1] for w in outputs.warnings} | {c[1] for c in outputs.cleared}
    if severity_order:
        severities = [s for s in severity_order if s in severity_seen]
        severities += sorted(severity_seen - set(severities))
    else:
        severities = infer_order(
            severity_seen,
            [(s, p) for _, s, p in outputs.warnings if p is not None],
            DEFAULT_SEVERITIES,
        )
    if period is not None:
        t0, t1 = period
        days = bucket_days_for(t1 - t0)
        if changes:
            population = population_series(changes, tiers, t0, t1, days)
        if outputs.warnings or outputs.cleared:
            cdays = 1 if days == 1 and (t1 - t0) <= 60 * DAY_MS else max(days, 7)
            churn = count_series(
                ((w[0], w[1]) for w in outputs.warnings), severities, t0, t1, cdays
            )
            cleared = count_series(
                ((c[0], "cleared") for c in outputs.cleared), ["cleared"], t0, t1, cdays
            )

    revenue: list[RevenueRow] | None = None
    if snaps:
        per: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
        for s in snaps.values():
            tier = NO_TIER if s.get("tier") is None else str(s["tier"])
            rolling = _mapping(s.get("rolling"))
            lifetime = _mapping(s.get("lifetime"))
            row = per[tier]
            row[0] += 1
            row[1] += _num(rolling.get("spend_365d"))
            row[2] += _num(lifetime.get("spend"))
        order = [t for t in tiers if t in per] + sorted(set(per) - set(tiers))
        revenue = [RevenueRow(t, int(per[t][0]), per[t][1], per[t][2]) for t in order]

    stage_tiers: dict[str, Counter[str]] = defaultdict(Counter)
    for cid, stage in final_stage.items():
        stage_tiers[stage][final_tier.get(cid, NO_TIER)] += 1
    stages = [s for s in STAGES if s in stage_tiers] + sorted(set(stage_tiers) - set(STAGES))

    directions: Counter[str] = Counter(c[4] for c in changes)
    counts = {
        "tier changes": len(changes),
        "lifecycle changes": len(outputs.lifecycle),
        "upgrade candidates": outputs.upgrades,
        "churn warnings": len(outputs.warnings),
        "churn warnings cleared": len(outputs.cleared),
    }
    return Report(
        title=title,
        policies=[p for p, _ in outputs.policies.most_common()],
        sources=list(outputs.sources),
        period=period,
        tiers=tiers,
        customers=customers,
        counts=counts,
        directions=directions,
        population=population,
        final_tiers=Counter(final_tier.values()),
        transitions=transitions,
        severities=severities,
        churn=churn,
        cleared=cleared,
        revenue=revenue,
        stages=stages,
        stage_tiers=dict(stage_tiers),
        stage_source=stage_source,
        skipped=outputs.skipped,
        snapshot_customers=len(snaps),
    )


def _share(part: float, total: float) -> float:
    return 100.0 * part / total if total > 0 else 0.0


def revenue_shares(rows: Sequence[RevenueRow]) -> dict[str, dict[str, float]]:
    """Per measure (customers, spend_365d, lifetime_spend): each tier's share in percent
    (negative tier totals, refunds beyond purchases, count as 0)."""
    out: dict[str, dict[str, float]] = {}
    for measure in ("customers", "spend_365d", "lifetime_spend"):
        vals = {r.tier: max(float(getattr(r, measure)), 0.0) for r in rows}
        total = sum(vals.values())
        out[measure] = {t: _share(v, total) for t, v in vals.items()}
    return out
