"""Hysteresis: how reluctantly a customer leaves a tier. The one copy of the rule, read by
the engine (which decides with it), :mod:`app.service.explain` (which says what holds a customer)
and :mod:`app.service.shadow` (which counts who is held).

A better tier than the current one is taken at once. A worse one (a *demotion*: the tier
the entry conditions give now ranks below the current one) waits while the current tier's
``stay`` conditions hold, and then until the customer has been ``min_days_in_tier`` in the
tier and the demotion has been wanted at every evaluation for ``demotion_grace_days``
(:func:`demotion_allowed`). While it waits, the state carries the *pending* demotion:
``pending_tier`` (the tier wanted) and ``pending_since`` (the first evaluation that wanted
it); both are set or both are None. Hysteresis does not apply to a customer's first
evaluation, to a tier the policy no longer has, or under a new policy.

>>> from app.domain.policy import Hysteresis
>>> from app.domain.state import CustomerState
>>> s = CustomerState("c1", tier="A", tier_since=0, pending_tier="B", pending_since=DAY_MS)
>>> demotion_allowed(s, Hysteresis(min_days_in_tier=30, demotion_grace_days=14)) // DAY_MS
30
>>> demotion_allowed(s, Hysteresis(min_days_in_tier=10, demotion_grace_days=14)) // DAY_MS
15
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from app.domain.conditions import first_failed, fmt
from app.domain.policy import Hysteresis, Policy, Tier
from app.domain.state import DAY_MS, CustomerState

__all__ = ["Hold", "decide_tier", "demotion_allowed", "held_by", "leaving"]

#: What holds a customer in a tier the entry conditions no longer give: its ``stay``
#: conditions, or a pending demotion waiting for ``min_days_in_tier`` and the grace.
Hold = Literal["stay", "pending"]


def leaving(policy: Policy, state: CustomerState, entry: str) -> Tier | None:
    """The customer's current tier when ``entry`` (the tier the entry conditions give now)
    ranks below it: a demotion, which hysteresis may hold back. None when it is none (the
    same or a better tier, or no current tier the policy has)."""
    current = policy.tier(state.tier)
    if current is None or policy.rank(entry) <= policy.rank(current.name):
        return None
    return current


def demotion_allowed(state: CustomerState, hysteresis: Hysteresis) -> int:
    """The earliest time the state's pending demotion may happen: ``min_days_in_tier``
    after ``tier_since`` and ``demotion_grace_days`` after ``pending_since``."""
    return max(
        (state.tier_since or 0) + int(hysteresis.min_days_in_tier * DAY_MS),
        (state.pending_since or 0) + int(hysteresis.demotion_grace_days * DAY_MS),
    )


def held_by(
    policy: Policy, state: CustomerState, entry: str, features: Mapping[str, Any]
) -> Hold | None:
    """What holds the customer in the current tier although ``entry`` is worse: ``stay``
    (the tier's stay conditions hold on ``features``), ``pending`` (a demotion waits), or
    None (nothing: no demotion, or one nothing holds back, e.g. because time passed or the
    population cut-offs changed since the last evaluation). Reads the state, never
    changes it."""
    current = leaving(policy, state, entry)
    if current is None:
        return None
    if current.stay is not None and current.keeps(features):
        return "stay"
    if state.pending_tier is not None and state.pending_since is not None:
        return "pending"
    return None


def decide_tier(
    state: CustomerState, at: int, policy: Policy, features: Mapping[str, Any], fresh: bool
) -> tuple[Tier, list[str]]:
    """The tier after hysteresis as of ``at``, and notes on how hysteresis shaped it.

    The entry tier is the first whose ``when`` holds (:meth:`Policy.choose`). A better
    tier than the current one is taken at once; a worse one only when the current tier's
    ``stay`` conditions fail, and then only from :func:`demotion_allowed`. Records the
    pending demotion in the state (or clears it). No hysteresis under a new policy
    (``fresh``)."""
    entry = policy.choose(features)
    current = None if fresh else leaving(policy, state, entry.name)
    if current is None:
        state.pending_tier = state.pending_since = None
        return entry, []
    if current.keeps(features):  # the entry conditions failed: its stay conditions hold
        state.pending_tier = state.pending_since = None
        return current, []
    if state.pending_tier is None or state.pending_since is None:
        state.pending_since = at
    state.pending_tier = entry.name
    h = policy.hysteresis
    if at < demotion_allowed(state, h):
        return current, []
    notes = []
    failed = first_failed(current.stay_conditions, features)
    if failed is not None:
        notes.append(f"left {current.name}: {failed.describe(features.get(failed.feature), False)}")
    if h.min_days_in_tier or h.demotion_grace_days:
        notes.append(
            f"demotion wanted since {_days(at - state.pending_since)} days, "
            f"in {current.name} for {_days(at - (state.tier_since or 0))} days "
            f"(hysteresis: min {fmt(h.min_days_in_tier)} days in tier, "
            f"grace {fmt(h.demotion_grace_days)} days)"
        )
    state.pending_tier = state.pending_since = None
    return entry, notes


def _days(ms: int) -> str:
    return fmt(round(ms / DAY_MS, 2))
