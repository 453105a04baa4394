"""Tiering methods: the policy sections that compute features from features (DOMAIN.md's
methods 2 and 4: RFM scores, a weighted scorecard), each a small object with one
interface (:class:`TieringMethod`) and each registered, with its parser, in
:data:`METHODS`.

A :class:`~app.domain.policy.Policy` holds the methods of its document in :data:`METHODS`
order and computes its features with them (``for m in policy.methods: m.add(f, cutoffs)``);
:mod:`app.domain.policy_doc` parses each section with the registered parser; no derived
feature may take a name a method provides (:data:`PROVIDED`).

To add a method: write its class and parser (as :mod:`app.domain.scoring` does), register
them here (in :data:`METHODS` and :data:`EXPLAINED`) and document the section and its
features in the README.

>>> sorted(METHODS), sorted(PROVIDED)
(['rfm', 'scorecard'], ['rfm_f', 'rfm_m', 'rfm_r', 'rfm_sum', 'score'])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, NamedTuple, Protocol

from app.domain.conditions import Condition, Problems
from app.domain.population import Cutoffs
from app.domain.scoring import RFM, KindOf, Scorecard, parse_rfm, parse_scorecard

__all__ = [
    "EXPLAINED",
    "METHODS",
    "PERCENTILES",
    "PROVIDED",
    "Method",
    "TieringMethod",
    "explanation_order",
]


class TieringMethod(Protocol):
    """What a policy needs of a method (the shape of quix-streams' aggregators)."""

    #: The features it adds (reserved names: no derived feature may take them).
    provides: ClassVar[frozenset[str]]

    @property
    def inputs(self) -> set[str]:
        """The features it reads (they are computed for it)."""
        ...

    @property
    def ranked(self) -> Mapping[str, tuple[float, ...]]:
        """Features it ranks over the population, with the percentiles it needs."""
        ...

    @property
    def conditions(self) -> tuple[Condition, ...]:
        """Its own conditions (their features are computed, their percentile features
        ranked, their time-dependent thresholds watched)."""
        ...

    @property
    def thresholds(self) -> Mapping[str, tuple[float, ...]]:
        """Values of the features it reads, besides its conditions', at which what it
        adds changes (a time-dependent feature crossing one is re-evaluated there)."""
        ...

    def add(self, features: dict[str, Any], cutoffs: Cutoffs) -> None:
        """Add what it provides to ``features`` (the hot path)."""
        ...

    def explain(self, features: Mapping[str, Any]) -> list[str]:
        """Where the features it added come from, as lines of reasons."""
        ...


#: A section's parser: (raw section, its path, problems, what each feature name is).
Parser = Callable[[Any, str, Problems, KindOf], TieringMethod | None]


class Method(NamedTuple):
    """A registered method: its class and the parser of its section."""

    kind: type[TieringMethod]
    parse: Parser


#: Every method by the name of its policy section, in evaluation order: a policy adds
#: their features in this order (after the base, derived and percentile features).
METHODS: dict[str, Method] = {
    "rfm": Method(RFM, parse_rfm),
    "scorecard": Method(Scorecard, parse_scorecard),
}

#: Every feature name a method provides.
PROVIDED: frozenset[str] = frozenset().union(*(m.kind.provides for m in METHODS.values()))

#: Stands for the percentile cut-offs in :data:`EXPLAINED`.
PERCENTILES = "percentile"

#: The order in which a decision's reasons explain computed features: by section, with
#: the percentile cut-offs (:data:`PERCENTILES`) where they go. The score's factors come
#: first (a factor may be a percentile), then the cut-offs, then the RFM scores.
EXPLAINED: tuple[str, ...] = ("scorecard", PERCENTILES, "rfm")

assert set(EXPLAINED) == {*METHODS, PERCENTILES}, "every method is explained somewhere"
assert len(PROVIDED) == sum(len(m.kind.provides) for m in METHODS.values()), "no name twice"

_SECTION: dict[type[TieringMethod], str] = {m.kind: name for name, m in METHODS.items()}


def explanation_order(methods: Iterable[TieringMethod]) -> tuple[TieringMethod | None, ...]:
    """``methods`` in :data:`EXPLAINED` order, with None where the percentile cut-offs go."""
    rank = {name: i for i, name in enumerate(EXPLAINED)}
    parts: list[tuple[int, TieringMethod | None]] = [(rank[_SECTION[type(m)]], m) for m in methods]
    parts.append((rank[PERCENTILES], None))
    return tuple(m for _, m in sorted(parts, key=lambda p: p[0]))
