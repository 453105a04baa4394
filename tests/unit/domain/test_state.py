"""Customer state: the changelog round trip, migrations, exact sums, recent ids."""

from __future__ import annotations

import json
import math
import random

import orjson
import pytest

from app.domain.engine import step
from app.domain.features import compute_features
from app.domain.replay import replay
from app.domain.state import (
    RECENT_IDS,
    SCHEMA_VERSION,
    CustomerState,
    WindowSums,
    day_of,
    exact_add,
    state_from_dict,
    state_to_dict,
    window_values,
)
from tests.kit.builders import DAY, at, interaction, purchase, random_events
from tests.kit.policies import VALUE_TIERS_V2


def _states(seed: int) -> list[CustomerState]:
    return list(replay(random_events(seed, customers=8, n=600), VALUE_TIERS_V2).states.values())


@pytest.mark.parametrize("seed", range(4))
def test_round_trip_dict_and_orjson_bytes(seed: int) -> None:
    for s in _states(seed):
        assert state_from_dict(state_to_dict(s)) == s
        back = state_from_dict(orjson.loads(orjson.dumps(state_to_dict(s))))
        assert back == s
        assert window_values(back.windows) == window_values(s.windows)
        assert state_from_dict(json.loads(json.dumps(state_to_dict(s)))) == s  # stdlib too
        # Floats survive bit for bit.
        assert back.lifetime_spend.hex() == s.lifetime_spend.hex()
        assert all(
            a[0].hex() == b[0].hex()
            for a, b in zip(back.buckets.values(), s.buckets.values(), strict=True)
        )


def test_v2_bucket_rows_still_load() -> None:
    for s in _states(5):
        d = orjson.loads(orjson.dumps(state_to_dict(s)))
        days, rows = d.pop("bucket_days"), d.pop("bucket_rows")
        d["buckets"], d["v"] = [[day, *row] for day, row in zip(days, rows, strict=True)], 2
        assert state_from_dict(d) == s


def test_loaded_state_does_not_share_bucket_rows() -> None:
    s = _states(6)[0]
    copy = state_from_dict(state_to_dict(s))
    next(iter(copy.buckets.values()))[0] += 1.0
    assert copy != s


def test_round_trip_of_an_empty_state() -> None:
    s = CustomerState("c")
    assert state_from_dict(orjson.loads(orjson.dumps(state_to_dict(s)))) == s


def test_to_dict_does_not_alias_the_live_state() -> None:
    t = at("2024-01-01")
    s = step(None, purchase("c", 1.0, t, "a"), t, VALUE_TIERS_V2).state
    s.attributes["x"] = 1
    d = state_to_dict(s)
    step(s, purchase("c", 1.0, t, "b"), t, VALUE_TIERS_V2)
    s.attributes["y"] = 2
    assert d["recent_ids"] == ["a"] and d["attributes"] == {"x": 1}


def test_newer_schema_version_is_refused() -> None:
    d = state_to_dict(CustomerState("c"))
    d["v"] = SCHEMA_VERSION + 1
    with pytest.raises(ValueError, match="newer"):
        state_from_dict(d)


def test_v1_changelog_still_loads() -> None:
    t = at("2024-03-10T10:00:00")
    v1 = {
        "v": 1,
        "id": "c",
        "clock": t,
        "tier": "C",
        "tier_since": t,
        "first_purchase_at": t - 10 * DAY,
        "last_purchase_at": t,
        "first_interaction_at": None,
        "last_interaction_at": None,
        "lifetime_spend": 30.0,
        "lifetime_purchases": 3,
        "lifetime_refunds": 0,
        "lifetime_interactions": 0,
        "purchase_days": 3,
        "first_day_spend": 10.0,
        "repeat_spend": 20.0,
        "buckets": [
            [day_of(t) - 10, 10.0, 1.0, 0.0],
            [day_of(t) - 4, 10.0, 1.0, 0.0],
            [day_of(t), 10.0, 1.0, 0.0],
        ],
        "recent_ids": ["a", "b", "c"],
    }
    s = state_from_dict(v1)
    assert s.schema_version == SCHEMA_VERSION
    assert s.purchase_day_bits == 1 | 1 << 6 | 1 << 10
    assert compute_features(s, t)["spend_30d"] == 30.0
    assert s.seen("b")
    # and it keeps working: a late purchase on a known day is not a new day
    step(s, purchase("c", 5.0, t - 4 * DAY + 1), t, VALUE_TIERS_V2)
    assert s.purchase_days == 3 and s.repeat_spend == 25.0


def test_recent_ids_are_bounded_and_remembered_in_order() -> None:
    s = CustomerState("c")
    for i in range(RECENT_IDS + 10):
        s.remember(f"e{i}")
    assert len(s.recent_ids) == RECENT_IDS
    assert not s.seen("e9") and s.seen("e10") and s.seen(f"e{RECENT_IDS + 9}")
    back = state_from_dict(orjson.loads(orjson.dumps(state_to_dict(s))))
    assert not back.seen("e9") and back.seen("e10")


def test_exact_add_equals_fsum() -> None:
    rng = random.Random(1)
    for _ in range(200):
        xs = [rng.choice((1e16, -1e16, 1e-3, 0.1, 2.5)) * rng.random() for _ in range(30)]
        partials: list[float] = []
        for x in xs:
            exact_add(partials, x)
        assert math.fsum(partials) == math.fsum(xs)
        for x in xs:  # removing everything again leaves exactly zero
            exact_add(partials, -x)
        assert math.fsum(partials) == 0.0


def test_window_sums_roll_forward_like_recomputing() -> None:
    rng = random.Random(2)
    buckets = {
        d: [round(rng.uniform(-5, 50), 2), 1.0, 2.0, round(rng.uniform(-2, 9), 2)]
        for d in range(0, 800, 3)
    }
    sums = WindowSums.from_buckets({d: b for d, b in buckets.items() if d <= 400}, 400)
    for day in (401, 430, 489, 490, 765, 766, 900, 2000):
        visible = {d: b for d, b in buckets.items() if d <= 400}
        sums.roll_to(day, visible)
        assert window_values(sums) == window_values(WindowSums.from_buckets(visible, day))


def test_heavy_customer_state_stays_bounded() -> None:
    pol = VALUE_TIERS_V2
    s: CustomerState | None = None
    t0 = at("2020-01-01")
    for d in range(3 * 365):
        s = step(s, purchase("c", 1.25, t0 + d * DAY + 1), 0, pol).state
        s = step(s, interaction("c", t0 + d * DAY + 2), 0, pol).state
    assert s is not None
    assert len(s.buckets) == 365 and len(s.recent_ids) == RECENT_IDS
    assert all(len(p) <= 4 for p in s.windows.spend)
    assert len(orjson.dumps(state_to_dict(s))) < 25_000
