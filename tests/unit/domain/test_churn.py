"""Churn early warning: each signal against hand-computed numbers, and the episode logic
(one warning per episode, escalation only upwards, clearing on a purchase, re-arming),
driven by due times alone where the customer is silent."""

from __future__ import annotations

from typing import Any

import pytest

from app.domain.churn import purchase_gaps, window_totals
from app.domain.engine import advance, step, tick
from app.domain.errors import PolicyError
from app.domain.outputs import ChurnCleared, ChurnWarning, Output
from app.domain.policy import Policy
from app.domain.policy_doc import policy_from_dict
from app.domain.replay import replay
from app.domain.state import CustomerState
from tests.kit.builders import DAY, at, interaction, purchase

T0 = at("2024-01-01")

BASE: dict[str, Any] = {
    "name": "churn-test",
    "version": "1",
    "tiers": [
        {"name": "A", "when": {"spend_365d": {"gte": 1000}}},
        {"name": "D"},
    ],
}


def make(churn: dict[str, Any], model: dict[str, Any] | None = None) -> Policy:
    doc = {**BASE, "churn": churn}
    if model is not None:
        doc["model"] = model
    return policy_from_dict(doc, "test.yaml")


SILENCE = make(
    {
        "usual_gap": {"of": "p90", "min_gaps": 3, "default_days": 40},
        "severity": [
            {"name": "critical", "when": {"silence_ratio": {"gte": 3}}},
            {"name": "warning", "when": {"silence_ratio": {"gte": 2}}},
            {"name": "watch", "when": {"silence_ratio": {"gte": 1}}},
        ],
        "actions": {"A": {"critical": "call"}, "*": {"critical": "email", "watch": "none"}},
        "rearm_days": 7,
    }
)


def buy_on(days: list[int], customer: str = "c1", amount: float = 10.0) -> CustomerState:
    state: CustomerState | None = None
    for d in days:
        state = step(state, purchase(customer, amount, T0 + d * DAY), T0 + d * DAY, SILENCE).state
    assert state is not None
    return state


def churn_outputs(outputs: list[Output]) -> list[Output]:
    return [o for o in outputs if isinstance(o, ChurnWarning | ChurnCleared)]


# --- signals ----------------------------------------------------------------------------


def test_purchase_gaps_are_the_days_between_purchase_days() -> None:
    assert purchase_gaps(buy_on([0])) == []
    assert purchase_gaps(buy_on([0, 0, 3, 10, 10, 11, 30])) == [3, 7, 1, 19]


@pytest.mark.parametrize(
    ("of", "gaps", "want"),
    [
        ("mean", [3, 7, 1, 19], 7.5),
        ("median", [3, 7, 1, 19], 5.0),
        # numpy.percentile([1, 3, 7, 19], 90) = 7 + 0.7 * (19 - 7)
        ("p90", [3, 7, 1, 19], 15.4),
        ("p50", [10, 10, 10], 10.0),
    ],
)
def test_usual_gap_statistics(of: str, gaps: list[int], want: float) -> None:
    rules = make({"usual_gap": {"of": of}, "severity": [{"name": "w", "when": {"days_silent": 1}}]})
    assert rules.churn is not None
    got, basis = rules.churn.usual_gap.of_gaps(gaps)
    assert got == pytest.approx(want)
    assert basis == f"{of} of {len(gaps)} gaps"


def test_too_few_gaps_take_the_population_default() -> None:
    assert SILENCE.churn is not None
    got, basis = SILENCE.churn.usual_gap.of_gaps([5, 6])
    assert got == 40.0 and basis == "population default (2 gaps < 3)"


def test_window_totals_recent_and_baseline() -> None:
    state: CustomerState | None = None
    # as of day 119: recent = ages 0..29 (days 90..119), baseline = ages 30..119 (days 0..89)
    for d, amt in [(0, 5.0), (10, 7.0), (50, 11.0), (100, 13.0), (119, 17.0)]:
        state = step(state, purchase("c1", amt, T0 + d * DAY), 0, SILENCE).state
    assert state is not None
    state = step(state, interaction("c1", T0 + 95 * DAY), 0, SILENCE).state
    totals = window_totals(state, T0 + 119 * DAY, 30, 90)
    assert totals["purchases"] == (2.0, 3.0)
    assert totals["spend"] == (30.0, 23.0)
    assert totals["interactions"] == (1.0, 0.0)  # day 95 is recent
    # a day later, day 0 leaves the baseline (120 days span)
    assert window_totals(state, T0 + 120 * DAY, 30, 90)["purchases"] == (2.0, 2.0)


FALLING = make(
    {
        "falling": {"recent_days": 30, "baseline_days": 90, "min_baseline": {"purchases": 3}},
        "severity": [{"name": "watch", "when": {"purchases_drop": {"gte": 0.5}}}],
    }
)


def test_falling_activity_drop_and_minimum_baseline() -> None:
    events = [purchase("c1", 10.0, T0 + d * DAY) for d in (0, 20, 40, 60, 80, 100)]
    result = replay(events, FALLING)
    state = result.states["c1"]
    assert FALLING.churn is not None
    f, _, falling = FALLING.churn.signals(state, T0 + 100 * DAY, None)
    # recent (days 71..100): 80, 100 -> 2 in 30 days; baseline (days -19..70): 0..60 -> 4 in 90
    assert falling["purchases"].recent == 2 and falling["purchases"].baseline == 4
    assert f["purchases_drop"] == pytest.approx(1 - (2 / 30) / (4 / 90))
    assert not [o for o in result.outputs if isinstance(o, ChurnWarning)]  # drop < 0.5
    # Later, silence rolls purchases out of the recent window: the timer raises it.
    later = advance(state, T0 + 200 * DAY, FALLING)
    warnings = [o for o in later if isinstance(o, ChurnWarning)]
    assert len(warnings) == 1 and warnings[0].severity == "watch"
    w = warnings[0]
    assert w.trigger == "time"
    # the first day the drop reaches 0.5: recent 1 (day 100) vs baseline 4 -> 1 - 0.75 * ...
    fm = w.falling["purchases"]
    assert fm["drop"] is not None and fm["drop"] >= 0.5
    assert fm["drop"] == pytest.approx(1 - (fm["recent"] / 30) / (fm["baseline"] / 90))
    # one day earlier it did not hold
    before = FALLING.churn.signals(state, w.at - DAY, None)[0]["purchases_drop"]
    assert before is None or before < 0.5
    # A baseline under the minimum is not compared at all.
    small = replay([purchase("c2", 10.0, T0 + d * DAY) for d in (0, 100)], FALLING)
    f2 = FALLING.churn.signals(small.states["c2"], T0 + 100 * DAY, None)[0]
    assert f2["purchases_drop"] is None


# --- episodes ---------------------------------------------------------------------------


def test_silence_raises_watch_warning_critical_once_each_without_events() -> None:
    # gaps 10, 10, 10, 20: p90 = 17 days
    state = buy_on([0, 10, 20, 30, 50])
    last = T0 + 50 * DAY
    outs = churn_outputs(tick(state, last + 200 * DAY, SILENCE).outputs)
    assert [(o.severity, o.at) for o in outs if isinstance(o, ChurnWarning)] == [
        ("watch", last + 17 * DAY),
        ("warning", last + 34 * DAY),
        ("critical", last + 51 * DAY),
    ]
    assert all(o.trigger == "time" for o in outs)
    first = outs[0]
    assert isinstance(first, ChurnWarning)
    assert first.previous_severity is None and first.episode_started_at == last + 17 * DAY
    assert first.usual_gap_days == pytest.approx(17.0) and first.usual_gap_basis == "p90 of 4 gaps"
    assert first.days_silent == pytest.approx(17.0)
    assert first.action == "none" and first.tier == "D"
    assert "watch: silence_ratio 1 >= 1" in first.reasons[0]
    assert [o.previous_severity for o in outs if isinstance(o, ChurnWarning)] == [
        None,
        "watch",
        "warning",
    ]
    assert {o.episode_started_at for o in outs if isinstance(o, ChurnWarning)} == {first.at}
    # No repeats: more silence, more ticks, nothing new.
    assert churn_outputs(tick(state, last + 900 * DAY, SILENCE).outputs) == []
    assert state.churn_severity == "critical" and state.churn_since == first.at


def test_a_purchase_clears_the_episode_and_rearms_after_the_grace() -> None:
    state = buy_on([0, 10, 20, 30, 50])
    last = T0 + 50 * DAY
    tick(state, last + 40 * DAY, SILENCE)  # watch at +17, warning at +34
    assert state.churn_severity == "warning"
    back = last + 45 * DAY
    res = step(state, purchase("c1", 10.0, back), back, SILENCE)
    cleared = [o for o in res.outputs if isinstance(o, ChurnCleared)]
    assert len(cleared) == 1
    c = cleared[0]
    assert c.severity == "warning" and c.episode_started_at == last + 17 * DAY
    assert c.episode_days == pytest.approx(28.0) and c.at == back
    assert state.churn_severity is None and state.churn_since is None
    # New gaps: 10, 10, 10, 20, 45 -> p90 = 35 days. No warning inside the 7-day re-arm
    # period; silence warns again later, as a new episode.
    again = churn_outputs(tick(state, back + 200 * DAY, SILENCE).outputs)
    assert isinstance(again[0], ChurnWarning)
    assert again[0].severity == "watch" and again[0].previous_severity is None
    assert again[0].at == back + 35 * DAY


def test_an_interaction_does_not_clear_and_a_late_purchase_before_the_episode_neither() -> None:
    state = buy_on([0, 10, 20, 30, 50])
    last = T0 + 50 * DAY
    tick(state, last + 20 * DAY, SILENCE)
    assert state.churn_severity == "watch"
    res = step(state, interaction("c1", last + 21 * DAY), last + 21 * DAY, SILENCE)
    assert churn_outputs(res.outputs) == []
    late = purchase("c1", 5.0, last + 1 * DAY)  # arrives late, dated before the episode
    res = step(state, late, last + 22 * DAY, SILENCE)
    assert churn_outputs(res.outputs) == [] and state.churn_severity == "watch"


def test_the_action_follows_the_tier() -> None:
    events = [purchase("big", 400.0, T0 + d * DAY) for d in (0, 10, 20, 30)]
    state = replay(events, SILENCE).states["big"]
    assert state.tier == "A"
    outs = churn_outputs(tick(state, T0 + 120 * DAY, SILENCE).outputs)
    by_sev = {o.severity: o for o in outs if isinstance(o, ChurnWarning)}
    assert by_sev["critical"].action == "call"  # A: call
    assert by_sev["warning"].action is None  # nothing set for (A or *, warning)
    assert by_sev["watch"].action == "none"  # from "*"


def test_duplicates_do_not_change_the_rhythm() -> None:
    e = purchase("c1", 10.0, T0)
    s1 = replay([e, purchase("c1", 10.0, T0 + 10 * DAY), e], SILENCE).states["c1"]
    assert purchase_gaps(s1) == [10]


# --- P(alive) ---------------------------------------------------------------------------

MODEL = {"unit": "weeks", "bgnbd": {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}}
P_ALIVE = make(
    {"severity": [{"name": "warning", "when": {"p_alive": {"lt": 0.5}}}]},
    MODEL,
)


def p_alive_by_hand(x: int, t_x: float, big_t: float) -> float:
    r, alpha, a, b = 0.243, 4.414, 0.793, 2.426
    if x == 0:
        return 1.0
    return 1.0 / (1.0 + a / (b + x - 1) * ((alpha + big_t) / (alpha + t_x)) ** (r + x))


def test_p_alive_warning_on_the_first_day_it_falls_below_the_threshold() -> None:
    events = [purchase("c1", 20.0, T0 + d * DAY) for d in (0, 7, 14, 21)]
    state = replay(events, P_ALIVE).states["c1"]
    assert P_ALIVE.churn is not None
    outs = [o for o in tick(state, T0 + 400 * DAY, P_ALIVE).outputs if isinstance(o, ChurnWarning)]
    assert len(outs) == 1
    w = outs[0]
    day = (w.at - T0) // DAY
    assert w.at == T0 + day * DAY  # P(alive) moves with whole days of T
    assert w.p_alive == pytest.approx(p_alive_by_hand(3, 3.0, day / 7))
    assert p_alive_by_hand(3, 3.0, day / 7) < 0.5 <= p_alive_by_hand(3, 3.0, (day - 1) / 7)
    assert any(r.startswith("warning: p_alive") for r in w.reasons)
    assert w.expected_purchases is not None and w.value_at_risk is not None
    assert w.value_at_risk > 0


def test_one_time_buyers_are_alive_by_the_model() -> None:
    state = replay([purchase("c1", 20.0, T0)], P_ALIVE).states["c1"]
    assert churn_outputs(tick(state, T0 + 3000 * DAY, P_ALIVE).outputs) == []


# --- validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("churn", "path", "says"),
    [
        ({"severity": []}, "churn.severity", "required"),
        (
            {"severity": [{"name": "w", "when": {"nope": 1}}]},
            "churn.severity[0].when.nope",
            "unknown",
        ),
        (
            {"severity": [{"name": "w", "when": {"p_alive": {"lt": 0.3}}}]},
            "churn.severity",
            "model",
        ),
        (
            {"severity": [{"name": "w", "when": {"spend_drop": 0.5}}]},
            "churn.severity",
            "min_baseline",
        ),
        (
            {"usual_gap": {"of": "p200"}, "severity": [{"name": "w", "when": {"days_silent": 1}}]},
            "churn.usual_gap.of",
            "pNN",
        ),
        (
            {"severity": [{"name": "w", "when": {"days_silent": 1}}], "actions": {"Z": {"w": "x"}}},
            "churn.actions.Z",
            "unknown tier",
        ),
        (
            {"severity": [{"name": "w", "when": {"days_silent": 1}}], "actions": {"A": {"v": "x"}}},
            "churn.actions.A.v",
            "unknown severity",
        ),
        (
            {
                "falling": {"recent_days": 200, "baseline_days": 200, "min_baseline": {"spend": 1}},
                "severity": [{"name": "w", "when": {"spend_drop": 0.5}}],
            },
            "churn.falling",
            "at most 365",
        ),
        ({"severity": [{"name": "w"}]}, "churn.severity[0]", "when"),
        (
            {"bogus": 1, "severity": [{"name": "w", "when": {"days_silent": 1}}]},
            "churn.bogus",
            "unknown key",
        ),
    ],
)
def test_invalid_churn_sections_name_the_path(churn: dict[str, Any], path: str, says: str) -> None:
    with pytest.raises(PolicyError) as err:
        make(churn)
    problems = err.value.problems
    assert any(p == path and says in msg for p, msg in problems), problems


def test_prospects_are_never_silent() -> None:
    # Found by the replay evaluation: without purchases, silence was infinite and every
    # silence threshold held on a prospect's first visit.
    for when in ({"silence_ratio": {"gte": 2}}, {"days_silent": {"gte": 30}}):
        policy = make({"severity": [{"name": "w", "when": when}]})
        res = step(None, interaction("c1", T0), T0, policy)
        assert churn_outputs(res.outputs) == []
        assert churn_outputs(tick(res.state, T0 + 500 * DAY, policy).outputs) == []
        f = policy.churn.signals(res.state, T0, None)[0]  # type: ignore[union-attr]
        assert f["days_silent"] is None and f["silence_ratio"] is None


def test_ordinary_features_may_be_used_in_levels() -> None:
    policy = make(
        {"severity": [{"name": "w", "when": {"days_silent": {"gte": 30}, "spend_365d": 100}}]}
    )
    small = replay([purchase("c1", 20.0, T0)], policy).states["c1"]
    assert churn_outputs(tick(small, T0 + 40 * DAY, policy).outputs) == []
    big = replay([purchase("c2", 200.0, T0)], policy).states["c2"]
    outs = churn_outputs(tick(big, T0 + 40 * DAY, policy).outputs)
    assert [(o.severity, o.at) for o in outs] == [("w", T0 + 30 * DAY)]  # type: ignore[union-attr]


def test_a_policy_without_churn_warnings_closes_open_episodes() -> None:
    state = buy_on([0, 10, 20, 30, 50])
    tick(state, T0 + 200 * DAY, SILENCE)
    assert state.churn_severity == "critical"
    plain = policy_from_dict(BASE, "plain.yaml")
    from app.domain.engine import reevaluate

    reevaluate(state, plain, "policy:plain", "policy_changed")
    assert (state.churn_severity, state.churn_since, state.churn_cleared_at) == (None,) * 3
