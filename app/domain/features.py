"""Features: the numbers policies decide on, computed from state as of a time.

Only the features a policy uses are computed on the hot path
(``compute_features(state, at, policy.features_used)``); each costs O(1) because the
rolling window sums are kept in the state (see :mod:`app.domain.state`).

>>> from app.domain.state import CustomerState
>>> s = CustomerState("c1")
>>> compute_features(s, 0, ["spend_30d", "days_since_last_purchase"])
{'spend_30d': 0.0, 'days_since_last_purchase': inf}
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from app.domain.state import (
    DAY_MS,
    MARGIN,
    WINDOWS_DAYS,
    CustomerState,
    WindowSums,
    day_of,
)

_ROLLING = ("spend", "purchases", "interactions")
#: Profile attributes are addressed in policies as ``attributes.<name>``.
ATTRIBUTE_PREFIX = "attributes."

#: Every feature name a policy may use, with its meaning (for docs and validation).
FEATURES: dict[str, str] = {
    **{
        f"{what}_{w}d": (
            f"{what} in the last {w} days: the UTC day of the evaluation time and the "
            f"{w - 1} days before it"
            + (" (refunds subtract; an exact, correctly rounded sum)" if what == "spend" else "")
        )
        for what in _ROLLING
        for w in WINDOWS_DAYS
    },
    **{f"avg_order_value_{w}d": f"spend / purchases over {w} days" for w in WINDOWS_DAYS},
    **{
        f"margin_{w}d": f"sum of the purchases' margin field over {w} days (missing = 0)"
        for w in WINDOWS_DAYS
    },
    **{
        f"{what}_growth_{w}d": (
            f"growth of {what}: the last {w} days against the {w2 - w} days before them "
            f"scaled to {w} days, as a fraction (0.5 = +50 %, -1 = stopped); infinite when "
            "there was nothing before and something now, 0 when nothing at all"
        )
        for what in _ROLLING
        for w, w2 in itertools.pairwise(WINDOWS_DAYS)
    },
    "lifetime_spend": "net spend since the first event (refunds subtract)",
    "lifetime_margin": "sum of the purchases' margin field since the first event",
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
    """RFM in the conventions of ``lifetimes.utils.summary_data_from_transaction_data``
    (``freq='D'``, monetary value column): ``frequency`` is the number of distinct purchase
    days minus one, ``recency`` and ``T`` are whole days from the first purchase day to the
    last purchase day and to the evaluation day, ``monetary_value`` is the mean per-day
    spend over the repeat days (0 without repeats). Refunds do not enter RFM."""

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


def window_sums(state: CustomerState, as_of: int) -> WindowSums:
    """The rolling sums as of ``as_of``: the state's own when ``as_of`` is on its day, a
    rolled-forward copy for a later day, recomputed from the buckets for an earlier one.
    Never mutates the state; all three give identical values."""
    day = day_of(as_of)
    sums = state.windows
    if day == sums.day:
        return sums
    if day > sums.day:
        ahead = sums.copy()
        ahead.roll_to(day, state.buckets)
        return ahead
    return WindowSums.from_buckets(state.buckets, day)


def rolling(state: CustomerState, as_of: int) -> dict[str, float]:
    """Rolling sums per window as of ``as_of``: ``spend_30d``, ``purchases_90d``, ..."""
    sums = window_sums(state, as_of)
    out: dict[str, float] = {}
    for k, (spend_key, purchases_key, interactions_key, aov_key) in enumerate(_ROLLING_KEYS):
        spend = math.fsum(sums.spend[k])
        purchases = sums.purchases[k]
        out[spend_key] = spend
        out[purchases_key] = purchases
        out[interactions_key] = sums.interactions[k]
        out[aov_key] = spend / purchases if purchases else 0.0
        out[f"margin_{WINDOWS_DAYS[k]}d"] = window_margin(state, as_of, WINDOWS_DAYS[k])
    return out


_ROLLING_KEYS = [
    (f"spend_{w}d", f"purchases_{w}d", f"interactions_{w}d", f"avg_order_value_{w}d")
    for w in WINDOWS_DAYS
]


def window_margin(state: CustomerState, at: int, w: int) -> float:
    """Margin of the buckets in the ``w``-day window as of ``at``, correctly rounded (the
    buckets are summed on demand: few policies read margins, every purchase carries one)."""
    today = day_of(at)
    return math.fsum(b[MARGIN] for d, b in state.buckets.items() if today - d < w)


def growth(recent: float, longer: float, w: int, w2: int) -> float:
    """Growth of the last ``w`` days against the ``w2 - w`` days before them, scaled to the
    same length: ``recent / baseline - 1``.

    >>> growth(30.0, 90.0, 30, 90)   # 30 now, 60 over the 60 days before: flat
    0.0
    >>> growth(10.0, 10.0, 30, 90), growth(0.0, 0.0, 30, 90)
    (inf, 0.0)
    """
    baseline = (longer - recent) * w / (w2 - w)
    if baseline <= 0:
        return float("inf") if recent > 0 else 0.0
    return recent / baseline - 1.0


def _days_since(ts: int | None, as_of: int) -> float:
    return (as_of - ts) / DAY_MS if ts is not None else float("inf")


_Getter = Callable[[CustomerState, int, WindowSums], Any]


def _window_getters() -> dict[str, _Getter]:
    getters: dict[str, _Getter] = {}
    for k, w in enumerate(WINDOWS_DAYS):

        def spend(s: CustomerState, at: int, ws: WindowSums, k: int = k) -> float:
            return math.fsum(ws.spend[k])

        def purchases(s: CustomerState, at: int, ws: WindowSums, k: int = k) -> float:
            return ws.purchases[k]

        def interactions(s: CustomerState, at: int, ws: WindowSums, k: int = k) -> float:
            return ws.interactions[k]

        def aov(s: CustomerState, at: int, ws: WindowSums, k: int = k) -> float:
            n = ws.purchases[k]
            return math.fsum(ws.spend[k]) / n if n else 0.0

        def margin(s: CustomerState, at: int, ws: WindowSums, w: int = w) -> float:
            return window_margin(s, at, w)

        getters[f"spend_{w}d"] = spend
        getters[f"purchases_{w}d"] = purchases
        getters[f"interactions_{w}d"] = interactions
        getters[f"avg_order_value_{w}d"] = aov
        getters[f"margin_{w}d"] = margin
    for k, (w, w2) in enumerate(itertools.pairwise(WINDOWS_DAYS)):

        def spend_growth(s: CustomerState, at: int, ws: WindowSums, k: int = k) -> float:
            w, w2 = WINDOWS_DAYS[k], WINDOWS_DAYS[k + 1]
            return growth(math.fsum(ws.spend[k]), math.fsum(ws.spend[k + 1]), w, w2)

        def purchases_growth(s: CustomerState, at: int, ws: WindowSums, k: int = k) -> float:
            w, w2 = WINDOWS_DAYS[k], WINDOWS_DAYS[k + 1]
            return growth(ws.purchases[k], ws.purchases[k + 1], w, w2)

        def interactions_growth(s: CustomerState, at: int, ws: WindowSums, k: int = k) -> float:
            w, w2 = WINDOWS_DAYS[k], WINDOWS_DAYS[k + 1]
            return growth(ws.interactions[k], ws.interactions[k + 1], w, w2)

        getters[f"spend_growth_{w}d"] = spend_growth
        getters[f"purchases_growth_{w}d"] = purchases_growth
        getters[f"interactions_growth_{w}d"] = interactions_growth
    return getters


_GETTERS: dict[str, _Getter] = {
    **_window_getters(),
    "lifetime_spend": lambda s, at, ws: s.lifetime_spend,
    "lifetime_margin": lambda s, at, ws: s.lifetime_margin,
    "lifetime_purchases": lambda s, at, ws: float(s.lifetime_purchases),
    "lifetime_interactions": lambda s, at, ws: float(s.lifetime_interactions),
    "days_since_last_purchase": lambda s, at, ws: _days_since(s.last_purchase_at, at),
    "days_since_last_interaction": lambda s, at, ws: _days_since(s.last_interaction_at, at),
    "frequency": lambda s, at, ws: float(rfm_summary(s, at).frequency),
    "recency": lambda s, at, ws: float(rfm_summary(s, at).recency),
    "T": lambda s, at, ws: float(rfm_summary(s, at).T),
    "monetary_value": lambda s, at, ws: rfm_summary(s, at).monetary_value,
}
assert _GETTERS.keys() == FEATURES.keys()


def compute_features(
    state: CustomerState, as_of: int, names: Iterable[str] | None = None
) -> dict[str, Any]:
    """Features as of ``as_of`` (epoch ms): all of :data:`FEATURES` by default, else just
    ``names`` (which may include ``attributes.<name>``: the profile attribute or None).
    Unknown names are left out."""
    sums = window_sums(state, as_of)
    if names is None:
        return {name: get(state, as_of, sums) for name, get in _GETTERS.items()}
    out: dict[str, Any] = {}
    for name in names:
        get = _GETTERS.get(name)
        if get is not None:
            out[name] = get(state, as_of, sums)
        elif name.startswith(ATTRIBUTE_PREFIX):
            out[name] = state.attributes.get(name[len(ATTRIBUTE_PREFIX) :])
    return out
