"""Streaming equals batch for every example policy: events in batches with the states
stored as JSON between them and the worker's timer ticking between batches (due
re-evaluations up to and including the partition clock), against ``replay`` plus the final
advance to the last event time (what ``classify`` does). Hysteresis, lifecycle, upgrade
candidates, scorecards, RFM and percentiles all go through the same due-time path. With
date-only times (every event at midnight, like most due times) many due times fall at
exactly the clock, on the customer's own events and on others'."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from app.adapters.policy_files import load_policy
from app.domain.engine import advance, step, tick
from app.domain.outputs import Output
from app.domain.replay import replay
from app.domain.state import DAY_MS, CustomerState, state_from_dict, state_to_dict
from app.service.batch_replay import population_cutoffs
from schemas import encode_output
from tests.kit.builders import random_events

EXAMPLES = sorted((Path(__file__).resolve().parents[3] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("dates_only", [False, True], ids=["ms", "dates"])
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_streaming_with_timer_equals_replay(path: Path, dates_only: bool) -> None:
    policy = load_policy(path)
    events = list(random_events(5, customers=25, n=1200, late_fraction=0.0))
    if dates_only:
        events = [replace(e, occurred_at=e.occurred_at // DAY_MS * DAY_MS) for e in events]
    end = max(e.occurred_at for e in events)
    if policy.ranked:  # fixed cut-offs: the population's at the end
        policy = policy.with_cutoffs(population_cutoffs(replay(events, policy), policy, end))
    batch = replay(events, policy)
    for st in batch.states.values():
        batch.outputs.extend(advance(st, end, policy))

    stored: dict[str, bytes] = {}
    streamed: list[Output] = []
    clock = 0
    for i in range(0, len(events), 37):
        live: dict[str, CustomerState] = {}
        for e in events[i : i + 37]:
            clock = max(clock, e.occurred_at)
            st = live.get(e.customer_id)
            if st is None and e.customer_id in stored:
                st = state_from_dict(orjson.loads(stored[e.customer_id]))
            res = step(st, e, clock, policy)
            if not res.duplicate:
                live[e.customer_id] = res.state
                streamed.extend(res.outputs)
        for cid, raw in stored.items():  # the timer, over the stored customers
            if cid not in live:
                st = state_from_dict(orjson.loads(raw))
                out = tick(st, clock, policy).outputs
                if out or st.evaluated_at != orjson.loads(raw)["evaluated_at"]:
                    live[cid] = st
                    streamed.extend(out)
        for cid, st in live.items():
            streamed.extend(tick(st, clock, policy).outputs)
            stored[cid] = orjson.dumps(state_to_dict(st))

    def per_customer(outputs: list[Output]) -> dict[str, list[bytes]]:
        out: dict[str, list[bytes]] = {}
        for o in outputs:
            out.setdefault(o.customer_id, []).append(encode_output(o))
        return out

    assert per_customer(streamed) == per_customer(batch.outputs)
    assert stored == {cid: orjson.dumps(state_to_dict(s)) for cid, s in batch.states.items()}
    kinds = {o.kind for o in batch.outputs}
    assert {"tier_change", "lifecycle_change"} <= kinds
    assert any(o.trigger == "time" for o in streamed)  # the timer did move customers
