"""Output events of the core, and the per-customer snapshot.

Every output carries a deterministic ``id`` derived from the customer, the kind of output,
its cause (an input ``event_id`` or a timer) and what it says (for a tier change: from and
to), so a replay after a crash produces the same ids and downstream consumers can
de-duplicate. What it says is part of the id because a replay does not always say the
same: per customer, the order of events *across* input topics is the order the worker
happened to fetch them, so a replay may interleave a purchase and an interaction
differently and the same event can then cause a different transition. That is a different
output, and it gets a different id instead of being mistaken for a repeat.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from app.domain.features import rfm_summary, rolling
from app.domain.state import CustomerState

_NAMESPACE = uuid.UUID("6f0e8d55-3c1a-4d53-9a57-2f1f7f0c9d10")

#: How a tier change compares (:func:`tier_direction`).
Direction = Literal["new", "up", "down", "reassigned"]
#: What made the core evaluate: an input event, time passing (a due time), a new policy
#: version, or new population cut-offs.
Trigger = Literal["event", "time", "policy_changed", "cutoffs_changed"]


def tier_direction(tiers: Sequence[str], from_tier: str | None, to_tier: str) -> Direction:
    """How a move from ``from_tier`` to ``to_tier`` compares under the policy that decides
    it (``tiers``: its tier names, best first). The tier changes the core emits and
    ``policy diff`` (:mod:`app.service.shadow`) both use this.

    - ``new``: the customer had no tier (``from_tier`` None);
    - ``up`` / ``down``: both names are tiers of the policy, by their places in it;
    - ``reassigned``: ``from_tier`` is not a tier of the policy (a policy change renamed or
      removed it). There is no ladder across two policies: the old tier's place in the old
      policy is not known here (the state keeps the name, and the old policy may be gone,
      several versions back), and a position such as "first of four" against "first of
      three" compares schemes that may not rank alike (value tiers against RFM segments),
      so a consumer acting on up and down (an upgrade or downgrade notice) would act on a
      guess. ``reassigned`` says "another scheme": compare ``service_level`` if needed.

    >>> tiers = ("A", "B", "C", "D")
    >>> [tier_direction(tiers, f, t) for f, t in ((None, "D"), ("C", "B"), ("B", "D"))]
    ['new', 'up', 'down']
    >>> tier_direction(("vip", "regular", "prospect"), "A", "regular")
    'reassigned'
    """
    if from_tier is None:
        return "new"
    if from_tier not in tiers:
        return "reassigned"
    return "up" if tiers.index(to_tier) < tiers.index(from_tier) else "down"


def output_id(customer_id: str, kind: str, cause: str, *says: str) -> str:
    """Deterministic id (UUIDv5) of an output event: customer, kind, cause and what the
    output says (``says``, e.g. the from and to tier)."""
    return str(uuid.uuid5(_NAMESPACE, "\x1f".join((kind, customer_id, cause, *says))))


@dataclass(frozen=True, slots=True)
class TierChange:
    """A customer moved from one tier to another (``from_tier`` is None the first time)."""

    id: str
    customer_id: str
    at: int
    from_tier: str | None
    to_tier: str
    direction: Direction
    reasons: tuple[str, ...]
    features: Mapping[str, Any]
    policy_name: str
    policy_version: str
    service_level: Mapping[str, Any]
    cause: str
    score: float | None = None
    trigger: Trigger = "event"
    #: The lifecycle stage before this evaluation (None the first time).
    stage: str | None = None
    kind: str = field(default="tier_change", init=False)


@dataclass(frozen=True, slots=True)
class LifecycleChange:
    """A customer moved to another lifecycle stage (``from_stage`` None the first time)."""

    id: str
    customer_id: str
    at: int
    from_stage: str | None
    to_stage: str
    reason: str
    tier: str
    policy_name: str
    policy_version: str
    cause: str
    trigger: Trigger = "event"
    kind: str = field(default="lifecycle_change", init=False)


@dataclass(frozen=True, slots=True)
class UpgradeCandidate:
    """A low-tier customer whose recent behaviour rises: flagged once per episode."""

    id: str
    customer_id: str
    at: int
    tier: str
    next_tier: str | None
    reasons: tuple[str, ...]
    features: Mapping[str, Any]
    policy_name: str
    policy_version: str
    cause: str
    trigger: Trigger = "event"
    kind: str = field(default="upgrade_candidate", init=False)


@dataclass(frozen=True, slots=True)
class ChurnWarning:
    """A customer shows signs of leaving: sent once when an episode opens and again only
    when its severity rises (``previous_severity`` is the one sent before, None at the
    start of the episode)."""

    id: str
    customer_id: str
    at: int
    severity: str
    previous_severity: str | None
    episode_started_at: int
    tier: str | None
    stage: str | None
    p_alive: float | None
    days_silent: float | None
    usual_gap_days: float
    usual_gap_basis: str
    #: metric -> {recent, baseline, recent_days, baseline_days, drop}
    falling: Mapping[str, Mapping[str, Any]]
    expected_purchases: float | None
    value_at_risk: float | None
    horizon_days: float
    action: str | None
    reasons: tuple[str, ...]
    features: Mapping[str, Any]
    policy_name: str
    policy_version: str
    cause: str
    trigger: Trigger = "event"
    kind: str = field(default="churn_warning", init=False)


@dataclass(frozen=True, slots=True)
class ChurnCleared:
    """A customer in a churn-warning episode purchased again: the episode is over."""

    id: str
    customer_id: str
    at: int
    severity: str
    episode_started_at: int
    episode_days: float
    tier: str | None
    stage: str | None
    policy_name: str
    policy_version: str
    cause: str
    trigger: Trigger = "event"
    kind: str = field(default="churn_cleared", init=False)


Output = TierChange | LifecycleChange | UpgradeCandidate | ChurnWarning | ChurnCleared


def snapshot(state: CustomerState, as_of: int | None = None) -> dict[str, Any]:
    """The customer's current tier, rolling aggregates and RFM summary as of ``as_of``
    (default: the time the customer was last evaluated at, so the numbers match the tier).
    This is the ``tierstream.customers`` value and a line of
    ``classify --customers-out``."""
    if as_of is None:
        at = state.clock if state.clock > state.evaluated_at else state.evaluated_at
    else:
        at = as_of
    rfm = rfm_summary(state, at)
    return {
        "customer_id": state.customer_id,
        "tier": state.tier,
        "tier_since": state.tier_since,
        "stage": state.stage,
        "stage_since": state.stage_since,
        "pending_tier": state.pending_tier,
        "upgrade_candidate_since": state.upgrade_since,
        "churn": {"severity": state.churn_severity, "since": state.churn_since},
        "policy": state.policy,
        "as_of": at,
        "rolling": rolling(state, at),
        "lifetime": {
            "spend": state.lifetime_spend,
            "margin": state.lifetime_margin,
            "purchases": state.lifetime_purchases,
            "refunds": state.lifetime_refunds,
            "interactions": state.lifetime_interactions,
        },
        "first_purchase_at": state.first_purchase_at,
        "last_purchase_at": state.last_purchase_at,
        "first_interaction_at": state.first_interaction_at,
        "last_interaction_at": state.last_interaction_at,
        "rfm": {
            "frequency": rfm.frequency,
            "recency": rfm.recency,
            "T": rfm.T,
            "monetary_value": rfm.monetary_value,
        },
        "attributes": dict(state.attributes),
    }
