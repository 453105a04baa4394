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
from datetime import UTC, datetime, timedelta
from html import escape
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

#: Tier colours by rank (best first); the last tier of a policy is always grey.
TIER_PALETTE = ("#6a3d9a", "#1f78b4", "#2a9d8f", "#33a02c", "#b8860b", "#e07b00", "#8c564b")
LAST_TIER_COLOUR = "#9aa0a6"
SEVERITY_COLOURS = {"critical": "#c62828", "warning": "#ef6c00", "watch": "#f2b705"}
SEVERITY_FALLBACK = ("#ad1457", "#6d4c41", "#5d4037")
CLEARED_COLOUR = "#1e88e5"
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


# --- drawing ----------------------------------------------------------------------------


def tier_colours(tiers: Sequence[str]) -> dict[str, str]:
    """A colour per tier by rank; the last (catch-all) tier grey; "none" light grey."""
    colours = {NO_TIER: "#d0d4d9"}
    for i, t in enumerate(tiers):
        last = i == len(tiers) - 1 and len(tiers) > 1
        colours[t] = LAST_TIER_COLOUR if last else TIER_PALETTE[i % len(TIER_PALETTE)]
    return colours


def severity_colours(severities: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    extra = 0
    for s in severities:
        if s in SEVERITY_COLOURS:
            out[s] = SEVERITY_COLOURS[s]
        else:
            out[s] = SEVERITY_FALLBACK[extra % len(SEVERITY_FALLBACK)]
            extra += 1
    return out


def nice_ticks(hi: float, count: int = 5) -> list[float]:
    """0 and round steps up to at least ``hi``."""
    if hi <= 0:
        return [0.0, 1.0]
    raw = hi / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    n = math.ceil(hi / step - 1e-9)
    return [i * step for i in range(n + 1)]


def _fmt_num(v: float) -> str:
    if abs(v - round(v)) < 1e-9:
        return f"{round(v):,}"
    return f"{v:,.1f}"


def _date(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


def ymd(ms: int) -> str:
    return _date(ms).strftime("%Y-%m-%d")


def time_ticks(t0: int, t1: int) -> list[tuple[int, str]]:
    """Tick positions and labels for a time axis from ``t0`` to ``t1`` (ms)."""
    days = (t1 - t0) / DAY_MS
    d0 = _date(t0)
    ticks: list[tuple[int, str]] = []
    if days <= 21:
        d = datetime(d0.year, d0.month, d0.day, tzinfo=UTC)
        step = 1 if days <= 10 else 2
        while (ms := int(d.timestamp() * 1000)) <= t1:
            if ms >= t0:
                ticks.append((ms, d.strftime("%b %d")))
            d += timedelta(days=step)
        return ticks
    if days <= 120:
        d = datetime(d0.year, d0.month, d0.day, tzinfo=UTC)
        d -= timedelta(days=d.weekday())
        while (ms := int(d.timestamp() * 1000)) <= t1:
            if ms >= t0:
                ticks.append((ms, d.strftime("%b %d")))
            d += timedelta(days=7 if days <= 60 else 14)
        return ticks
    months = 1 if days <= 550 else 3 if days <= 1500 else 12
    y, m = d0.year, d0.month
    while True:
        d = datetime(y, m, 1, tzinfo=UTC)
        ms = int(d.timestamp() * 1000)
        if ms > t1:
            break
        if ms >= t0 and (m - 1) % months == 0:
            label = d.strftime("%Y") if months == 12 else d.strftime("%b %Y")
            if months == 1 and m != 1 and ticks:
                label = d.strftime("%b")
            ticks.append((ms, label))
        m += 1
        if m > 12:
            y, m = y + 1, 1
    return ticks


class _Svg:
    """A tiny SVG builder: every text is escaped."""

    def __init__(self, width: int, height: int, label: str) -> None:
        self.width = width
        self.height = height
        self.parts: list[str] = [
            f'<svg viewBox="0 0 {width} {height}" '
            f'width="{width}" height="{height}" role="img" aria-label="{escape(label)}">'
        ]

    def add(self, markup: str) -> None:
        self.parts.append(markup)

    def text(
        self,
        x: float,
        y: float,
        content: str,
        anchor: str = "start",
        cls: str = "",
        extra: str = "",
    ) -> None:
        c = f' class="{cls}"' if cls else ""
        self.parts.append(
            f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{c}{extra}>'
            f"{escape(content)}</text>"
        )

    def rect(
        self,
        x: float,
        y: float,
        w: float,
        h: float,
        fill: str,
        tip: str | None = None,
        extra: str = "",
    ) -> None:
        body = f"<title>{escape(tip)}</title>" if tip else ""
        self.parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" height="{max(h, 0):.1f}" '
            f'fill="{fill}"{extra}>{body}</rect>'
            if body
            else f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" '
            f'height="{max(h, 0):.1f}" fill="{fill}"{extra}/>'
        )

    def line(self, x1: float, y1: float, x2: float, y2: float, cls: str) -> None:
        self.parts.append(
            f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" class="{cls}"/>'
        )

    def done(self) -> str:
        return "".join([*self.parts, "</svg>"])


def _legend(svg: _Svg, x: float, y: float, items: Sequence[tuple[str, str]]) -> None:
    """A horizontal legend of colour swatches and names starting at (x, y)."""
    for name, colour in items:
        svg.rect(x, y - 10, 12, 12, colour)
        svg.text(x + 17, y, name, cls="legend")
        x += 30 + 7.5 * len(name)


def _text_colour(colour: str) -> str:
    """Tier colours are dark enough for text on white, except the light grey."""
    return "#6e7781" if colour == LAST_TIER_COLOUR else colour


def spread(ys: Sequence[float], gap: float, lo: float, hi: float) -> list[float]:
    """Sorted label positions moved apart by at least ``gap`` and kept within [lo, hi]
    where they fit: pushed down, then back up from ``hi``."""
    out: list[float] = []
    for y in ys:
        out.append(max(y, out[-1] + gap) if out else y)
    if out and out[-1] > hi:
        out[-1] = hi
        for i in range(len(out) - 2, -1, -1):
            out[i] = min(out[i], out[i + 1] - gap)
    return [max(y, lo) if len(out) * gap <= hi - lo else y for y in out]


def population_chart(series: Series, tiers: Sequence[str], colours: Mapping[str, str]) -> str:
    """Step lines: customers per tier at the end of each bucket."""
    w, h = 900, 340
    left, right, top, bottom = 62, 120, 34, 46
    pw, ph = w - left - right, h - top - bottom
    width_ms = series.bucket_days * DAY_MS
    t0, t1 = series.starts[0], series.starts[-1] + width_ms
    hi = max((max(v) for v in series.values.values() if v), default=0)
    yt = nice_ticks(hi)
    ymax = yt[-1]

    def x(ms: float) -> float:
        return left + (ms - t0) / max(t1 - t0, 1) * pw

    def y(v: float) -> float:
        return top + ph - v / ymax * ph

    svg = _Svg(w, h, "customers per tier over time")
    for v in yt:
        svg.line(left, y(v), left + pw, y(v), "grid")
        svg.text(left - 8, y(v) + 4, _fmt_num(v), "end", "tick")
    for ms, label in time_ticks(t0, t1):
        svg.line(x(ms), top + ph, x(ms), top + ph + 5, "axis")
        svg.text(x(ms), top + ph + 19, label, "middle", "tick")
    svg.line(left, top + ph, left + pw, top + ph, "axis")
    svg.line(left, top, left, top + ph, "axis")
    svg.text(
        14,
        top + ph / 2,
        "customers",
        "middle",
        "axis-label",
        f' transform="rotate(-90 14 {top + ph / 2:.1f})"',
    )
    unit = {1: "day", 7: "week"}.get(series.bucket_days, f"{series.bucket_days} days")
    svg.text(
        left + pw / 2,
        h - 6,
        f"event time (value at the end of each {unit})",
        "middle",
        "axis-label",
    )
    ends: list[tuple[float, str, int]] = []
    for t in tiers:
        vals = series.values.get(t) or []
        if not vals:
            continue
        pts = [f"M{x(t0):.1f},{y(0):.1f}"]
        for i, v in enumerate(vals):
            pts.append(f"V{y(v):.1f}H{x(series.starts[i] + width_ms):.1f}")
        svg.add(
            f'<path d="{"".join(pts)}" fill="none" stroke="{colours[t]}" stroke-width="2.2" '
            f'stroke-linejoin="round"><title>{escape(f"tier {t}")}</title></path>'
        )
        ends.append((y(vals[-1]), t, vals[-1]))
    # End labels, pushed apart so they do not overlap.
    ends.sort()
    placed = spread([e[0] for e in ends], 14.0, top, top + ph + 4)
    for yy, (_, t, v) in zip(placed, ends, strict=True):
        svg.text(
            left + pw + 8,
            yy + 4,
            f"{t}  {v:,}",
            cls="end-label",
            extra=f' style="fill:{_text_colour(colours[t])}"',
        )
    _legend(svg, left, 16, [(f"tier {t}", colours[t]) for t in tiers])
    return svg.done()


def _cell_fill(kind: str, share: float) -> str:
    """Blend white towards the kind's colour by ``share`` (0..1)."""
    base = {"up": (46, 125, 50), "down": (198, 40, 40), "new": (30, 136, 229)}[kind]
    a = 0.12 + 0.88 * share if share > 0 else 0.0
    r, g, b = (round(255 + (c - 255) * a) for c in base)
    return f"#{r:02x}{g:02x}{b:02x}"


def transition_matrix(
    transitions: Mapping[tuple[str, str], int], tiers: Sequence[str], colours: Mapping[str, str]
) -> str:
    """From (rows, incl. "none": a first tier) -> to (columns) counts, shaded."""
    rows = [NO_TIER, *tiers]
    cols = list(tiers)
    cell_w, cell_h = 92, 40
    left, top = 150, 74
    w = left + cell_w * (len(cols) + 1) + 24
    h = top + cell_h * len(rows) + 56
    hi = max(transitions.values(), default=0)
    rank = {t: i for i, t in enumerate(tiers)}
    svg = _Svg(w, h, "tier transition matrix")
    svg.text(left + cell_w * len(cols) / 2, 18, "to tier", "middle", "axis-label")
    svg.text(left - 14, top - 12, "from tier", "end", "axis-label")
    for j, t in enumerate(cols):
        cx = left + j * cell_w + cell_w / 2
        svg.rect(cx - 24, 32, 48, 6, colours[t])
        svg.text(cx, 58, t, "middle", "head")
    svg.text(left + len(cols) * cell_w + cell_w / 2, 58, "total", "middle", "head-muted")
    for i, frm in enumerate(rows):
        cy = top + i * cell_h
        label = "none (first tier)" if frm == NO_TIER else frm
        svg.rect(left - 12, cy + 8, 6, cell_h - 16, colours.get(frm, LAST_TIER_COLOUR))
        svg.text(left - 18, cy + cell_h / 2 + 5, label, "end", "head")
        total = 0
        for j, to in enumerate(cols):
            n = transitions.get((frm, to), 0)
            total += n
            x = left + j * cell_w
            if frm == NO_TIER:
                kind = "new"
            elif frm == to:
                kind = ""
            else:
                kind = "up" if rank.get(to, 0) < rank.get(frm, 0) else "down"
            share = math.sqrt(n / hi) if hi and n else 0.0
            fill = "#f3f4f6" if not kind else _cell_fill(kind, share) if n else "#ffffff"
            tip = f"{label} → {to}: {n:,}"
            svg.rect(
                x + 1,
                cy + 1,
                cell_w - 2,
                cell_h - 2,
                fill,
                tip,
                f' class="cell" data-from="{escape(frm)}" data-to="{escape(to)}" data-count="{n}"',
            )
            if kind:
                dark = share > 0.6
                svg.text(
                    x + cell_w / 2,
                    cy + cell_h / 2 + 5,
                    f"{n:,}" if n else "·",
                    "middle",
                    "cell-num-light" if dark else "cell-num",
                )
            else:
                svg.text(x + cell_w / 2, cy + cell_h / 2 + 5, "—", "middle", "cell-none")
        svg.text(
            left + len(cols) * cell_w + cell_w / 2,
            cy + cell_h / 2 + 5,
            f"{total:,}",
            "middle",
            "cell-total",
        )
    ly = top + cell_h * len(rows) + 32
    _legend(
        svg,
        left,
        ly,
        [
            ("first tier", _cell_fill("new", 0.7)),
            ("upgrade", _cell_fill("up", 0.7)),
            ("downgrade", _cell_fill("down", 0.7)),
        ],
    )
    svg.text(left + 330, ly, "darker = more customers", cls="legend-muted")
    return svg.done()


def churn_chart(
    warnings: Series, cleared: Series, severities: Sequence[str], colours: Mapping[str, str]
) -> str:
    """Stacked bars of warnings by severity above the axis, clearings below it."""
    w, h = 900, 360
    left, right, top, bottom = 62, 96, 34, 46
    pw, ph = w - left - right, h - top - bottom
    n = len(warnings.starts)
    width_ms = warnings.bucket_days * DAY_MS
    t0, t1 = warnings.starts[0], warnings.starts[-1] + width_ms
    up = [sum(warnings.values[s][i] for s in severities) for i in range(n)]
    down = cleared.values["cleared"]
    hi_up, hi_down = max(up, default=0), max(down, default=0)
    step_ticks = nice_ticks(max(hi_up, hi_down, 1))
    step = step_ticks[1] - step_ticks[0]
    top_max = math.ceil(hi_up / step) * step if hi_up else step
    bottom_max = max(hi_down * 1.08, step * 0.3) if hi_down else 0
    span = top_max + bottom_max

    def y(v: float) -> float:  # v > 0 above the axis, v < 0 below
        return top + (top_max - v) / span * ph

    def x(ms: float) -> float:
        return left + (ms - t0) / max(t1 - t0, 1) * pw

    svg = _Svg(w, h, "churn warnings over time")
    v = -math.floor(bottom_max / step) * step
    while v <= top_max + 1e-9:
        svg.line(left, y(v), left + pw, y(v), "grid")
        svg.text(left - 8, y(v) + 4, _fmt_num(abs(v)), "end", "tick")
        v += step
    bw = pw / n
    unit = {1: "day", 7: "week"}.get(warnings.bucket_days, f"{warnings.bucket_days} days")
    for i, start in enumerate(warnings.starts):
        bx = x(start) + bw * 0.12
        base = 0.0
        # Most severe at the bottom, next to the axis.
        for s in severities:
            c = warnings.values[s][i]
            if not c:
                continue
            svg.rect(
                bx,
                y(base + c),
                bw * 0.76,
                y(base) - y(base + c),
                colours[s],
                f"{unit} of {ymd(start)}: {c:,} {s}",
            )
            base += c
        c = down[i]
        if c:
            svg.rect(
                bx,
                y(0),
                bw * 0.76,
                y(-c) - y(0),
                CLEARED_COLOUR,
                f"{unit} of {ymd(start)}: {c:,} cleared",
            )
    for ms, label in time_ticks(t0, t1):
        svg.line(x(ms), top + ph, x(ms), top + ph + 5, "axis")
        svg.text(x(ms), top + ph + 19, label, "middle", "tick")
    svg.line(left, y(0), left + pw, y(0), "axis-strong")
    svg.line(left, top, left, top + ph, "axis")
    svg.line(left, top + ph, left + pw, top + ph, "axis")
    mid = top + ph / 2
    svg.text(
        14, mid, f"per {unit}", "middle", "axis-label", f' transform="rotate(-90 14 {mid:.1f})"'
    )
    # What is above and below the axis, to the right of the bars.
    svg.text(left + pw + 8, y(0) - 22, "▲ warnings", cls="legend-muted")
    svg.text(left + pw + 8, y(0) - 8, "raised", cls="legend-muted")
    if bottom_max:
        svg.text(left + pw + 8, y(0) + 16, "▼ cleared", cls="legend-muted")
        svg.text(left + pw + 8, y(0) + 30, "(bought again)", cls="legend-muted")
    svg.text(left + pw / 2, h - 6, "event time", "middle", "axis-label")
    _legend(svg, left, 16, [*((s, colours[s]) for s in severities), ("cleared", CLEARED_COLOUR)])
    return svg.done()


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


def revenue_chart(rows: Sequence[RevenueRow], colours: Mapping[str, str]) -> str:
    """100 % bars: customers, spend over the last 365 days and lifetime spend by tier."""
    shares = revenue_shares(rows)
    labels = {
        "customers": "customers",
        "spend_365d": "spend, last 365 days",
        "lifetime_spend": "lifetime spend",
    }
    w, bar_h, gap = 900, 38, 22
    left, right, top = 190, 24, 40
    pw = w - left - right
    h = top + len(labels) * (bar_h + gap) + 30
    svg = _Svg(w, h, "share of customers and revenue by tier")
    for k, (measure, label) in enumerate(labels.items()):
        y = top + k * (bar_h + gap)
        svg.text(left - 12, y + bar_h / 2 + 5, label, "end", "head")
        x = float(left)
        for r in rows:
            pct = shares[measure].get(r.tier, 0.0)
            if pct <= 0:
                continue
            bw = pw * pct / 100
            svg.rect(
                x,
                y,
                bw,
                bar_h,
                colours.get(r.tier, LAST_TIER_COLOUR),
                f"tier {r.tier}: {pct:.1f}% of {label}",
                f' class="share" data-measure="{measure}" data-tier="{escape(r.tier)}"'
                f' data-pct="{pct:.4f}"',
            )
            if bw >= 46:
                svg.text(
                    x + bw / 2, y + bar_h / 2 + 5, f"{r.tier} {pct:.0f}%", "middle", "bar-label"
                )
            elif bw >= 22:
                svg.text(x + bw / 2, y + bar_h / 2 + 5, f"{pct:.0f}", "middle", "bar-label")
            x += bw
    for p in (0, 25, 50, 75, 100):
        xx = left + pw * p / 100
        svg.line(
            xx,
            top + len(labels) * (bar_h + gap) - gap + 4,
            xx,
            top + len(labels) * (bar_h + gap) - gap + 9,
            "axis",
        )
        svg.text(xx, top + len(labels) * (bar_h + gap) - gap + 22, f"{p}%", "middle", "tick")
    _legend(
        svg, left, 18, [(f"tier {r.tier}", colours.get(r.tier, LAST_TIER_COLOUR)) for r in rows]
    )
    return svg.done()


def stage_chart(
    stages: Sequence[str],
    stage_tiers: Mapping[str, Counter[str]],
    tiers: Sequence[str],
    colours: Mapping[str, str],
) -> str:
    """Horizontal bars: customers per lifecycle stage, split by their tier."""
    w, bar_h, gap = 900, 26, 12
    left, right, top = 120, 80, 40
    pw = w - left - right
    h = top + len(stages) * (bar_h + gap) + 34
    hi = max((sum(stage_tiers[s].values()) for s in stages), default=0)
    xt = nice_ticks(hi)
    xmax = xt[-1]
    order = [*tiers, *sorted(set().union(*stage_tiers.values()) - set(tiers))]
    svg = _Svg(w, h, "customers per lifecycle stage and tier")
    base_y = top + len(stages) * (bar_h + gap)
    for v in xt:
        xx = left + pw * v / xmax
        svg.line(xx, top - 6, xx, base_y - gap + 4, "grid")
        svg.text(xx, base_y + 8, _fmt_num(v), "middle", "tick")
    for k, stage in enumerate(stages):
        y = top + k * (bar_h + gap)
        svg.text(left - 12, y + bar_h / 2 + 5, stage.replace("_", " "), "end", "head")
        x = float(left)
        counts = stage_tiers[stage]
        for t in order:
            c = counts.get(t, 0)
            if not c:
                continue
            bw = pw * c / xmax
            svg.rect(x, y, bw, bar_h, colours.get(t, LAST_TIER_COLOUR), f"{stage}, tier {t}: {c:,}")
            x += bw
        svg.text(x + 6, y + bar_h / 2 + 5, f"{sum(counts.values()):,}", cls="end-label")
    svg.text(left + pw / 2, h - 4, "customers", "middle", "axis-label")
    legend = [t for t in order if any(stage_tiers[s].get(t) for s in stages)]
    _legend(
        svg,
        left,
        18,
        [
            (f"tier {t}" if t != NO_TIER else "no tier", colours.get(t, LAST_TIER_COLOUR))
            for t in legend
        ],
    )
    return svg.done()
