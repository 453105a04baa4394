"""Churn early warning (DOMAIN.md): silence against the customer's own rhythm, falling
activity against the customer's own baseline, and P(alive) from the BG/NBD model, combined
into severity levels with episodes that are raised once, escalated, and cleared.

A policy configures it in a ``churn`` section::

    churn:
      usual_gap: {of: p90, min_gaps: 3, default_days: 45}
      falling: {recent_days: 30, baseline_days: 90,
                min_baseline: {purchases: 3, spend: 100}}
      severity:                   # highest first; the first that holds is the severity
        - name: critical
          any: [{silence_ratio: {gte: 3}}, {p_alive: {lt: 0.2}}]
        - name: warning
          any: [{silence_ratio: {gte: 2}}, {purchases_drop: {gte: 0.75}}]
        - name: watch
          when: {silence_ratio: {gte: 1.2}}
      actions:                    # (tier, severity) -> suggested action; "*" for any tier
        A: {watch: account_manager_checkin, warning: call, critical: call}
        "*": {warning: email, critical: winback_offer}
      value_horizon_days: 365     # expected purchases / value at risk over this horizon
      rearm_days: 7               # after churn_cleared, no new warning for this long

The signals are features of the ``churn`` section (:data:`CHURN_FEATURES`); its conditions
may also use every ordinary feature. ``p_alive`` needs the policy's ``model`` section
(:mod:`app.domain.bgnbd`, written by ``tierstream fit``).

Episodes: a customer with no open episode whose severity is not None gets a
``churn_warning`` and an episode opens; within the episode a new warning is sent only when
the severity rises above the highest one sent; a purchase after the episode opened closes
it with ``churn_cleared`` (with the episode's length). For ``rearm_days`` after that no
new episode opens (the purchase that brought the customer back does not by itself make
their 30-day activity look healthy again).

Silence is detected without new events: :meth:`ChurnRules.due_after` tells the engine when
a signal next crosses one of the policy's thresholds (silence grows, P(alive) falls, days
leave the falling-activity windows).

The section is parsed and validated by :func:`app.domain.churn_doc.parse_churn`.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from app.domain.conditions import (
    Condition,
    all_hold,
    finite_number,
    fmt,
)
from app.domain.features import compute_features, rfm_summary
from app.domain.state import DAY_MS, INTERACTIONS, PURCHASES, SPEND, CustomerState, day_of

if TYPE_CHECKING:
    from app.domain.bgnbd import Model

#: Signals the ``churn`` section's conditions may use, besides the ordinary features.
CHURN_FEATURES: dict[str, str] = {
    "days_silent": (
        "days since the last purchase; missing (no condition holds) for a customer who never "
        "purchased: a prospect is not lapsing"
    ),
    "usual_gap_days": (
        "the customer's usual gap between purchase days (usual_gap.of over their own gaps; "
        "the population default with fewer than usual_gap.min_gaps gaps)"
    ),
    "silence_ratio": (
        "days_silent / usual_gap_days (1 = as long as usual; missing without purchases)"
    ),
    "purchases_drop": (
        "fall of the daily purchase rate: recent window against the baseline window before "
        "it, as a fraction (0.75 = 75 % fewer; negative = more); missing (never holds) when "
        "the baseline is below falling.min_baseline"
    ),
    "spend_drop": "as purchases_drop, for spend",
    "interactions_drop": "as purchases_drop, for interactions",
    "p_alive": "BG/NBD probability that the customer is still active (needs model.bgnbd)",
}
#: The falling-activity metrics and their day-bucket slots.
METRIC_SLOTS = {"purchases": PURCHASES, "spend": SPEND, "interactions": INTERACTIONS}


@dataclass(frozen=True, slots=True)
class UsualGap:
    """Which statistic of the customer's own gaps is "usual"."""

    #: ``mean``, ``median`` or ``pNN`` (a percentile, linear interpolation as numpy's).
    of: str = "p90"
    min_gaps: int = 3
    default_days: float = 30.0

    def of_gaps(self, gaps: list[int]) -> tuple[float, str]:
        """The usual gap (days) of these gaps, and how it was obtained."""
        n = len(gaps)
        if n < self.min_gaps or n == 0:
            return self.default_days, f"population default ({n} gaps < {self.min_gaps})"
        if self.of == "mean":
            return sum(gaps) / n, f"mean of {n} gaps"
        p = 50.0 if self.of == "median" else float(self.of[1:])
        g = sorted(gaps)
        h = (n - 1) * p / 100.0
        lo = math.floor(h)
        hi = min(lo + 1, n - 1)
        return g[lo] + (h - lo) * (g[hi] - g[lo]), f"{self.of} of {n} gaps"


@dataclass(frozen=True, slots=True)
class Falling:
    """Recent activity against the customer's own baseline just before it."""

    recent_days: int = 30
    baseline_days: int = 90
    #: Per metric (purchases, spend, interactions): the smallest baseline total that is
    #: compared at all. Metrics not named here are not compared.
    min_baseline: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Severity:
    name: str
    #: Any of these groups (each: all its conditions) makes the severity hold.
    groups: tuple[tuple[Condition, ...], ...]

    def holding(self, features: Mapping[str, Any]) -> tuple[Condition, ...] | None:
        for group in self.groups:
            if all_hold(group, features):
                return group
        return None


@dataclass(frozen=True, slots=True)
class FallingMetric:
    """One falling-activity comparison: totals of the two windows and the drop."""

    recent: float
    baseline: float
    recent_days: int
    baseline_days: int
    drop: float | None


@dataclass(frozen=True, slots=True)
class Assessment:
    """Every churn signal of a customer as of a time, and the severity they give."""

    severity: str | None
    reasons: tuple[str, ...]
    days_silent: float | None
    usual_gap_days: float
    usual_gap_basis: str
    falling: Mapping[str, FallingMetric]
    p_alive: float | None
    expected_purchases: float | None
    value_at_risk: float | None
    features: Mapping[str, Any]


@dataclass(frozen=True)
class ChurnRules:
    usual_gap: UsualGap = field(default_factory=UsualGap)
    falling: Falling | None = None
    severities: tuple[Severity, ...] = ()
    #: tier (or ``*``) -> severity -> suggested action.
    actions: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    value_horizon_days: float = 365.0
    rearm_days: float = 7.0

    @cached_property
    def conditions(self) -> tuple[Condition, ...]:
        return tuple(c for s in self.severities for g in s.groups for c in g)

    @cached_property
    def _timed(self) -> tuple[tuple[str, float], ...]:
        """(feature, threshold) of the conditions on signals that move with time alone."""
        return tuple(
            sorted(
                {
                    (c.feature, float(c.value))
                    for c in self.conditions
                    if c.feature in ("days_silent", "silence_ratio", "p_alive")
                    and finite_number(c.value)
                }
            )
        )

    @cached_property
    def _silence_gated(self) -> bool:
        """Every level needs silence (a days_silent or silence_ratio threshold above 0
        that silence must reach): before the earliest such threshold no level can hold,
        and the signals need not be computed (the hot path right after a purchase)."""

        def gated(group: tuple[Condition, ...]) -> bool:
            return any(
                c.feature in ("days_silent", "silence_ratio")
                and c.op in ("gte", "gt")
                and finite_number(c.value)
                and c.value > 0
                for c in group
            )

        return bool(self.severities) and all(gated(g) for s in self.severities for g in s.groups)

    @cached_property
    def _falling_slots(self) -> tuple[int, ...]:
        """Bucket slots of the falling-activity metrics the levels read (none: no need
        to re-evaluate as days leave those windows)."""
        fa = self.falling
        if fa is None:
            return ()
        used = {c.feature for c in self.conditions}
        return tuple(sorted(METRIC_SLOTS[m] for m in fa.min_baseline if f"{m}_drop" in used))

    def rank(self, severity: str | None) -> int:
        """Higher is more severe; None (and unknown names) rank lowest."""
        for i, s in enumerate(self.severities):
            if s.name == severity:
                return len(self.severities) - i
        return 0

    def action(self, tier: str | None, severity: str) -> str | None:
        for key in (tier, "*"):
            if key is not None and key in self.actions:
                act = self.actions[key].get(severity)
                if act is not None:
                    return act
        return None

    def signals(
        self, state: CustomerState, at: int, model: Model | None
    ) -> tuple[dict[str, Any], str, dict[str, FallingMetric]]:
        """The churn features as of ``at``, how the usual gap was obtained, and the
        falling-activity comparisons."""
        last = state.last_purchase_at
        usual, basis = self.usual_gap_of(state)
        f: dict[str, Any] = {"usual_gap_days": usual}
        if last is None:  # never purchased: not silent, a prospect
            f["days_silent"] = f["silence_ratio"] = None
        else:
            days_silent = (at - last) / DAY_MS
            f["days_silent"] = days_silent
            f["silence_ratio"] = days_silent / usual if usual > 0 else math.inf
        falling: dict[str, FallingMetric] = {}
        fa = self.falling
        if fa is not None:
            totals = window_totals(state, at, fa.recent_days, fa.baseline_days)
            for metric, minimum in fa.min_baseline.items():
                recent, baseline = totals[metric]
                drop = None
                if baseline > 0 and baseline >= minimum:
                    drop = 1.0 - (recent / fa.recent_days) / (baseline / fa.baseline_days)
                falling[metric] = FallingMetric(
                    recent, baseline, fa.recent_days, fa.baseline_days, drop
                )
                f[f"{metric}_drop"] = drop
        f["p_alive"] = p_alive(state, at, model)
        return f, basis, falling

    def usual_gap_of(self, state: CustomerState) -> tuple[float, str]:
        """The customer's usual gap and its basis, cached in the state (it changes only
        with the purchase days)."""
        cached = state.gap_cache
        bits = state.purchase_day_bits
        if cached is not None and cached[0] == bits:
            return cached[1], cached[2]
        usual, basis = self.usual_gap.of_gaps(purchase_gaps(state))
        state.gap_cache = (bits, usual, basis)
        return usual, basis

    def severity(
        self,
        state: CustomerState,
        at: int,
        features: Mapping[str, Any],
        model: Model | None,
    ) -> str | None:
        """The first severity whose conditions hold (the hot path: no reasons, no value
        at risk; :meth:`assess` gives everything when a warning is sent)."""
        if self._silence_gated:
            earliest = self._silence_times(state, model)[1]
            if earliest is None or at < earliest:
                return None
        churn_f = self.signals(state, at, model)[0]
        f = {**features, **churn_f}
        for s in self.severities:
            if s.holding(f) is not None:
                return s.name
        return None

    def assess(
        self,
        state: CustomerState,
        at: int,
        features: Mapping[str, Any],
        model: Model | None,
    ) -> Assessment:
        """Every signal, and the first severity whose conditions hold (None: no sign)."""
        churn_f, basis, falling = self.signals(state, at, model)
        f = {**features, **churn_f}
        severity = None
        reasons: list[str] = []
        for s in self.severities:
            group = s.holding(f)
            if group is not None:
                severity = s.name
                reasons.append(
                    f"{s.name}: " + ", ".join(c.describe(f.get(c.feature), True) for c in group)
                )
                break
        days_silent = churn_f["days_silent"]
        if days_silent is not None:
            reasons.append(
                f"silent for {fmt(round(days_silent, 1))} days; usual gap "
                f"{fmt(round(churn_f['usual_gap_days'], 1))} days ({basis})"
            )
        for metric, fm in falling.items():
            if fm.drop is not None:
                reasons.append(
                    f"{metric}: {fmt(fm.recent)} in the last {fm.recent_days} days against "
                    f"{fmt(fm.baseline)} in the {fm.baseline_days} days before "
                    f"({fmt(round(-fm.drop * 100, 1))} % per day)"
                )
        pa = churn_f["p_alive"]
        if pa is not None:
            reasons.append(f"P(alive) {pa:.3f}")
        expected, at_risk = value_at_risk(state, at, model, self.value_horizon_days, f)
        return Assessment(
            severity=severity,
            reasons=tuple(reasons),
            days_silent=days_silent,
            usual_gap_days=churn_f["usual_gap_days"],
            usual_gap_basis=basis,
            falling=falling,
            p_alive=pa,
            expected_purchases=expected,
            value_at_risk=at_risk,
            features={
                c.feature: f.get(c.feature) for c in self.conditions if c.feature in CHURN_FEATURES
            },
        )

    def due_after(self, state: CustomerState, at: int, model: Model | None) -> int | None:
        """The next time after ``at`` a churn signal may cross one of the thresholds (or
        the re-arm period ends); None when nothing changes with time alone."""
        best: int | None = None
        if state.churn_cleared_at is not None:
            t = state.churn_cleared_at + int(self.rearm_days * DAY_MS)
            if t > at:
                best = t
        times = self._silence_times(state, model)[0]
        i = bisect.bisect_right(times, at)
        if i < len(times) and (best is None or times[i] < best):
            best = times[i]
        fa = self.falling
        slots = self._falling_slots
        if fa is not None and slots:
            today = day_of(at)
            for w in (fa.recent_days, fa.recent_days + fa.baseline_days):
                d = _first_bucket_within(state.buckets, today, w, slots)
                if d is not None and (best is None or (d + w) * DAY_MS < best):
                    best = (d + w) * DAY_MS
        return best

    def _silence_times(
        self, state: CustomerState, model: Model | None
    ) -> tuple[tuple[int, ...], int | None]:
        """Sorted times at which silence or P(alive) may cross a threshold, and the
        earliest time any silence threshold is reached (None: never). They depend only on
        the purchase days, so they are kept in the state until those change."""
        bits, last = state.purchase_day_bits, state.last_purchase_at
        c = state.due_cache
        if c is not None and c[0] is self and c[1] is model and c[2] == bits and c[3] == last:
            return c[4], c[5]
        times: set[int] = set()
        earliest: int | None = None
        if last is not None:
            for feature, value in self._timed:
                if feature == "p_alive":
                    day = _p_alive_day(state, model, value)
                    if day is not None:  # the day it falls below; the next in case of rounding
                        times.update((day * DAY_MS, (day + 1) * DAY_MS))
                    continue
                scale = 1.0 if feature == "days_silent" else self.usual_gap_of(state)[0]
                crossing = _crossing_ms(last, value, scale)
                if crossing is not None:
                    times.update(crossing)
                    if earliest is None or crossing[0] < earliest:
                        earliest = crossing[0]
        result = tuple(sorted(times))
        state.due_cache = (self, model, bits, last, result, earliest)
        return result, earliest


def _crossing_ms(anchor: int, value: float, scale: float) -> tuple[int, int] | None:
    """The ms at which ``(t - anchor) / DAY_MS / scale`` (as the signals compute it)
    first reaches ``value`` and first passes it (the flips of gte/lt and gt/lte)."""
    t_f = anchor + value * scale * DAY_MS
    if not math.isfinite(t_f) or scale <= 0:
        return None
    t = math.floor(t_f) - 2
    while (t - anchor) / DAY_MS / scale >= value:  # x / 1.0 == x: days_silent exactly
        t -= 1
    while (t - anchor) / DAY_MS / scale < value:
        t += 1
    reach = t
    while (t - anchor) / DAY_MS / scale <= value:
        t += 1
    return reach, t


def _first_bucket_within(
    buckets: Mapping[int, list[float]], today: int, w: int, slots: tuple[int, ...]
) -> int | None:
    """The oldest bucket day inside the ``w``-day window ending ``today`` with a value in
    one of ``slots`` (it is the next to change the window's totals, leaving on day
    ``d + w``); None when there is none."""
    lo = today - w + 1
    if len(buckets) > w:
        for d in range(lo, today + 1):
            row = buckets.get(d)
            if row is not None and any(row[k] for k in slots):
                return d
        return None
    inside = [d for d, row in buckets.items() if lo <= d <= today and any(row[k] for k in slots)]
    return min(inside) if inside else None


def purchase_gaps(state: CustomerState) -> list[int]:
    """Days between consecutive purchase days (the customer's rhythm), oldest first."""
    bits = state.purchase_day_bits
    if bits <= 1:
        return []
    s = bin(bits)[:1:-1]  # least significant bit (the first purchase day) first
    gaps: list[int] = []
    prev = s.find("1")
    i = s.find("1", prev + 1)
    while i != -1:
        gaps.append(i - prev)
        prev = i
        i = s.find("1", i + 1)
    return gaps


def window_totals(
    state: CustomerState, at: int, recent_days: int, baseline_days: int
) -> dict[str, tuple[float, float]]:
    """Per metric: the total of the last ``recent_days`` days (the UTC day of ``at`` and
    the days before it) and of the ``baseline_days`` days before those.

    The days before today are summed once per day and kept in the state
    (``falling_cache``, not stored; the engine drops it when an event lands in a day
    before the cached one): a customer's further events that day only add today's bucket.
    """
    today = day_of(at)
    key = (today, recent_days, baseline_days)
    cached = state.falling_cache
    if cached is None or cached[0] != key:
        cached = state.falling_cache = (
            key,
            *_older_totals(state, today, recent_days, baseline_days),
        )
    _, r_spend, recent, b_spend, base = cached
    row = state.buckets.get(today)
    if row is None:
        r_total = math.fsum(r_spend)
        r_purchases, r_interactions = recent[1], recent[2]
    else:
        r_total = math.fsum([*r_spend, row[SPEND]])
        r_purchases, r_interactions = recent[1] + row[PURCHASES], recent[2] + row[INTERACTIONS]
    return {
        "spend": (r_total, math.fsum(b_spend)),
        "purchases": (r_purchases, base[1]),
        "interactions": (r_interactions, base[2]),
    }


def _older_totals(
    state: CustomerState, today: int, recent_days: int, baseline_days: int
) -> tuple[list[float], list[float], list[float], list[float]]:
    """The days before ``today``: recent spend values, recent counts, baseline spend
    values, baseline counts (counts as ``[_, purchases, interactions]``)."""
    span = recent_days + baseline_days
    recent = [0.0, 0.0, 0.0]
    base = [0.0, 0.0, 0.0]
    r_spend: list[float] = []
    b_spend: list[float] = []
    buckets = state.buckets
    if len(buckets) > span:
        items: Any = ((d, buckets[d]) for d in range(today - span + 1, today) if d in buckets)
    else:
        items = buckets.items()
    for d, row in items:
        age = today - d
        if age <= 0 or age >= span:
            continue
        if age < recent_days:
            r_spend.append(row[SPEND])
            recent[1] += row[PURCHASES]
            recent[2] += row[INTERACTIONS]
        else:
            b_spend.append(row[SPEND])
            base[1] += row[PURCHASES]
            base[2] += row[INTERACTIONS]
    return r_spend, recent, b_spend, base


def _rfm_in_units(state: CustomerState, at: int, model: Model) -> tuple[int, float, float]:
    """(x, t_x, T) for the BG/NBD model: the RFM summary (lifetimes conventions) with
    recency and age in the model's unit."""
    rfm = rfm_summary(state, at)
    unit = model.unit_days
    return rfm.frequency, rfm.recency / unit, rfm.T / unit


def p_alive(state: CustomerState, at: int, model: Model | None) -> float | None:
    """P(alive) as of ``at``; None without a BG/NBD model or without purchases."""
    if model is None or model.bgnbd is None or state.first_purchase_at is None:
        return None
    x, t_x, big_t = _rfm_in_units(state, at, model)
    return model.bgnbd.p_alive(x, t_x, big_t)


def _p_alive_day(state: CustomerState, model: Model | None, threshold: float) -> int | None:
    """The first UTC day on which P(alive) is below ``threshold`` (it falls as T grows
    for customers with repeat purchases; it stays 1 without them). Closed form of
    P(alive) = 1 / (1 + a / (b + x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x))."""
    if model is None or model.bgnbd is None or state.first_purchase_at is None:
        return None
    x, t_x, _ = _rfm_in_units(state, state.first_purchase_at, model)
    m = model.bgnbd
    if x == 0 or not 0 < threshold < 1:
        return None
    ratio = (1.0 / threshold - 1.0) * (m.b + x - 1) / m.a
    if ratio <= 0:
        return None
    big_t: float = (m.alpha + t_x) * ratio ** (1.0 / (m.r + x)) - m.alpha
    days = big_t * model.unit_days
    if not math.isfinite(days):
        return None
    return day_of(state.first_purchase_at) + max(math.ceil(days), 0)


def value_at_risk(
    state: CustomerState,
    at: int,
    model: Model | None,
    horizon_days: float,
    features: Mapping[str, Any],
) -> tuple[float | None, float | None]:
    """Expected purchases over the horizon (BG/NBD, with P(alive) as it is) and the value
    at risk: what the customer would spend over the horizon if still active — expected
    purchases given alive times the expected average spend (Gamma-Gamma; without it, the
    customer's own mean repeat spend). Without a model: the last 365 days' spend scaled
    to the horizon, and no expected purchases."""
    if model is None or model.bgnbd is None or state.first_purchase_at is None:
        spend = features.get("spend_365d")
        if not isinstance(spend, int | float):
            spend = compute_features(state, at, ("spend_365d",))["spend_365d"]
        return None, max(float(spend), 0.0) * horizon_days / 365.0
    x, t_x, big_t = _rfm_in_units(state, at, model)
    t = horizon_days / model.unit_days
    expected = model.bgnbd.expected_purchases(t, x, t_x, big_t)
    alive = model.bgnbd.p_alive(x, t_x, big_t)
    if_alive = expected / alive if alive > 0 else 0.0
    mean = state.repeat_spend / x if x else state.first_day_spend
    if model.gamma_gamma is not None:
        spend_each = model.gamma_gamma.expected_average_spend(x, mean)
    else:
        spend_each = mean
    return expected, max(if_alive * spend_each, 0.0)
