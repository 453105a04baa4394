"""Scores a policy computes from features: a weighted scorecard and RFM scores.

Scorecard (DOMAIN.md method 4)::

    scorecard:
      factors:                       # weights sum to 100, so the score is 0..100
        - name: ownership
          weight: 15
          feature: attributes.ownership
          points: {state_owned: 100, listed: 80, private: 60}   # category -> points of 100
          default: 0                                              # missing or unlisted
        - name: growth
          weight: 15
          feature: spend_growth_90d
          bands:                     # the first band that holds; points of 100
            - {gte: 0.3, points: 100}
            - {gte: 0.1, points: 70}
            - {points: 30}           # a band with no condition: everything else

A factor contributes ``weight * points / 100``; the feature ``score`` is the sum.

RFM (DOMAIN.md method 2)::

    rfm:
      recency:   {feature: days_since_last_purchase, bands: [30, 60, 120, 240]}
      frequency: {feature: purchases_365d, quintiles: true}
      monetary:  {feature: spend_365d, bands: [100, 300, 1000, 3000]}

Each of R, F and M is scored 1..5 (features ``rfm_r``, ``rfm_f``, ``rfm_m`` and their sum
``rfm_sum``): by four ascending ``bands`` edges (an edge belongs to the band above it) or by
the population's ``quintiles`` (20/40/60/80th percentiles over all customers). Higher values
score higher, except for recency, where fewer days score higher (``better: lower|higher``
overrides). A quintile score has no value (None: no condition on it holds) until the
population's cut-offs are known.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from app.domain.conditions import (
    Condition,
    FeatureKind,
    Problems,
    all_hold,
    finite_number,
    fmt,
    parse_conditions,
)
from app.domain.population import Cutoffs

RFM_SLOTS = {"recency": "rfm_r", "frequency": "rfm_f", "monetary": "rfm_m"}
QUINTILES = (20.0, 40.0, 60.0, 80.0)
KindOf = Callable[[str], FeatureKind | None]


@dataclass(frozen=True, slots=True)
class Band:
    conditions: tuple[Condition, ...]
    points: float


@dataclass(frozen=True, slots=True)
class Factor:
    name: str
    weight: float
    feature: str
    bands: tuple[Band, ...] = ()
    categories: Mapping[str, float] | None = None
    default: float = 0.0

    def points(self, features: Mapping[str, Any]) -> tuple[float, str]:
        """Points (0..100) and how they were found."""
        value = features.get(self.feature)
        if self.categories is not None:
            key = _category_key(value)
            if key is not None and key in self.categories:
                return self.categories[key], f"{self.feature} = {key}"
            return self.default, f"{self.feature} = {fmt(value)} (not listed: default)"
        for band in self.bands:
            if all_hold(band.conditions, features):
                held = " and ".join(c.describe(value, True) for c in band.conditions)
                return band.points, held or f"{self.feature} = {fmt(value)}"
        return self.default, f"{self.feature} = {fmt(value)} (no band: default)"


def _category_key(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True, slots=True)
class FactorScore:
    name: str
    points: float  # of 100
    weighted: float
    weight: float
    why: str

    def describe(self) -> str:
        return (
            f"{self.name}: {self.why} -> {fmt(self.points)} of 100 x {fmt(self.weight)} % "
            f"= {fmt(self.weighted)}"
        )


@dataclass(frozen=True)
class Scorecard:
    """A weighted scorecard: the :class:`~app.domain.methods.TieringMethod` of the
    ``scorecard`` section, adding the feature ``score``."""

    factors: tuple[Factor, ...]

    provides: ClassVar[frozenset[str]] = frozenset({"score"})

    @property
    def inputs(self) -> set[str]:
        return {f.feature for f in self.factors}

    @property
    def ranked(self) -> dict[str, tuple[float, ...]]:
        return {}  # a percentile factor reads percentile.<feature>: the policy ranks it

    @property
    def conditions(self) -> tuple[Condition, ...]:
        """The bands' conditions, factor by factor."""
        return tuple(c for f in self.factors for b in f.bands for c in b.conditions)

    @property
    def thresholds(self) -> dict[str, tuple[float, ...]]:
        return {}  # where the score changes is where a band's condition flips

    def add(self, features: dict[str, Any], cutoffs: Cutoffs) -> None:
        features["score"] = self.score(features)

    def explain(self, features: Mapping[str, Any]) -> list[str]:
        return [
            f"score {fmt(features.get('score'))} = sum of:",
            *("  " + fs.describe() for fs in self.breakdown(features)),
        ]

    def score(self, features: Mapping[str, Any]) -> float:
        return sum(f.weight * f.points(features)[0] / 100.0 for f in self.factors)

    def breakdown(self, features: Mapping[str, Any]) -> list[FactorScore]:
        out = []
        for f in self.factors:
            points, why = f.points(features)
            out.append(FactorScore(f.name, points, f.weight * points / 100.0, f.weight, why))
        return out


@dataclass(frozen=True, slots=True)
class RFMScore:
    slot: str  # recency | frequency | monetary
    feature: str
    edges: tuple[float, ...] | None  # None: quintiles
    lower_is_better: bool

    def score(self, features: Mapping[str, Any], cutoffs: Cutoffs) -> int | None:
        value = features.get(self.feature)
        if value is None or not isinstance(value, int | float) or value != value:
            return None
        if self.edges is not None:
            above = sum(1 for e in self.edges if value >= e)
        elif not cutoffs.values.get(self.feature):
            return None  # no population cut-offs yet: unknown (not "best recency" for all)
        elif value == float("inf"):
            above = len(QUINTILES)
        elif value == float("-inf"):
            above = 0
        else:
            above = sum(1 for p in QUINTILES if cutoffs.at_or_above(self.feature, p, value))
        return 5 - above if self.lower_is_better else 1 + above


@dataclass(frozen=True)
class RFM:
    """RFM scores: the :class:`~app.domain.methods.TieringMethod` of the ``rfm`` section,
    adding ``rfm_r``, ``rfm_f``, ``rfm_m`` (those it scores) and ``rfm_sum``."""

    scores: tuple[RFMScore, ...]

    provides: ClassVar[frozenset[str]] = frozenset({*RFM_SLOTS.values(), "rfm_sum"})

    @property
    def inputs(self) -> set[str]:
        return {s.feature for s in self.scores}

    @property
    def ranked(self) -> dict[str, tuple[float, ...]]:
        """Features scored by population quintiles, with the percentiles they need."""
        return {s.feature: QUINTILES for s in self.scores if s.edges is None}

    @property
    def conditions(self) -> tuple[Condition, ...]:
        return ()

    @property
    def thresholds(self) -> dict[str, tuple[float, ...]]:
        """The band edges of each scored feature (where a score changes)."""
        out: dict[str, tuple[float, ...]] = {}
        for s in self.scores:
            out[s.feature] = (*out.get(s.feature, ()), *(s.edges or ()))
        return out

    def add(self, features: dict[str, Any], cutoffs: Cutoffs) -> None:
        total: int | None = 0
        for s in self.scores:
            value = s.score(features, cutoffs)
            features[RFM_SLOTS[s.slot]] = value
            total = None if value is None or total is None else total + value
        features["rfm_sum"] = total

    def explain(self, features: Mapping[str, Any]) -> list[str]:
        lines: list[str] = []
        for sc in self.scores:
            how = "bands " + fmt(sc.edges) if sc.edges is not None else "population quintiles"
            lines.append(
                f"{RFM_SLOTS[sc.slot]} {fmt(features.get(RFM_SLOTS[sc.slot]))}: "
                f"{sc.feature} {fmt(features.get(sc.feature))} by {how}"
            )
        return lines


def parse_scorecard(raw: Any, path: str, problems: Problems, kind_of: KindOf) -> Scorecard | None:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("factors"), list):
        problems.append((path, "must be a mapping with a list of factors"))
        return None
    for key in raw:
        if key != "factors":
            problems.append((f"{path}.{key}", "unknown key (allowed: factors)"))
    factors: list[Factor] = []
    names: set[str] = set()
    for i, rf in enumerate(raw["factors"]):
        fpath = f"{path}.factors[{i}]"
        factor = _parse_factor(rf, fpath, problems, kind_of)
        if factor is None:
            continue
        if factor.name in names:
            problems.append((f"{fpath}.name", f"duplicate factor name {factor.name!r}"))
        names.add(factor.name)
        factors.append(factor)
    if not raw["factors"]:
        problems.append((f"{path}.factors", "needs at least one factor"))
    total = sum(f.weight for f in factors)
    if factors and len(factors) == len(raw["factors"]) and abs(total - 100.0) > 1e-9:
        problems.append((f"{path}.factors", f"weights must sum to 100, they sum to {fmt(total)}"))
    return Scorecard(tuple(factors))


_FACTOR_KEYS = {"name", "weight", "feature", "bands", "points", "default", "description"}


def _parse_factor(rf: Any, fpath: str, problems: Problems, kind_of: KindOf) -> Factor | None:
    if not isinstance(rf, Mapping):
        problems.append((fpath, "must be a mapping with name, weight, feature and bands or points"))
        return None
    before = len(problems)
    for key in rf:
        if key not in _FACTOR_KEYS:
            problems.append(
                (f"{fpath}.{key}", f"unknown key (allowed: {', '.join(sorted(_FACTOR_KEYS))})")
            )
    name = rf.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append((f"{fpath}.name", "required: a non-empty string"))
    weight = rf.get("weight")
    if not finite_number(weight) or weight <= 0:
        problems.append((f"{fpath}.weight", f"required: a positive number, got {weight!r}"))
    feature = rf.get("feature")
    kind = kind_of(feature) if isinstance(feature, str) else None
    if kind is None:
        problems.append((f"{fpath}.feature", f"unknown feature {feature!r}"))
    default = rf.get("default", 0)
    if not _is_points(default):
        problems.append((f"{fpath}.default", f"must be points between 0 and 100, got {default!r}"))
    has_bands, has_points = "bands" in rf, "points" in rf
    if has_bands == has_points:
        problems.append((fpath, "give either bands (numeric) or points (category -> points)"))
    categories: dict[str, float] | None = None
    bands: list[Band] = []
    if has_points:
        raw_points = rf["points"]
        if not isinstance(raw_points, Mapping) or not raw_points:
            problems.append((f"{fpath}.points", "must be a non-empty mapping category -> points"))
        else:
            categories = {}
            for cat, pts in raw_points.items():
                if not _is_points(pts):
                    problems.append(
                        (f"{fpath}.points.{cat}", f"must be between 0 and 100, got {pts!r}")
                    )
                else:
                    key = _category_key(cat)
                    categories[key if key is not None else "None"] = float(pts)
    if has_bands and isinstance(feature, str) and kind is not None:
        bands = _parse_bands(rf["bands"], feature, f"{fpath}.bands", problems, kind_of)
    if len(problems) > before:
        return None
    assert isinstance(name, str) and isinstance(feature, str) and finite_number(weight)
    return Factor(name, float(weight), feature, tuple(bands), categories, float(default))


def _parse_bands(
    raw: Any, feature: str, path: str, problems: Problems, kind_of: KindOf
) -> list[Band]:
    if not isinstance(raw, list) or not raw:
        problems.append((path, "must be a non-empty list of {op: value, points: N}"))
        return []
    bands = []
    for j, rb in enumerate(raw):
        bpath = f"{path}[{j}]"
        if not isinstance(rb, Mapping) or "points" not in rb:
            problems.append((bpath, "must be a mapping with points and conditions ({gte: 10})"))
            continue
        pts = rb["points"]
        if not _is_points(pts):
            problems.append((f"{bpath}.points", f"must be between 0 and 100, got {pts!r}"))
            continue
        ops = {k: v for k, v in rb.items() if k != "points"}
        conds = parse_conditions({feature: ops}, bpath, problems, kind_of) if ops else ()
        bands.append(Band(conds, float(pts)))
    return bands


def _is_points(v: Any) -> bool:
    return finite_number(v) and 0 <= v <= 100


def parse_rfm(raw: Any, path: str, problems: Problems, kind_of: KindOf) -> RFM | None:
    if not isinstance(raw, Mapping) or not raw:
        problems.append((path, "must be a mapping with recency, frequency and/or monetary"))
        return None
    scores: list[RFMScore] = []
    for slot, spec in raw.items():
        spath = f"{path}.{slot}"
        if slot not in RFM_SLOTS:
            problems.append((spath, "unknown key (allowed: recency, frequency, monetary)"))
            continue
        score = _parse_rfm_score(str(slot), spec, spath, problems, kind_of)
        if score is not None:
            scores.append(score)
    return RFM(tuple(scores))


def _parse_rfm_score(
    slot: str, spec: Any, spath: str, problems: Problems, kind_of: KindOf
) -> RFMScore | None:
    if not isinstance(spec, Mapping):
        problems.append((spath, "must be a mapping: {feature: ..., bands: [4 edges]} or quintiles"))
        return None
    for key in spec:
        if key not in {"feature", "bands", "quintiles", "better"}:
            problems.append(
                (f"{spath}.{key}", "unknown key (allowed: feature, bands, quintiles, better)")
            )
    feature = spec.get("feature")
    if not isinstance(feature, str) or kind_of(feature) != "number":
        problems.append((f"{spath}.feature", f"must be a numeric feature, got {feature!r}"))
        return None
    better: Literal["lower", "higher"] | Any = spec.get(
        "better", "lower" if slot == "recency" else "higher"
    )
    if better not in ("lower", "higher"):
        problems.append((f"{spath}.better", f"must be lower or higher, got {better!r}"))
    bands, quintiles = spec.get("bands"), spec.get("quintiles", False)
    edges: tuple[float, ...] | None = None
    if quintiles is True and bands is None:
        edges = None
    elif quintiles is False and bands is not None:
        if (
            not isinstance(bands, list)
            or len(bands) != 4
            or not all(finite_number(e) for e in bands)
            or any(a >= b for a, b in itertools.pairwise(bands))
        ):
            problems.append((f"{spath}.bands", f"must be 4 increasing numbers, got {bands!r}"))
            return None
        edges = tuple(float(e) for e in bands)
    else:
        problems.append((spath, "give either bands: [4 increasing edges] or quintiles: true"))
        return None
    return RFMScore(slot, feature, edges, better == "lower")
