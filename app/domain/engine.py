"""The step function: ``step(state, event, now, policy) -> (new_state, outputs)``.

Same input, same outputs. ``state`` is owned by the caller and updated in place (it is
also returned); a duplicate event returns the state untouched with ``duplicate=True``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from app.domain.events import Event
from app.domain.features import compute_features
from app.domain.outputs import Direction, Output, TierChange, output_id
from app.domain.policy import ATTRIBUTE_PREFIX, Policy
from app.domain.state import (
    INTERACTIONS,
    PURCHASES,
    RETENTION_DAYS,
    SPEND,
    CustomerState,
    day_of,
)


@dataclass(slots=True)
class StepResult:
    """New state and outputs; unpacks as ``state, outputs = step(...)``."""

    state: CustomerState
    outputs: list[Output] = field(default_factory=list)
    duplicate: bool = False

    def __iter__(self) -> Iterator[Any]:
        yield self.state
        yield self.outputs


def step(state: CustomerState | None, event: Event, now: int, policy: Policy) -> StepResult:
    """Apply one event and re-evaluate the customer's tier.

    ``now`` is the caller's clock (the partition clock live, event time in replay). The
    event-driven evaluation happens as of the customer's own event-time high-water mark,
    ``max(state.clock, event.occurred_at)``, so a customer's outputs depend only on that
    customer's ordered events and never on how customers share partitions or batches; an
    event older than the clock (out of order) still lands in the bucket of its own day.
    ``now`` is what :func:`tick` evaluates at when time passes without events.
    """
    if state is None:
        state = CustomerState(customer_id=event.customer_id)
    elif state.seen(event.event_id):
        return StepResult(state, [], duplicate=True)
    apply_event(state, event)
    return StepResult(state, _evaluate(state, state.clock, policy, cause=event.event_id))


def tick(state: CustomerState, now: int, policy: Policy) -> StepResult:
    """Re-evaluate as time passes without events (windows roll off, tiers may fall)."""
    at = max(now, state.clock)
    return StepResult(state, _evaluate(state, at, policy, cause=f"tick@{at}"))


def apply_event(state: CustomerState, event: Event) -> None:
    """Fold one (non-duplicate) event into the state."""
    state.remember(event.event_id)
    ts = event.occurred_at
    old_clock_day = day_of(state.clock)
    if ts > state.clock:
        state.clock = ts
    if event.kind == "profile":
        state.attributes.update(event.attributes)
        return
    day = day_of(ts)
    in_retention = day > day_of(state.clock) - RETENTION_DAYS
    bucket = state.buckets.get(day) if in_retention else None
    if in_retention and bucket is None:
        bucket = state.buckets[day] = [0.0, 0.0, 0.0]
    if event.kind == "purchase":
        _apply_purchase(state, event, day, bucket)
    else:
        state.lifetime_interactions += 1
        if bucket is not None:
            bucket[INTERACTIONS] += 1
        if state.first_interaction_at is None or ts < state.first_interaction_at:
            state.first_interaction_at = ts
        if state.last_interaction_at is None or ts > state.last_interaction_at:
            state.last_interaction_at = ts
    if day_of(state.clock) != old_clock_day:
        cutoff = day_of(state.clock) - RETENTION_DAYS
        for old in [d for d in state.buckets if d <= cutoff]:
            del state.buckets[old]


def _apply_purchase(
    state: CustomerState, event: Event, day: int, bucket: list[float] | None
) -> None:
    amount = event.amount
    ts = event.occurred_at
    state.lifetime_spend += amount
    if bucket is not None:
        bucket[SPEND] += amount
    if amount < 0:  # a refund: lowers spend, is not a purchase, leaves RFM alone
        state.lifetime_refunds += 1
        return
    # RFM (lifetimes): purchases are grouped per UTC day; the first day is not a repeat.
    if state.first_purchase_at is None or state.last_purchase_at is None:
        state.purchase_days = 1
        state.first_day_spend = amount
    else:
        first_day = day_of(state.first_purchase_at)
        if day == first_day:
            state.first_day_spend += amount
        elif day < first_day:
            state.purchase_days += 1
            state.repeat_spend += state.first_day_spend
            state.first_day_spend = amount
        else:
            new_day = day > day_of(state.last_purchase_at) or (
                bucket is not None and bucket[PURCHASES] == 0
            )
            state.purchase_days += int(new_day)
            state.repeat_spend += amount
    state.lifetime_purchases += 1
    if bucket is not None:
        bucket[PURCHASES] += 1
    if state.first_purchase_at is None or ts < state.first_purchase_at:
        state.first_purchase_at = ts
    if state.last_purchase_at is None or ts > state.last_purchase_at:
        state.last_purchase_at = ts


def _evaluate(state: CustomerState, at: int, policy: Policy, cause: str) -> list[Output]:
    features: dict[str, Any] = compute_features(state, at)
    if state.attributes:
        for key, value in state.attributes.items():
            features[ATTRIBUTE_PREFIX + key] = value
    decision = policy.decide(features)
    previous = state.tier
    if decision.tier == previous:
        return []
    direction: Direction
    if previous is None:
        direction = "new"
    else:
        direction = "up" if policy.rank(decision.tier) < policy.rank(previous) else "down"
    state.tier = decision.tier
    state.tier_since = at
    tier = policy.tier(decision.tier)
    return [
        TierChange(
            id=output_id(state.customer_id, "tier_change", cause),
            customer_id=state.customer_id,
            at=at,
            from_tier=previous,
            to_tier=decision.tier,
            direction=direction,
            reasons=decision.reasons,
            features=decision.features,
            policy_name=policy.name,
            policy_version=policy.version,
            service_level=dict(tier.service_level) if tier else {},
            cause=cause,
        )
    ]
