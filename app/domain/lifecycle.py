"""Lifecycle stages (DOMAIN.md): prospect -> new -> active -> loyal -> at risk -> churned
-> reactivated, with rules a policy configures::

    lifecycle:
      active_from_purchase_days: 2     # new -> active on the 2nd day with a purchase
      loyal_when: {purchases_365d: {gte: 6}}
      at_risk_after_days: 90           # silence (days without a purchase) -> at_risk
      at_risk_when: {spend_growth_90d: {lte: -0.5}}   # optional: falling activity too
      churned_after_days: 365          # longer silence -> churned
      reactivated_days: 90             # a churned customer who buys again is reactivated
                                       # for this long, then active or loyal again

The stage is a function of the customer's state at a time and the previous stage, checked
in this order: no purchase ever -> ``prospect``; silence >= churned_after_days ->
``churned``; silence >= at_risk_after_days -> ``at_risk``; coming back from ``churned``, or
within ``reactivated_days`` of that -> ``reactivated``; ``at_risk_when`` holds (and the
customer is past ``new``) -> ``at_risk``; ``loyal_when`` holds -> ``loyal``; at least
``active_from_purchase_days`` purchase days -> ``active``; else ``new``.
Silence moves customers without new events: the engine schedules a re-check at the times
the silence thresholds are crossed (see :mod:`app.domain.engine`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.domain.conditions import (
    Condition,
    Problems,
    all_hold,
    finite_number,
    first_failed,
    fmt,
    parse_conditions,
)
from app.domain.scoring import KindOf
from app.domain.state import DAY_MS, CustomerState

STAGES = ("prospect", "new", "active", "loyal", "at_risk", "churned", "reactivated")
SILENCE = "days_since_last_purchase"


@dataclass(frozen=True)
class LifecycleRules:
    active_from_purchase_days: int = 2
    loyal_when: tuple[Condition, ...] = (Condition("purchases_365d", "gte", 6.0),)
    at_risk_after_days: float = 90.0
    at_risk_when: tuple[Condition, ...] = ()
    churned_after_days: float = 365.0
    reactivated_days: float = 90.0

    @property
    def conditions(self) -> tuple[Condition, ...]:
        """Every condition the rules test (for the features and due times they need)."""
        return (
            *self.loyal_when,
            *self.at_risk_when,
            Condition(SILENCE, "gte", self.at_risk_after_days),
            Condition(SILENCE, "gte", self.churned_after_days),
        )

    def stage(
        self,
        state: CustomerState,
        at: int,
        features: Mapping[str, Any],
        previous: str | None,
        previous_since: int | None,
    ) -> tuple[str, str]:
        """The stage at ``at`` and the reason for it."""
        return self._decide(state, at, features, previous, previous_since, True)

    def stage_only(
        self,
        state: CustomerState,
        at: int,
        features: Mapping[str, Any],
        previous: str | None,
        previous_since: int | None,
    ) -> str:
        """The stage at ``at`` (the hot path: no reason text is built)."""
        return self._decide(state, at, features, previous, previous_since, False)[0]

    def _decide(
        self,
        state: CustomerState,
        at: int,
        features: Mapping[str, Any],
        previous: str | None,
        previous_since: int | None,
        explain: bool,
    ) -> tuple[str, str]:
        if state.last_purchase_at is None:
            return "prospect", "no purchase yet"
        silence = (at - state.last_purchase_at) / DAY_MS
        if silence >= self.churned_after_days:
            return "churned", (
                f"no purchase for {fmt(silence)} days >= {fmt(self.churned_after_days)}"
                if explain
                else ""
            )
        if silence >= self.at_risk_after_days:
            return "at_risk", (
                f"no purchase for {fmt(silence)} days >= {fmt(self.at_risk_after_days)}"
                if explain
                else ""
            )
        if previous == "churned":
            return "reactivated", (
                f"purchased again after churning ({fmt(silence)} days ago)" if explain else ""
            )
        if (
            previous == "reactivated"
            and previous_since is not None
            and at - previous_since < self.reactivated_days * DAY_MS
        ):
            return "reactivated", (
                f"came back {fmt((at - previous_since) / DAY_MS)} days ago "
                f"< {fmt(self.reactivated_days)}"
                if explain
                else ""
            )
        repeat = state.purchase_days >= self.active_from_purchase_days
        if repeat and self.at_risk_when and all_hold(self.at_risk_when, features):
            why = "falling activity: " + _held(self.at_risk_when, features) if explain else ""
            return "at_risk", why
        if self.loyal_when and all_hold(self.loyal_when, features):
            return "loyal", _held(self.loyal_when, features) if explain else ""
        if repeat:
            if not explain:
                return "active", ""
            why = f"{state.purchase_days} purchase days >= {self.active_from_purchase_days}"
            if self.loyal_when:
                failed = first_failed(self.loyal_when, features)
                if failed is not None:
                    why += f"; not loyal: {failed.describe(features.get(failed.feature), False)}"
            return "active", why
        if not explain:
            return "new", ""
        return "new", f"{state.purchase_days} purchase day(s) < {self.active_from_purchase_days}"

    def reactivation_ends(self, stage: str, since: int | None) -> int | None:
        if stage != "reactivated" or since is None:
            return None
        return since + int(self.reactivated_days * DAY_MS)


def _held(conditions: tuple[Condition, ...], features: Mapping[str, Any]) -> str:
    return ", ".join(c.describe(features.get(c.feature), True) for c in conditions)


_KEYS = {
    "active_from_purchase_days",
    "loyal_when",
    "at_risk_after_days",
    "at_risk_when",
    "churned_after_days",
    "reactivated_days",
}


def parse_lifecycle(raw: Any, path: str, problems: Problems, kind_of: KindOf) -> LifecycleRules:
    """Rules from a policy's ``lifecycle:`` section; what is not given keeps its default."""
    defaults = LifecycleRules()
    if raw is None:
        return defaults
    if not isinstance(raw, Mapping):
        problems.append((path, "must be a mapping (see the lifecycle section of the README)"))
        return defaults
    for key in raw:
        if key not in _KEYS:
            problems.append((f"{path}.{key}", f"unknown key (allowed: {', '.join(sorted(_KEYS))})"))
    values: dict[str, Any] = {}
    for key in ("at_risk_after_days", "churned_after_days", "reactivated_days"):
        if key in raw:
            v = raw[key]
            if not finite_number(v) or v <= 0:
                problems.append((f"{path}.{key}", f"must be a positive number of days, got {v!r}"))
            else:
                values[key] = float(v)
    if "active_from_purchase_days" in raw:
        v = raw["active_from_purchase_days"]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            problems.append(
                (f"{path}.active_from_purchase_days", f"must be a whole number >= 1, got {v!r}")
            )
        else:
            values["active_from_purchase_days"] = v
    for key in ("loyal_when", "at_risk_when"):
        if key in raw:
            values[key] = parse_conditions(raw[key] or {}, f"{path}.{key}", problems, kind_of)
    rules = LifecycleRules(**values)
    if rules.churned_after_days <= rules.at_risk_after_days:
        problems.append(
            (
                f"{path}.churned_after_days",
                f"must be more than at_risk_after_days ({fmt(rules.at_risk_after_days)})",
            )
        )
    return rules
