"""Tiering policies: validated, compiled rule sets that turn features into a tier.

A policy document (usually YAML, loaded by :mod:`app.policy_files`) looks like::

    name: value-tiers
    version: "1"
    tiers:                      # best tier first; the first whose conditions all hold wins
      - name: A
        when: {spend_365d: {gte: 5000}, purchases_365d: {gte: 12}}
        service_level: {queue_priority: 1, account_manager: dedicated}
      - name: D                 # the last tier has no conditions: everybody else
        service_level: {queue_priority: 4}

A condition is ``{op: value}`` with ``op`` one of ``gte gt lte lt eq ne in``; a bare number
means ``gte``. Features are listed in :data:`app.domain.features.FEATURES`; profile
attributes are addressed as ``attributes.<name>``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from app.domain.errors import PolicyError
from app.domain.features import ATTRIBUTE_PREFIX, FEATURES

_OPS: dict[str, tuple[str, Callable[[Any, Any], bool]]] = {
    "gte": (">=", operator.ge),
    "gt": (">", operator.gt),
    "lte": ("<=", operator.le),
    "lt": ("<", operator.lt),
    "eq": ("==", operator.eq),
    "ne": ("!=", operator.ne),
    "in": ("in", lambda a, b: a in b),
}
_NEGATED = {"gte": "<", "gt": "<=", "lte": ">", "lt": ">=", "eq": "!=", "ne": "==", "in": "not in"}
__all__ = ["ATTRIBUTE_PREFIX", "Condition", "Decision", "Policy", "Tier", "policy_from_dict"]


@dataclass(frozen=True, slots=True)
class Condition:
    """``feature op value``; a missing (None) or incomparable feature never holds.

    >>> Condition("spend_90d", "gte", 100.0).holds(120.0)
    True
    """

    feature: str
    op: str
    value: Any
    fn: Callable[[Any, Any], bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fn", _OPS[self.op][1])

    def holds(self, actual: Any) -> bool:
        if actual is None:
            return False
        try:
            return bool(self.fn(actual, self.value))
        except TypeError:
            return False

    def describe(self, actual: Any, held: bool) -> str:
        sym = _OPS[self.op][0] if held else _NEGATED[self.op]
        return f"{self.feature} {_fmt(actual)} {sym} {_fmt(self.value)}"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.2f}".rstrip("0").rstrip(".") if v == v and abs(v) != float("inf") else str(v)
    if isinstance(v, frozenset):  # sorted: set order changes with the hash seed
        return "[" + ", ".join(_fmt(x) for x in sorted(v, key=_sort_key)) + "]"
    if isinstance(v, tuple | list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


def _sort_key(x: Any) -> tuple[int, float, str]:
    """Numbers first, in numeric order, then everything else by its text."""
    if isinstance(x, int | float) and not isinstance(x, bool):
        return (0, x, "")
    return (1, 0.0, str(x))


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    conditions: tuple[Condition, ...]
    service_level: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Decision:
    """The tier a policy assigns and why: the conditions that held (or failed)."""

    tier: str
    reasons: tuple[str, ...]
    features: Mapping[str, Any]


@dataclass(frozen=True)
class Policy:
    name: str
    version: str
    tiers: tuple[Tier, ...]
    description: str = ""
    currency: str | None = None

    def __post_init__(self) -> None:
        used = {c.feature for t in self.tiers for c in t.conditions}
        object.__setattr__(self, "features_used", tuple(sorted(used)))
        object.__setattr__(self, "_rank", {t.name: i for i, t in enumerate(self.tiers)})
        object.__setattr__(self, "_by_name", {t.name: t for t in self.tiers})

    features_used: tuple[str, ...] = field(init=False, default=())

    def rank(self, tier: str | None) -> int:
        """0 for the best tier; unknown or no tier ranks below every tier."""
        rank: dict[str, int] = self._rank  # type: ignore[attr-defined]
        return rank.get(tier, len(self.tiers)) if tier is not None else len(self.tiers)

    def tier(self, name: str) -> Tier | None:
        by_name: dict[str, Tier] = self._by_name  # type: ignore[attr-defined]
        return by_name.get(name)

    def choose(self, features: Mapping[str, Any]) -> Tier:
        """The tier :meth:`decide` picks, without building reasons (the hot path)."""
        get = features.get
        for t in self.tiers:
            for c in t.conditions:
                if not c.holds(get(c.feature)):
                    break
            else:
                return t
        raise AssertionError("validated policies end with a catch-all tier")

    def decide(self, features: Mapping[str, Any]) -> Decision:
        """First tier whose conditions all hold; reasons say which held and, for the better
        tiers that were skipped, the first condition that failed."""
        missed: list[str] = []
        deciding: dict[str, Any] = {}  # the features of every condition that decided
        for t in self.tiers:
            failed = next((c for c in t.conditions if not c.holds(features.get(c.feature))), None)
            if failed is None:
                held = [c.describe(features.get(c.feature), True) for c in t.conditions]
                reasons = tuple(held) if held else ("no better tier's conditions hold",)
                deciding.update((c.feature, features.get(c.feature)) for c in t.conditions)
                return Decision(t.name, reasons + tuple(missed), deciding)
            deciding[failed.feature] = features.get(failed.feature)
            missed.append(f"not {t.name}: {failed.describe(features.get(failed.feature), False)}")
        raise AssertionError("validated policies end with a catch-all tier")


def _known_feature(name: str) -> bool:
    return name in FEATURES or (
        name.startswith(ATTRIBUTE_PREFIX) and len(name) > len(ATTRIBUTE_PREFIX)
    )


def _is_name(value: Any) -> bool:
    """A usable name or version: a non-empty string, or a number (YAML ``version: 1``)."""
    if isinstance(value, bool) or value is None:
        return False
    return isinstance(value, str | int | float) and str(value).strip() != ""


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
    problems: list[tuple[str, str]] = []
    if not isinstance(doc, Mapping):
        got = "an empty document" if doc is None else type(doc).__name__
        raise PolicyError(source, [("$", f"a policy must be a mapping, got {got}")])
    for key in ("name", "version"):
        if not _is_name(doc.get(key)):
            problems.append((key, "required: a non-empty string"))
    allowed = {"name", "version", "description", "currency", "tiers"}
    for key in doc:
        if key not in allowed:
            problems.append((str(key), f"unknown key (allowed: {', '.join(sorted(allowed))})"))
    currency = doc.get("currency")
    if currency is not None and not isinstance(currency, str):
        problems.append(("currency", "must be a string such as USD"))
    raw_tiers = doc.get("tiers")
    tiers: list[Tier] = []
    if not isinstance(raw_tiers, list) or not raw_tiers:
        problems.append(("tiers", "required: a non-empty list, best tier first"))
        raw_tiers = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_tiers):
        path = f"tiers[{i}]"
        if not isinstance(raw, Mapping):
            problems.append((path, "must be a mapping with name, when, service_level"))
            continue
        name = raw.get("name")
        if not isinstance(name, str) or not name.strip():
            problems.append((f"{path}.name", "required: a non-empty string"))
            name = f"#{i}"
        elif name in seen:
            problems.append((f"{path}.name", f"duplicate tier name {name!r}"))
        seen.add(name)
        for key in raw:
            if key not in {"name", "when", "service_level", "description"}:
                problems.append((f"{path}.{key}", "unknown key"))
        when = raw.get("when")
        conditions = _conditions({} if when is None else when, f"{path}.when", problems)
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
        tiers.append(Tier(name, tuple(conditions), dict(service)))
    if problems:
        raise PolicyError(source, problems)
    return Policy(
        name=str(doc["name"]),
        version=str(doc["version"]),
        tiers=tuple(tiers),
        description=str(doc.get("description") or ""),
        currency=currency or None,
    )


def _conditions(when: Any, path: str, problems: list[tuple[str, str]]) -> list[Condition]:
    if not isinstance(when, Mapping):
        problems.append((path, "must be a mapping of feature -> condition"))
        return []
    out: list[Condition] = []
    for feature, cond in when.items():
        fpath = f"{path}.{feature}"
        if not _known_feature(str(feature)):
            problems.append((fpath, "unknown feature (see `tierstream policy features`)"))
            continue
        if isinstance(cond, bool) or not isinstance(cond, int | float | Mapping):
            problems.append(
                (fpath, f"must be a number (meaning gte) or {{op: value}}, got {cond!r}")
            )
            continue
        if isinstance(cond, Mapping) and not cond:
            problems.append((fpath, "empty condition: give at least one {op: value}"))
            continue
        items = cond.items() if isinstance(cond, Mapping) else [("gte", cond)]
        is_attribute = str(feature).startswith(ATTRIBUTE_PREFIX)
        for op, value in items:
            opath = f"{fpath}.{op}" if isinstance(cond, Mapping) else fpath
            if op not in _OPS:
                problems.append((opath, f"unknown operator (one of {', '.join(_OPS)})"))
            elif op == "in":
                if not isinstance(value, list) or not value:
                    problems.append((opath, f"must be a non-empty list, got {value!r}"))
                elif not all(isinstance(x, str | int | float | bool) for x in value):
                    problems.append((opath, "list items must be strings, numbers or booleans"))
                elif not is_attribute and not all(_finite_number(x) for x in value):
                    problems.append((opath, "list items must be numbers for this feature"))
                else:
                    out.append(Condition(str(feature), op, frozenset(value)))
            elif is_attribute:
                if value is not None and not isinstance(value, str | int | float | bool):
                    problems.append((opath, f"must be a string, number or boolean, got {value!r}"))
                else:
                    out.append(Condition(str(feature), op, value))
            elif not _finite_number(value) and not (isinstance(value, float) and math.isinf(value)):
                problems.append((opath, f"must be a number, got {value!r}"))
            else:
                out.append(Condition(str(feature), op, float(value)))
    return out


def _finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
