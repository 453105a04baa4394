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

from app.domain.engine import tick
from app.domain.errors import InvalidEvent
from app.domain.events import Event
from app.domain.outputs import snapshot
from app.domain.policy import Policy
from app.domain.replay import ReplayResult, replay, sort_key
from app.io import SourceLine
from schemas.codec import decode_event, encode_snapshot, encode_tier_change


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

    @property
    def tier_changes(self) -> int:
        return len(self.replay.outputs)

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


def classify_events(events: Iterable[Event], policy: Policy) -> ReplayResult:
    """Stable sort by event time, then replay."""
    return replay(sorted(events, key=sort_key), policy)


def classify_lines(
    lines: Iterable[SourceLine], policy: Policy, max_ts: int | None = None
) -> ClassifyResult:
    events, rejected = decode_lines(lines, max_ts)
    return ClassifyResult(classify_events(events, policy), rejected)


def advance_to(result: ReplayResult, as_of: int, policy: Policy) -> int:
    """Re-evaluate every customer as of ``as_of`` (time passing without events, as the
    worker's timer does), so reported tiers agree with the aggregates of that date.
    Returns how many tiers changed; those changes are not added to the outputs, which stay
    the event-driven stream. Customers whose own clock is later are left as they are."""
    changed = 0
    for state in result.states.values():
        if as_of > state.clock:
            changed += len(tick(state, as_of, policy).outputs)
    return changed


def tier_change_lines(result: ReplayResult) -> Iterator[bytes]:
    """The tier changes as CloudEvents JSON, one per line (no newline)."""
    for out in result.outputs:
        yield encode_tier_change(out)


def customer_snapshots(result: ReplayResult, as_of: int | None = None) -> Iterator[dict[str, Any]]:
    """One snapshot per customer, sorted by customer id; ``as_of`` None means each
    customer's own clock (what the streaming ``customers`` topic carries)."""
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
    """Write tier changes, customer snapshots and rejected lines as JSON Lines."""
    if out is not None:
        write_lines(out, tier_change_lines(result.replay))
    if customers_out is not None:
        write_lines(
            customers_out, (encode_snapshot(s) for s in customer_snapshots(result.replay, as_of))
        )
    if errors_out is not None:
        write_lines(errors_out, (r.to_json() for r in result.rejected))
