"""Why a customer is where they are: the body of ``GET /customers/{id}/explain``
(:mod:`app.stream.web`) and what ``tierstream explain`` prints.

:func:`explain` is pure: a policy and a customer's state in, plain JSON types out. The
customer is looked at *as of their last evaluation*, ``max(state.clock,
state.evaluated_at)`` (the time the stored tier and stage were decided at), so the
features shown are the ones the tier was decided on. Nothing is changed.

The reasoning has four parts:

* ``reasons``: the policy's decision afresh on those features (:meth:`Policy.decide`: the
  conditions of the entry tier that held and, for every better tier, the first that
  failed), then where computed features come from (:meth:`Policy.explain_features`:
  scorecard factors, percentile cut-offs, RFM scores);
* ``hysteresis``: set when the customer is held in a tier whose entry conditions no longer
  hold, by its ``stay`` conditions or by a pending demotion (``min_days_in_tier``,
  ``demotion_grace_days``); ``entry_tier`` is then the tier the entry conditions give;
* ``stage_reason``: the lifecycle rule that gives the stage;
* ``notes``: anything else that makes the stored tier differ from the decision, such as a
  customer last evaluated under another policy (or other cut-offs) than the one in force.

JSON has no infinity: non-finite feature values (``days_since_last_purchase`` of a
customer who never bought, a growth from nothing) are written as ``null``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from app.domain.conditions import first_failed
from app.domain.hysteresis import demotion_allowed, held_by, leaving
from app.domain.policy import Policy
from app.domain.state import CustomerState
from schemas.codec import iso

__all__ = ["explain", "json_safe"]


def json_safe(value: Any) -> Any:
    """``value`` in plain JSON types: non-finite floats become None, tuples and sets
    lists, mappings dicts with string keys, anything else its text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, set | frozenset):
        return [json_safe(v) for v in sorted(value, key=str)]
    return str(value)


def evaluated_at(state: CustomerState) -> int:
    """The time the customer's tier and stage were last decided as of."""
    return state.clock if state.clock > state.evaluated_at else state.evaluated_at


def explain(policy: Policy, state: CustomerState) -> dict[str, Any]:
    """The explain document of ``state`` under ``policy`` (the policy in force)."""
    at = evaluated_at(state)
    features = policy.features(state, at)
    decision = policy.decide(features)
    reasons = [*decision.reasons, *policy.explain_features(features, decision.features)]
    deciding = dict(decision.features)
    notes: list[str] = []
    same_policy = state.policy == policy.key
    hysteresis: str | None = None
    if not same_policy:
        notes.append(
            f"last evaluated under {state.policy or 'no policy'}, not {policy.key}: the tier "
            f"and stage are that policy's; {policy.key} decides the customer afresh (without "
            f"hysteresis) at the next re-evaluation, and would choose {decision.tier}"
        )
    elif state.tier is not None and decision.tier != state.tier:
        hysteresis = _held(policy, state, decision.tier, features, deciding)
        if hysteresis is None:
            notes.append(
                f"{policy.key} now chooses {decision.tier}, not {state.tier}: its population "
                "cut-offs changed since the last evaluation; the customer moves at the next "
                "re-evaluation"
            )
    stage, stage_reason = policy.lifecycle.stage(
        state, at, features, state.stage, state.stage_since
    )
    if state.stage is not None and stage != state.stage:
        notes.append(f"{policy.key} now gives stage {stage} ({stage_reason}), not {state.stage}")
    upgrade: list[str] = []
    rule = policy.upgrade
    if state.upgrade_since is not None and rule is not None:
        upgrade = [c.describe(features.get(c.feature), True) for c in rule.conditions]
        deciding.update((c.feature, features.get(c.feature)) for c in rule.conditions)
    tier = policy.tier(state.tier)
    churn: dict[str, Any] | None = None
    if policy.churn is not None:
        found = policy.churn.assess(state, at, features, policy.model)
        churn = {
            "severity": state.churn_severity,
            "since": state.churn_since,
            "signals_say": found.severity,
            "p_alive": found.p_alive,
            "days_silent": found.days_silent,
            "usual_gap_days": found.usual_gap_days,
            "usual_gap_basis": found.usual_gap_basis,
            "value_at_risk": found.value_at_risk,
            "reasons": list(found.reasons),
        }
    return {
        "customer_id": state.customer_id,
        "tier": state.tier,
        "tier_since": state.tier_since,
        "stage": state.stage,
        "stage_since": state.stage_since,
        "pending_tier": state.pending_tier,
        "pending_since": state.pending_since,
        "upgrade_candidate_since": state.upgrade_since,
        "policy": {
            "name": policy.name,
            "version": policy.version,
            "key": policy.key,
            "evaluated_under": state.policy,
        },
        "as_of": at,
        "service_level": json_safe(tier.service_level) if tier is not None else None,
        "entry_tier": decision.tier,
        "reasons": reasons,
        "hysteresis": hysteresis,
        "stage_reason": stage_reason if stage == state.stage else None,
        "upgrade_reasons": upgrade,
        "churn": json_safe(churn),
        "notes": notes,
        "deciding": json_safe(deciding),
        "features": json_safe(features),
    }


def _held(
    policy: Policy,
    state: CustomerState,
    entry: str,
    features: Mapping[str, Any],
    deciding: dict[str, Any],
) -> str | None:
    """The note when hysteresis holds the customer in a tier whose entry conditions no
    longer hold (``entry`` is worse): its stay conditions, or a pending demotion. None
    when something else explains the difference (a better entry tier, or a demotion that
    nothing holds back: the policy's cut-offs changed)."""
    tier = leaving(policy, state, entry)
    if tier is None:
        return None
    kept = tier.stay_conditions
    deciding.update((c.feature, features.get(c.feature)) for c in kept)
    failed_entry = first_failed(tier.conditions, features)
    lost = (
        f"; its entry conditions no longer hold: "
        f"{failed_entry.describe(features.get(failed_entry.feature), False)}"
        if failed_entry is not None
        else ""
    )
    held = held_by(policy, state, entry, features)
    if held == "stay":
        holding = ", ".join(c.describe(features.get(c.feature), True) for c in kept)
        return f"held in {tier.name} by its stay conditions: {holding}{lost}"
    if held is None:
        return None
    assert state.pending_since is not None  # held by a pending demotion
    h = policy.hysteresis
    allowed = demotion_allowed(state, h)
    failed = first_failed(kept, features)
    why = (
        f" ({'stay' if tier.stay is not None else 'entry'} condition fails: "
        f"{failed.describe(features.get(failed.feature), False)})"
        if failed is not None
        else ""
    )
    return (
        f"held in {tier.name} by hysteresis: demotion to {state.pending_tier} wanted since "
        f"{iso(state.pending_since)}{why}, allowed from {iso(allowed)} (min "
        f"{h.min_days_in_tier:g} days in tier, grace {h.demotion_grace_days:g} days)"
    )
