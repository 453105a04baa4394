"""The step function: ``step(state, event, now, policy) -> (new_state, outputs)``.

Same input, same outputs. ``state`` is owned by the caller and updated in place (it is
also returned); a duplicate event returns the state untouched with ``duplicate=True``.

Due times and the clock
-----------------------
A customer is re-evaluated without events at its due times (``state.next_due``: a day
leaving a rolling window, silence crossing a threshold, a demotion's grace or a
reactivation ending, a churn signal). One rule says when a due time ``T`` runs: **when the
clock reaches T, before the events dated T**. At an instant, time passes first, then the
events of that instant apply:

- :func:`step` (an event at ``T``) first runs every due time up to and including ``T``
  (:func:`advance` to ``T``), then applies the event and evaluates it at ``T``;
- the worker's timer, with its partition clock at ``T``, runs what is due up to and
  including ``T`` (:meth:`app.service.processor.CustomerBatch.tick`);
- ``tierstream classify`` advances every customer to ``as_of``, inclusive
  (:func:`app.service.batch_replay.advance_to`).

So the evaluation at a due time ``T`` sees the customer's events before ``T`` and none of
those dated ``T``, whether the timer runs before the customer's events of ``T`` arrive or
after (then the first of them already ran it: :func:`step`), and whatever other customers
do: the order in which a worker meets the events of ``T`` and its timer does not matter,
and a worker whose clock reads ``T`` holds what ``classify --as-of T`` reports.

The other order-independent rule, "a due time ``T`` runs once the clock has passed ``T``"
(after every event dated ``T``), cannot report anything due at the clock itself: a
closing event at ``T`` or ``classify --as-of T`` would leave out the re-evaluations due
at ``T``, which with date-only input (events and most due times at midnight) are a whole
day's. Its advantage is this rule's cost: an event dated exactly at the customer's own due
time follows a re-evaluation that did not see it, so with date-only input a purchase on
the day a window rolls on can demote and promote back within one millisecond (the CDNOW
sample, packaged policy: 14 more tier changes in 3,556).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from app.domain.churn import ChurnRules
from app.domain.conditions import all_hold
from app.domain.events import AttributeValue, Event
from app.domain.hysteresis import decide_tier, demotion_allowed
from app.domain.outputs import (
    ChurnCleared,
    ChurnWarning,
    LifecycleChange,
    Output,
    TierChange,
    Trigger,
    UpgradeCandidate,
    output_id,
    tier_direction,
)
from app.domain.policy import Policy, Tier
from app.domain.state import (
    DAY_MS,
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
    """Apply one event and re-evaluate the customer.

    ``now`` is the caller's clock (the partition clock live, event time in replay); the
    customer's own evaluation never depends on it. First, every re-evaluation that fell due
    (:func:`advance`) up to and including the event's time runs at its due time, so
    silence and rolling windows move the customer at the times they would have, whether or
    not a timer got there first (see "Due times and the clock" above). Then the event is
    applied and the customer evaluated as of its own
    event-time high-water mark, ``max(state.clock, state.evaluated_at)``: a customer's
    outputs depend only on the customer's ordered events, never on how customers share
    partitions or batches, and nobody is evaluated back in time. An event older than the
    clock (out of order) still lands in the bucket of its own day.

    A duplicate (an ``event_id`` among the customer's recent ids) changes nothing and
    returns ``duplicate=True`` with no outputs.
    """
    if state is None:
        state = CustomerState(customer_id=event.customer_id)
    elif state.seen(event.event_id):
        return StepResult(state, [], duplicate=True)
    # Up to and including the event's time: at an instant, time passes first (a due time
    # equal to the event's runs before it, as the timer may have run it already).
    outputs = advance(state, event.occurred_at, policy) if state.next_due is not None else []
    apply_event(state, event)
    if state.roll_due is not None and event.kind != "profile":
        _note_bucket(state, day_of(event.occurred_at), policy)
    at = state.clock if state.clock > state.evaluated_at else state.evaluated_at
    outputs.extend(evaluate(state, at, policy, event.event_id, "event"))
    return StepResult(state, outputs)


def advance(state: CustomerState, until: int, policy: Policy) -> list[Output]:
    """Run every re-evaluation due at or before ``until``, each at its due time (cause
    ``due@<ms>``). The timer path: silence, windows rolling off, a demotion's grace
    ending. ``until`` is the clock, inclusive (see "Due times and the clock" above)."""
    outputs: list[Output] = []
    if state.tier is None:
        return outputs
    due = state.next_due
    while due is not None and due <= until:
        at = max(due, state.clock, state.evaluated_at)
        outputs.extend(evaluate(state, at, policy, f"due@{at}", "time"))
        if state.next_due is not None and state.next_due <= due:
            raise AssertionError(f"due time did not advance past {due}")
        due = state.next_due
    return outputs


def tick(state: CustomerState, now: int, policy: Policy) -> StepResult:
    """Time passes without events up to ``now``, inclusive: run what fell due (see
    :func:`advance`). The worker passes its partition clock."""
    return StepResult(state, advance(state, now, policy))


def reevaluate(state: CustomerState, policy: Policy, cause: str, trigger: Trigger) -> StepResult:
    """Evaluate again as of the last evaluation time, because the policy or the population
    cut-offs changed (``trigger`` says which; ``cause`` names the new version)."""
    if state.tier is None:
        return StepResult(state, [])
    at = state.clock if state.clock > state.evaluated_at else state.evaluated_at
    return StepResult(state, evaluate(state, at, policy, cause, trigger))


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
        _merge_attributes(state.attributes, event.attributes)
        return
    day = day_of(ts)
    age = state.windows.day - day
    cache = state.falling_cache
    if cache is not None and day < cache[0][0]:
        state.falling_cache = None  # a late event changed a day the cache summed
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
            bucket[MARGIN] += margin  # summed per window when a policy asks (features)
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


def evaluate(
    state: CustomerState, at: int, policy: Policy, cause: str, trigger: Trigger
) -> list[Output]:
    """Decide the tier, the lifecycle stage and the upgrade flag as of ``at``; record them
    and the next due time in the state; return the changes."""
    changed_policy = state.policy != policy.key
    if changed_policy:
        if state.policy is not None and state.tier is not None:
            trigger = "policy_changed"
        state.policy = policy.key
        state.roll_due = None  # the windows it watches may differ
    features = policy.features(state, at)
    outputs: list[Output] = []
    previous = state.tier
    tier, notes = decide_tier(state, at, policy, features, changed_policy)
    if tier.name != previous:
        outputs.append(_tier_change(state, at, policy, features, tier, notes, cause, trigger))
        state.tier = tier.name
        state.tier_since = at
    rules = policy.lifecycle
    stage = rules.stage_only(state, at, features, state.stage, state.stage_since)
    if stage != state.stage:
        _, why = rules.stage(state, at, features, state.stage, state.stage_since)
        outputs.append(
            LifecycleChange(
                id=output_id(
                    state.customer_id, "lifecycle_change", cause, state.stage or "", stage
                ),
                customer_id=state.customer_id,
                at=at,
                from_stage=state.stage,
                to_stage=stage,
                reason=why,
                tier=tier.name,
                policy_name=policy.name,
                policy_version=policy.version,
                cause=cause,
                trigger=trigger,
            )
        )
        state.stage = stage
        state.stage_since = at
    upgrade = policy.upgrade
    if (
        upgrade is not None
        and tier.name in upgrade.tiers
        and all_hold(upgrade.conditions, features)
    ):
        if state.upgrade_since is None:
            state.upgrade_since = at
            outputs.append(_upgrade_candidate(state, at, policy, features, tier, cause, trigger))
    else:
        state.upgrade_since = None  # the episode (if any) is over
    if policy.churn is not None:
        _churn(state, at, policy, policy.churn, features, cause, trigger, outputs)
    elif state.churn_since is not None or state.churn_cleared_at is not None:
        # A policy without churn warnings: no episode stays open under it.
        state.churn_severity = state.churn_since = state.churn_cleared_at = None
    state.evaluated_at = at
    state.next_due = _next_due(state, at, policy)
    return outputs


def _next_due(state: CustomerState, at: int, policy: Policy) -> int | None:
    """When the customer must next be re-evaluated without new events."""
    if state.roll_due is None or state.roll_due <= at:
        state.roll_due = _first_roll(state, at, policy)
    best = state.roll_due
    for t in (
        policy.due_after(state, at),
        demotion_allowed(state, policy.hysteresis) if state.pending_tier is not None else None,
        policy.lifecycle.reactivation_ends(state.stage or "", state.stage_since),
        policy.churn.due_after(state, at, policy.model) if policy.churn is not None else None,
    ):
        if t is not None and t > at and (best is None or t < best):
            best = t
    return best


def _first_roll(state: CustomerState, at: int, policy: Policy) -> int | None:
    """The next time a day bucket leaves one of the rolling windows the policy reads."""
    today = day_of(at)
    best: int | None = None
    for k in policy.windows_used:
        w = WINDOWS_DAYS[k]
        for d in state.buckets:
            leaves = d + w
            if leaves > today and (best is None or leaves < best):
                best = leaves
    return best * DAY_MS if best is not None else None


def _note_bucket(state: CustomerState, day: int, policy: Policy) -> None:
    """An event landed in ``day``'s bucket: it may leave a window before the known roll."""
    today = day_of(state.clock)
    roll = state.roll_due
    for k in policy.windows_used:
        leaves = day + WINDOWS_DAYS[k]
        if leaves > today and (roll is None or leaves * DAY_MS < roll):
            roll = leaves * DAY_MS
    state.roll_due = roll


def _tier_change(
    state: CustomerState,
    at: int,
    policy: Policy,
    features: Mapping[str, Any],
    tier: Tier,
    notes: list[str],
    cause: str,
    trigger: Trigger,
) -> TierChange:
    previous = state.tier
    decision = policy.decide(features)
    deciding = dict(decision.features)
    reasons = [*decision.reasons, *notes]
    reasons.extend(policy.explain_features(features, deciding))
    direction = tier_direction([t.name for t in policy.tiers], previous, tier.name)
    score = features.get("score") if policy.scorecard is not None else None
    return TierChange(
        id=output_id(state.customer_id, "tier_change", cause, previous or "", tier.name),
        customer_id=state.customer_id,
        at=at,
        from_tier=previous,
        to_tier=tier.name,
        direction=direction,
        reasons=tuple(reasons),
        features=deciding,
        policy_name=policy.name,
        policy_version=policy.version,
        service_level=dict(tier.service_level),
        cause=cause,
        score=float(score) if isinstance(score, int | float) else None,
        trigger=trigger,
        stage=state.stage,
    )


def _upgrade_candidate(
    state: CustomerState,
    at: int,
    policy: Policy,
    features: Mapping[str, Any],
    tier: Tier,
    cause: str,
    trigger: Trigger,
) -> UpgradeCandidate:
    assert policy.upgrade is not None
    conditions = policy.upgrade.conditions
    better = policy.tiers[policy.rank(tier.name) - 1].name if policy.rank(tier.name) else None
    return UpgradeCandidate(
        id=output_id(state.customer_id, "upgrade_candidate", cause, tier.name),
        customer_id=state.customer_id,
        at=at,
        tier=tier.name,
        next_tier=better,
        reasons=tuple(c.describe(features.get(c.feature), True) for c in conditions),
        features={c.feature: features.get(c.feature) for c in conditions},
        policy_name=policy.name,
        policy_version=policy.version,
        cause=cause,
        trigger=trigger,
    )


def _churn(
    state: CustomerState,
    at: int,
    policy: Policy,
    rules: ChurnRules,
    features: Mapping[str, Any],
    cause: str,
    trigger: Trigger,
    outputs: list[Output],
) -> None:
    """The churn-warning episode (see :mod:`app.domain.churn`): clear it when the customer
    purchased after it opened, open or escalate it when the signals say so."""
    since = state.churn_since
    if since is not None and state.last_purchase_at is not None and state.last_purchase_at > since:
        reached = state.churn_severity or ""
        outputs.append(
            ChurnCleared(
                id=output_id(state.customer_id, "churn_cleared", cause, reached, str(since)),
                customer_id=state.customer_id,
                at=at,
                severity=reached,
                episode_started_at=since,
                episode_days=round((at - since) / DAY_MS, 6),
                tier=state.tier,
                stage=state.stage,
                policy_name=policy.name,
                policy_version=policy.version,
                cause=cause,
                trigger=trigger,
            )
        )
        state.churn_severity = state.churn_since = None
        state.churn_cleared_at = at
    cleared = state.churn_cleared_at
    if cleared is not None:
        if at < cleared + int(rules.rearm_days * DAY_MS):
            return
        state.churn_cleared_at = None
    if rules.rank(state.churn_severity) == len(rules.severities):
        return  # nothing higher to say in this episode (or no levels at all)
    severity = rules.severity(state, at, features, policy.model)
    if severity is None or rules.rank(severity) <= rules.rank(state.churn_severity):
        return
    found = rules.assess(state, at, features, policy.model)
    previous = state.churn_severity
    if state.churn_since is None:
        state.churn_since = at
    state.churn_severity = severity
    outputs.append(
        ChurnWarning(
            id=output_id(state.customer_id, "churn_warning", cause, previous or "", severity),
            customer_id=state.customer_id,
            at=at,
            severity=severity,
            previous_severity=previous,
            episode_started_at=state.churn_since,
            tier=state.tier,
            stage=state.stage,
            p_alive=found.p_alive,
            days_silent=found.days_silent,
            usual_gap_days=found.usual_gap_days,
            usual_gap_basis=found.usual_gap_basis,
            falling={
                m: {
                    "recent": fm.recent,
                    "baseline": fm.baseline,
                    "recent_days": fm.recent_days,
                    "baseline_days": fm.baseline_days,
                    "drop": fm.drop,
                }
                for m, fm in found.falling.items()
            },
            expected_purchases=found.expected_purchases,
            value_at_risk=found.value_at_risk,
            horizon_days=rules.value_horizon_days,
            action=rules.action(state.tier, severity),
            reasons=found.reasons,
            features=found.features,
            policy_name=policy.name,
            policy_version=policy.version,
            cause=cause,
            trigger=trigger,
        )
    )


#: A customer keeps at most this many attribute names (their state must stay small however
#: many profile events with new names arrive); later names beyond it are not kept, values
#: of names it has are always updated.
MAX_ATTRIBUTES_KEPT = 256


def _merge_attributes(kept: dict[str, AttributeValue], new: Mapping[str, AttributeValue]) -> None:
    """Profile attributes replace earlier values name by name, up to
    :data:`MAX_ATTRIBUTES_KEPT` names.

    >>> kept = {f"a{i}": i for i in range(MAX_ATTRIBUTES_KEPT - 1)}
    >>> _merge_attributes(kept, {"a0": "x", "new1": 1, "new2": 2})
    >>> kept["a0"], "new1" in kept, "new2" in kept, len(kept)
    ('x', True, False, 256)
    """
    if len(kept) + len(new) <= MAX_ATTRIBUTES_KEPT:
        kept.update(new)
        return
    for name, value in new.items():
        if name in kept or len(kept) < MAX_ATTRIBUTES_KEPT:
            kept[name] = value
