"""Conditions ``feature op value`` and their parsing, shared by every policy section.

A condition is written ``{op: value}`` with ``op`` one of ``gte gt lte lt eq ne in``; a
bare number means ``gte``. Several ops on one feature all have to hold
(``{gte: 10, lt: 20}``). A missing (None) or incomparable feature never holds.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeGuard

from app.domain.features import ATTRIBUTE_PREFIX

Problems = list[tuple[str, str]]
FeatureKind = Literal["number", "attribute", "percentile"]
#: Percentile features: ``percentile.<numeric feature>``, the customer's place in the whole
#: population (0-100), see :mod:`app.domain.population`.
PERCENTILE_PREFIX = "percentile."

OPS: dict[str, tuple[str, Callable[[Any, Any], bool]]] = {
    "gte": (">=", operator.ge),
    "gt": (">", operator.gt),
    "lte": ("<=", operator.le),
    "lt": ("<", operator.lt),
    "eq": ("==", operator.eq),
    "ne": ("!=", operator.ne),
    "in": ("in", lambda a, b: a in b),
}
_NEGATED = {"gte": "<", "gt": "<=", "lte": ">", "lt": ">=", "eq": "!=", "ne": "==", "in": "not in"}


@dataclass(frozen=True, slots=True)
class Condition:
    """``feature op value``; a missing (None) or incomparable feature never holds.

    >>> Condition("spend_90d", "gte", 100.0).holds(120.0)
    True
    >>> Condition("spend_90d", "gte", 100.0).describe(80.0, False)
    'spend_90d 80 < 100'
    """

    feature: str
    op: str
    value: Any
    fn: Callable[[Any, Any], bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fn", OPS[self.op][1])

    def holds(self, actual: Any) -> bool:
        if actual is None:
            return False
        try:
            return bool(self.fn(actual, self.value))
        except TypeError:
            return False

    def describe(self, actual: Any, held: bool) -> str:
        sym = OPS[self.op][0] if held else _NEGATED[self.op]
        return f"{self.feature} {fmt(actual)} {sym} {fmt(self.value)}"


def all_hold(conditions: tuple[Condition, ...], features: Mapping[str, Any]) -> bool:
    get = features.get
    for c in conditions:  # a loop, not all(<genexpr>): this runs several times per event
        actual = get(c.feature)
        if actual is None:
            return False
        try:
            if not c.fn(actual, c.value):
                return False
        except TypeError:
            return False
    return True


def first_failed(
    conditions: tuple[Condition, ...], features: Mapping[str, Any]
) -> Condition | None:
    return next((c for c in conditions if not c.holds(features.get(c.feature))), None)


def fmt(v: Any) -> str:
    """A value as people read it: ``1234.5``, ``inf``, ``[a, b]``."""
    if isinstance(v, float):
        return f"{v:.2f}".rstrip("0").rstrip(".") if v == v and abs(v) != float("inf") else str(v)
    if isinstance(v, frozenset):  # sorted: set order changes with the hash seed
        return "[" + ", ".join(fmt(x) for x in sorted(v, key=_sort_key)) + "]"
    if isinstance(v, tuple | list):
        return "[" + ", ".join(fmt(x) for x in v) + "]"
    return str(v)


def _sort_key(x: Any) -> tuple[int, float, str]:
    """Numbers first, in numeric order, then everything else by its text."""
    if isinstance(x, int | float) and not isinstance(x, bool):
        return (0, x, "")
    return (1, 0.0, str(x))


def finite_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_number(value: Any) -> TypeGuard[int | float]:
    """A number (infinities allowed, booleans and NaN not)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def parse_conditions(
    when: Any,
    path: str,
    problems: Problems,
    kind_of: Callable[[str], FeatureKind | None],
) -> tuple[Condition, ...]:
    """Validate ``{feature: condition}``; every problem is appended with its path.

    ``kind_of`` tells what a feature name is (None: unknown)."""
    if when is None:
        return ()
    if not isinstance(when, Mapping):
        problems.append((path, "must be a mapping of feature -> condition"))
        return ()
    out: list[Condition] = []
    for feature, cond in when.items():
        fpath = f"{path}.{feature}"
        kind = kind_of(str(feature))
        if kind is None:
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
        for op, value in items:
            opath = f"{fpath}.{op}" if isinstance(cond, Mapping) else fpath
            made = _condition(str(feature), kind, op, value, opath, problems)
            if made is not None:
                out.append(made)
    return tuple(out)


def _condition(
    feature: str, kind: FeatureKind, op: Any, value: Any, opath: str, problems: Problems
) -> Condition | None:
    if op not in OPS:
        problems.append((opath, f"unknown operator (one of {', '.join(OPS)})"))
        return None
    if kind == "percentile":
        if op not in ("gte", "lt"):
            problems.append(
                (opath, "percentiles take gte (at or above: 99 = top 1 %) or lt (below)")
            )
        elif not finite_number(value) or not 0 < value < 100:
            problems.append((opath, f"must be a percentile between 0 and 100, got {value!r}"))
        else:
            return Condition(feature, op, float(value))
        return None
    if op == "in":
        if not isinstance(value, list) or not value:
            problems.append((opath, f"must be a non-empty list, got {value!r}"))
        elif not all(isinstance(x, str | int | float | bool) for x in value):
            problems.append((opath, "list items must be strings, numbers or booleans"))
        elif kind == "number" and not all(finite_number(x) for x in value):
            problems.append((opath, "list items must be numbers for this feature"))
        else:
            return Condition(feature, op, frozenset(value))
        return None
    if kind == "attribute":
        if value is not None and not isinstance(value, str | int | float | bool):
            problems.append((opath, f"must be a string, number or boolean, got {value!r}"))
            return None
        return Condition(feature, op, value)
    if not is_number(value):
        problems.append((opath, f"must be a number, got {value!r}"))
        return None
    return Condition(feature, op, float(value))


def is_attribute(name: str) -> bool:
    return name.startswith(ATTRIBUTE_PREFIX) and len(name) > len(ATTRIBUTE_PREFIX)
