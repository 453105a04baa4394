"""Lifecycle stages and upgrade candidates, with times computed by hand, under the
``gold-silver-bronze`` example (examples/gold-silver-bronze.yaml):

  lifecycle: active from the 2nd purchase day; loyal when purchases_365d >= 6; at risk after
    60 days without a purchase; churned after 180; a churned customer who buys again is
    reactivated for 30 days, then active or loyal again.
  upgrade: bronze customers with spend_growth_30d >= 0.5, purchases_growth_30d >= 0.5 and
    purchases_30d >= 2 are upgrade candidates, once per episode.

``*_growth_30d`` = last 30 days / ((last 90 days - last 30 days) * 30 / 60) - 1 (inf when
the 60 days before had nothing). A W-day window as of day n covers days n - W + 1 .. n.
"""

from __future__ import annotations

from pathlib import Path

from app.adapters.policy_files import load_policy
from app.domain.engine import advance, step, tick
from app.domain.events import Event
from app.domain.lifecycle import STAGES
from app.domain.outputs import LifecycleChange, Output, UpgradeCandidate
from app.domain.state import CustomerState
from tests.kit.builders import DAY, HOUR, at, interaction, purchase

POLICY = load_policy(Path(__file__).resolve().parents[3] / "examples" / "gold-silver-bronze.yaml")
T0 = at("2024-01-01T10:00:00")


def run(
    events: list[Event], state: CustomerState | None = None
) -> tuple[CustomerState, list[Output]]:
    outputs: list[Output] = []
    for e in events:
        res = step(state, e, e.occurred_at, POLICY)
        state = res.state
        outputs.extend(res.outputs)
    assert state is not None
    return state, outputs


def stages(outputs: list[Output]) -> list[tuple[str | None, str, int, str, str]]:
    """(from, to, at, trigger, reason) of the lifecycle changes."""
    return [
        (o.from_stage, o.to_stage, o.at, o.trigger, o.reason)
        for o in outputs
        if isinstance(o, LifecycleChange)
    ]


def test_the_example_configures_the_lifecycle() -> None:
    lc = POLICY.lifecycle
    assert (lc.active_from_purchase_days, lc.at_risk_after_days, lc.churned_after_days) == (
        2,
        60.0,
        180.0,
    )
    assert lc.reactivated_days == 30.0
    assert [(c.feature, c.op, c.value) for c in lc.loyal_when] == [("purchases_365d", "gte", 6.0)]


def test_every_stage_in_order_with_exact_times() -> None:
    visit = interaction("liv", T0)
    buys = [purchase("liv", 20, T0 + d * DAY) for d in (1, 5, 6, 7, 8, 9)]
    state, outputs = run([visit, *buys])
    # The purchase days are 1, 5, 6, 7, 8, 9: 1 day -> new; 2 days -> active; 6 purchases in
    # 365 days (day 9) -> loyal.
    assert stages(outputs) == [
        (None, "prospect", T0, "event", "no purchase yet"),
        ("prospect", "new", T0 + DAY, "event", "1 purchase day(s) < 2"),
        (
            "new",
            "active",
            T0 + 5 * DAY,
            "event",
            "2 purchase days >= 2; not loyal: purchases_365d 2 < 6",
        ),
        ("active", "loyal", T0 + 9 * DAY, "event", "purchases_365d 6 >= 6"),
    ]
    first = next(o for o in outputs if isinstance(o, LifecycleChange))
    assert (first.cause, first.tier, first.policy_name) == (
        visit.event_id,
        "bronze",
        "gold-silver-bronze",
    )

    # Silence, no events: the last purchase was at T0 + 9 d, so at risk exactly 60 days later
    # and churned exactly 180 days later, each at its due time (trigger "time").
    last = T0 + 9 * DAY
    silent = tick(state, T0 + 299 * DAY, POLICY).outputs
    assert stages(silent) == [
        ("loyal", "at_risk", last + 60 * DAY, "time", "no purchase for 60 days >= 60"),
        ("at_risk", "churned", last + 180 * DAY, "time", "no purchase for 180 days >= 180"),
    ]
    assert [o.cause for o in silent if isinstance(o, LifecycleChange)] == [
        f"due@{last + 60 * DAY}",
        f"due@{last + 180 * DAY}",
    ]
    assert (state.stage, state.stage_since) == ("churned", last + 180 * DAY)

    # Buying again after churning: reactivated (an event), for 30 days.
    back = purchase("liv", 20, T0 + 300 * DAY)
    _, returned = run([back], state)
    assert stages(returned) == [
        (
            "churned",
            "reactivated",
            T0 + 300 * DAY,
            "event",
            "purchased again after churning (0 days ago)",
        )
    ]
    assert state.next_due is not None and state.next_due <= T0 + 330 * DAY
    # 30 days later the reactivation ends (a due time): 7 purchases in the 365 days up to day
    # 330 (days 1..9 and 300) -> loyal again.
    ended = advance(state, T0 + 340 * DAY, POLICY)
    assert stages(ended) == [
        ("reactivated", "loyal", T0 + 330 * DAY, "time", "purchases_365d 7 >= 6"),
    ]
    seen = [s for _, s, _, _, _ in stages(outputs + silent + returned + ended)]
    assert seen == [
        "prospect",
        "new",
        "active",
        "loyal",
        "at_risk",
        "churned",
        "reactivated",
        "loyal",
    ]
    assert set(seen) == set(STAGES)


def test_reactivated_customer_with_few_purchases_is_active_again() -> None:
    # Purchases on days 0 and 3: new, active; silence from day 3: at risk on day 63, churned
    # on day 183 (advance(), no events); back on day 250: reactivated until day 280, then
    # active (3 purchase days, 3 purchases in 365 days < 6).
    state, outputs = run([purchase("max", 20, T0), purchase("max", 20, T0 + 3 * DAY)])
    outputs += advance(state, T0 + 249 * DAY, POLICY)
    _, back = run([purchase("max", 20, T0 + 250 * DAY)], state)
    outputs += back + tick(state, T0 + 290 * DAY, POLICY).outputs
    assert [(f, t, when, trig) for f, t, when, trig, _ in stages(outputs)] == [
        (None, "new", T0, "event"),
        ("new", "active", T0 + 3 * DAY, "event"),
        ("active", "at_risk", T0 + 63 * DAY, "time"),
        ("at_risk", "churned", T0 + 183 * DAY, "time"),
        ("churned", "reactivated", T0 + 250 * DAY, "event"),
        ("reactivated", "active", T0 + 280 * DAY, "time"),
    ]
    assert stages(outputs)[-1][4] == "3 purchase days >= 2; not loyal: purchases_365d 3 < 6"


def test_an_at_risk_customer_who_buys_again_is_not_reactivated() -> None:
    # Only churned customers are "reactivated": at risk on day 62 (60 days after day 2), a
    # purchase on day 75 makes the customer active again straight away.
    state, outputs = run([purchase("ned", 20, T0), purchase("ned", 20, T0 + 2 * DAY)])
    outputs += tick(state, T0 + 70 * DAY, POLICY).outputs
    _, back = run([purchase("ned", 20, T0 + 75 * DAY)], state)
    assert [(f, t, when) for f, t, when, _, _ in stages(outputs + back)] == [
        (None, "new", T0),
        ("new", "active", T0 + 2 * DAY),
        ("active", "at_risk", T0 + 62 * DAY),
        ("at_risk", "active", T0 + 75 * DAY),
    ]


# --- upgrade candidates ------------------------------------------------------------------
U0 = at("2024-01-01T12:00:00")  # day n: U0 + n days (noon); midnight(n): its 00:00


def midnight(day: int) -> int:
    return U0 - 12 * HOUR + day * DAY


def candidates(outputs: list[Output]) -> list[UpgradeCandidate]:
    return [o for o in outputs if isinstance(o, UpgradeCandidate)]


def test_upgrade_candidates_once_per_episode() -> None:
    # uma buys 40 on days 0, 45, 80, 85, 88 and 60 on days 130, 131, 132: at most 8
    # purchases, 380 < 500 in 365 days, so bronze (the watched tier) throughout.
    first = [purchase("uma", 40, U0 + d * DAY) for d in (0, 45, 80, 85, 88)]
    state, outputs = run(first)
    # Day 80: purchases_30d 1 < 2. Day 85: 30 days (56..85) hold days 80, 85: 80 spent, 2
    # purchases; 90 days (-4..85) hold 0, 45, 80, 85: 160, 4. spend growth 80 / (80 / 2) - 1
    # = 1, purchases growth 2 / (2 / 2) - 1 = 1: a candidate, once.
    (c1,) = candidates(outputs)
    assert (c1.at, c1.cause, c1.trigger) == (U0 + 85 * DAY, first[3].event_id, "event")
    assert (c1.tier, c1.next_tier) == ("bronze", "silver")
    assert c1.reasons == (
        "spend_growth_30d 1 >= 0.5",
        "purchases_growth_30d 1 >= 0.5",
        "purchases_30d 2 >= 2",
    )
    assert c1.features == {
        "spend_growth_30d": 1.0,
        "purchases_growth_30d": 1.0,
        "purchases_30d": 2.0,
    }
    assert state.upgrade_since == U0 + 85 * DAY
    # Still rising, no repeat: day 88 (30 d: 120, 3; 90 d: 200, 5 -> 2 and 2), 00:00 of day
    # 90 (day 0 leaves the 90 days: 30 d 120, 3; 90 d 160, 4 -> 5 and 5) and 00:00 of day
    # 110 (day 80 leaves the 30 days: 80, 2; 160, 4 -> 1 and 1).
    assert candidates(tick(state, midnight(115) - 1, POLICY).outputs) == []
    assert state.upgrade_since == U0 + 85 * DAY
    # 00:00 of day 115: day 85 leaves the 30 days, one purchase left -> the episode is over.
    assert tick(state, midnight(115), POLICY).outputs == []
    assert state.upgrade_since is None
    # A new episode: day 130 (1 purchase in 30 days), day 131 (30 d: 120, 2; 90 d (42..131):
    # 160 + 120 = 280, 6: spend growth 120 / 80 - 1 = 0.5 but purchases growth 2 / 2 - 1 = 0),
    # day 132 (180, 3; 340, 7: 180 / 80 - 1 = 1.25 and 3 / 2 - 1 = 0.5 >= 0.5): a candidate.
    second = [purchase("uma", 60, U0 + d * DAY) for d in (130, 131, 132)]
    _, later = run(second, state)
    (c2,) = candidates(later)
    assert (c2.at, c2.cause, c2.trigger) == (U0 + 132 * DAY, second[2].event_id, "event")
    assert c2.reasons == (
        "spend_growth_30d 1.25 >= 0.5",
        "purchases_growth_30d 0.5 >= 0.5",
        "purchases_30d 3 >= 2",
    )
    assert c2.id != c1.id
    assert candidates(tick(state, U0 + 140 * DAY, POLICY).outputs) == []
    assert state.tier == "bronze"


def test_leaving_the_watched_tier_ends_the_episode() -> None:
    # 6 purchases of 100 on days 0..5: from day 1 (2 purchases, nothing before: growth inf)
    # a candidate; on day 5 600 >= 500 and 6 purchases -> silver, not watched: the episode
    # ends, and no candidate is raised while silver.
    state, outputs = run([purchase("vic", 100, U0 + d * DAY) for d in range(6)])
    assert [c.at for c in candidates(outputs)] == [U0 + DAY]
    assert (state.tier, state.upgrade_since) == ("silver", None)
