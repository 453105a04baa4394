"""Tiering policies: validated, compiled rule sets that turn features into a tier, a
lifecycle stage and upgrade flags.

A :class:`Policy` is built from a policy document by
:func:`app.domain.policy_doc.policy_from_dict` (the document's format and validation live
there). Here is what a policy *does*: compute the features it decides on
(:meth:`Policy.features`), choose a tier and say why (:meth:`Policy.choose`,
:meth:`Policy.decide`, :meth:`Policy.explain_features`), and say when time alone next
changes a decision (:meth:`Policy.due_after`). How a current tier is kept or left is
:mod:`app.domain.hysteresis`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from app.domain.bgnbd import Model
from app.domain.churn import ChurnRules
from app.domain.conditions import (
    PERCENTILE_PREFIX,
    Condition,
    all_hold,
    first_failed,
    fmt,
    is_attribute,
)
from app.domain.expr import Expr
from app.domain.features import ATTRIBUTE_PREFIX, FEATURES, compute_features
from app.domain.lifecycle import SILENCE, LifecycleRules
from app.domain.methods import TieringMethod, explanation_order
from app.domain.population import Cutoffs
from app.domain.scoring import RFM, Scorecard
from app.domain.state import DAY_MS, WINDOWS_DAYS, CustomerState

__all__ = [
    "ATTRIBUTE_PREFIX",
    "Condition",
    "Decision",
    "Hysteresis",
    "Policy",
    "Tier",
    "UpgradeRule",
]

#: Features whose value changes with time alone (a due time is set where they cross a
#: threshold). ``T`` counts whole UTC days, the others are fractional days.
TIME_FEATURES = ("days_since_last_purchase", "days_since_last_interaction", "T")
_WINDOW_RE = re.compile(r"_(\d+)d$")


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    conditions: tuple[Condition, ...]
    service_level: Mapping[str, Any] = field(default_factory=dict)
    #: Conditions to *keep* the tier once in it (None: the same as ``conditions``).
    stay: tuple[Condition, ...] | None = None
    description: str = ""

    @property
    def stay_conditions(self) -> tuple[Condition, ...]:
        """The conditions to keep the tier: ``stay``, or without it the entry conditions."""
        return self.conditions if self.stay is None else self.stay

    def keeps(self, features: Mapping[str, Any]) -> bool:
        return all_hold(self.conditions if self.stay is None else self.stay, features)


@dataclass(frozen=True, slots=True)
class Decision:
    """The tier a policy assigns and why: the conditions that held (or failed)."""

    tier: str
    reasons: tuple[str, ...]
    features: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Hysteresis:
    """How reluctantly customers are demoted. Promotions are never delayed."""

    #: A customer is not demoted before this many days in the tier.
    min_days_in_tier: float = 0.0
    #: A demotion happens only once it has been due for this many days in a row.
    demotion_grace_days: float = 0.0


@dataclass(frozen=True, slots=True)
class UpgradeRule:
    """Customers in ``tiers`` whose ``conditions`` hold are upgrade candidates."""

    tiers: frozenset[str]
    conditions: tuple[Condition, ...]


@dataclass(frozen=True)
class Policy:
    name: str
    version: str
    tiers: tuple[Tier, ...]
    description: str = ""
    currency: str | None = None
    #: Derived features in evaluation order.
    derived: tuple[tuple[str, Expr], ...] = ()
    #: Its tiering methods (``rfm``, ``scorecard``, ...) in evaluation order
    #: (:data:`app.domain.methods.METHODS`).
    methods: tuple[TieringMethod, ...] = ()
    hysteresis: Hysteresis = field(default_factory=Hysteresis)
    lifecycle: LifecycleRules = field(default_factory=LifecycleRules)
    upgrade: UpgradeRule | None = None
    #: The fitted BG/NBD / Gamma-Gamma parameters (``tierstream fit``), for churn signals.
    model: Model | None = None
    churn: ChurnRules | None = None
    #: Population percentile cut-offs this policy currently decides with (see
    #: :meth:`with_cutoffs`); not part of the policy's identity.
    cutoffs: Cutoffs = field(default_factory=Cutoffs.empty, compare=False)

    # -- compiled from the fields above by __post_init__ (never passed, never compared) --
    #: Features the tiers' entry and stay conditions read.
    features_used: tuple[str, ...] = field(init=False, default=(), compare=False)
    #: Features to compute from the state (FEATURES names and attributes).
    inputs: tuple[str, ...] = field(init=False, default=(), compare=False)
    #: Features ranked over the population, with the percentiles each needs.
    ranked: Mapping[str, tuple[float, ...]] = field(init=False, default_factory=dict, compare=False)
    #: Time-dependent features and the thresholds they are compared with.
    time_thresholds: Mapping[str, tuple[float, ...]] = field(
        init=False, default_factory=dict, compare=False
    )
    #: Indices into WINDOWS_DAYS of the rolling windows the policy reads.
    windows_used: tuple[int, ...] = field(init=False, default=(), compare=False)
    #: A derived feature reads a time-dependent feature: re-check daily.
    daily: bool = field(init=False, default=False, compare=False)
    #: Per silence feature: the ms after its anchor at which it crosses a threshold.
    _silence_offsets: Mapping[str, tuple[int, ...]] = field(
        init=False, default_factory=dict, compare=False, repr=False
    )
    #: Tier name -> place, 0 for the best.
    _rank: Mapping[str, int] = field(init=False, default_factory=dict, compare=False, repr=False)
    _by_name: Mapping[str, Tier] = field(
        init=False, default_factory=dict, compare=False, repr=False
    )
    #: (``percentile.<metric>``, metric, the percentiles conditions need, highest first).
    _percentiles: tuple[tuple[str, str, tuple[float, ...]], ...] = field(
        init=False, default=(), compare=False, repr=False
    )
    #: The methods in the order reasons explain them; None: the percentiles' cut-offs.
    _explained: tuple[TieringMethod | None, ...] = field(
        init=False, default=(), compare=False, repr=False
    )

    def __post_init__(self) -> None:
        """Compile the indexes the hot path reads: every field not passed to ``__init__``.
        They are set once, here, with ``object.__setattr__`` (as a frozen dataclass's own
        ``__init__`` sets its fields), and never change (:meth:`with_cutoffs` makes a new
        policy)."""
        conditions = self.all_conditions()
        tier_features = {c.feature for t in self.tiers for c in (*t.conditions, *(t.stay or ()))}
        names = {c.feature for c in conditions}
        for _, expr in self.derived:
            names.update(expr.names)
        for method in self.methods:
            names.update(method.inputs)
        names.add(SILENCE)  # the lifecycle's silence
        percentile_points: dict[str, set[float]] = {}
        for c in conditions:
            if c.feature.startswith(PERCENTILE_PREFIX):
                metric = c.feature[len(PERCENTILE_PREFIX) :]
                names.add(metric)
                percentile_points.setdefault(metric, set()).add(c.value)
        for method in self.methods:
            for metric, points in method.ranked.items():
                percentile_points.setdefault(metric, set()).update(points)
        inputs = sorted(n for n in names if n in FEATURES or is_attribute(n))
        thresholds: dict[str, set[float]] = {}
        for c in conditions:
            if c.feature in TIME_FEATURES and isinstance(c.value, float):
                thresholds.setdefault(c.feature, set()).add(c.value)
        for method in self.methods:
            for feature, values in method.thresholds.items():
                if feature in TIME_FEATURES:
                    thresholds.setdefault(feature, set()).update(values)
        for metric in percentile_points:
            if metric in TIME_FEATURES:
                cuts = self.cutoffs.values.get(metric, {})
                thresholds.setdefault(metric, set()).update(cuts.values())
        windows: set[int] = set()
        for n in inputs:
            m = _WINDOW_RE.search(n)
            if m and int(m.group(1)) in WINDOWS_DAYS:
                k = WINDOWS_DAYS.index(int(m.group(1)))
                windows.add(k)
                if "_growth_" in n:
                    windows.add(k + 1)
        time_thresholds = {
            f: tuple(sorted(v for v in t if math.isfinite(v))) for f, t in thresholds.items()
        }
        compiled: dict[str, Any] = {
            "features_used": tuple(sorted(tier_features)),
            "inputs": tuple(inputs),
            "ranked": {m: tuple(sorted(p)) for m, p in sorted(percentile_points.items())},
            "time_thresholds": time_thresholds,
            "windows_used": tuple(sorted(windows)),
            "daily": any(n in TIME_FEATURES for _, e in self.derived for n in e.names),
            "_silence_offsets": {
                f: tuple(sorted({off for v in vs for off in _crossings(v)}))
                for f, vs in time_thresholds.items()
                if f != "T"
            },
            "_rank": {t.name: i for i, t in enumerate(self.tiers)},
            "_by_name": {t.name: t for t in self.tiers},
            "_percentiles": tuple(
                (PERCENTILE_PREFIX + m, m, tuple(sorted(p, reverse=True)))
                for m, p in percentile_points.items()
            ),
            "_explained": explanation_order(self.methods),
        }
        assert compiled.keys() == _COMPILED, "every compiled field, and only those"
        for name, value in compiled.items():
            object.__setattr__(self, name, value)

    @property
    def key(self) -> str:
        """``name@version``: what a customer's state remembers it was evaluated under."""
        return f"{self.name}@{self.version}"

    @property
    def scorecard(self) -> Scorecard | None:
        """The ``scorecard`` method, if the policy has one."""
        return next((m for m in self.methods if isinstance(m, Scorecard)), None)

    @property
    def rfm(self) -> RFM | None:
        """The ``rfm`` method, if the policy has one."""
        return next((m for m in self.methods if isinstance(m, RFM)), None)

    def with_cutoffs(self, cutoffs: Cutoffs) -> Policy:
        """The same policy deciding with other population cut-offs."""
        return replace(self, cutoffs=cutoffs)

    def all_conditions(self) -> list[Condition]:
        """Every condition of every section (tiers, stay, lifecycle, upgrade, bands)."""
        out: list[Condition] = []
        for t in self.tiers:
            out.extend(t.conditions)
            out.extend(t.stay or ())
        out.extend(self.lifecycle.conditions)
        if self.upgrade is not None:
            out.extend(self.upgrade.conditions)
        if self.churn is not None:
            out.extend(self.churn.conditions)
        for method in self.methods:
            out.extend(method.conditions)
        return out

    def rank(self, tier: str | None) -> int:
        """0 for the best tier; unknown or no tier ranks below every tier."""
        return self._rank.get(tier, len(self.tiers)) if tier is not None else len(self.tiers)

    def tier(self, name: str | None) -> Tier | None:
        return self._by_name.get(name) if name is not None else None

    def _base_features(self, state: CustomerState, at: int) -> dict[str, Any]:
        f = compute_features(state, at, self.inputs)
        for name, expr in self.derived:
            f[name] = expr.fn(f)
        return f

    def ranked_values(self, state: CustomerState, at: int) -> dict[str, float]:
        """The customer's values of the metrics ranked over the population (what the
        population sketches summarise); a missing value is left out."""
        f = self._base_features(state, at)
        out: dict[str, float] = {}
        for metric in self.ranked:
            v = f.get(metric)
            if isinstance(v, int | float) and not isinstance(v, bool):
                out[metric] = float(v)
        return out

    def features(self, state: CustomerState, at: int) -> dict[str, Any]:
        """Every feature the policy decides on, as of ``at``: computed, derived,
        percentiles, then what each method adds (RFM scores, the scorecard ``score``)."""
        f = self._base_features(state, at)
        cutoffs = self.cutoffs
        for pname, metric, points in self._percentiles:
            value = f.get(metric)
            pct = 0.0
            if isinstance(value, int | float):
                for p in points:
                    if cutoffs.at_or_above(metric, p, float(value)):
                        pct = p
                        break
            f[pname] = pct
        for method in self.methods:
            method.add(f, cutoffs)
        return f

    def choose(self, features: Mapping[str, Any]) -> Tier:
        """The first tier whose entry conditions hold (the hot path of :meth:`decide`)."""
        for t in self.tiers:
            if all_hold(t.conditions, features):
                return t
        raise AssertionError("validated policies end with a catch-all tier")

    def decide(self, features: Mapping[str, Any]) -> Decision:
        """First tier whose conditions all hold; reasons say which held and, for the better
        tiers that were skipped, the first condition that failed."""
        missed: list[str] = []
        deciding: dict[str, Any] = {}  # the features of every condition that decided
        for t in self.tiers:
            failed = first_failed(t.conditions, features)
            if failed is None:
                held = [c.describe(features.get(c.feature), True) for c in t.conditions]
                reasons = tuple(held) if held else ("no better tier's conditions hold",)
                deciding.update((c.feature, features.get(c.feature)) for c in t.conditions)
                return Decision(t.name, reasons + tuple(missed), deciding)
            deciding[failed.feature] = features.get(failed.feature)
            missed.append(f"not {t.name}: {failed.describe(features.get(failed.feature), False)}")
        raise AssertionError("validated policies end with a catch-all tier")

    def explain_features(self, features: Mapping[str, Any], names: Iterable[str]) -> list[str]:
        """Where computed features come from, for the names that decided: the methods'
        explanations (the scorecard's factors, RFM scores) and the percentiles' cut-offs,
        in :data:`app.domain.methods.EXPLAINED` order."""
        lines: list[str] = []
        names = set(names)
        for method in self._explained:
            if method is None:
                for pname, metric, _ in self._percentiles:
                    if pname in names:
                        lines.append(self._explain_percentile(metric, features))
            elif names & method.provides:
                lines.extend(method.explain(features))
        return lines

    def _explain_percentile(self, metric: str, features: Mapping[str, Any]) -> str:
        cuts = self.cutoffs.values.get(metric)
        if not cuts:
            return (
                f"percentile.{metric}: no population cut-offs yet (generation "
                f"{self.cutoffs.generation}), so no percentile condition holds"
            )
        shown = ", ".join(f"p{fmt(p)} {fmt(v)}" for p, v in sorted(cuts.items()))
        return (
            f"percentile.{metric} {fmt(features.get(PERCENTILE_PREFIX + metric))}: "
            f"{metric} {fmt(features.get(metric))} against cut-offs {shown} "
            f"(generation {self.cutoffs.generation}, {self.cutoffs.population.get(metric, 0)} "
            "customers)"
        )

    def due_after(self, state: CustomerState, at: int) -> int | None:
        """The first time after ``at`` when a time-dependent feature crosses one of the
        policy's thresholds (None: never, without new events)."""
        best: int | None = None
        silence = self._silence_offsets
        for feature, values in self.time_thresholds.items():
            if feature == "T":
                if state.first_purchase_at is None:
                    continue
                first = state.first_purchase_at // DAY_MS
                for v in values:  # T >= v from day first + ceil(v); T > v from first + floor(v) + 1
                    for day in (first + math.ceil(v), first + math.floor(v) + 1):
                        t = day * DAY_MS
                        if t > at and (best is None or t < best):
                            best = t
                continue
            anchor = (
                state.last_purchase_at
                if feature == "days_since_last_purchase"
                else state.last_interaction_at
            )
            if anchor is None:
                continue
            for off in silence[feature]:
                # The ms the value reaches a threshold (gte/lt flip) and the ms it passes
                # it (gt/lte flip): a customer at a threshold is evaluated exactly there.
                t = anchor + off
                if t > at:
                    if best is None or t < best:
                        best = t
                    break
        if self.daily:
            t = (at // DAY_MS + 1) * DAY_MS
            if best is None or t < best:
                best = t
        return best


#: The fields of a Policy that __post_init__ compiles.
_COMPILED = frozenset(f.name for f in fields(Policy) if not f.init)


def _crossings(v: float) -> tuple[int, ...]:
    """Whole ms after the anchor at which ``days = ms / DAY_MS`` (as the features compute
    it) first reaches ``v`` and first passes it; none for a threshold beyond any time.

    >>> _crossings(90.0) == (90 * DAY_MS, 90 * DAY_MS + 1)
    True
    """
    product = v * DAY_MS
    if not math.isfinite(product):
        return ()
    base = math.floor(product)
    near = range(base - 1, base + 3)
    reach = next((m for m in near if m / DAY_MS >= v), base + 1)
    passed = next((m for m in near if m / DAY_MS > v), base + 2)
    return (reach, passed)
