"""Per-customer state: lifetime totals, rolling windows as fixed day buckets, RFM summary
inputs and a recent-event-id set for de-duplication.

The state is compact and versioned (``schema_version``); :func:`state_to_dict` and
:func:`state_from_dict` are its changelog format. Old versions must keep loading: add a
migration in :func:`state_from_dict`, never change the meaning of an existing field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.domain.events import AttributeValue

SCHEMA_VERSION = 1
DAY_MS = 86_400_000
#: Rolling windows, in days, kept as fixed UTC-day buckets inside the record.
WINDOWS_DAYS: tuple[int, ...] = (30, 90, 365)
#: Buckets older than this many days before the customer's clock are dropped.
RETENTION_DAYS = max(WINDOWS_DAYS)
#: How many recent event ids each customer remembers to drop duplicates.
RECENT_IDS = 128

# Bucket slots.
SPEND, PURCHASES, INTERACTIONS = 0, 1, 2


def day_of(ms: int) -> int:
    """UTC day number of an epoch-millisecond timestamp."""
    return ms // DAY_MS


@dataclass(slots=True)
class CustomerState:
    """Everything the core remembers about one customer.

    ``clock`` is the largest event time seen for the customer; features are evaluated as of
    it when an event arrives, so a customer's results depend only on the customer's own
    ordered events (not on partitioning). Buckets map a UTC day number to
    ``[spend, purchases, interactions]``.
    """

    customer_id: str
    schema_version: int = SCHEMA_VERSION
    clock: int = 0
    tier: str | None = None
    tier_since: int | None = None
    first_purchase_at: int | None = None
    last_purchase_at: int | None = None
    first_interaction_at: int | None = None
    last_interaction_at: int | None = None
    lifetime_spend: float = 0.0
    lifetime_purchases: int = 0
    lifetime_refunds: int = 0
    lifetime_interactions: int = 0
    # RFM inputs, in the conventions of the ``lifetimes`` library (periods = UTC days).
    purchase_days: int = 0
    first_day_spend: float = 0.0
    repeat_spend: float = 0.0
    buckets: dict[int, list[float]] = field(default_factory=dict)
    recent_ids: list[str] = field(default_factory=list)
    attributes: dict[str, AttributeValue] = field(default_factory=dict)

    def seen(self, event_id: str) -> bool:
        """True when ``event_id`` is among the recently applied events."""
        return event_id in self.recent_ids

    def remember(self, event_id: str) -> None:
        ids = self.recent_ids
        ids.append(event_id)
        if len(ids) > RECENT_IDS:
            del ids[: len(ids) - RECENT_IDS]


_SCALARS = (
    "clock",
    "tier",
    "tier_since",
    "first_purchase_at",
    "last_purchase_at",
    "first_interaction_at",
    "last_interaction_at",
    "lifetime_spend",
    "lifetime_purchases",
    "lifetime_refunds",
    "lifetime_interactions",
    "purchase_days",
    "first_day_spend",
    "repeat_spend",
)


def state_to_dict(state: CustomerState) -> dict[str, Any]:
    """The changelog form: plain JSON types, buckets as ``[[day, spend, n, i], ...]``."""
    d: dict[str, Any] = {"v": state.schema_version, "id": state.customer_id}
    for name in _SCALARS:
        d[name] = getattr(state, name)
    d["buckets"] = [[day, *vals] for day, vals in state.buckets.items()]
    d["recent_ids"] = state.recent_ids
    if state.attributes:
        d["attributes"] = state.attributes
    return d


def state_from_dict(d: dict[str, Any]) -> CustomerState:
    """Inverse of :func:`state_to_dict`; migrates older schema versions."""
    version = d.get("v", 1)
    if version > SCHEMA_VERSION:
        raise ValueError(
            f"state schema_version {version} is newer than this code ({SCHEMA_VERSION})"
        )
    state = CustomerState(customer_id=d["id"])
    for name in _SCALARS:
        if name in d:
            setattr(state, name, d[name])
    state.buckets = {int(row[0]): [row[1], row[2], row[3]] for row in d.get("buckets", ())}
    state.recent_ids = list(d.get("recent_ids", ()))
    state.attributes = dict(d.get("attributes", {}))
    return state
