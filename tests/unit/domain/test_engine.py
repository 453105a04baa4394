"""The step function, table by table: windows and day boundaries, duplicates, late events,
refunds, profiles, tier transitions, output ids, streaming == batch, and purity."""

from __future__ import annotations

import ast
import copy
import math
import sys
import uuid
from pathlib import Path

import orjson
import pytest

from app.domain.engine import step, tick
from app.domain.events import Event
from app.domain.features import FEATURES, compute_features, rfm_summary, rolling
from app.domain.outputs import TierChange, output_id, snapshot
from app.domain.policy import Policy
from app.domain.policy_doc import policy_from_dict
from app.domain.replay import replay
from app.domain.state import (
    CustomerState,
    recompute_windows,
    state_from_dict,
    state_to_dict,
    window_values,
)
from schemas import encode_output
from tests.kit.builders import DAY, at, interaction, profile, purchase, random_events, refund
from tests.kit.policies import VALUE_TIERS_V2

AS_OF = at("2024-03-31T12:00:00")

SIMPLE = policy_from_dict(
    {
        "name": "simple",
        "version": "7",
        "tiers": [
            {"name": "A", "when": {"spend_30d": {"gte": 100}}, "service_level": {"queue": 1}},
            {"name": "B", "service_level": {"queue": 2}},
        ],
    }
)


def run(events: list[Event], policy: Policy = SIMPLE) -> tuple[CustomerState, list[TierChange]]:
    """Step through ``events``; the tier changes (lifecycle outputs: test_lifecycle.py)."""
    state: CustomerState | None = None
    outputs: list[TierChange] = []
    for e in events:
        res = step(state, e, e.occurred_at, policy)
        state = res.state
        outputs.extend(o for o in res.outputs if isinstance(o, TierChange))
    assert state is not None
    return state, outputs


#: What an evaluation writes into the state (everything else is the aggregates).
EVALUATION_FIELDS = (
    "tier",
    "tier_since",
    "evaluated_at",
    "stage",
    "stage_since",
    "pending_tier",
    "pending_since",
    "upgrade_since",
    "next_due",
    "roll_due",
    "policy",
)


# --- windows and day boundaries -------------------------------------------------------
# As of 2024-03-31T12:00Z a W-day window covers the UTC days 2024-03-31 and the W-1 days
# before it. 2024 is a leap year: 2024-03-31 minus 364 days is 2023-04-02.
BOUNDARIES = [
    # (event time,                 in 30d, in 90d, in 365d)
    ("2024-03-31T12:00:00", True, True, True),
    ("2024-03-31T00:00:00", True, True, True),
    ("2024-03-02T00:00:00", True, True, True),
    ("2024-03-01T23:59:59.999", False, True, True),
    ("2024-01-02T00:00:00", False, True, True),
    ("2024-01-01T23:59:59.999", False, False, True),
    ("2023-04-02T00:00:00", False, False, True),
    ("2023-04-01T23:59:59.999", False, False, False),
]


@pytest.mark.parametrize(("when", "in30", "in90", "in365"), BOUNDARIES)
@pytest.mark.parametrize("order", ["in_order", "late", "from_scratch"])
def test_window_day_boundaries(when: str, in30: bool, in90: bool, in365: bool, order: str) -> None:
    old = purchase("c", 10.0, at(when), "old")
    now = interaction("c", AS_OF, event_id="now")
    events = [now, old] if order == "late" else [old, now]
    state, _ = run(events)
    if order == "from_scratch":  # a snapshot evaluated before the clock recomputes
        state.windows = recompute_windows(state)
    feats = rolling(state, AS_OF)
    assert feats["spend_30d"] == (10.0 if in30 else 0.0)
    assert feats["spend_90d"] == (10.0 if in90 else 0.0)
    assert feats["spend_365d"] == (10.0 if in365 else 0.0)
    assert feats["purchases_365d"] == (1.0 if in365 else 0.0)
    assert feats["interactions_30d"] == 1.0
    assert (at(when) // DAY in state.buckets) == in365  # buckets kept exactly as long


ROLL_OFF = [
    # (days after a purchase on day 0 at 10:00, spend_30d, spend_90d, spend_365d)
    (0, 50.0, 50.0, 50.0),
    (29, 50.0, 50.0, 50.0),
    (30, 0.0, 50.0, 50.0),
    (89, 0.0, 50.0, 50.0),
    (90, 0.0, 0.0, 50.0),
    (364, 0.0, 0.0, 50.0),
    (365, 0.0, 0.0, 0.0),
    (1000, 0.0, 0.0, 0.0),
]


@pytest.mark.parametrize(("days", "s30", "s90", "s365"), ROLL_OFF)
def test_windows_roll_off(days: int, s30: float, s90: float, s365: float) -> None:
    t0 = at("2024-01-01T10:00:00")
    # Evaluated three ways: after a later event, by a tick, and as a snapshot.
    state, _ = run([purchase("c", 50.0, t0), interaction("c", t0 + days * DAY)])
    feats = compute_features(state, state.clock)
    assert (feats["spend_30d"], feats["spend_90d"], feats["spend_365d"]) == (s30, s90, s365)
    quiet, _ = run([purchase("c", 50.0, t0)])
    ahead = rolling(quiet, t0 + days * DAY)
    assert (ahead["spend_30d"], ahead["spend_90d"], ahead["spend_365d"]) == (s30, s90, s365)
    before = orjson.loads(orjson.dumps(state_to_dict(quiet)))  # a copy, not the live rows
    tick(quiet, t0 + days * DAY, SIMPLE)
    after = orjson.loads(orjson.dumps(state_to_dict(quiet)))
    for name in EVALUATION_FIELDS:
        before.pop(name), after.pop(name)
    assert before == after  # a tick changes nothing but what an evaluation decides


def test_bucket_retention_prunes_exactly_at_the_365th_day() -> None:
    t0 = at("2024-01-01T00:00:00")
    state, _ = run([purchase("c", 1.0, t0), interaction("c", t0 + 364 * DAY)])
    assert sorted(state.buckets) == [t0 // DAY, t0 // DAY + 364]
    step(state, interaction("c", t0 + 365 * DAY - 1), 0, SIMPLE)
    assert t0 // DAY in state.buckets
    step(state, interaction("c", t0 + 365 * DAY), 0, SIMPLE)
    assert t0 // DAY not in state.buckets
    assert state.lifetime_spend == 1.0  # lifetime totals keep it


def test_late_event_lands_in_its_own_day_bucket() -> None:
    t = at("2024-06-10T08:00:00")
    state, _ = run(
        [
            purchase("c", 5.0, t),
            purchase("c", 7.0, t - 3 * DAY),  # late, within the windows
            interaction("c", t - 40 * DAY),  # late, outside 30d, inside 90d
        ]
    )
    assert state.clock == t
    assert state.buckets[(t - 3 * DAY) // DAY] == [7.0, 1.0, 0.0, 0.0]
    assert state.buckets[(t - 40 * DAY) // DAY] == [0.0, 0.0, 1.0, 0.0]
    feats = compute_features(state, t)
    assert feats["spend_30d"] == 12.0 and feats["purchases_30d"] == 2.0
    assert feats["interactions_30d"] == 0.0 and feats["interactions_90d"] == 1.0
    assert state.first_interaction_at == t - 40 * DAY


def test_event_older_than_retention_counts_in_lifetime_and_rfm_only() -> None:
    t = at("2025-06-10T08:00:00")
    state, _ = run([purchase("c", 5.0, t), purchase("c", 9.0, t - 400 * DAY)])
    assert (t - 400 * DAY) // DAY not in state.buckets
    assert compute_features(state, t)["spend_365d"] == 5.0
    assert state.lifetime_spend == 14.0 and state.lifetime_purchases == 2
    assert rfm_summary(state, t).frequency == 1


# --- duplicates ------------------------------------------------------------------------
def test_duplicate_event_changes_nothing() -> None:
    e = purchase("c", 150.0, at("2024-05-01T10:00:00"), "dup")
    state, outputs = run([interaction("c", at("2024-05-01T09:00:00")), e])
    assert outputs  # the purchase promoted the customer
    before = copy.deepcopy(state)
    before_json = orjson.dumps(state_to_dict(state))
    for s in (state, state_from_dict(orjson.loads(before_json))):  # also after a reload
        res = step(s, e, e.occurred_at + DAY, SIMPLE)
        assert res.duplicate and res.outputs == [] and res.state is s
        assert orjson.dumps(state_to_dict(s)) == before_json
    assert state == before


def test_duplicate_with_other_payload_is_still_a_duplicate() -> None:
    t = at("2024-05-01T10:00:00")
    state, _ = run([purchase("c", 10.0, t, "x")])
    res = step(state, purchase("c", 999.0, t + DAY, "x"), t + DAY, SIMPLE)
    assert res.duplicate and state.lifetime_spend == 10.0 and state.clock == t


# --- refunds and profiles --------------------------------------------------------------
def test_refunds_lower_spend_but_are_not_purchases() -> None:
    t = at("2024-05-01T10:00:00")
    state, outputs = run(
        [purchase("c", 120.0, t), refund("c", 30.0, t + 1000), refund("c", 0.0, t + 2000)]
    )
    feats = compute_features(state, state.clock)
    assert feats["spend_30d"] == 90.0 and feats["purchases_30d"] == 1.0
    assert feats["avg_order_value_30d"] == 90.0
    assert state.lifetime_spend == 90.0
    assert (state.lifetime_purchases, state.lifetime_refunds) == (1, 2)
    assert rfm_summary(state, state.clock) == rfm_summary(run([purchase("c", 120.0, t)])[0], t)
    assert [o.to_tier for o in outputs] == ["A", "B"]  # 90 < 100: demoted by the refund
    assert outputs[1].reasons[0] == "no better tier's conditions hold"
    assert outputs[1].reasons[1] == "not A: spend_30d 90 < 100"


def test_a_refund_can_make_a_window_negative() -> None:
    t = at("2024-05-01T10:00:00")
    state, _ = run([purchase("c", 20.0, t - 40 * DAY), refund("c", 25.0, t)])
    assert compute_features(state, t)["spend_30d"] == -25.0


def test_profile_attributes_merge_and_drive_policy() -> None:
    pol = policy_from_dict(
        {
            "name": "by-region",
            "version": "1",
            "tiers": [
                {"name": "key", "when": {"attributes.region": {"in": ["emea"]}}},
                {"name": "other"},
            ],
        }
    )
    t = at("2024-05-01T10:00:00")
    state, outputs = run(
        [
            profile("c", t, {"region": "apac", "size": 40}),
            profile("c", t + 1, {"region": "emea"}),
            profile("c", t + 2, {"industry": None}),
        ],
        pol,
    )
    assert state.attributes == {"region": "emea", "size": 40, "industry": None}
    assert [(o.from_tier, o.to_tier, o.direction) for o in outputs] == [
        (None, "other", "new"),
        ("other", "key", "up"),
    ]
    assert outputs[1].features == {"attributes.region": "emea"}
    assert outputs[1].reasons == ("attributes.region emea in [emea]",)
    assert state.buckets == {} and state.lifetime_interactions == 0


# --- tiers: first, up, down, reasons, ids ----------------------------------------------
def test_first_tier_up_and_down_with_reasons() -> None:
    t = at("2024-05-01T10:00:00")
    state, outputs = run([interaction("c", t, event_id="i1"), purchase("c", 150.0, t + 1, "p1")])
    res = tick(state, t + 30 * DAY, SIMPLE)
    outputs += [o for o in res.outputs if isinstance(o, TierChange)]
    # The purchase's day leaves the 30-day window at midnight, 30 days on: due then.
    rolled = (t // DAY + 30) * DAY
    assert [(o.from_tier, o.to_tier, o.direction, o.cause, o.trigger) for o in outputs] == [
        (None, "B", "new", "i1", "event"),
        ("B", "A", "up", "p1", "event"),
        ("A", "B", "down", f"due@{rolled}", "time"),
    ]
    assert outputs[0].reasons == ("no better tier's conditions hold", "not A: spend_30d 0 < 100")
    assert outputs[0].features == {"spend_30d": 0.0}  # the failed condition decided it too
    assert outputs[1].reasons == ("spend_30d 150 >= 100",)
    assert outputs[1].features == {"spend_30d": 150.0}
    assert outputs[1].service_level == {"queue": 1}
    assert (outputs[1].policy_name, outputs[1].policy_version) == ("simple", "7")
    assert state.tier == "B" and state.tier_since == rolled
    assert tick(state, t + 31 * DAY, SIMPLE).outputs == []  # no change, no output


def test_output_ids_are_deterministic_uuid5() -> None:
    events = list(random_events(7, customers=5, n=300))
    a = replay(events, VALUE_TIERS_V2).outputs
    b = replay(events, VALUE_TIERS_V2).outputs
    assert a and [o.id for o in a] == [o.id for o in b]
    assert len({o.id for o in a}) == len(a)
    first = a[0]
    assert first.id == output_id(
        first.customer_id, "tier_change", first.cause, first.from_tier or "", first.to_tier
    )
    assert uuid.UUID(first.id).version == 5
    assert output_id("c", "tier_change", "e1") != output_id("c", "tier_change", "e2")
    assert output_id("c", "tier_change", "e1") != output_id("d", "tier_change", "e1")
    # the same cause saying something else (a replay that interleaved topics differently)
    # is a different output, not a repeat
    assert output_id("c", "tier_change", "e1", "", "A") != output_id(
        "c", "tier_change", "e1", "", "D"
    )


def test_no_re_evaluation_back_in_time_after_a_tick() -> None:
    t = at("2024-05-01T10:00:00")
    state, _ = run([purchase("c", 150.0, t)])
    down = tick(state, t + 40 * DAY, SIMPLE).outputs
    assert [o.to_tier for o in down if isinstance(o, TierChange)] == ["B"]
    rolled = (t // DAY + 30) * DAY  # when the purchase left the 30-day window
    # A late event from before the tick must not promote the customer back to A "then".
    late = step(state, interaction("c", t + 5 * DAY), t + 40 * DAY, SIMPLE)
    assert late.outputs == [] and state.tier == "B" and state.tier_since == rolled
    # The snapshot's numbers are as of the last evaluation.
    snap = snapshot(state)
    assert snap["as_of"] == rolled and snap["rolling"]["spend_30d"] == 0.0
    assert snapshot(state, as_of=t)["rolling"]["spend_30d"] == 150.0


# --- streaming == batch, exactly -------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
def test_streaming_with_json_between_batches_equals_replay(seed: int) -> None:
    policy = VALUE_TIERS_V2
    events = list(random_events(seed, customers=15, n=1500, late_fraction=0.2))
    batch = replay(events, policy)
    stored: dict[str, bytes] = {}
    outputs: list[TierChange] = []
    clock = 0
    for i in range(0, len(events), 41):
        live: dict[str, CustomerState] = {}
        for e in events[i : i + 41]:
            clock = max(clock, e.occurred_at)
            st = live.get(e.customer_id)
            if st is None and e.customer_id in stored:
                st = state_from_dict(orjson.loads(stored[e.customer_id]))
            res = step(st, e, clock, policy)
            live[e.customer_id] = res.state
            outputs.extend(res.outputs)
        for cid, st in live.items():  # written back once per batch
            stored[cid] = orjson.dumps(state_to_dict(st))
    assert outputs == batch.outputs
    # bit for bit: the encoded outputs and the stored states are the same bytes
    assert [encode_output(o) for o in outputs] == [encode_output(o) for o in batch.outputs]
    assert stored == {cid: orjson.dumps(state_to_dict(s)) for cid, s in batch.states.items()}
    streamed = {cid: state_from_dict(orjson.loads(raw)) for cid, raw in stored.items()}
    assert streamed == batch.states
    for st in batch.states.values():  # incremental sums equal a from-scratch fsum
        assert window_values(st.windows) == window_values(recompute_windows(st))
        for k, p in enumerate(st.windows.spend):
            exact = math.fsum(
                b[0] for d, b in st.buckets.items() if st.windows.day - d < (30, 90, 365)[k]
            )
            assert math.fsum(p) == exact


def test_awkward_floats_sum_exactly_whatever_the_order() -> None:
    t = at("2024-05-01T10:00:00")
    amounts = [0.1, 0.2, 0.3, 1e16, -1e16, 0.7, 1 / 3, 2.675]
    fwd, _ = run([purchase("c", a, t + i * DAY) for i, a in enumerate(amounts)])
    rev, _ = run([purchase("c", a, t + i * DAY) for i, a in reversed(list(enumerate(amounts)))])
    want = math.fsum(amounts)
    assert compute_features(fwd, fwd.clock)["spend_30d"] == want
    assert compute_features(rev, rev.clock)["spend_30d"] == want


def test_snapshot_matches_features() -> None:
    state, _ = run(list(random_events(3, customers=1, n=200)), VALUE_TIERS_V2)
    snap = snapshot(state)
    feats = compute_features(state, state.clock)
    assert snap["as_of"] == state.clock
    for name, value in snap["rolling"].items():
        assert feats[name] == value
    assert snap["rfm"]["frequency"] == feats["frequency"]
    assert set(compute_features(state, state.clock)) == set(FEATURES)


# --- purity ------------------------------------------------------------------------------
DOMAIN = Path(__file__).resolve().parents[3] / "app" / "domain"
FORBIDDEN = {"faust", "aiokafka", "prometheus_client", "yaml", "mode", "requests", "kafka"}
SMALL_PURE_LIBS = {"datasketches"}  # the quantile sketch: pure computation, no IO


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text("utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted(DOMAIN.glob("*.py")), ids=lambda p: p.name)
def test_domain_imports_only_stdlib(path: Path) -> None:
    for name in _imports(path):
        top = name.split(".")[0]
        assert top not in FORBIDDEN, f"{path.name} imports {name}"
        assert (
            name.startswith("app.domain")
            or top in sys.stdlib_module_names
            or top in SMALL_PURE_LIBS
        ), f"{path.name} imports {name}: app/domain may use the stdlib only"
    source = path.read_text("utf-8")
    for call in ("open(", "time.time(", "datetime.now(", "time.monotonic(", "os.environ"):
        assert call not in source, f"{path.name} does IO or reads a clock: {call}"
