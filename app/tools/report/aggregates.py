"""What the ``tierstream report`` page shows, computed from the parsed outputs and
snapshots (:mod:`app.tools.report.data`): tiers ordered best first, the event-time
period, customers per tier over time, transitions, churn warnings per period, revenue per
tier and lifecycle stages by tier (:func:`build_report` → :class:`Report`). Customer ids
are followed here, never put in the result."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.domain.lifecycle import STAGES
from app.tools.report.data import Outputs, as_number

NO_TIER = "none"  # the "from" of a customer's first tier
DAY_MS = 86_400_000

DEFAULT_SEVERITIES = ("critical", "warning", "watch")


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
            row[1] += as_number(rolling.get("spend_365d"))
            row[2] += as_number(lifetime.get("spend"))
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
