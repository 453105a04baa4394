"""Features: the numbers policies decide on, computed from state as of a time."""

from __future__ import annotations

from dataclasses import dataclass

from app.domain.state import (
    DAY_MS,
    INTERACTIONS,
    PURCHASES,
    SPEND,
    WINDOWS_DAYS,
    CustomerState,
    day_of,
)

_ROLLING = ("spend", "purchases", "interactions")

#: Every feature name a policy may use, with its meaning (for docs and validation).
FEATURES: dict[str, str] = {
    **{
        f"{what}_{w}d": f"{what} in the last {w} days (rolling, UTC-day buckets)"
        for what in _ROLLING
        for w in WINDOWS_DAYS
    },
    **{f"avg_order_value_{w}d": f"spend / purchases over {w} days" for w in WINDOWS_DAYS},
    "lifetime_spend": "net spend since the first event (refunds subtract)",
    "lifetime_purchases": "number of purchases since the first event",
    "lifetime_interactions": "number of interactions since the first event",
    "days_since_last_purchase": "days from the last purchase to the evaluation time",
    "days_since_last_interaction": "days from the last interaction to the evaluation time",
    "frequency": "RFM: number of repeat purchase days (lifetimes convention)",
    "recency": "RFM: days between first and last purchase day",
    "T": "RFM: days between first purchase day and the evaluation day",
    "monetary_value": "RFM: mean spend of the repeat purchase days",
}


@dataclass(frozen=True, slots=True)
class RFMSummary:
    """RFM in the conventions of ``lifetimes.utils.summary_data_from_transaction_data``."""

    frequency: int
    recency: int
    T: int
    monetary_value: float


def rfm_summary(state: CustomerState, as_of: int) -> RFMSummary:
    """RFM as of ``as_of`` (epoch ms); all zeros for a customer without purchases."""
    if state.first_purchase_at is None or state.last_purchase_at is None:
        return RFMSummary(0, 0, 0, 0.0)
    first = day_of(state.first_purchase_at)
    frequency = max(state.purchase_days - 1, 0)
    monetary = state.repeat_spend / frequency if frequency else 0.0
    return RFMSummary(
        frequency=frequency,
        recency=day_of(state.last_purchase_at) - first,
        T=max(day_of(as_of) - first, 0),
        monetary_value=monetary,
    )


def rolling(state: CustomerState, as_of: int) -> dict[str, float]:
    """Rolling sums per window as of ``as_of``: ``spend_30d``, ``purchases_90d``, ..."""
    today = day_of(as_of)
    sums = {w: [0.0, 0.0, 0.0] for w in WINDOWS_DAYS}
    for day, vals in state.buckets.items():
        age = today - day
        if age < 0:
            age = 0  # a bucket dated after as_of (future skew) counts as today
        for w, acc in sums.items():
            if age < w:
                acc[SPEND] += vals[SPEND]
                acc[PURCHASES] += vals[PURCHASES]
                acc[INTERACTIONS] += vals[INTERACTIONS]
    out: dict[str, float] = {}
    for w, acc in sums.items():
        out[f"spend_{w}d"] = acc[SPEND]
        out[f"purchases_{w}d"] = acc[PURCHASES]
        out[f"interactions_{w}d"] = acc[INTERACTIONS]
        out[f"avg_order_value_{w}d"] = acc[SPEND] / acc[PURCHASES] if acc[PURCHASES] else 0.0
    return out


def _days_since(ts: int | None, as_of: int) -> float:
    return (as_of - ts) / DAY_MS if ts is not None else float("inf")


def compute_features(state: CustomerState, as_of: int) -> dict[str, float]:
    """All features of :data:`FEATURES` as of ``as_of`` (epoch ms)."""
    feats = rolling(state, as_of)
    rfm = rfm_summary(state, as_of)
    feats.update(
        lifetime_spend=state.lifetime_spend,
        lifetime_purchases=float(state.lifetime_purchases),
        lifetime_interactions=float(state.lifetime_interactions),
        days_since_last_purchase=_days_since(state.last_purchase_at, as_of),
        days_since_last_interaction=_days_since(state.last_interaction_at, as_of),
        frequency=float(rfm.frequency),
        recency=float(rfm.recency),
        T=float(rfm.T),
        monetary_value=rfm.monetary_value,
    )
    return feats
