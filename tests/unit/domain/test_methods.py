"""Tiering methods (app/domain/methods.py): a policy with a scorecard, RFM scores and a
percentile condition computes and explains them in the registered orders, every name a
method provides is reserved, and the registry checks itself."""

from __future__ import annotations

from typing import Any

import pytest

from app.domain.errors import PolicyError
from app.domain.methods import METHODS, PROVIDED
from app.domain.policy_doc import policy_from_dict
from app.domain.population import exact_cutoffs
from app.domain.replay import replay
from app.domain.scoring import RFM, Scorecard
from tests.kit.builders import DAY, at, purchase

T0 = at("2024-01-01")

# A: score >= 70, rfm_sum >= 8 and spend_365d at or above the population's median.
MIXED: dict[str, Any] = {
    "name": "mixed",
    "version": 1,
    "scorecard": {
        "factors": [
            {
                "name": "rank",
                "weight": 60,
                "feature": "percentile.spend_365d",
                "bands": [{"gte": 50, "points": 100}, {"points": 0}],
            },
            {
                "name": "volume",
                "weight": 40,
                "feature": "purchases_365d",
                "bands": [{"gte": 3, "points": 100}, {"points": 50}],
            },
        ]
    },
    "rfm": {
        "recency": {"feature": "days_since_last_purchase", "bands": [30, 60, 120, 240]},
        "monetary": {"feature": "spend_365d", "quintiles": True},
    },
    "tiers": [
        {
            "name": "A",
            "when": {
                "score": {"gte": 70},
                "rfm_sum": {"gte": 8},
                "percentile.spend_365d": {"gte": 50},
            },
        },
        {"name": "B"},
    ],
}


def test_a_policy_runs_its_methods_in_registry_order() -> None:
    policy = policy_from_dict(MIXED)
    assert [type(m) for m in policy.methods] == [METHODS["rfm"].kind, METHODS["scorecard"].kind]
    assert isinstance(policy.rfm, RFM) and isinstance(policy.scorecard, Scorecard)
    assert policy.ranked == {"spend_365d": (20.0, 40.0, 50.0, 60.0, 80.0)}  # median + quintiles


def test_features_and_reasons_follow_the_registered_orders() -> None:
    # Five customers spending 100..500 in one purchase each on day 0; "c5" bought three
    # times (3 x 500 / 3). Cut-offs of spend_365d over them: "c5" (500) is at or above
    # the median (300) and every quintile: percentile 80, RFM monetary 5.
    events = [purchase(f"c{k}", 100.0 * k, T0) for k in range(1, 5)]
    events += [purchase("c5", 500.0 / 3, T0 + h * 3_600_000) for h in range(3)]
    policy = policy_from_dict(MIXED)
    result = replay(events, policy)
    at_ = T0 + DAY
    values = {
        "spend_365d": [policy.ranked_values(s, at_)["spend_365d"] for s in result.states.values()]
    }
    policy = policy.with_cutoffs(exact_cutoffs(values, policy.ranked))
    f = policy.features(result.states["c5"], at_)
    # Keys in evaluation order: percentiles, then each method in METHODS order (explain
    # documents print the features in this order).
    added = [k for k in f if k.startswith("percentile.") or k in PROVIDED]
    assert added == ["percentile.spend_365d", "rfm_r", "rfm_m", "rfm_sum", "score"]
    # recency 1 day <= 30 -> 5; monetary top quintile -> 5; score 60 + 40.
    assert (f["percentile.spend_365d"], f["rfm_r"], f["rfm_m"], f["rfm_sum"]) == (80.0, 5, 5, 10)
    assert f["score"] == 100.0
    decision = policy.decide(f)
    assert decision.tier == "A"
    lines = policy.explain_features(f, decision.features)
    # Reasons in EXPLAINED order: the score's factors, the cut-offs, the RFM scores.
    kinds = [
        "score" if line.startswith(("score ", "  ")) else line.split(" ")[0].split(".")[0]
        for line in lines
    ]
    assert kinds == ["score", "score", "score", "percentile", "rfm_r", "rfm_m"]


@pytest.mark.parametrize("name", sorted(PROVIDED))
def test_every_provided_name_is_reserved(name: str) -> None:
    doc = {"name": "p", "version": 1, "derived": {name: "1"}, "tiers": [{"name": "all"}]}
    with pytest.raises(PolicyError) as err:
        policy_from_dict(doc)
    assert err.value.problems == [(f"derived.{name}", "this name is taken by a built-in feature")]


def test_every_method_has_its_section_in_a_policy_document() -> None:
    doc = {"name": "p", "version": 1, "tiers": [{"name": "all"}], "nosuch": 1}
    with pytest.raises(PolicyError) as err:
        policy_from_dict(doc)
    (problem,) = err.value.problems
    assert all(section in problem[1] for section in METHODS)
