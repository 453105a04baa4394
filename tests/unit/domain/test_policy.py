"""Policies: validation errors name the source, the path and the problem; decisions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.adapters.policy_files import load_policy, parse_policy
from app.domain.errors import PolicyError
from app.domain.features import FEATURES
from app.domain.policy import Policy
from app.domain.policy_doc import policy_from_dict


def base(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "p",
        "version": "1",
        "tiers": [
            {"name": "A", "when": {"spend_365d": {"gte": 3000}}},
            {"name": "B", "when": {"spend_90d": 100}},
            {"name": "C", "when": {"attributes.region": {"in": ["emea", "apac"]}}},
            {"name": "D"},
        ],
    }
    doc.update(changes)
    return doc


def tier(i: int, **changes: Any) -> dict[str, Any]:
    doc = base()
    doc["tiers"][i] = {**doc["tiers"][i], **changes}
    return doc


def problems(doc: Any) -> list[tuple[str, str]]:
    with pytest.raises(PolicyError) as err:
        policy_from_dict(doc, "rules.yaml")
    assert err.value.source == "rules.yaml"
    assert str(err.value).startswith("invalid policy rules.yaml:")
    return err.value.problems


INVALID: list[tuple[Any, str, str]] = [
    # (document, path, part of the message)
    (None, "$", "empty document"),
    ([1, 2], "$", "must be a mapping"),
    (base(name=""), "name", "required"),
    (base(name=True), "name", "required"),
    ({"version": "1", "tiers": [{"name": "D"}]}, "name", "required"),
    (base(version=None), "version", "required"),
    (base(tiers=[]), "tiers", "non-empty list"),
    (base(tiers={"A": {}}), "tiers", "non-empty list"),
    (base(colour="blue"), "colour", "unknown key"),
    (base(currency=840), "currency", "must be a string"),
    (tier(1, name="A"), "tiers[1].name", "duplicate tier name 'A'"),
    (tier(0, name=None), "tiers[0].name", "required"),
    (tier(0, priority=1), "tiers[0].priority", "unknown key"),
    (
        tier(2, when={"spend_90d": {"gte": 1}, "spend_9d": 5}),
        "tiers[2].when.spend_9d",
        "unknown feature",
    ),
    (
        tier(2, when={"spend_90d": {"gte": "lots"}}),
        "tiers[2].when.spend_90d.gte",
        "must be a number, got 'lots'",
    ),
    (
        tier(2, when={"spend_90d": {"gte": float("nan")}}),
        "tiers[2].when.spend_90d.gte",
        "must be a number",
    ),
    (tier(2, when={"spend_90d": {"gte": True}}), "tiers[2].when.spend_90d.gte", "must be a number"),
    (
        tier(2, when={"spend_90d": {"atleast": 1}}),
        "tiers[2].when.spend_90d.atleast",
        "unknown operator",
    ),
    (
        tier(2, when={"spend_90d": "100"}),
        "tiers[2].when.spend_90d",
        "must be a number (meaning gte)",
    ),
    (tier(2, when={"spend_90d": {}}), "tiers[2].when.spend_90d", "empty condition"),
    (tier(2, when={"spend_90d": {"in": 5}}), "tiers[2].when.spend_90d.in", "non-empty list"),
    (tier(2, when={"spend_90d": {"in": ["x"]}}), "tiers[2].when.spend_90d.in", "must be numbers"),
    (
        tier(2, when={"attributes.region": {"in": [["emea"]]}}),
        "tiers[2].when.attributes.region.in",
        "list items",
    ),
    (
        tier(2, when={"attributes.region": {"eq": {"a": 1}}}),
        "tiers[2].when.attributes.region.eq",
        "string, number or boolean",
    ),
    (tier(2, when={"attributes.": {"eq": 1}}), "tiers[2].when.attributes.", "unknown feature"),
    (tier(1, when=[]), "tiers[1].when", "must be a mapping"),
    (tier(1, when={}), "tiers[1].when", "only the last tier may have no conditions"),
    (tier(1, when=None), "tiers[1].when", "only the last tier may have no conditions"),
    (tier(3, when={"spend_90d": 1}), "tiers[3].when", "catch-all"),
    (tier(3, service_level=[1]), "tiers[3].service_level", "must be a mapping"),
    (base(tiers=[{"name": "A"}, "B"]), "tiers[1]", "must be a mapping"),
]


@pytest.mark.parametrize(("doc", "path", "message"), INVALID)
def test_invalid_policies_name_path_and_problem(doc: Any, path: str, message: str) -> None:
    found = problems(doc)
    assert any(p == path and message in m for p, m in found), found


def test_all_problems_are_reported_at_once() -> None:
    doc = base(name="", colour=1)
    doc["tiers"][0]["when"] = {"spend_9d": 1, "spend_90d": {"gte": "x"}}
    paths = [p for p, _ in problems(doc)]
    assert paths == ["name", "colour", "tiers[0].when.spend_9d", "tiers[0].when.spend_90d.gte"]


def test_valid_policy_compiles() -> None:
    pol = policy_from_dict(base(version=2, currency="EUR"))
    assert (pol.name, pol.version, pol.currency) == ("p", "2", "EUR")
    assert pol.features_used == ("attributes.region", "spend_365d", "spend_90d")
    assert [t.name for t in pol.tiers] == ["A", "B", "C", "D"]
    assert pol.rank("A") == 0 and pol.rank("D") == 3 and pol.rank("Z") == 4 and pol.rank(None) == 4
    bare = pol.tiers[1].conditions[0]
    assert (bare.feature, bare.op, bare.value) == ("spend_90d", "gte", 100.0)


DECISIONS = [
    # (features, tier, reasons)
    ({"spend_365d": 3000.0, "spend_90d": 0.0}, "A", ("spend_365d 3000 >= 3000",)),
    (
        {"spend_365d": 2999.99, "spend_90d": 100.0},
        "B",
        ("spend_90d 100 >= 100", "not A: spend_365d 2999.99 < 3000"),
    ),
    (
        {"spend_365d": 0.0, "spend_90d": 0.0, "attributes.region": "apac"},
        "C",
        (
            "attributes.region apac in [apac, emea]",
            "not A: spend_365d 0 < 3000",
            "not B: spend_90d 0 < 100",
        ),
    ),
    (
        {"spend_365d": 0.0, "spend_90d": 0.0, "attributes.region": None},
        "D",
        (
            "no better tier's conditions hold",
            "not A: spend_365d 0 < 3000",
            "not B: spend_90d 0 < 100",
            "not C: attributes.region None not in [apac, emea]",
        ),
    ),
    ({"spend_365d": float("nan"), "spend_90d": "oops"}, "D", None),  # never crashes
]


@pytest.mark.parametrize(("features", "name", "reasons"), DECISIONS)
def test_decide_and_choose_agree(
    features: dict[str, Any], name: str, reasons: tuple[str, ...] | None
) -> None:
    pol = policy_from_dict(base())
    decision = pol.decide(features)
    assert decision.tier == name == pol.choose(features).name
    if reasons is not None:
        assert decision.reasons == reasons


def test_default_policy_loads_and_uses_known_features() -> None:
    pol = load_policy()
    assert isinstance(pol, Policy) and pol.name == "value-tiers"
    assert set(pol.features_used) <= set(FEATURES)
    assert [t.name for t in pol.tiers] == ["A", "B", "C", "D"]


def test_policy_files_name_the_file_and_the_line(tmp_path: Path) -> None:
    bad_yaml = tmp_path / "broken.yaml"
    bad_yaml.write_text("name: p\ntiers: [\n  {name: A\n")
    with pytest.raises(PolicyError) as err:
        load_policy(bad_yaml)
    assert err.value.source == str(bad_yaml)
    where, what = err.value.problems[0]
    assert where.startswith("line ") and "not valid YAML" in what

    dup = tmp_path / "dup.yaml"
    dup.write_text(
        "name: p\nversion: 1\ntiers:\n  - name: A\n    when:\n"
        "      spend_90d: {gte: 1}\n      spend_90d: {gte: 2}\n  - name: B\n"
    )
    with pytest.raises(PolicyError) as err:
        load_policy(dup)
    assert err.value.problems == [("line 7, column 7", "duplicate key 'spend_90d'")]
    assert str(dup) in str(err.value)

    invalid = tmp_path / "invalid.yaml"
    invalid.write_text(
        "name: p\nversion: 1\ntiers:\n  - {name: A, when: {spend_90d: x}}\n  - {name: B}\n"
    )
    with pytest.raises(PolicyError) as err:
        load_policy(invalid)
    assert err.value.problems[0][0] == "tiers[0].when.spend_90d"
    assert str(err.value).startswith(f"invalid policy {invalid}:")

    with pytest.raises(PolicyError) as err:
        load_policy(tmp_path / "missing.yaml")
    assert "cannot read file" in err.value.problems[0][1]

    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(PolicyError) as err:
        load_policy(binary)
    assert "UTF-8" in err.value.problems[0][1]


def test_yaml_text_parses_like_the_dict() -> None:
    text = "name: p\nversion: 3\ntiers:\n  - {name: A, when: {purchases_30d: 2}}\n  - {name: B}\n"
    pol = parse_policy(text)
    assert pol == policy_from_dict(
        {
            "name": "p",
            "version": 3,
            "tiers": [{"name": "A", "when": {"purchases_30d": 2}}, {"name": "B"}],
        }
    )


def test_reasons_do_not_depend_on_the_hash_seed() -> None:
    """'in' lists are frozensets; their text must not follow set iteration order, or
    two processes (worker and replay) would word the same reason differently."""
    import subprocess
    import sys

    code = (
        "from app.domain.policy_doc import policy_from_dict as p\n"
        "pol = p({'name': 'p', 'version': 1, 'tiers': [{'name': 'A', 'when': "
        "{'attributes.r': {'in': ['delta', 'alpha', 'charlie', 'bravo', 'echo', 10, 9]}}},"
        " {'name': 'B'}]})\n"
        "print(pol.decide({'attributes.r': 'x'}).reasons)\n"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in (1, 2, 3, 4)
    }
    assert len(outs) == 1, outs
    assert "[9, 10, alpha, bravo, charlie, delta, echo]" in outs.pop()


def test_policy_check_command_reports_ok_or_every_problem(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from app.cli.main import cli

    good = tmp_path / "good.yaml"
    good.write_text("name: vip\nversion: 3\ntiers:\n  - {name: VIP, when: {spend_90d: 500}}\n")
    good.write_text(good.read_text() + "  - {name: regular}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\nversion: 1\ntiers:\n"
        "  - {name: A, when: {spend_90d: {gte: lots}, spend_91d: 1}}\n  - {name: B}\n"
    )
    runner = CliRunner()
    ok = runner.invoke(cli, ["policy", "check", str(good)])
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.startswith(f"OK {good}: vip version 3: 2 tiers, best first: VIP, regular")
    assert "features used: spend_90d" in ok.stdout

    both = runner.invoke(cli, ["policy", "check", str(good), str(bad)])
    assert both.exit_code == 1
    assert f"OK {good}" in both.stdout
    assert both.stderr.splitlines() == [
        f"INVALID {bad}:",
        "  tiers[0].when.spend_90d.gte: must be a number, got 'lots'",
        "  tiers[0].when.spend_91d: unknown feature (see `tierstream policy features`)",
    ]
    missing = runner.invoke(cli, ["policy", "check", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 1 and "cannot read file" in missing.stderr


def test_policy_features_command_lists_every_feature() -> None:
    from typer.testing import CliRunner

    from app.cli.main import cli

    result = CliRunner().invoke(cli, ["policy", "features"])
    assert result.exit_code == 0
    listed = [line.split()[0] for line in result.stdout.splitlines()]
    assert listed == [*FEATURES, "attributes.<name>"]
