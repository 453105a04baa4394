"""Generated input for the integration tests, and the batch expectation to compare with.

:func:`generate` makes a realistic, reproducible event file: customers with different
purchase rates and basket sizes, refunds, interactions (visits, e-mail, support), a few
profile events, a few re-sent duplicates, spread over ~18 months of event time, in
event-time order.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.domain.engine import advance, step
from app.domain.events import Event
from app.domain.outputs import snapshot
from app.domain.policy import Policy
from app.domain.replay import ReplayResult, replay, sort_key
from app.domain.state import DAY_MS, CustomerState, state_from_dict, state_to_dict
from schemas import decode_event, output_to_cloudevent

START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
SPAN_DAYS = 540  # ~18 months
TOPIC_OF_KIND = {"purchase": "purchases", "interaction": "interactions", "profile": "profiles"}
_INTERACTIONS = ("visit", "email_open", "email_click", "support_ticket", "call", "login")
_INDUSTRIES = ("retail", "manufacturing", "services", "public")


@dataclass(frozen=True, slots=True)
class Doc:
    """One input record: the logical topic, the key, the JSON document."""

    topic: str
    key: str
    doc: dict[str, Any]


def generate(customers: int = 300, seed: int = 7, duplicates: int = 20) -> list[Doc]:
    """Event-time ordered input. Roughly a third of the customers only buy, a sixth only
    interact (prospects), the rest do both; some have a profile event."""
    rng = random.Random(seed)
    docs: list[tuple[int, int, Doc]] = []
    seq = 0

    def add(topic: str, cid: str, doc: dict[str, Any]) -> None:
        nonlocal seq
        seq += 1
        docs.append((doc["occurred_at"], seq, Doc(topic, cid, doc)))

    for n in range(customers):
        cid = f"c{n:04d}"
        style = rng.random()
        buys = style < 0.83
        interacts = style >= 0.33
        first = rng.randrange(0, SPAN_DAYS - 30)
        last = rng.randrange(first + 20, SPAN_DAYS)
        if buys:
            # heavy buyers reach A/B, others drift between C and D
            rate = rng.choice((0.01, 0.03, 0.06, 0.12))
            basket = rng.choice((40.0, 90.0, 250.0))
            day = first
            while day < last:
                # now and then two orders on the same day
                for _ in range(2 if rng.random() < 0.1 else 1):
                    ms = START_MS + day * DAY_MS + rng.randrange(DAY_MS)
                    amount = round(rng.lognormvariate(0, 0.6) * basket, 2)
                    if rng.random() < 0.05:
                        amount = -round(amount * 0.5, 2)  # a partial refund
                    add(
                        "purchases",
                        cid,
                        {
                            "event_id": f"p-{cid}-{seq}",
                            "customer_id": cid,
                            "type": "refund" if amount < 0 else "purchase",
                            "occurred_at": ms,
                            "amount": amount,
                            "currency": "USD",
                            "order_id": f"o{seq}",
                            "channel": rng.choice(("web", "store", "phone")),
                        },
                    )
                day += max(1, int(rng.expovariate(rate)))
        if interacts:
            day = first
            rate = rng.choice((0.05, 0.15))
            while day < last:
                ms = START_MS + day * DAY_MS + rng.randrange(DAY_MS)
                add(
                    "interactions",
                    cid,
                    {
                        "event_id": f"i-{cid}-{seq}",
                        "customer_id": cid,
                        "type": rng.choice(_INTERACTIONS),
                        "occurred_at": ms,
                        "channel": "web",
                        "extra_field": "kept out of state",
                    },
                )
                day += max(1, int(rng.expovariate(rate)))
        if rng.random() < 0.1:
            ms = START_MS + first * DAY_MS + rng.randrange(DAY_MS)
            add(
                "profiles",
                cid,
                {
                    "event_id": f"f-{cid}-{seq}",
                    "customer_id": cid,
                    "type": "profile",
                    "occurred_at": ms,
                    "attributes": {"industry": rng.choice(_INDUSTRIES), "size": rng.randrange(9)},
                },
            )
    docs.sort(key=lambda t: (t[0], t[1]))
    out = [d for _, _, d in docs]
    # Re-sent duplicates: the same record again a little later on the same topic.
    for _ in range(duplicates):
        i = rng.randrange(len(out) - 10)
        out.insert(i + rng.randrange(1, 10), out[i])
    return out


def decode(doc: Doc) -> Event:
    kind = next(k for k, t in TOPIC_OF_KIND.items() if t == doc.topic)
    return decode_event(doc.doc, kind=kind)  # type: ignore[arg-type]


@dataclass(slots=True)
class Expected:
    """The batch result: replay of the whole file in event-time order, then what fell due
    up to each customer's partition clock (see :func:`expected`)."""

    result: ReplayResult
    changes: dict[str, list[dict[str, Any]]]  # tier changes per customer, CloudEvents in order
    lifecycle: dict[str, list[dict[str, Any]]]  # lifecycle changes, likewise
    snapshots: dict[str, dict[str, Any]]
    events: dict[str, list[Event]]  # per customer, in input (= per-topic offset) order
    #: the time each customer was advanced to
    until: dict[str, int]


def expected(
    docs: Sequence[Doc], policy: Policy, partition_of: Mapping[str, int] | None = None
) -> Expected:
    """Replay, then advance every customer (the timer path): to the latest event time of
    the file (what ``classify`` does), or with ``partition_of`` (customer -> partition) to
    the latest event time of the customer's partition (the worker's timer runs what is due
    up to and including its partition clock, in ``event`` clock mode)."""
    events = [decode(d) for d in docs]
    result = replay(sorted(events, key=sort_key), policy)
    until: dict[str, int] = {}
    if partition_of is None:
        until = dict.fromkeys(result.states, result.max_event_time)
    else:
        latest: dict[int, int] = defaultdict(int)
        for e in events:
            p = partition_of[e.customer_id]
            latest[p] = max(latest[p], e.occurred_at)
        until = {cid: latest[partition_of[cid]] for cid in result.states}
    for cid, state in result.states.items():
        result.outputs.extend(advance(state, until[cid], policy))
    result.outputs.sort(key=lambda o: o.at)
    changes: dict[str, list[dict[str, Any]]] = defaultdict(list)
    lifecycle: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for out in result.outputs:
        if out.kind == "tier_change":
            changes[out.customer_id].append(output_to_cloudevent(out))
        elif out.kind == "lifecycle_change":
            lifecycle[out.customer_id].append(output_to_cloudevent(out))
    per_customer: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        per_customer[e.customer_id].append(e)
    snaps = {cid: snapshot(st) for cid, st in result.states.items()}
    return Expected(result, dict(changes), dict(lifecycle), snaps, dict(per_customer), until)


def partitions_of(docs: Sequence[Doc], partitions: int) -> dict[str, int]:
    """Customer -> partition, as the producers of the tests place keyed records (aiokafka's
    default partitioner: murmur2 of the key, as Kafka's Java client)."""
    from aiokafka.partitioner import DefaultPartitioner

    choose = DefaultPartitioner()
    every = list(range(partitions))
    return {d.key: choose(d.key.encode("utf-8"), every, every) for d in docs}


def topics_of(events: Iterable[Event]) -> set[str]:
    return {e.kind for e in events}


def normalize(snap: Mapping[str, Any]) -> dict[str, Any]:
    """JSON round trip of a snapshot (tuples -> lists, int keys -> str) for comparison."""
    import orjson

    return dict(orjson.loads(orjson.dumps(snap)))


def same(a: Any, b: Any) -> bool:
    """Exact equality. Window sums are exact (``math.fsum`` of the buckets) and the spend
    totals accumulate in one topic's order, so streaming and replay agree bit for bit."""
    return bool(a == b)


def differences(a: Any, b: Any, path: str = "$") -> list[str]:
    """Where ``a`` and ``b`` differ (for assertion messages)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}.{k}: only on one side" for k in a.keys() ^ b.keys()]
        for k in a.keys() & b.keys():
            out += differences(a[k], b[k], f"{path}.{k}")
        return out
    return [] if same(a, b) else [f"{path}: {a!r} != {b!r}"]


def _copy(state: CustomerState) -> CustomerState:
    return state_from_dict(state_to_dict(state))


def consistent_with_some_interleaving(
    events: Sequence[Event], observed: Sequence[dict[str, Any]], policy: Policy, until: int
) -> bool:
    """True when ``observed`` (one customer's tier-change CloudEvents, in topic order) is
    exactly what the core emits for *some* interleaving of the customer's events that keeps
    each input topic's order, followed by what falls due up to ``until`` (the partition
    clock): the streaming guarantee for a customer whose events span several topics.

    A search over the lattice of per-topic prefixes: the aggregates (hence the features,
    the decision and the evaluation time) at a lattice point do not depend on the path to
    it, and the output of a transition depends only on the tier before it (the previous
    decision) and the state after it, so one state per point suffices.
    """
    lanes: dict[str, list[Event]] = defaultdict(list)
    seen: set[str] = set()
    for e in events:  # input order; a re-sent duplicate is dropped by the core anyway
        if e.event_id in seen:
            continue
        seen.add(e.event_id)
        lanes[e.kind].append(e)
    names = sorted(lanes)
    sizes = tuple(len(lanes[n]) for n in names)
    origin = tuple(0 for _ in names)
    states: dict[tuple[int, ...], CustomerState | None] = {origin: None}
    # frontier: (point, number of observed changes matched)
    frontier: set[tuple[tuple[int, ...], int]] = {(origin, 0)}
    for _ in range(sum(sizes)):
        nxt: set[tuple[tuple[int, ...], int]] = set()
        for point, k in frontier:
            for lane, name in enumerate(names):
                if point[lane] == sizes[lane]:
                    continue
                event = lanes[name][point[lane]]
                to = tuple(p + 1 if i == lane else p for i, p in enumerate(point))
                before = states[point]
                res = step(None if before is None else _copy(before), event, 0, policy)
                if to not in states:
                    states[to] = res.state
                outs = [output_to_cloudevent(o) for o in res.outputs if o.kind == "tier_change"]
                if same(outs, list(observed[k : k + len(outs)])):
                    nxt.add((to, k + len(outs)))
        frontier = nxt
        if not frontier:
            return False
    for point, k in frontier:  # then time passes to the partition clock
        end = states[point]
        assert end is not None
        tail = [o for o in advance(_copy(end), until, policy) if o.kind == "tier_change"]
        if same([output_to_cloudevent(o) for o in tail], list(observed[k:])):
            return True
    return False
