"""Micro-benchmark of the pure core: microseconds per ``engine.step`` (not a test).

    .venv/bin/python tests/bench/core_bench.py [--n 20000] [--policy FILE]

Light customer: a handful of events over a few weeks. Heavy customer: purchases and
interactions every day for two years (hundreds of day buckets, the full 365-day window).
Mixed: a generated stream over many customers through ``replay``. Also times a state
JSON round trip per customer, which the streaming worker pays once per touched customer
per batch.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from app.adapters.policy_files import load_policy
from app.domain.engine import step
from app.domain.events import Event
from app.domain.replay import replay
from app.domain.state import CustomerState, state_from_dict, state_to_dict
from tests.kit.builders import DAY, HOUR, at, interaction, purchase, random_events


def _history(days: int, per_day: int, start: int) -> list[Event]:
    out: list[Event] = []
    for d in range(days):
        for k in range(per_day):
            ts = start + d * DAY + k * HOUR
            if k % 2:
                out.append(interaction("c", ts, event_id=f"h{d}-{k}"))
            else:
                out.append(purchase("c", 10.0 + (d * 7 + k) % 97 * 0.37, ts, event_id=f"h{d}-{k}"))
    return out


POLICY: Path | None = None


def bench(label: str, history: list[Event], n: int) -> None:
    policy = load_policy(POLICY)
    state: CustomerState | None = None
    for e in history:
        state = step(state, e, e.occurred_at, policy).state
    assert state is not None
    base = state_to_dict(state)
    t0 = history[-1].occurred_at
    # n further events, one every 10 s, alternating purchase/interaction (the live mix).
    events = [
        purchase("c", 12.5 + i % 13, t0 + i * 10_000, event_id=f"n{i}")
        if i % 3 == 0
        else interaction("c", t0 + i * 10_000, event_id=f"n{i}")
        for i in range(n)
    ]
    st = state_from_dict(orjson.loads(orjson.dumps(base)))
    start = time.perf_counter()
    for e in events:
        st = step(st, e, e.occurred_at, policy).state
    per_step = (time.perf_counter() - start) / n * 1e6
    reps = 2000
    start = time.perf_counter()
    for _ in range(reps):
        state_from_dict(orjson.loads(orjson.dumps(state_to_dict(st))))
    per_rt = (time.perf_counter() - start) / reps * 1e6
    print(
        f"{label:6s} buckets={len(st.buckets):4d}  step {per_step:7.2f} us/event   "
        f"state JSON round trip {per_rt:7.2f} us"
    )


def bench_mixed(n: int) -> None:
    """A generated stream over 2,000 customers (10 % late, 3 % duplicates)."""
    policy = load_policy(POLICY)
    events = list(random_events(1, customers=2000, n=n, days=400))
    start = time.perf_counter()
    replay(events, policy)
    per_event = (time.perf_counter() - start) / n * 1e6
    print(f"mixed  customers=2000  replay {per_event:7.2f} us/event")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--policy", type=Path, default=None, help="default: the packaged policy")
    args = ap.parse_args()
    global POLICY
    POLICY = args.policy
    start = at("2024-01-01")
    bench("light", _history(20, 1, start)[::3], args.n)
    bench("heavy", _history(730, 4, start), args.n)
    bench_mixed(args.n * 5)


if __name__ == "__main__":
    main()
