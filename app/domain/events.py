"""Input events as the core sees them: already decoded and validated (see ``schemas``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

EventKind = Literal["purchase", "interaction", "profile"]
AttributeValue = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class Event:
    """One input event.

    ``occurred_at`` is event time in epoch milliseconds (UTC). For purchases ``amount`` is in
    the policy's currency; a refund is a purchase with a negative amount. Profile events
    carry classification attributes (industry, region, size, ...) in ``attributes``.
    """

    event_id: str
    customer_id: str
    kind: EventKind
    type: str
    occurred_at: int
    amount: float = 0.0
    quantity: float | None = None
    margin: float | None = None
    currency: str | None = None
    order_id: str | None = None
    category: str | None = None
    channel: str | None = None
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
