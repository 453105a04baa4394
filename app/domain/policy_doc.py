"""Policy documents: a parsed document (usually YAML, loaded by :mod:`app.adapters.policy_files`)
in, a validated :class:`~app.domain.policy.Policy` out, or a :class:`PolicyError` that
names every problem with its path (``tiers[0].when.spend_90d.gte``).

A document looks like::

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
the tiering methods ``scorecard`` and ``rfm`` (:mod:`app.domain.methods`), ``lifecycle``
(:mod:`app.domain.lifecycle`), ``upgrade`` (which low tiers are watched for rising
behaviour), ``model`` (:mod:`app.domain.bgnbd`), ``churn`` (:mod:`app.domain.churn_doc`)
and percentile features ``percentile.<feature>`` ranked over the whole population
(:mod:`app.domain.population`).

A condition is ``{op: value}`` with ``op`` one of ``gte gt lte lt eq ne in``; a bare number
means ``gte``. Features are listed in :data:`app.domain.features.FEATURES`; profile
attributes are addressed as ``attributes.<name>``. Sections are parsed in order, and each
may use the feature names the ones before it define (derived features, ``score``, the RFM
scores).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from app.domain.bgnbd import parse_model
from app.domain.churn_doc import parse_churn
from app.domain.conditions import (
    PERCENTILE_PREFIX,
    Condition,
    FeatureKind,
    Problems,
    finite_number,
    is_attribute,
    parse_conditions,
)
from app.domain.errors import PolicyError
from app.domain.expr import Expr, ExprError, compile_expr
from app.domain.features import FEATURES
from app.domain.lifecycle import parse_lifecycle
from app.domain.methods import METHODS, PROVIDED, TieringMethod
from app.domain.policy import Hysteresis, Policy, Tier, UpgradeRule

__all__ = ["policy_from_dict"]


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
    *METHODS,
    "hysteresis",
    "lifecycle",
    "upgrade",
    "model",
    "churn",
}
#: The methods' sections in the order they are parsed: each may read the features the
#: ones before it provide. This is not :data:`~app.domain.methods.METHODS` (evaluation)
#: order: an RFM score may name ``score``, which is added after the RFM scores and so
#: has no value for it yet, and a scorecard may not name an RFM score, which it could
#: read. Kept as it was (no behaviour change); parsing in METHODS order would reject the
#: first and allow the second.
_PARSED_IN = ("scorecard", "rfm")
assert set(_PARSED_IN) == set(METHODS)
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
            if metric in self.numbers and metric not in PROVIDED:
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
    parsed: dict[str, TieringMethod] = {}
    for section in _PARSED_IN:
        if doc.get(section) is not None:
            method = METHODS[section]
            found = method.parse(doc[section], section, problems, names.kind_of)
            if found is not None:
                parsed[section] = found
            names.numbers.update(method.kind.provides)
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
        methods=tuple(parsed[section] for section in METHODS if section in parsed),
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
        if name in FEATURES or name in PROVIDED:
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
