"""The README tells the truth: every setting, command, reason code, feature and schema it
should name is named there (a renamed one breaks this test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.cli.main import cli
from app.domain.features import FEATURES
from app.settings import Settings
from schemas.codec import REASONS

README = (Path(__file__).resolve().parents[2] / "README.md").read_text("utf-8")
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def test_readme_starts_with_the_two_commands() -> None:
    first_block = README.split("```sh", 1)[1].split("```", 1)[0]
    lines = [ln.split("#")[0].strip() for ln in first_block.strip().splitlines()]
    assert lines == ["make demo", "make test"]


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_documented(name: str) -> None:
    assert f"`TIERSTREAM_{name.upper()}`" in README


def _commands() -> list[str]:
    names = [c.name or "" for c in cli.registered_commands]
    for group in cli.registered_groups:
        assert group.typer_instance is not None
        names += [f"{group.name} {c.name}" for c in group.typer_instance.registered_commands]
    return sorted(names)


@pytest.mark.parametrize("command", _commands())
def test_every_command_is_documented(command: str) -> None:
    assert f"`tierstream {command}" in README


@pytest.mark.parametrize("reason", sorted([*REASONS, "key_mismatch", "processing_error"]))
def test_every_dead_letter_reason_is_documented(reason: str) -> None:
    assert f"| `{reason}` |" in README


@pytest.mark.parametrize("feature", sorted(FEATURES))
def test_every_feature_is_documented(feature: str) -> None:
    assert f"`{feature}`" in README


@pytest.mark.parametrize("schema", sorted(p.name for p in SCHEMAS.glob("*.schema.json")))
def test_every_schema_is_documented(schema: str) -> None:
    assert f"`{schema}`" in README


def _metrics() -> list[str]:
    from app.stream.metrics import METRICS

    return sorted(METRICS)


@pytest.mark.parametrize("metric", _metrics())
def test_every_metric_is_documented(metric: str) -> None:
    assert f"| `{metric}` |" in README


@pytest.mark.parametrize(
    "endpoint",
    ["GET /metrics", "GET /healthz", "GET /readyz", "GET /customers/{customer_id}", "GET /tiers"],
)
def test_every_endpoint_is_documented(endpoint: str) -> None:
    assert f"`{endpoint}`" in README
