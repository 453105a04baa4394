"""Shadow evaluation (``tierstream policy diff``): the transition matrix of a new policy
against the current tiers, by hand on a small population; merging; the JSON form; purity;
renamed tiers; the command."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from app.cli.main import cli
from app.domain.policy import Policy
from app.domain.policy_doc import policy_from_dict
from app.domain.replay import replay
from app.domain.state import CustomerState, state_to_dict
from app.service.batch_replay import classify_events, population_cutoffs
from app.service.shadow import NO_TIER, Example, PolicyDiff, diff_events, diff_states
from app.tools.simulate import SimulationConfig, simulate
from schemas.codec import decode_event
from tests.kit.builders import DAY, at, interaction, purchase, refund
from tests.kit.docs import purchase_doc


def policy(version: str, a: float, b: float, names: tuple[str, ...] = ("A", "B", "C")) -> Policy:
    return policy_from_dict(
        {
            "name": "spend",
            "version": version,
            "tiers": [
                {"name": names[0], "when": {"spend_365d": {"gte": a}}},
                {"name": names[1], "when": {"spend_365d": {"gte": b}}},
                {"name": names[2]},
            ],
        }
    )


OLD = policy("1", 1000, 300)
NEW = policy("2", 1500, 200)
DAY1 = at("2024-03-01T10:00:00")
#: customer -> spend: old tier (A >= 1000, B >= 300), new tier (A >= 1500, B >= 200).
SPEND = {
    "c1": 2000.0,  # A -> A
    "c2": 1200.0,  # A -> B  down
    "c3": 500.0,  # B -> B
    "c4": 250.0,  # C -> B  up
    "c5": 100.0,  # C -> C
    "c6": 1000.0,  # A -> B  down
}


def population() -> dict[str, CustomerState]:
    events = [purchase(c, amount, DAY1 + i * 1000) for i, (c, amount) in enumerate(SPEND.items())]
    return replay(events, OLD).states


def test_matrix_by_hand() -> None:
    states = population()
    assert {c: s.tier for c, s in states.items()} == {
        "c1": "A", "c2": "A", "c3": "B", "c4": "C", "c5": "C", "c6": "A"
    }  # fmt: skip
    diff = diff_states(states.values(), OLD, NEW, examples=3)
    assert (diff.old_policy, diff.new_policy) == ("spend@1", "spend@2")
    assert diff.counts == {
        ("A", "A"): 1,
        ("A", "B"): 2,
        ("B", "B"): 1,
        ("C", "B"): 1,
        ("C", "C"): 1,
    }
    assert diff.customers == 6
    assert diff.moves() == {"changed": 3, "up": 1, "down": 2, "reassigned": 0, "new": 0}
    assert diff.before() == {"A": 3, "B": 1, "C": 2}
    assert diff.after() == {"A": 1, "B": 4, "C": 1}
    assert (diff.held, diff.other_policy) == (0, 0)
    # Decided as of each customer's own last evaluation: its (only) event.
    assert (diff.evaluated_from, diff.evaluated_to) == (DAY1, DAY1 + 5000)
    # Examples only for the moves, smallest ids first, with both sides' reasons.
    assert set(diff.examples) == {("A", "B"), ("C", "B")}
    c2, c6 = diff.examples[("A", "B")]
    assert (c2.customer_id, c6.customer_id, c2.at) == ("c2", "c6", DAY1 + 1000)
    assert c2.reasons == ("spend_365d 1200 >= 200", "not A: spend_365d 1200 < 1500")
    assert c2.features == {"spend_365d": 1200.0}
    assert c2.old_reasons == ("spend_365d 1200 >= 1000",)
    assert c2.old_features == {"spend_365d": 1200.0}
    (c4,) = diff.examples[("C", "B")]
    assert c4.reasons == ("spend_365d 250 >= 200", "not A: spend_365d 250 < 1500")
    assert c4.old_reasons == (
        "no better tier's conditions hold",
        "not A: spend_365d 250 < 1000",
        "not B: spend_365d 250 < 300",
    )
    # The cap keeps the smallest customer ids.
    one = diff_states(states.values(), OLD, NEW, examples=1)
    assert [e.customer_id for e in one.examples[("A", "B")]] == ["c2"]
    assert diff_states(states.values(), OLD, NEW, examples=0).examples == {}


def test_at_moves_everybody_forward_and_windows_roll() -> None:
    """As of a year and a day later every purchase has left spend_365d: all new C."""
    states = population()
    later = DAY1 + 366 * DAY
    diff = diff_states(states.values(), OLD, NEW, at=later)
    assert diff.counts == {("A", "C"): 3, ("B", "C"): 1, ("C", "C"): 2}
    assert (diff.at, diff.evaluated_from, diff.evaluated_to) == (later, later, later)
    # The current tiers are the states' own. The old policy would now choose C for the A
    # and B customers too, but not because of hysteresis: time has passed since their last
    # evaluation (the engine would re-evaluate them when the purchase leaves the window).
    assert diff.held == 0
    c1 = diff.examples[("A", "C")][0]
    assert c1.old_reasons[0] == "not re-evaluated since; by now spend@1 would choose C"


def test_the_states_are_not_changed() -> None:
    states = population()
    before = {c: orjson.dumps(state_to_dict(s)) for c, s in states.items()}
    lapsed = policy_from_dict(
        {
            "name": "lapsed",
            "version": "1",
            "tiers": [
                {"name": "L", "when": {"days_since_last_purchase": {"gte": 30}}},
                {"name": "R"},
            ],
            "hysteresis": {"min_days_in_tier": 30},
        }
    )
    for at_ in (None, DAY1 + 400 * DAY):
        diff_states(states.values(), OLD, NEW, at_)
        diff_states(states.values(), OLD, lapsed, at_)
    assert {c: orjson.dumps(state_to_dict(s)) for c, s in states.items()} == before


def test_merge_of_two_halves_equals_the_whole() -> None:
    states = list(population().values())
    whole = diff_states(states, OLD, NEW, examples=1)
    odd = diff_states(states[1::2], OLD, NEW, examples=1)
    even = diff_states(states[0::2], OLD, NEW, examples=1)
    assert odd.merge(even) == whole
    assert even.merge(odd) == whole
    # c2 and c6 (both A -> B) are in different halves: the merge keeps the smaller id.
    assert [e.customer_id for e in odd.merge(even).examples[("A", "B")]] == ["c2"]
    empty = diff_states([], OLD, NEW, examples=1)
    assert empty.merge(whole) == whole == whole.merge(empty)


def test_merge_on_a_simulated_population_any_split() -> None:
    sim = simulate(SimulationConfig(customers=300, days=400, seed=11, start=date(2023, 6, 1)))
    result, _, _ = classify_events([decode_event(d) for d in sim.events], OLD)
    states = sorted(result.states.values(), key=lambda s: s.customer_id)
    whole = diff_states(states, OLD, NEW, examples=2)
    assert whole.moves()["changed"] > 20
    for k in (2, 3, 5):
        parts = [diff_states(states[i::k], OLD, NEW, examples=2) for i in range(k)]
        merged = parts[0]
        for p in parts[1:]:
            merged = merged.merge(p)
        assert merged == whole


def test_merge_refuses_different_policies() -> None:
    states = population().values()
    with pytest.raises(ValueError, match="different new_policy"):
        diff_states(states, OLD, NEW).merge(diff_states(states, OLD, policy("3", 1, 0)))
    with pytest.raises(ValueError, match="different at"):
        diff_states(states, OLD, NEW).merge(diff_states(states, OLD, NEW, at=DAY1 + DAY))


def test_json_round_trip() -> None:
    states = population()
    # A customer with interactions only: days_since_last_purchase is infinite (JSON: null).
    states["c0"] = replay([interaction("c0", DAY1)], OLD).states["c0"]
    lapsed = policy_from_dict(
        {
            "name": "lapsed",
            "version": "1",
            "tiers": [
                {"name": "L", "when": {"days_since_last_purchase": {"gte": 30}}},
                {"name": "R"},
            ],
        }
    )
    for new in (NEW, lapsed):
        diff = diff_states(states.values(), OLD, new)
        raw = diff.to_dict()
        text = json.dumps(raw, allow_nan=False)  # strict JSON
        assert PolicyDiff.from_dict(json.loads(text)) == diff
        assert raw["customers"] == 7
        assert raw["matrix"]["C"] == {t: diff.counts.get(("C", t), 0) for t in diff.columns()}
    (c0,) = PolicyDiff.from_dict(raw).examples[("C", "L")]
    assert c0.features == {"days_since_last_purchase": None}
    assert c0.reasons == ("days_since_last_purchase inf >= 30",)
    with pytest.raises(ValueError, match="not a policy diff"):
        PolicyDiff.from_dict({"format": 1})
    with pytest.raises(ValueError, match="unsupported format"):
        PolicyDiff.from_dict({**raw, "format": 99})
    assert Example.from_dict(c0.to_dict()) == c0


def test_renamed_tiers_are_reassigned() -> None:
    states = population()
    metals = policy("m", 1000, 300, ("Gold", "Silver", "Bronze"))
    diff = diff_states(states.values(), OLD, metals)
    # Same thresholds, other names: every customer changes name, nobody up or down.
    assert diff.counts == {("A", "Gold"): 3, ("B", "Silver"): 1, ("C", "Bronze"): 2}
    assert diff.moves() == {"changed": 6, "up": 0, "down": 0, "reassigned": 6, "new": 0}
    two = policy_from_dict(
        {
            "name": "two",
            "version": "1",
            "tiers": [{"name": "Top", "when": {"spend_365d": 300}}, {"name": "Rest"}],
        }
    )
    diff = diff_states(states.values(), OLD, two)
    assert diff.counts == {("A", "Top"): 3, ("B", "Top"): 1, ("C", "Rest"): 2}
    assert diff.moves() == {"changed": 6, "up": 0, "down": 0, "reassigned": 6, "new": 0}
    # A name both policies have compares by its place in the new policy.
    d = PolicyDiff("o@1", "n@1", ("A", "B", "C", "D"), ("P", "A", "B", "D"))
    assert [d.movement("A", t) for t in ("P", "A", "B", "D")] == ["up", "same", "down", "down"]
    # A name the new policy does not have: reassigned, whatever the new tier.
    assert {d.movement("C", t) for t in ("P", "A", "B", "D")} == {"reassigned"}
    d = PolicyDiff("o@1", "n@1", ("A", "B", "C", "D"), ("Gold", "Silver", "Bronze"))
    assert {d.movement(o, t) for o in "ABCD" for t in ("Gold", "Silver", "Bronze")} == {
        "reassigned"
    }
    assert d.movement("X", "Bronze") == "reassigned"  # a tier of another policy
    assert d.movement(NO_TIER, "Bronze") == "new"  # never evaluated


def test_hysteresis_held_customers_are_decided_afresh() -> None:
    sticky = policy_from_dict(
        {
            "name": "spend",
            "version": "1",
            "tiers": [
                {"name": "A", "when": {"spend_365d": 1000}, "stay": {"spend_365d": 500}},
                {"name": "B", "when": {"spend_365d": 300}},
                {"name": "C"},
            ],
        }
    )
    events = [purchase("c1", 1200, DAY1), refund("c1", 400, DAY1 + DAY)]  # 800: kept in A
    states = replay(events, sticky).states
    assert states["c1"].tier == "A"
    diff = diff_states(states.values(), sticky, NEW)
    assert diff.counts == {("A", "B"): 1} and diff.held == 1
    (e,) = diff.examples[("A", "B")]
    assert e.old_reasons[0] == "held in A by its stay conditions: spend_365d 800 >= 500"
    assert e.old_reasons[1].startswith("afresh spend@1 would choose B: spend_365d 800 >= 300")
    assert e.old_features == {"spend_365d": 800.0}
    # A demotion held back by a minimum time in the tier.
    patient = policy_from_dict(
        {
            "name": "spend",
            "version": "1",
            "tiers": [
                {"name": "A", "when": {"spend_365d": 1000}},
                {"name": "B", "when": {"spend_365d": 300}},
                {"name": "C"},
            ],
            "hysteresis": {"min_days_in_tier": 30},
        }
    )
    states = replay(events, patient).states
    assert (states["c1"].tier, states["c1"].pending_tier) == ("A", "B")
    diff = diff_states(states.values(), patient, NEW)
    assert diff.counts == {("A", "B"): 1} and diff.held == 1
    (e,) = diff.examples[("A", "B")]
    assert e.old_reasons[0] == (
        "held in A by hysteresis, demotion wanted since 2024-03-02T10:00:00.000Z: "
        "spend_365d 800 < 1000 (min 30 days in tier, grace 0 days)"
    )
    # States last evaluated under another policy are counted apart.
    other = diff_states(states.values(), NEW, OLD)
    assert (diff.other_policy, other.other_policy, other.held) == (0, 1, 0)
    (e,) = other.examples[("A", "B")]
    assert e.old_reasons == ("A was decided by another policy (last evaluated under spend@1)",)


# --- the command ---------------------------------------------------------------------------


def write_policy(path: Path, a: float, b: float, version: str, names: str = "A B C") -> Path:
    n = names.split()
    path.write_text(
        f"name: spend\nversion: '{version}'\ntiers:\n"
        f"  - {{name: {n[0]}, when: {{spend_365d: {{gte: {a}}}}}}}\n"
        f"  - {{name: {n[1]}, when: {{spend_365d: {{gte: {b}}}}}}}\n"
        f"  - {{name: {n[2]}}}\n"
    )
    return path


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    events = tmp_path / "events.jsonl"
    events.write_bytes(
        b"".join(
            orjson.dumps(purchase_doc(c, amount, "2024-03-01T10:00:00Z", event_id=f"e{i}")) + b"\n"
            for i, (c, amount) in enumerate(SPEND.items())
        )
    )
    return {
        "events": events,
        "old": write_policy(tmp_path / "old.yaml", 1000, 300, "1"),
        "new": write_policy(tmp_path / "new.yaml", 1500, 200, "2"),
    }


def run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(cli, args)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def table_rows(output: str) -> dict[str, list[str]]:
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if len(cells) > 2 and cells[0] in {"A", "B", "C", "total"}:
            rows[cells[0]] = cells[1:]
    return rows


def test_command_prints_the_matrix_summary_and_examples(files: dict[str, Path]) -> None:
    code, output = run(
        ["policy", "diff", str(files["new"]), "--events", str(files["events"]),
         "--policy", str(files["old"])]
    )  # fmt: skip
    assert code == 0, output
    assert "current spend@1 -> new spend@2: 6 customers" in output
    assert table_rows(output) == {
        "A": ["1", "2", "", "3"],
        "B": ["", "1", "", "1"],
        "C": ["", "1", "1", "2"],
        "total": ["1", "4", "1", "6"],
    }
    assert "3 of 6 customers (50.0 %) would change tier: 1 up, 2 down" in output
    assert "A -> B: 2 customers, down" in output and "C -> B: 1 customer, up" in output
    assert "new B: spend_365d 1200 >= 200; not A: spend_365d 1200 < 1500" in output
    assert "was A: spend_365d 1200 >= 1000" in output
    code, output = run(
        ["policy", "diff", str(write_policy(files["new"].with_name("m.yaml"), 1000, 300, "m",
                                            "Gold Silver Bronze")),
         "--events", str(files["events"]), "--policy", str(files["old"]), "--examples", "0"]
    )  # fmt: skip
    assert code == 0, output
    assert "6 of 6 customers (100.0 %) would change tier: 0 up, 0 down, 6 reassigned" in output
    assert "A -> Gold" not in output  # --examples 0


def test_command_json_equals_diff_states_on_the_classify_result(tmp_path: Path) -> None:
    sim = simulate(SimulationConfig(customers=200, days=400, seed=3, start=date(2023, 6, 1)))
    path = tmp_path / "sim.jsonl"
    path.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in sim.events))
    old_path = write_policy(tmp_path / "old.yaml", 1000, 300, "1")
    events = [decode_event(d) for d in sim.events]

    new_path = write_policy(tmp_path / "new.yaml", 1500, 200, "2")
    code, output = run(
        ["policy", "diff", str(new_path), "-e", str(path), "--policy", str(old_path), "--json"]
    )
    assert code == 0, output
    result, _, cutoffs = classify_events(events, OLD)
    expected = diff_states(result.states.values(), OLD.with_cutoffs(cutoffs), NEW, None, 3)
    assert orjson.loads(output) == expected.to_dict()
    assert expected.moves()["changed"] > 10

    # Percentile conditions: the new policy decides with the exact cut-offs as of --as-of.
    pct = tmp_path / "pct.yaml"
    pct.write_text(
        "name: pyramid\nversion: 1\ntiers:\n"
        "  - {name: top, when: {percentile.spend_365d: 90}}\n  - {name: rest}\n"
    )
    code, output = run(
        ["policy", "diff", str(pct), "-e", str(path), "--policy", str(old_path), "--json",
         "--as-of", "2024-08-01", "--examples", "1"]
    )  # fmt: skip
    assert code == 0, output
    as_of = at("2024-08-01")
    result, _, _ = classify_events(events, OLD, as_of)
    pyramid = policy_from_dict(
        {"name": "pyramid", "version": 1, "tiers": [
            {"name": "top", "when": {"percentile.spend_365d": 90}}, {"name": "rest"}]}
    )  # fmt: skip
    pyramid = pyramid.with_cutoffs(population_cutoffs(result, pyramid, as_of))
    expected = diff_states(result.states.values(), OLD, pyramid, as_of, 1)
    got = orjson.loads(output)
    assert got == expected.to_dict()
    assert got["after"]["top"] == 20  # the top 10 % of 200
    assert expected == diff_events(events, OLD, pyramid, as_of, 1)


def cli_process(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_bad_new_policy_or_file_exits_2(files: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nversion: 1\ntiers:\n  - {name: A, when: {spend_90d: {gte: lots}}}\n"
                   "  - {name: B}\n")  # fmt: skip
    proc = cli_process(["policy", "diff", str(bad), "--events", str(files["events"])])
    assert proc.returncode == 2, proc.stderr
    assert f"error: invalid policy {bad}:" in proc.stderr
    assert "tiers[0].when.spend_90d.gte: must be a number, got 'lots'" in proc.stderr
    assert proc.stdout == ""
    proc = cli_process(
        ["policy", "diff", str(files["new"]), "--events", str(tmp_path / "no.jsonl")]
    )
    assert proc.returncode == 2 and "error: cannot read" in proc.stderr
    proc = cli_process(
        ["policy", "diff", str(files["new"]), "-e", str(files["events"]), "--as-of", "soon"]
    )
    assert proc.returncode == 2 and "--as-of" in proc.stderr


def test_help_explains_up_and_down() -> None:
    code, output = run(["policy", "diff", "--help"])
    assert code == 0
    for words in ("reassigned", "afresh", "--examples", "--json", "--events"):
        assert words in output
