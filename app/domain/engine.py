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
from app.domain.policy import Policy
from app.domain.state import (
    INTERACTIONS,
    MARGIN,
    PURCHASES,
    RETENTION_DAYS,
    SPEND,
    WINDOWS_DAYS,
    CustomerState,
    day_of,
    exact_add,
)

_WINDOW_INDEX = tuple(enumerate(WINDOWS_DAYS))


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
    If a :func:`tick` already changed the tier at a later time (``tier_since``), the
    evaluation happens as of that time instead: a customer is never re-evaluated back in
    time. ``now`` is what :func:`tick` evaluates at when time passes without events.

    A duplicate (an ``event_id`` among the customer's recent ids) changes nothing and
    returns ``duplicate=True`` with no outputs.
    """
    if state is None:
        state = CustomerState(customer_id=event.customer_id)
    elif state.seen(event.event_id):
        return StepResult(state, [], duplicate=True)
    apply_event(state, event)
    at = state.clock
    if state.tier_since is not None and state.tier_since > at:
        at = state.tier_since
    return StepResult(state, _evaluate(state, at, policy, cause=event.event_id))


def tick(state: CustomerState, now: int, policy: Policy) -> StepResult:
    """Re-evaluate as time passes without events (windows roll off, tiers may fall).

    Evaluates as of ``max(now, state.clock, state.tier_since)``; only the tier fields
    change, and only when the tier does (the window sums are rolled on a copy).
    """
    at = max(now, state.clock, state.tier_since or 0)
    return StepResult(state, _evaluate(state, at, policy, cause=f"tick@{at}"))


def is_refund(event: Event) -> bool:
    """A refund: a purchase with a negative amount, or of type ``refund``."""
    return event.amount < 0 or event.type == "refund"


def apply_event(state: CustomerState, event: Event) -> None:
    """Fold one (non-duplicate) event into the state.

    The clock moves to the event time if later; when that starts a new UTC day, the
    window sums roll forward and buckets that left the longest window are dropped. Then
    the event lands in the bucket of its own day if that day is still inside the longest
    window (``day > day_of(clock) - RETENTION_DAYS``), and in every window that covers it.
    Older events still count in lifetime totals and RFM, but in no window.
    """
    state.remember(event.event_id)
    ts = event.occurred_at
    if ts > state.clock:
        state.clock = ts
        today = day_of(ts)
        if today > state.windows.day:
            buckets = state.buckets
            for gone in state.windows.roll_to(today, buckets):
                del buckets[gone]  # left the longest window: the retention ends here
    kind = event.kind
    if kind == "profile":
        state.attributes.update(event.attributes)
        return
    day = day_of(ts)
    age = state.windows.day - day
    bucket: list[float] | None = None
    if age < RETENTION_DAYS:
        bucket = state.buckets.get(day)
        if bucket is None:
            bucket = state.buckets[day] = [0.0, 0.0, 0.0, 0.0]
    if kind == "purchase":
        _apply_purchase(state, event, day, age, bucket)
        return
    state.lifetime_interactions += 1
    if bucket is not None:
        bucket[INTERACTIONS] += 1.0
        windows = state.windows
        for k, w in _WINDOW_INDEX:
            if age < w:
                windows.interactions[k] += 1.0
    if state.first_interaction_at is None or ts < state.first_interaction_at:
        state.first_interaction_at = ts
    if state.last_interaction_at is None or ts > state.last_interaction_at:
        state.last_interaction_at = ts


def _add_money(
    bucket: list[float], slot: int, sums: list[list[float]], age: int, amount: float
) -> None:
    """Add money to a day bucket; each window holding the bucket keeps the exact sum of its
    buckets' values, so it swaps the bucket's old value for the new one."""
    old = bucket[slot]
    new = bucket[slot] = old + amount
    for k, w in _WINDOW_INDEX:
        if age < w:
            partials = sums[k]
            if old:
                exact_add(partials, -old)
            if new:
                exact_add(partials, new)


def _apply_purchase(
    state: CustomerState, event: Event, day: int, age: int, bucket: list[float] | None
) -> None:
    amount = event.amount
    refund = is_refund(event)
    state.lifetime_spend += amount
    if bucket is not None:
        windows = state.windows
        _add_money(bucket, SPEND, windows.spend, age, amount)
        if not refund:
            bucket[PURCHASES] += 1.0
            for k, w in _WINDOW_INDEX:
                if age < w:
                    windows.purchases[k] += 1.0
    margin = event.margin
    if margin:
        state.lifetime_margin += margin
        if bucket is not None:
            _add_money(bucket, MARGIN, state.windows.margin, age, margin)
    if refund:  # lowers spend, is not a purchase, leaves RFM alone
        state.lifetime_refunds += 1
        return
    state.lifetime_purchases += 1
    ts = event.occurred_at
    # RFM (lifetimes): purchases are grouped per UTC day; the first day is not a repeat.
    if state.first_purchase_at is None:
        state.purchase_days = 1
        state.purchase_day_bits = 1
        state.first_day_spend = amount
        state.first_purchase_at = state.last_purchase_at = ts
        return
    first_day = day_of(state.first_purchase_at)
    if day == first_day:
        state.first_day_spend += amount
    elif day < first_day:  # a late purchase before the first one: the old first day repeats
        state.purchase_day_bits = state.purchase_day_bits << (first_day - day) | 1
        state.purchase_days += 1
        state.repeat_spend += state.first_day_spend
        state.first_day_spend = amount
    else:
        bit = 1 << (day - first_day)
        if not state.purchase_day_bits & bit:
            state.purchase_day_bits |= bit
            state.purchase_days += 1
        state.repeat_spend += amount
    if ts < state.first_purchase_at:
        state.first_purchase_at = ts
    if state.last_purchase_at is None or ts > state.last_purchase_at:
        state.last_purchase_at = ts


def _evaluate(state: CustomerState, at: int, policy: Policy, cause: str) -> list[Output]:
    features = compute_features(state, at, policy.features_used)
    chosen = policy.choose(features)
    previous = state.tier
    if chosen.name == previous:
        return []
    decision = policy.decide(features)
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
            id=output_id(state.customer_id, "tier_change", cause, previous or "", decision.tier),
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
