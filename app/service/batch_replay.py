"""Batch classification: the pure core over a file, no Kafka (``tierstream classify``).

Lines are decoded with ``schemas.decode_event`` (the worker's decoder), stably sorted by
event time (:func:`app.domain.replay.sort_key`) and replayed with
:func:`app.domain.replay.replay`. Invalid lines are collected, not fatal.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from app.domain.engine import advance
from app.domain.errors import InvalidEvent
from app.domain.events import Event
from app.domain.outputs import snapshot
from app.domain.policy import Policy
from app.domain.population import Cutoffs, exact_cutoffs
from app.domain.replay import ReplayResult, replay, sort_key
from app.service.source import SourceLine
from schemas.codec import decode_event, encode_output, encode_snapshot


@dataclass(frozen=True, slots=True)
class Rejected:
    """An input line that did not become an event, and why."""

    line: int
    reason: str
    detail: str
    raw: str

    def to_json(self) -> bytes:
        return orjson.dumps(
            {"line": self.line, "reason": self.reason, "detail": self.detail, "raw": self.raw}
        )


@dataclass(slots=True)
class ClassifyResult:
    """Replay result plus what was rejected on the way in."""

    replay: ReplayResult
    rejected: list[Rejected] = field(default_factory=list)
    #: The time every customer was advanced to (see :func:`classify_events`).
    as_of: int = 0
    #: The population cut-offs the percentile conditions used (empty when none).
    cutoffs: Cutoffs = field(default_factory=Cutoffs.empty)

    @property
    def tier_changes(self) -> int:
        return self.count("tier_change")

    def count(self, kind: str) -> int:
        return sum(1 for o in self.replay.outputs if o.kind == kind)

    def customers_per_stage(self) -> Counter[str]:
        return Counter(s.stage or "-" for s in self.replay.states.values())

    def customers_per_tier(self) -> Counter[str]:
        return Counter(s.tier or "-" for s in self.replay.states.values())


def decode_lines(
    lines: Iterable[SourceLine], max_ts: int | None = None
) -> tuple[list[Event], list[Rejected]]:
    """Decode every line; the ones that fail come back as :class:`Rejected`. ``max_ts``
    rejects events dated after it, as the worker does (wall clock + allowed skew)."""
    events: list[Event] = []
    rejected: list[Rejected] = []
    for sl in lines:
        if sl.doc is None:
            rejected.append(Rejected(sl.line, sl.reason or "invalid", sl.detail or "", sl.raw))
            continue
        try:
            events.append(decode_event(sl.doc, max_ts=max_ts))
        except InvalidEvent as exc:
            rejected.append(Rejected(sl.line, exc.reason, exc.detail, sl.raw))
    return events, rejected


def classify_events(
    events: Iterable[Event],
    policy: Policy,
    as_of: int | None = None,
    cutoffs: Cutoffs | None = None,
) -> tuple[ReplayResult, int, Cutoffs]:
    """Stable sort by event time, replay, then advance every customer to ``as_of``
    (default: the latest event time), as the worker's partition clock would: what fell due
    after a customer's last event (silence, windows rolling off) is in the outputs too,
    which are then ordered by time (stably, so each customer's order is kept).

    A policy with percentile conditions needs population cut-offs. Without ``cutoffs``
    they are computed exactly over all customers as of ``as_of`` (a first replay), and the
    replay then decides with them throughout: the tiers that population would give.
    Returns the result, the time advanced to and the cut-offs used."""
    ordered = sorted(events, key=sort_key)
    if cutoffs is None:
        cutoffs = Cutoffs.empty()
        if policy.ranked:
            first = replay(ordered, policy)
            at = as_of if as_of is not None else first.max_event_time
            cutoffs = population_cutoffs(first, policy, at)
    policy = policy.with_cutoffs(cutoffs)
    result = replay(ordered, policy)
    at = as_of if as_of is not None else result.max_event_time
    advance_to(result, at, policy)
    result.outputs.sort(key=lambda o: o.at)
    return result, at, cutoffs


def population_cutoffs(result: ReplayResult, policy: Policy, at: int) -> Cutoffs:
    """Exact cut-offs of the metrics the policy ranks, over every customer as of ``at``."""
    values: dict[str, list[float]] = {m: [] for m in policy.ranked}
    for state in result.states.values():
        for metric, v in policy.ranked_values(state, max(at, state.clock)).items():
            values[metric].append(v)
    return exact_cutoffs(values, policy.ranked, generation=1, as_of=at)


def classify_lines(
    lines: Iterable[SourceLine],
    policy: Policy,
    max_ts: int | None = None,
    as_of: int | None = None,
    cutoffs: Cutoffs | None = None,
) -> ClassifyResult:
    events, rejected = decode_lines(lines, max_ts)
    result, at, used = classify_events(events, policy, as_of, cutoffs)
    return ClassifyResult(result, rejected, at, used)


def advance_to(result: ReplayResult, as_of: int, policy: Policy) -> None:
    """Run every customer's due re-evaluations up to and including ``as_of`` (time passing
    without events, as the worker's timer does when its partition clock reads ``as_of``;
    the rule is in :mod:`app.domain.engine`) and add what they emit to the outputs."""
    for state in result.states.values():
        result.outputs.extend(advance(state, as_of, policy))


def output_lines(result: ReplayResult) -> Iterator[bytes]:
    """The outputs as CloudEvents JSON, one per line (no newline)."""
    for out in result.outputs:
        yield encode_output(out)


def customer_snapshots(result: ReplayResult, as_of: int | None = None) -> Iterator[dict[str, Any]]:
    """One snapshot per customer, sorted by customer id; ``as_of`` None means the time
    each customer was last evaluated (what the streaming ``customers`` topic carries)."""
    for cid in sorted(result.states):
        yield snapshot(result.states[cid], as_of)


def write_lines(stream: IO[bytes], lines: Iterable[bytes]) -> int:
    n = 0
    for line in lines:
        stream.write(line)
        stream.write(b"\n")
        n += 1
    return n


def write_outputs(
    result: ClassifyResult,
    out: IO[bytes] | None,
    customers_out: IO[bytes] | None = None,
    errors_out: IO[bytes] | None = None,
    as_of: int | None = None,
) -> None:
    """Write outputs, customer snapshots and rejected lines as JSON Lines."""
    if out is not None:
        write_lines(out, output_lines(result.replay))
    if customers_out is not None:
        write_lines(
            customers_out, (encode_snapshot(s) for s in customer_snapshots(result.replay, as_of))
        )
    if errors_out is not None:
        write_lines(errors_out, (r.to_json() for r in result.rejected))
