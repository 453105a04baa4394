"""Shadow evaluation: what a new policy would do to the customers, without emitting anything.

:func:`diff_states` decides every customer's state again under a new policy and counts who
would move from which current tier to which new tier: a transition matrix, with up to
``examples`` customers per moving cell and the reasons on both sides. Nothing is emitted
and no state is changed (features are computed with :meth:`Policy.features`, which never
mutates the state, and the tier is chosen with :meth:`Policy.choose` / :meth:`Policy.decide`).

As when a new policy version is deployed (:func:`app.domain.engine.evaluate`), the new
policy decides *afresh*, without hysteresis: its ``stay`` conditions and demotion grace do
not hold anybody back on the first decision. The current tier is the one the state holds
(``state.tier``), hysteresis included.

The result, a :class:`PolicyDiff`, is mergeable: workers can each diff the customers of
their own partitions and a coordinator adds the diffs up (:meth:`PolicyDiff.merge`); it
travels as JSON (:meth:`PolicyDiff.to_dict` / :meth:`PolicyDiff.from_dict`).

Up, down and reassigned
-----------------------
The two policies may name their tiers differently. A move is compared exactly as the
tier change the new policy would emit for it says (:meth:`PolicyDiff.movement`, with
:func:`app.domain.outputs.tier_direction`, the function the engine uses):

* the same name on both sides: unchanged (``same``);
* the current tier's name is also a tier of the new policy: by the places of the two names
  in the new policy (best first), ``up`` or ``down``;
* otherwise (a renamed or removed tier, or one of another policy): ``reassigned``, neither
  up nor down: the customer moves to another scheme, not along one ladder;
* a customer without a tier (never evaluated): ``new``.
"""

from __future__ import annotations

import math
from bisect import insort
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from app.domain.conditions import first_failed
from app.domain.events import Event
from app.domain.hysteresis import held_by
from app.domain.outputs import Direction, tier_direction
from app.domain.policy import Policy
from app.domain.state import CustomerState
from schemas.codec import iso

__all__ = [
    "FORMAT",
    "MOVES",
    "NO_TIER",
    "Example",
    "Movement",
    "PolicyDiff",
    "diff_events",
    "diff_states",
]

#: Version of the :meth:`PolicyDiff.to_dict` form.
FORMAT = 1
#: The current tier of a customer that has none (never evaluated).
NO_TIER = "-"

#: How a move compares: ``same`` (no change) or the direction of the tier change the new
#: policy would emit for it.
Movement = Literal["same"] | Direction
#: The keys of :meth:`PolicyDiff.moves`.
MOVES: tuple[str, ...] = ("changed", "up", "down", "reassigned", "new")


@dataclass(frozen=True, slots=True)
class Example:
    """One customer who would move, and why (JSON-safe: non-finite numbers are None)."""

    customer_id: str
    #: The time the customer was decided as of (epoch ms).
    at: int
    #: The new policy's reasons for the new tier (:meth:`Policy.decide`, then where
    #: computed features such as percentiles and scores come from).
    reasons: tuple[str, ...]
    #: The features that decided the new tier, with their values.
    features: Mapping[str, Any]
    #: Why the customer is in the current tier under the current policy.
    old_reasons: tuple[str, ...]
    old_features: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "at": self.at,
            "reasons": list(self.reasons),
            "features": dict(self.features),
            "old_reasons": list(self.old_reasons),
            "old_features": dict(self.old_features),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Example:
        return cls(
            customer_id=str(raw["customer_id"]),
            at=int(raw["at"]),
            reasons=tuple(str(r) for r in raw["reasons"]),
            features=dict(raw["features"]),
            old_reasons=tuple(str(r) for r in raw["old_reasons"]),
            old_features=dict(raw["old_features"]),
        )


def _example_key(e: Example) -> str:
    return e.customer_id


@dataclass(slots=True)
class PolicyDiff:
    """Who would move from which current tier to which new tier under a new policy.

    ``counts[(old_tier, new_tier)]`` counts customers (only non-zero cells are kept);
    ``examples[(old_tier, new_tier)]`` holds, for the cells whose names differ, the
    ``examples_per_cell`` customers with the smallest ids (so merging is deterministic),
    sorted by id.
    """

    old_policy: str
    new_policy: str
    #: Tier names of each policy, best first.
    old_tiers: tuple[str, ...]
    new_tiers: tuple[str, ...]
    examples_per_cell: int = 3
    #: The time everybody was decided as of, at the earliest (None: each customer's last
    #: evaluation time).
    at: int | None = None
    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    examples: dict[tuple[str, str], list[Example]] = field(default_factory=dict)
    #: Customers the current policy holds in their tier by hysteresis (stay conditions, a
    #: demotion grace): deciding afresh, it would choose a worse tier.
    held: int = 0
    #: Customers last evaluated under another policy than ``old_policy``.
    other_policy: int = 0
    #: The earliest and latest time a customer was decided as of.
    evaluated_from: int | None = None
    evaluated_to: int | None = None

    @classmethod
    def between(
        cls, old: Policy, new: Policy, examples_per_cell: int = 3, at: int | None = None
    ) -> PolicyDiff:
        """An empty diff of ``old`` against ``new``."""
        if examples_per_cell < 0:
            raise ValueError("examples_per_cell must be >= 0")
        return cls(
            old.key,
            new.key,
            tuple(t.name for t in old.tiers),
            tuple(t.name for t in new.tiers),
            examples_per_cell,
            at,
        )

    # --- derived views -------------------------------------------------------------------

    @property
    def customers(self) -> int:
        return sum(self.counts.values())

    def rows(self) -> list[str]:
        """Current tiers in the current policy's order, then any other tier customers are
        in (from another policy; :data:`NO_TIER` last)."""
        known = set(self.old_tiers)
        extra = {o for o, _ in self.counts if o not in known}
        return [*self.old_tiers, *sorted(extra, key=lambda t: (t == NO_TIER, t))]

    def columns(self) -> list[str]:
        """New tiers in the new policy's order."""
        known = set(self.new_tiers)
        extra = {n for _, n in self.counts if n not in known}
        return [*self.new_tiers, *sorted(extra)]

    def before(self) -> dict[str, int]:
        """Customers per current tier (every row, zeros included)."""
        out = dict.fromkeys(self.rows(), 0)
        for (o, _), n in self.counts.items():
            out[o] += n
        return out

    def after(self) -> dict[str, int]:
        """Customers per new tier (every column, zeros included)."""
        out = dict.fromkeys(self.columns(), 0)
        for (_, t), n in self.counts.items():
            out[t] += n
        return out

    def movement(self, old_tier: str, new_tier: str) -> Movement:
        """How a move from ``old_tier`` to ``new_tier`` compares (see the module doc): the
        direction of the tier change the new policy would emit for it."""
        if old_tier == new_tier:
            return "same"
        return tier_direction(self.new_tiers, None if old_tier == NO_TIER else old_tier, new_tier)

    def moves(self) -> dict[str, int]:
        """``changed`` (customers whose tier name would change), of which ``up``,
        ``down``, ``reassigned`` (from a tier the new policy does not have) and ``new``
        (from no tier)."""
        out = dict.fromkeys(MOVES, 0)
        for (o, t), n in self.counts.items():
            m = self.movement(o, t)
            if m != "same":
                out["changed"] += n
                out[m] += n
        return out

    # --- building and merging ------------------------------------------------------------

    def _add(self, old_tier: str, new_tier: str, at: int) -> None:
        cell = (old_tier, new_tier)
        self.counts[cell] = self.counts.get(cell, 0) + 1
        if self.evaluated_from is None or at < self.evaluated_from:
            self.evaluated_from = at
        if self.evaluated_to is None or at > self.evaluated_to:
            self.evaluated_to = at

    def _wants(self, cell: tuple[str, str], customer_id: str) -> bool:
        """Whether a customer of ``cell`` would be among the kept examples."""
        if cell[0] == cell[1] or self.examples_per_cell == 0:
            return False
        kept = self.examples.get(cell)
        return (
            kept is None or len(kept) < self.examples_per_cell or customer_id < kept[-1].customer_id
        )

    def _keep(self, cell: tuple[str, str], example: Example) -> None:
        kept = self.examples.setdefault(cell, [])
        insort(kept, example, key=_example_key)
        del kept[self.examples_per_cell :]

    def merge(self, other: PolicyDiff) -> PolicyDiff:
        """The diff of both populations (e.g. two workers' partitions), as a new object.

        Both must compare the same policies as of the same ``at``; the examples kept are
        the smallest customer ids of both, at most the smaller ``examples_per_cell``, so
        the result does not depend on how customers were split or in which order the
        parts are merged."""
        for name in ("old_policy", "new_policy", "old_tiers", "new_tiers", "at"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                raise ValueError(
                    f"cannot merge policy diffs with different {name}: {mine!r} and {theirs!r}"
                )
        out = PolicyDiff(
            self.old_policy,
            self.new_policy,
            self.old_tiers,
            self.new_tiers,
            min(self.examples_per_cell, other.examples_per_cell),
            self.at,
            held=self.held + other.held,
            other_policy=self.other_policy + other.other_policy,
            evaluated_from=_min(self.evaluated_from, other.evaluated_from),
            evaluated_to=_max(self.evaluated_to, other.evaluated_to),
        )
        for part in (self, other):
            for cell, n in part.counts.items():
                out.counts[cell] = out.counts.get(cell, 0) + n
        limit = out.examples_per_cell
        for cell in {*self.examples, *other.examples}:
            both = sorted(
                [*self.examples.get(cell, ()), *other.examples.get(cell, ())], key=_example_key
            )[:limit]
            if both:
                out.examples[cell] = both
        return out

    # --- JSON form -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types. ``matrix[old][new]`` has every row and column (zeros too);
        ``customers``, ``moves``, ``before`` and ``after`` are derived, for readers (and
        ignored by :meth:`from_dict`)."""
        rows, columns = self.rows(), self.columns()
        return {
            "format": FORMAT,
            "old_policy": self.old_policy,
            "new_policy": self.new_policy,
            "old_tiers": list(self.old_tiers),
            "new_tiers": list(self.new_tiers),
            "at": self.at,
            "evaluated_from": self.evaluated_from,
            "evaluated_to": self.evaluated_to,
            "customers": self.customers,
            "moves": self.moves(),
            "held": self.held,
            "other_policy": self.other_policy,
            "before": self.before(),
            "after": self.after(),
            "matrix": {o: {t: self.counts.get((o, t), 0) for t in columns} for o in rows},
            "examples_per_cell": self.examples_per_cell,
            "examples": [
                {
                    "from": o,
                    "to": t,
                    "movement": self.movement(o, t),
                    "customers": [e.to_dict() for e in self.examples[(o, t)]],
                }
                for o in rows
                for t in columns
                if self.examples.get((o, t))
            ],
        }

    @classmethod
    def from_dict(cls, raw: Any) -> PolicyDiff:
        """The inverse of :meth:`to_dict`; raises ValueError saying what is wrong."""
        try:
            if raw.get("format") != FORMAT:
                raise ValueError(f"unsupported format {raw.get('format')!r} (expected {FORMAT})")
            out = cls(
                old_policy=str(raw["old_policy"]),
                new_policy=str(raw["new_policy"]),
                old_tiers=tuple(str(t) for t in raw["old_tiers"]),
                new_tiers=tuple(str(t) for t in raw["new_tiers"]),
                examples_per_cell=int(raw["examples_per_cell"]),
                at=_opt_int(raw["at"]),
                held=int(raw["held"]),
                other_policy=int(raw["other_policy"]),
                evaluated_from=_opt_int(raw["evaluated_from"]),
                evaluated_to=_opt_int(raw["evaluated_to"]),
            )
            for o, row in raw["matrix"].items():
                for t, n in row.items():
                    if int(n) < 0:
                        raise ValueError(f"negative count in matrix[{o!r}][{t!r}]")
                    if n:
                        out.counts[(str(o), str(t))] = int(n)
            for cell in raw["examples"]:
                key = (str(cell["from"]), str(cell["to"]))
                examples = sorted(
                    (Example.from_dict(e) for e in cell["customers"]), key=_example_key
                )
                if examples:
                    out.examples[key] = examples[: out.examples_per_cell]
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a policy diff: {exc!r}") from exc
        except ValueError as exc:
            raise ValueError(f"not a policy diff: {exc}") from exc
        return out


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


def _min(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def _json_safe(features: Mapping[str, Any]) -> dict[str, Any]:
    """JSON has no infinity (as in the outputs): non-finite numbers become None."""
    out: dict[str, Any] = {}
    for k, v in features.items():
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        elif not (v is None or isinstance(v, str | int | float)):
            v = str(v)
        out[k] = v
    return out


# --- computing a diff ----------------------------------------------------------------------


def diff_states(
    states: Iterable[CustomerState],
    old: Policy,
    new: Policy,
    at: int | None = None,
    examples: int = 3,
) -> PolicyDiff:
    """Decide every state afresh under ``new`` and compare with its current tier.

    Each customer is decided as of its last evaluation time,
    ``max(state.clock, state.evaluated_at)``, as the engine re-evaluates on a policy
    change; ``at`` moves everybody forward to at least ``at`` (nobody is decided before
    their last evaluation). The states are not changed. Policies with percentile
    conditions decide with the cut-offs they carry (:meth:`Policy.with_cutoffs`).
    """
    diff = PolicyDiff.between(old, new, examples, at)
    for state in states:
        t = state.clock if state.clock > state.evaluated_at else state.evaluated_at
        if at is not None and at > t:
            t = at
        new_features = new.features(state, t)
        new_tier = new.choose(new_features).name
        old_tier = state.tier if state.tier is not None else NO_TIER
        old_features: dict[str, Any] | None = None
        if state.policy != old.key:
            diff.other_policy += 1
        elif old.tier(state.tier) is not None:
            old_features = old.features(state, t)
            if held_by(old, state, old.choose(old_features).name, old_features):
                diff.held += 1
        diff._add(old_tier, new_tier, t)
        cell = (old_tier, new_tier)
        if diff._wants(cell, state.customer_id):
            if old_features is None and state.policy == old.key and old.tier(state.tier):
                old_features = old.features(state, t)
            diff._keep(cell, _example(state, t, old, new, new_features, old_features))
    return diff


def _example(
    state: CustomerState,
    at: int,
    old: Policy,
    new: Policy,
    new_features: Mapping[str, Any],
    old_features: Mapping[str, Any] | None,
) -> Example:
    decision = new.decide(new_features)
    reasons = (*decision.reasons, *new.explain_features(new_features, decision.features))
    old_reasons, old_deciding = _old_reasons(state, old, old_features)
    return Example(
        state.customer_id,
        at,
        reasons,
        _json_safe(decision.features),
        old_reasons,
        _json_safe(old_deciding),
    )


def _old_reasons(
    state: CustomerState, old: Policy, features: Mapping[str, Any] | None
) -> tuple[tuple[str, ...], dict[str, Any]]:
    """Why the customer is in the current tier: the current policy's decision, or what
    holds the customer there when deciding afresh would choose another tier."""
    tier = old.tier(state.tier)
    if tier is None or features is None:
        if state.tier is None:
            what = "no tier yet"
        elif tier is None:
            what = f"{state.tier} is not a tier of {old.key}"
        else:
            what = f"{state.tier} was decided by another policy"
        return (f"{what} (last evaluated under {state.policy or 'no policy'})",), {}
    decision = old.decide(features)
    explained = old.explain_features(features, decision.features)
    if decision.tier == tier.name:
        return (*decision.reasons, *explained), dict(decision.features)
    kept = tier.stay_conditions
    deciding = dict(decision.features)
    deciding.update((c.feature, features.get(c.feature)) for c in kept)
    # Held: deciding afresh would demote, and the tier's stay conditions hold or the
    # demotion is pending. Not held: time has passed since the last evaluation.
    held = held_by(old, state, decision.tier, features)
    if held is None:
        lines = [f"not re-evaluated since; by now {old.key} would choose {decision.tier}"]
    elif held == "stay":
        holding = ", ".join(c.describe(features.get(c.feature), True) for c in kept)
        lines = [f"held in {tier.name} by its stay conditions: {holding}"]
    else:
        failed = first_failed(kept, features)
        h = old.hysteresis
        wanted = "" if state.pending_since is None else f" since {iso(state.pending_since)}"
        why = f": {failed.describe(features.get(failed.feature), False)}" if failed else ""
        lines = [
            f"held in {tier.name} by hysteresis, demotion wanted{wanted}{why} (min "
            f"{h.min_days_in_tier:g} days in tier, grace {h.demotion_grace_days:g} days)"
        ]
    lines.append(f"afresh {old.key} would choose {decision.tier}: " + ", ".join(decision.reasons))
    return (*lines, *explained), deciding


def diff_events(
    events: Iterable[Event],
    old: Policy,
    new: Policy,
    as_of: int | None = None,
    examples: int = 3,
) -> PolicyDiff:
    """Replay ``events`` with ``old`` as ``tierstream classify`` does
    (:func:`app.service.batch_replay.classify_events`, advanced to ``as_of``, default
    the latest event time) and diff the resulting states against ``new`` as of ``as_of`` (None: each
    customer's last evaluation). Percentile conditions of either policy are decided with
    the exact cut-offs of the replayed customers as of the time advanced to."""
    from app.service.batch_replay import classify_events, population_cutoffs

    result, at, cutoffs = classify_events(events, old, as_of)
    if new.ranked:
        new = new.with_cutoffs(population_cutoffs(result, new, at))
    return diff_states(result.states.values(), old.with_cutoffs(cutoffs), new, as_of, examples)
