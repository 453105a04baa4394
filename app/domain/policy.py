"""Tiering policies: validated, compiled rule sets that turn features into a tier, a
lifecycle stage and upgrade flags.

A policy document (usually YAML, loaded by :mod:`app.policy_files`) looks like::

    name: value-tiers
    version: "1"
    tiers:                      # best tier first; the first whose conditions all hold wins
      - name: A
        when: {spend_365d: {gte: 5000}, purchases_365d: {gte: 12}}
        stay: {spend_365d: {gte: 4000}}   # optional: easier to keep than to get (hysteresis)
        service_level: {queue_priority: 1, account_manager: dedicated}
      - name: D                 # the last tier has no conditions: everybody else
        service_level: {queue_priority: 4}
    hysteresis: {min_days_in_tier: 30, demotion_grace_days: 14}

Optional sections: ``derived`` (named arithmetic over features, :mod:`app.domain.expr`),
``scorecard`` and ``rfm`` (:mod:`app.domain.scoring`), ``lifecycle``
(:mod:`app.domain.lifecycle`), ``upgrade`` (which low tiers are watched for rising
behaviour) and percentile features ``percentile.<feature>`` ranked over the whole
population (:mod:`app.domain.population`).

A condition is ``{op: value}`` with ``op`` one of ``gte gt lte lt eq ne in``; a bare number
means ``gte``. Features are listed in :data:`app.domain.features.FEATURES`; profile
attributes are addressed as ``attributes.<name>``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from app.domain.bgnbd import Model, parse_model
from app.domain.churn import ChurnRules, parse_churn
from app.domain.conditions import (
    PERCENTILE_PREFIX,
    Condition,
    FeatureKind,
    Problems,
    all_hold,
    finite_number,
    first_failed,
    fmt,
    is_attribute,
    parse_conditions,
)
from app.domain.errors import PolicyError
from app.domain.expr import Expr, ExprError, compile_expr
from app.domain.features import ATTRIBUTE_PREFIX, FEATURES, compute_features
from app.domain.lifecycle import SILENCE, LifecycleRules, parse_lifecycle
from app.domain.population import Cutoffs
from app.domain.scoring import RFM, RFM_SLOTS, Scorecard, parse_rfm, parse_scorecard
from app.domain.state import DAY_MS, WINDOWS_DAYS, CustomerState

__all__ = [
    "ATTRIBUTE_PREFIX",
    "Condition",
    "Decision",
    "Hysteresis",
    "Policy",
    "Tier",
    "UpgradeRule",
    "policy_from_dict",
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
    scorecard: Scorecard | None = None
    rfm: RFM | None = None
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
        if self.scorecard is not None:
            names.update(self.scorecard.features)
        if self.rfm is not None:
            names.update(self.rfm.features)
        names.add(SILENCE)  # the lifecycle's silence
        percentile_points: dict[str, set[float]] = {}
        for c in conditions:
            if c.feature.startswith(PERCENTILE_PREFIX):
                metric = c.feature[len(PERCENTILE_PREFIX) :]
                names.add(metric)
                percentile_points.setdefault(metric, set()).add(c.value)
        if self.rfm is not None:
            for metric, points in self.rfm.ranked.items():
                percentile_points.setdefault(metric, set()).update(points)
        inputs = sorted(n for n in names if n in FEATURES or is_attribute(n))
        thresholds: dict[str, set[float]] = {}
        for c in conditions:
            if c.feature in TIME_FEATURES and isinstance(c.value, float):
                thresholds.setdefault(c.feature, set()).add(c.value)
        if self.rfm is not None:
            for sc in self.rfm.scores:
                if sc.feature in TIME_FEATURES:
                    thresholds.setdefault(sc.feature, set()).update(sc.edges or ())
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
        }
        assert compiled.keys() == _COMPILED, "every compiled field, and only those"
        for name, value in compiled.items():
            object.__setattr__(self, name, value)

    @property
    def key(self) -> str:
        """``name@version``: what a customer's state remembers it was evaluated under."""
        return f"{self.name}@{self.version}"

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
        if self.scorecard is not None:
            for f in self.scorecard.factors:
                for b in f.bands:
                    out.extend(b.conditions)
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
        percentiles, RFM scores and the scorecard ``score``."""
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
        if self.rfm is not None:
            self.rfm.add_scores(f, cutoffs)
        if self.scorecard is not None:
            f["score"] = self.scorecard.score(f)
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
        """Where computed features come from: the scorecard's factors, a percentile's
        cut-off, RFM scores (for the names that decided)."""
        lines: list[str] = []
        names = set(names)
        if "score" in names and self.scorecard is not None:
            lines.append(f"score {fmt(features.get('score'))} = sum of:")
            lines.extend("  " + fs.describe() for fs in self.scorecard.breakdown(features))
        for pname, metric, _ in self._percentiles:
            if pname in names:
                lines.append(self._explain_percentile(metric, features))
        if self.rfm is not None and names & {*RFM_SLOTS.values(), "rfm_sum"}:
            for sc in self.rfm.scores:
                how = "bands " + fmt(sc.edges) if sc.edges is not None else "population quintiles"
                lines.append(
                    f"{RFM_SLOTS[sc.slot]} {fmt(features.get(RFM_SLOTS[sc.slot]))}: "
                    f"{sc.feature} {fmt(features.get(sc.feature))} by {how}"
                )
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


def _is_name(value: Any) -> bool:
    """A usable name or version: a non-empty string, or a number (YAML ``version: 1``)."""
    if isinstance(value, bool) or value is None:
        return False
    return isinstance(value, str | int | float) and str(value).strip() != ""


_TOP_KEYS = {
    "name",
    "version",
    "description",
    "currency",
    "tiers",
    "derived",
    "scorecard",
    "rfm",
    "hysteresis",
    "lifecycle",
    "upgrade",
    "model",
    "churn",
}
_TIER_KEYS = {"name", "when", "stay", "service_level", "description"}
_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]*$")


class _Names:
    """What each feature name is, as the policy's sections are parsed in order."""

    def __init__(self) -> None:
        self.numbers: set[str] = set(FEATURES)

    def kind_of(self, name: str) -> FeatureKind | None:
        if name in self.numbers:
            return "number"
        if is_attribute(name):
            return "attribute"
        if name.startswith(PERCENTILE_PREFIX):
            metric = name[len(PERCENTILE_PREFIX) :]
            if metric in self.numbers and metric not in {"score", *RFM_SLOTS.values(), "rfm_sum"}:
                return "percentile"
        return None

    def base_kind_of(self, name: str) -> FeatureKind | None:
        """For derived expressions: numbers and attributes only (no percentiles)."""
        kind = self.kind_of(name)
        return kind if kind != "percentile" else None


def policy_from_dict(doc: Any, source: str = "<policy>") -> Policy:
    """Validate a parsed policy document; every problem is reported with its path.

    >>> policy_from_dict({"name": "p", "version": 1, "tiers": [{"name": "all"}]}).version
    '1'
    >>> policy_from_dict({"name": "p", "version": 1, "tiers": [
    ...     {"name": "A", "when": {"spend_90d": {"gte": "lots"}}}, {"name": "B"}]}, "p.yaml")
    Traceback (most recent call last):
    ...
    app.domain.errors.PolicyError: invalid policy p.yaml:
      tiers[0].when.spend_90d.gte: must be a number, got 'lots'
    """
    problems: Problems = []
    if not isinstance(doc, Mapping):
        got = "an empty document" if doc is None else type(doc).__name__
        raise PolicyError(source, [("$", f"a policy must be a mapping, got {got}")])
    for key in ("name", "version"):
        if not _is_name(doc.get(key)):
            problems.append((key, "required: a non-empty string"))
    for key in doc:
        if key not in _TOP_KEYS:
            problems.append((str(key), f"unknown key (allowed: {', '.join(sorted(_TOP_KEYS))})"))
    currency = doc.get("currency")
    if currency is not None and not isinstance(currency, str):
        problems.append(("currency", "must be a string such as USD"))
    names = _Names()
    derived = _parse_derived(doc.get("derived"), problems, names)
    scorecard = None
    if doc.get("scorecard") is not None:
        scorecard = parse_scorecard(doc["scorecard"], "scorecard", problems, names.kind_of)
        names.numbers.add("score")
    rfm = None
    if doc.get("rfm") is not None:
        rfm = parse_rfm(doc["rfm"], "rfm", problems, names.kind_of)
        names.numbers.update({*RFM_SLOTS.values(), "rfm_sum"})
    tiers = _parse_tiers(doc.get("tiers"), problems, names)
    hysteresis = _parse_hysteresis(doc.get("hysteresis"), problems)
    lifecycle = parse_lifecycle(doc.get("lifecycle"), "lifecycle", problems, names.kind_of)
    upgrade = _parse_upgrade(doc.get("upgrade"), tiers, problems, names)
    model = None
    if doc.get("model") is not None:
        model = parse_model(doc["model"], "model", problems)
    churn = parse_churn(
        doc.get("churn"),
        "churn",
        problems,
        names.kind_of,
        {t.name for t in tiers},
        model is not None and model.bgnbd is not None,
    )
    if problems:
        raise PolicyError(source, problems)
    return Policy(
        name=str(doc["name"]),
        version=str(doc["version"]),
        tiers=tuple(tiers),
        description=str(doc.get("description") or ""),
        currency=currency or None,
        derived=derived,
        scorecard=scorecard,
        rfm=rfm,
        hysteresis=hysteresis,
        lifecycle=lifecycle,
        upgrade=upgrade,
        model=model,
        churn=churn,
    )


def _parse_derived(raw: Any, problems: Problems, names: _Names) -> tuple[tuple[str, Expr], ...]:
    """Derived features, each may use the ones before it."""
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        problems.append(("derived", "must be a mapping name -> expression"))
        return ()
    out: list[tuple[str, Expr]] = []
    for name, source in raw.items():
        path = f"derived.{name}"
        if not isinstance(name, str) or not _NAME_RE.match(name):
            problems.append((path, "a name must be lower_case letters, digits and _"))
            continue
        if name in FEATURES or name in {"score", *RFM_SLOTS.values(), "rfm_sum"}:
            problems.append((path, "this name is taken by a built-in feature"))
            continue
        if isinstance(source, bool) or not isinstance(source, str | int | float):
            problems.append((path, f"must be an arithmetic expression, got {source!r}"))
            continue
        try:
            expr = compile_expr(str(source))
        except ExprError as exc:
            problems.append((path, str(exc)))
            continue
        unknown = [n for n in expr.names if names.base_kind_of(n) is None]
        if unknown:
            problems.append(
                (
                    path,
                    f"unknown feature(s) {', '.join(unknown)} (derived features may use "
                    "built-in features, attributes and derived features defined above)",
                )
            )
            continue
        names.numbers.add(name)
        out.append((name, expr))
    return tuple(out)


def _parse_tiers(raw_tiers: Any, problems: Problems, names: _Names) -> list[Tier]:
    tiers: list[Tier] = []
    if not isinstance(raw_tiers, list) or not raw_tiers:
        problems.append(("tiers", "required: a non-empty list, best tier first"))
        return tiers
    seen: set[str] = set()
    for i, raw in enumerate(raw_tiers):
        path = f"tiers[{i}]"
        if not isinstance(raw, Mapping):
            problems.append((path, "must be a mapping with name, when, stay, service_level"))
            continue
        name = raw.get("name")
        if not isinstance(name, str) or not name.strip():
            problems.append((f"{path}.name", "required: a non-empty string"))
            name = f"#{i}"
        elif name in seen:
            problems.append((f"{path}.name", f"duplicate tier name {name!r}"))
        seen.add(name)
        for key in raw:
            if key not in _TIER_KEYS:
                problems.append(
                    (f"{path}.{key}", f"unknown key (allowed: {', '.join(sorted(_TIER_KEYS))})")
                )
        when = raw.get("when")
        conditions = parse_conditions(
            {} if when is None else when, f"{path}.when", problems, names.kind_of
        )
        stay: tuple[Condition, ...] | None = None
        if raw.get("stay") is not None:
            stay = parse_conditions(raw["stay"], f"{path}.stay", problems, names.kind_of)
        service = raw.get("service_level")
        if service is None:
            service = {}
        elif not isinstance(service, Mapping):
            problems.append((f"{path}.service_level", "must be a mapping"))
            service = {}
        is_last = i == len(raw_tiers) - 1
        empty = not when if isinstance(when, Mapping) or when is None else None
        if is_last and empty is False:
            problems.append((f"{path}.when", "the last tier must have no conditions (catch-all)"))
        elif not is_last and empty:
            problems.append(
                (
                    f"{path}.when",
                    "only the last tier may have no conditions (tiers after it "
                    "could never be chosen)",
                )
            )
        if is_last and stay:
            problems.append((f"{path}.stay", "the last tier is kept by everybody: no stay"))
        description = str(raw.get("description") or "")
        tiers.append(Tier(name, conditions, dict(service), stay, description))
    return tiers


def _parse_hysteresis(raw: Any, problems: Problems) -> Hysteresis:
    if raw is None:
        return Hysteresis()
    if not isinstance(raw, Mapping):
        problems.append(("hysteresis", "must be a mapping"))
        return Hysteresis()
    values: dict[str, float] = {}
    for key, v in raw.items():
        if key not in ("min_days_in_tier", "demotion_grace_days"):
            problems.append(
                (
                    f"hysteresis.{key}",
                    "unknown key (allowed: demotion_grace_days, min_days_in_tier)",
                )
            )
        elif not finite_number(v) or v < 0:
            problems.append((f"hysteresis.{key}", f"must be a number of days >= 0, got {v!r}"))
        else:
            values[str(key)] = float(v)
    return Hysteresis(**values)


def _parse_upgrade(
    raw: Any, tiers: list[Tier], problems: Problems, names: _Names
) -> UpgradeRule | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        problems.append(("upgrade", "must be a mapping with tiers and when"))
        return None
    for key in raw:
        if key not in ("tiers", "when"):
            problems.append((f"upgrade.{key}", "unknown key (allowed: tiers, when)"))
    known = [t.name for t in tiers]
    watched = raw.get("tiers", known[-1:])
    if not isinstance(watched, list) or not watched:
        problems.append(("upgrade.tiers", "must be a non-empty list of tier names"))
        watched = []
    for j, name in enumerate(watched):
        if name not in known:
            problems.append((f"upgrade.tiers[{j}]", f"not a tier of this policy: {name!r}"))
    when = raw.get("when")
    if not isinstance(when, Mapping) or not when:
        problems.append(("upgrade.when", "required: the conditions of rising behaviour"))
        return None
    conditions = parse_conditions(when, "upgrade.when", problems, names.kind_of)
    return UpgradeRule(frozenset(str(n) for n in watched), conditions)
