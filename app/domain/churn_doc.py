"""The ``churn`` section of a policy document (its format: :mod:`app.domain.churn`) in,
:class:`~app.domain.churn.ChurnRules` out; every problem is appended with its path.

>>> problems = []
>>> rules = parse_churn(
...     {"severity": [{"name": "watch", "when": {"silence_ratio": {"gte": 1.5}}}]},
...     "churn", problems, lambda name: None, {"A", "B"}, has_model=False)
>>> problems, [s.name for s in rules.severities], rules.rearm_days
([], ['watch'], 7.0)
>>> parse_churn({"severity": [{"name": "x", "when": {"p_alive": {"lt": 0.2}}}]},
...     "churn", problems, lambda name: None, set(), has_model=False) and problems
[('churn.severity', 'p_alive needs the model section with bgnbd (tierstream fit)')]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from app.domain.churn import (
    CHURN_FEATURES,
    METRIC_SLOTS,
    ChurnRules,
    Falling,
    Severity,
    UsualGap,
)
from app.domain.conditions import (
    Condition,
    FeatureKind,
    Problems,
    finite_number,
    parse_conditions,
)

__all__ = ["parse_churn"]

_DROPS = {f"{m}_drop": m for m in METRIC_SLOTS}
_MAX_WINDOW_DAYS = 365
_KEYS = {"usual_gap", "falling", "severity", "actions", "value_horizon_days", "rearm_days"}


def parse_churn(
    raw: Any,
    path: str,
    problems: Problems,
    kind_of: Callable[[str], FeatureKind | None],
    tiers: set[str],
    has_model: bool,
) -> ChurnRules | None:
    """Validate a ``churn`` section; problems are appended with their paths."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        problems.append((path, "must be a mapping (usual_gap, falling, severity, actions, ...)"))
        return None
    for key in raw:
        if key not in _KEYS:
            problems.append((f"{path}.{key}", f"unknown key (allowed: {', '.join(sorted(_KEYS))})"))
    usual = _parse_usual_gap(raw.get("usual_gap"), f"{path}.usual_gap", problems)
    falling = _parse_falling(raw.get("falling"), f"{path}.falling", problems)

    def churn_kind(name: str) -> FeatureKind | None:
        return "number" if name in CHURN_FEATURES else kind_of(name)

    severities = _parse_severities(raw.get("severity"), f"{path}.severity", problems, churn_kind)
    used = {c.feature for s in severities for g in s.groups for c in g}
    if "p_alive" in used and not has_model:
        problems.append(
            (f"{path}.severity", "p_alive needs the model section with bgnbd (tierstream fit)")
        )
    for feature, metric in _DROPS.items():
        if feature in used and (falling is None or metric not in falling.min_baseline):
            problems.append((f"{path}.severity", f"{feature} needs falling.min_baseline.{metric}"))
    names = {s.name for s in severities}
    actions = _parse_actions(raw.get("actions"), f"{path}.actions", problems, tiers, names)
    horizon = _positive(raw, "value_horizon_days", 365.0, path, problems)
    rearm = _positive(raw, "rearm_days", 7.0, path, problems, allow_zero=True)
    return ChurnRules(usual, falling, severities, actions, horizon, rearm)


def _positive(
    raw: Mapping[str, Any],
    key: str,
    default: float,
    path: str,
    problems: Problems,
    allow_zero: bool = False,
) -> float:
    v = raw.get(key, default)
    if not finite_number(v) or v < 0 or (v == 0 and not allow_zero):
        problems.append((f"{path}.{key}", f"must be a positive number of days, got {v!r}"))
        return default
    return float(v)


def _parse_usual_gap(raw: Any, path: str, problems: Problems) -> UsualGap:
    if raw is None:
        return UsualGap()
    if not isinstance(raw, Mapping):
        problems.append((path, "must be a mapping {of, min_gaps, default_days}"))
        return UsualGap()
    for key in raw:
        if key not in ("of", "min_gaps", "default_days"):
            problems.append((f"{path}.{key}", "unknown key (allowed: default_days, min_gaps, of)"))
    of = str(raw.get("of", "p90"))
    if of not in ("mean", "median") and not _is_percentile(of):
        problems.append((f"{path}.of", f"must be mean, median or pNN (e.g. p90), got {of!r}"))
        of = "p90"
    min_gaps = raw.get("min_gaps", 3)
    if not isinstance(min_gaps, int) or isinstance(min_gaps, bool) or min_gaps < 1:
        problems.append((f"{path}.min_gaps", f"must be a whole number >= 1, got {min_gaps!r}"))
        min_gaps = 3
    default = raw.get("default_days", 30.0)
    if not finite_number(default) or default <= 0:
        problems.append((f"{path}.default_days", f"must be a positive number, got {default!r}"))
        default = 30.0
    return UsualGap(of, min_gaps, float(default))


def _is_percentile(of: str) -> bool:
    try:
        return of.startswith("p") and 0 < float(of[1:]) <= 100
    except ValueError:
        return False


def _parse_falling(raw: Any, path: str, problems: Problems) -> Falling | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        problems.append((path, "must be a mapping {recent_days, baseline_days, min_baseline}"))
        return None
    for key in raw:
        if key not in ("recent_days", "baseline_days", "min_baseline"):
            problems.append(
                (f"{path}.{key}", "unknown key (allowed: baseline_days, min_baseline, recent_days)")
            )
    days = {}
    for key, default in (("recent_days", 30), ("baseline_days", 90)):
        v = raw.get(key, default)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            problems.append((f"{path}.{key}", f"must be a whole number of days >= 1, got {v!r}"))
            v = default
        days[key] = v
    if days["recent_days"] + days["baseline_days"] > _MAX_WINDOW_DAYS:
        problems.append(
            (path, f"recent_days + baseline_days must be at most {_MAX_WINDOW_DAYS} (kept days)")
        )
    mins: dict[str, float] = {}
    raw_min = raw.get("min_baseline")
    if not isinstance(raw_min, Mapping) or not raw_min:
        problems.append(
            (
                f"{path}.min_baseline",
                "required: {metric: smallest baseline total} for purchases, spend and/or "
                "interactions",
            )
        )
    else:
        for metric, v in raw_min.items():
            if metric not in METRIC_SLOTS:
                problems.append(
                    (
                        f"{path}.min_baseline.{metric}",
                        "unknown metric (purchases, spend, interactions)",
                    )
                )
            elif not finite_number(v) or v < 0:
                problems.append(
                    (f"{path}.min_baseline.{metric}", f"must be a number >= 0, got {v!r}")
                )
            else:
                mins[str(metric)] = float(v)
    return Falling(days["recent_days"], days["baseline_days"], mins)


def _parse_severities(
    raw: Any, path: str, problems: Problems, kind_of: Callable[[str], FeatureKind | None]
) -> tuple[Severity, ...]:
    if not isinstance(raw, list) or not raw:
        problems.append((path, "required: a list of levels, highest first: {name, when | any}"))
        return ()
    out: list[Severity] = []
    seen: set[str] = set()
    for i, level in enumerate(raw):
        lpath = f"{path}[{i}]"
        if not isinstance(level, Mapping):
            problems.append((lpath, "must be a mapping {name, when | any}"))
            continue
        for key in level:
            if key not in ("name", "when", "any"):
                problems.append((f"{lpath}.{key}", "unknown key (allowed: any, name, when)"))
        name = level.get("name")
        if not isinstance(name, str) or not name:
            problems.append((f"{lpath}.name", "required: a non-empty string"))
            continue
        if name in seen:
            problems.append((f"{lpath}.name", f"duplicate severity {name!r}"))
        seen.add(name)
        groups: list[tuple[Condition, ...]] = []
        if "when" in level:
            groups.append(parse_conditions(level["when"], f"{lpath}.when", problems, kind_of))
        if "any" in level:
            alts = level["any"]
            if not isinstance(alts, list) or not alts:
                problems.append((f"{lpath}.any", "must be a non-empty list of condition maps"))
            else:
                for j, alt in enumerate(alts):
                    groups.append(parse_conditions(alt, f"{lpath}.any[{j}]", problems, kind_of))
        if not groups or not all(groups):
            if "when" not in level and "any" not in level:
                problems.append((lpath, "needs conditions: when {...} or any [{...}, ...]"))
            continue
        out.append(Severity(name, tuple(groups)))
    return tuple(out)


def _parse_actions(
    raw: Any, path: str, problems: Problems, tiers: set[str], severities: set[str]
) -> dict[str, dict[str, str]]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        problems.append((path, "must be a mapping tier -> {severity: action}"))
        return {}
    out: dict[str, dict[str, str]] = {}
    for tier, by_sev in raw.items():
        tpath = f"{path}.{tier}"
        if tier != "*" and tier not in tiers:
            problems.append((tpath, f"unknown tier (one of {', '.join(sorted(tiers))}, or *)"))
            continue
        if not isinstance(by_sev, Mapping):
            problems.append((tpath, "must be a mapping severity -> action"))
            continue
        row: dict[str, str] = {}
        for sev, act in by_sev.items():
            if sev not in severities:
                problems.append(
                    (f"{tpath}.{sev}", f"unknown severity (one of {', '.join(sorted(severities))})")
                )
            elif not isinstance(act, str) or not act:
                problems.append((f"{tpath}.{sev}", f"must be an action name, got {act!r}"))
            else:
                row[str(sev)] = act
        out[str(tier)] = row
    return out
