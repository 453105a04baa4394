"""Batch replay: run the core over an ordered sequence of events, no Kafka involved.

This is what ``tierstream classify`` does after reading and sorting a file, and what the
tests compare the streaming worker against.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from app.domain.engine import step
from app.domain.events import Event
from app.domain.outputs import Output
from app.domain.policy import Policy
from app.domain.state import CustomerState


@dataclass(slots=True)
class ReplayResult:
    outputs: list[Output] = field(default_factory=list)
    states: dict[str, CustomerState] = field(default_factory=dict)
    events: int = 0
    duplicates: int = 0
    max_event_time: int = 0


def replay(events: Iterable[Event], policy: Policy) -> ReplayResult:
    """Apply ``events`` in the given order; ``now`` is the running max event time."""
    result = ReplayResult()
    states = result.states
    for event in events:
        result.events += 1
        if event.occurred_at > result.max_event_time:
            result.max_event_time = event.occurred_at
        res = step(states.get(event.customer_id), event, result.max_event_time, policy)
        if res.duplicate:
            result.duplicates += 1
            continue
        states[event.customer_id] = res.state
        result.outputs.extend(res.outputs)
    return result


def sort_key(event: Event) -> int:
    """Event-time order (stable sort keeps file order among equal times)."""
    return event.occurred_at
