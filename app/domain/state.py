"""Per-customer state: lifetime totals, rolling windows as fixed day buckets, RFM summary
inputs and a recent-event-id set for de-duplication.

The state is compact and versioned (``schema_version``); :func:`state_to_dict` and
:func:`state_from_dict` are its changelog format. Old versions must keep loading: add a
migration in :func:`state_from_dict`, never change the meaning of an existing field.

Windows and day boundaries
--------------------------
Days are UTC days (``day_of(ms) = ms // DAY_MS``). A window of ``W`` days *as of* a time
``t`` covers the ``W`` UTC days ``day_of(t) - W + 1 .. day_of(t)``: today and the
``W - 1`` previous days. So as of 2024-03-31T12:00Z, ``spend_30d`` counts everything from
2024-03-02T00:00:00.000Z on; an event at 2024-03-01T23:59:59.999Z is out.

Exact window sums
-----------------
Each bucket holds the plain float sum of its day's amounts. A window's spend is the
*correctly rounded exact sum* of its bucket values (``math.fsum``), kept incrementally in
:class:`WindowSums` as a list of non-overlapping partials (Shewchuk's algorithm), so adding
and removing buckets never drifts and the result does not depend on the order in which
buckets were touched. A streaming run (state serialized between batches) and a batch
replay therefore agree bit for bit, and both equal a from-scratch ``math.fsum``.

>>> s = CustomerState("c1")
>>> exact_add(s.windows.spend[0], 0.1); exact_add(s.windows.spend[0], 0.2)
>>> exact_add(s.windows.spend[0], -0.1); math.fsum(s.windows.spend[0])
0.2

Overflow
--------
Every sum here (buckets, windows, lifetime totals, RFM spend) adds one event's number per
event, and the decoder bounds each to +-1e15 (``schemas.codec.MAX_NUMBER``): even 10**12
events at the bound stay below 1e27, far from the float limit (1.8e308), so no sum, no
``math.fsum`` over them and nothing derived from them (averages, RFM, value at risk, the
snapshot) can become infinite or raise, and the changelog (JSON has no infinity) never
meets one. (Features that are infinite by definition, such as growth from nothing, and a
policy's own arithmetic, such as a division by a tiny attribute, may be: outputs carry
them as null.) The core adds no check per event for it; ``tests/unit/domain/test_overflow.py``
runs thousands of events at the bounds through every example policy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from app.domain.events import AttributeValue

SCHEMA_VERSION = 5
DAY_MS = 86_400_000
#: Rolling windows, in days, kept as fixed UTC-day buckets inside the record.
WINDOWS_DAYS: tuple[int, ...] = (30, 90, 365)
#: Buckets older than this many days before the customer's clock are dropped: a bucket
#: is kept while ``day > day_of(clock) - RETENTION_DAYS``, exactly the longest window.
RETENTION_DAYS = max(WINDOWS_DAYS)
#: How many recent event ids each customer remembers to drop duplicates.
RECENT_IDS = 128

# Bucket slots.
SPEND, PURCHASES, INTERACTIONS, MARGIN = 0, 1, 2, 3


def day_of(ms: int) -> int:
    """UTC day number of an epoch-millisecond timestamp.

    >>> day_of(86_400_000 - 1), day_of(86_400_000)
    (0, 1)
    """
    return ms // DAY_MS


def exact_add(partials: list[float], x: float) -> None:
    """Add ``x`` to the exact sum held as non-overlapping ``partials`` (in place).

    ``math.fsum(partials)`` is then the correctly rounded exact total. This is the
    ``msum`` recipe behind :func:`math.fsum` (Shewchuk, "Adaptive Precision
    Floating-Point Arithmetic"); values must be finite.
    """
    i = 0
    for y in partials:
        if abs(x) < abs(y):
            x, y = y, x
        hi = x + y
        lo = y - (hi - x)
        if lo:
            partials[i] = lo
            i += 1
        x = hi
    del partials[i:]
    if x:
        partials.append(x)


@dataclass(slots=True)
class WindowSums:
    """Rolling sums of the day buckets for every window of :data:`WINDOWS_DAYS`, as of
    UTC day ``day``: window ``k`` holds the buckets with ``day - W_k < d <= day``.

    ``spend[k]`` are exact partials (value: ``math.fsum(spend[k])``); the counts are
    integral floats, exact below 2**53. Margins are not kept here (they would double the
    exact-sum work of every purchase for a feature few policies read): ``margin_<W>d`` sums
    the buckets' margin slot when asked (:mod:`app.domain.features`).
    """

    day: int
    spend: list[list[float]]
    purchases: list[float]
    interactions: list[float]

    @classmethod
    def empty(cls, day: int = 0) -> WindowSums:
        n = len(WINDOWS_DAYS)
        return cls(day, [[] for _ in range(n)], [0.0] * n, [0.0] * n)

    def copy(self) -> WindowSums:
        return WindowSums(
            self.day,
            [list(p) for p in self.spend],
            list(self.purchases),
            list(self.interactions),
        )

    def add_bucket(self, k: int, vals: list[float], sign: float) -> None:
        """Add (``sign=1.0``) or remove (``-1.0``) one bucket from window ``k``."""
        if vals[SPEND]:
            exact_add(self.spend[k], sign * vals[SPEND])
        self.purchases[k] += sign * vals[PURCHASES]
        self.interactions[k] += sign * vals[INTERACTIONS]

    def roll_to(self, day: int, buckets: dict[int, list[float]]) -> list[int]:
        """Move the sums forward to ``day`` (no-op if not later): buckets that leave a
        window are subtracted. ``buckets`` must be the ones the sums were built from.
        Returns the days that left the longest window (the caller may drop them)."""
        old = self.day
        if day <= old:
            return []
        self.day = day
        gone: list[int] = []
        if (day - old) * len(WINDOWS_DAYS) <= len(buckets):  # look the leaving days up
            for k, w in enumerate(WINDOWS_DAYS):
                for d in range(old - w + 1, day - w + 1):
                    vals = buckets.get(d)
                    if vals is not None:
                        self.add_bucket(k, vals, -1.0)
                        if w == RETENTION_DAYS:
                            gone.append(d)
        else:  # fewer buckets than leaving days: scan the buckets
            shortest = WINDOWS_DAYS[0]
            for d, vals in buckets.items():
                age_new = day - d
                if age_new < shortest:
                    continue
                age_old = old - d
                for k, w in enumerate(WINDOWS_DAYS):
                    if age_old < w <= age_new:
                        self.add_bucket(k, vals, -1.0)
                if age_old < RETENTION_DAYS <= age_new:
                    gone.append(d)
        return gone

    @classmethod
    def from_buckets(cls, buckets: dict[int, list[float]], day: int) -> WindowSums:
        """Sums as of ``day`` computed from scratch. A bucket dated after ``day`` counts
        as ``day`` itself (only possible when asking about a time before the clock)."""
        sums = cls.empty(day)
        for d, vals in buckets.items():
            age = day - d
            for k, w in enumerate(WINDOWS_DAYS):
                if age < w:
                    sums.add_bucket(k, vals, 1.0)
        return sums

    def to_list(self) -> list[Any]:
        return [self.day, self.spend, self.purchases, self.interactions]

    @classmethod
    def from_list(cls, row: list[Any]) -> WindowSums:
        return cls(int(row[0]), [list(p) for p in row[1]], list(row[2]), list(row[3]))


@dataclass(slots=True)
class CustomerState:
    """Everything the core remembers about one customer.

    ``clock`` is the largest event time seen for the customer; features are evaluated as of
    it when an event arrives, so a customer's results depend only on the customer's own
    ordered events (not on partitioning). Buckets map a UTC day number to
    ``[spend, purchases, interactions, margin]``; ``windows`` holds their rolling sums as of
    ``day_of(clock)`` (derived data, kept so that an event costs O(1), not O(buckets)).

    RFM follows ``lifetimes``: ``purchase_day_bits`` has bit ``k`` set when there was a
    purchase on UTC day ``day_of(first_purchase_at) + k``, so a late purchase is placed
    exactly however old it is; ``purchase_days`` is the number of such days.
    """

    customer_id: str
    schema_version: int = SCHEMA_VERSION
    clock: int = 0
    #: The time of the last evaluation (event, due time or sweep); never evaluated before it.
    evaluated_at: int = 0
    tier: str | None = None
    tier_since: int | None = None
    #: A change the policy's hysteresis holds back (demotion grace, minimum time in tier):
    #: the tier it points to and since when it has been wanted.
    pending_tier: str | None = None
    pending_since: int | None = None
    stage: str | None = None
    stage_since: int | None = None
    #: Start of the current upgrade-candidate episode (None: not a candidate now).
    upgrade_since: int | None = None
    #: The open churn-warning episode: the highest severity sent and when it opened
    #: (None: no episode); when the last one was cleared (re-arm period).
    churn_severity: str | None = None
    churn_since: int | None = None
    churn_cleared_at: int | None = None
    #: When the customer must be re-evaluated without new events (the due-time index).
    next_due: int | None = None
    #: Next time (ms) a day bucket leaves a rolling window the policy uses.
    roll_due: int | None = None
    #: ``name@version`` of the policy the customer was last evaluated under.
    policy: str | None = None
    first_purchase_at: int | None = None
    last_purchase_at: int | None = None
    first_interaction_at: int | None = None
    last_interaction_at: int | None = None
    lifetime_spend: float = 0.0
    lifetime_margin: float = 0.0
    lifetime_purchases: int = 0
    lifetime_refunds: int = 0
    lifetime_interactions: int = 0
    # RFM inputs, in the conventions of the ``lifetimes`` library (periods = UTC days).
    purchase_days: int = 0
    first_day_spend: float = 0.0
    repeat_spend: float = 0.0
    purchase_day_bits: int = 0
    buckets: dict[int, list[float]] = field(default_factory=dict)
    windows: WindowSums = field(default_factory=WindowSums.empty)
    recent_ids: list[str] = field(default_factory=list)
    attributes: dict[str, AttributeValue] = field(default_factory=dict)
    _recent_set: set[str] | None = field(default=None, init=False, repr=False, compare=False)
    #: (purchase_day_bits, usual gap, basis): the churn rules' usual gap, derived data
    #: kept while the purchase days do not change (not stored).
    gap_cache: tuple[int, float, str] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    #: The churn rules' falling-activity totals of the days before one day (derived data,
    #: not stored; see :func:`app.domain.churn.window_totals`).
    falling_cache: tuple[Any, ...] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    #: The churn rules' silence and P(alive) crossing times (derived, not stored).
    due_cache: tuple[Any, ...] | None = field(default=None, init=False, repr=False, compare=False)

    def seen(self, event_id: str) -> bool:
        """True when ``event_id`` is among the recently applied events."""
        recent = self._recent_set
        if recent is None:
            recent = self._recent_set = set(self.recent_ids)
        return event_id in recent

    def remember(self, event_id: str) -> None:
        """Record an applied event id (one not :meth:`seen`); the oldest is forgotten
        once :data:`RECENT_IDS` are kept."""
        ids = self.recent_ids
        recent = self._recent_set
        if recent is None:
            recent = self._recent_set = set(ids)
        ids.append(event_id)
        recent.add(event_id)
        if len(ids) > RECENT_IDS:
            dropped = ids[: len(ids) - RECENT_IDS]
            del ids[: len(ids) - RECENT_IDS]
            recent.difference_update(dropped)


_SCALARS = (
    "clock",
    "evaluated_at",
    "tier",
    "tier_since",
    "pending_tier",
    "pending_since",
    "stage",
    "stage_since",
    "upgrade_since",
    "churn_severity",
    "churn_since",
    "churn_cleared_at",
    "next_due",
    "roll_due",
    "policy",
    "first_purchase_at",
    "last_purchase_at",
    "first_interaction_at",
    "last_interaction_at",
    "lifetime_spend",
    "lifetime_margin",
    "lifetime_purchases",
    "lifetime_refunds",
    "lifetime_interactions",
    "purchase_days",
    "first_day_spend",
    "repeat_spend",
)
_FLOATS = frozenset({"lifetime_spend", "lifetime_margin", "first_day_spend", "repeat_spend"})


def state_to_dict(state: CustomerState) -> dict[str, Any]:
    """The changelog form: plain JSON types, the buckets as two parallel lists
    ``bucket_days`` and ``bucket_rows`` (``[spend, purchases, interactions, margin]`` each),
    ``purchase_day_bits`` as a hex string, ``windows`` as ``[day, spend partials,
    purchases, interactions]``.

    The bucket rows are the state's own lists (copying them per write cost more than
    the core's work on an event): serialize the result before the state changes again.
    Nothing else in it aliases the state."""
    d: dict[str, Any] = {"v": SCHEMA_VERSION, "id": state.customer_id}
    for name in _SCALARS:
        d[name] = getattr(state, name)
    d["purchase_day_bits"] = format(state.purchase_day_bits, "x")
    d["bucket_days"] = list(state.buckets)
    d["bucket_rows"] = list(state.buckets.values())
    d["windows"] = state.windows.to_list()
    d["recent_ids"] = list(state.recent_ids)
    if state.attributes:
        d["attributes"] = dict(state.attributes)
    return d


def state_from_dict(d: dict[str, Any]) -> CustomerState:
    """Inverse of :func:`state_to_dict`; migrates older schema versions.

    v4 -> v5: no churn-warning episode open or cleared yet.

    v3 -> v4: bucket rows gain a margin slot (0: margins were not kept); the evaluation
    time is the later of the clock and ``tier_since``; no lifecycle stage or pending
    change yet, and a customer with a tier is due at once (the next evaluation sets the
    stage and the real due time).

    v2 -> v3: the buckets were rows ``[day, spend, purchases, interactions]``.
    v1 -> v2: ``purchase_day_bits`` is rebuilt from the first and last purchase days and
    the buckets that hold purchases (older purchase days are not known; ``purchase_days``
    stays authoritative), and ``windows`` is computed from the buckets.
    """
    version = d.get("v", 1)
    if version > SCHEMA_VERSION:
        raise ValueError(
            f"state schema_version {version} is newer than this code ({SCHEMA_VERSION})"
        )
    if version == SCHEMA_VERSION:  # the fast path: our own current format
        return CustomerState(
            customer_id=d["id"],
            clock=d["clock"],
            evaluated_at=d["evaluated_at"],
            tier=d["tier"],
            tier_since=d["tier_since"],
            pending_tier=d["pending_tier"],
            pending_since=d["pending_since"],
            stage=d["stage"],
            stage_since=d["stage_since"],
            upgrade_since=d["upgrade_since"],
            churn_severity=d["churn_severity"],
            churn_since=d["churn_since"],
            churn_cleared_at=d["churn_cleared_at"],
            next_due=d["next_due"],
            roll_due=d["roll_due"],
            policy=d["policy"],
            first_purchase_at=d["first_purchase_at"],
            last_purchase_at=d["last_purchase_at"],
            first_interaction_at=d["first_interaction_at"],
            last_interaction_at=d["last_interaction_at"],
            lifetime_spend=float(d["lifetime_spend"]),
            lifetime_margin=float(d["lifetime_margin"]),
            lifetime_purchases=d["lifetime_purchases"],
            lifetime_refunds=d["lifetime_refunds"],
            lifetime_interactions=d["lifetime_interactions"],
            purchase_days=d["purchase_days"],
            first_day_spend=float(d["first_day_spend"]),
            repeat_spend=float(d["repeat_spend"]),
            purchase_day_bits=int(d["purchase_day_bits"], 16),
            # Values are used as stored: JSON keeps floats floats (``1.0``), and an
            # integral value read as int behaves identically in the sums.
            buckets=dict(zip(d["bucket_days"], map(list, d["bucket_rows"]), strict=True)),
            windows=WindowSums.from_list(d["windows"]),
            recent_ids=list(d["recent_ids"]),
            attributes=dict(d.get("attributes", ())),
        )
    state = CustomerState(customer_id=d["id"])
    for name in _SCALARS:
        if name in d:
            value = d[name]
            setattr(state, name, float(value) if name in _FLOATS else value)
    if "bucket_days" in d:
        state.buckets = dict(zip(d["bucket_days"], map(list, d["bucket_rows"]), strict=True))
    else:  # v1, v2: rows of [day, spend, purchases, interactions]
        state.buckets = {row[0]: row[1:] for row in d.get("buckets", ())}
    for row in state.buckets.values():  # v1 to v3: no margin slot
        row.extend([0.0] * (MARGIN + 1 - len(row)))
    if "evaluated_at" not in d:
        state.evaluated_at = max(state.clock, state.tier_since or 0)
        if state.tier is not None:  # due at once: the first timer run sets the real due time
            state.next_due = state.evaluated_at
    state.recent_ids = list(d.get("recent_ids", ()))
    state.attributes = dict(d.get("attributes", {}))
    if "purchase_day_bits" in d:
        state.purchase_day_bits = int(d["purchase_day_bits"], 16)
    else:
        state.purchase_day_bits = _bits_from_v1(state)
    if "windows" in d:
        state.windows = WindowSums.from_list(d["windows"])
    else:
        state.windows = WindowSums.from_buckets(state.buckets, day_of(state.clock))
    return state


def _bits_from_v1(state: CustomerState) -> int:
    if state.first_purchase_at is None or state.last_purchase_at is None:
        return 0
    first = day_of(state.first_purchase_at)
    bits = 1 | 1 << (day_of(state.last_purchase_at) - first)
    for day, vals in state.buckets.items():
        if vals[PURCHASES] and day >= first:
            bits |= 1 << (day - first)
    return bits


def recompute_windows(state: CustomerState) -> WindowSums:
    """The window sums rebuilt from the buckets (for tests and checks): always equal in
    value to ``state.windows``."""
    return WindowSums.from_buckets(state.buckets, state.windows.day)


def window_values(sums: WindowSums) -> list[tuple[float, float, float]]:
    """``(spend, purchases, interactions)`` per window, spend correctly rounded."""
    return [
        (math.fsum(sums.spend[k]), sums.purchases[k], sums.interactions[k])
        for k in range(len(WINDOWS_DAYS))
    ]
