"""Every topic of :mod:`schemas.topics` is wired: its schema ships and agrees with the row,
the README topics table lists it (and nothing else), the worker's metrics label it, the
report reads it, the producer routes to it. A topic added to the table and forgotten
anywhere, or a schema or README row left behind, is a red test here."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry

from app.service.processor import INPUT_KINDS
from app.settings import Settings
from app.stream import control, metrics
from app.tools.produce import to_record
from app.tools.report import data as report
from schemas import SCHEMA_FILES, load_schema
from schemas.topics import (
    CONTROL,
    CORE_OUTPUTS,
    CUSTOMERS,
    DEAD_LETTER,
    INPUTS,
    OUTPUTS,
    WRITTEN,
    InputTopic,
    OutputTopic,
)

README = (Path(__file__).resolve().parents[2] / "README.md").read_text("utf-8")
#: The README topics table: logical topic name -> (direction, the rest of the row).
TABLE = {
    m["topic"]: (m["direction"], m["rest"])
    for m in re.finditer(
        r"^\| `tierstream\.(?P<topic>[^`]+)` \| (?P<direction>\w+) \|(?P<rest>.*)$",
        README,
        re.MULTILINE,
    )
}
POLICY = {"name": "p", "version": "1"}


@pytest.fixture(scope="module")
def worker_metrics() -> metrics.WorkerMetrics:
    return metrics.WorkerMetrics(CollectorRegistry())


def test_the_table_has_one_row_per_kind_of_the_core() -> None:
    assert [o.kind for o in OUTPUTS] == list(CORE_OUTPUTS)
    assert len({(o.topic, o.cloudevent_type) for o in OUTPUTS}) == len(OUTPUTS)


def test_every_schema_file_belongs_to_a_topic() -> None:
    shipped = {p.name for p in resources.files("schemas").iterdir() if p.name.endswith(".json")}
    assert shipped == set(SCHEMA_FILES.values())


@pytest.mark.parametrize("out", OUTPUTS, ids=lambda o: o.kind)
def test_every_output_kind_is_wired(
    out: OutputTopic, worker_metrics: metrics.WorkerMetrics
) -> None:
    assert out.schema in SCHEMA_FILES
    schema = load_schema(out.schema)
    assert schema["properties"]["type"]["const"] == out.cloudevent_type
    assert TABLE[out.topic][0] == "out"
    assert f"`{out.cloudevent_type}`" in TABLE[out.topic][1]
    assert f"`{SCHEMA_FILES[out.schema]}`" in TABLE[out.topic][1]
    assert out.topic in report.OUTPUT_TOPICS
    assert out.cloudevent_type in report.KNOWN_TYPES
    sample = worker_metrics.registry.get_sample_value(
        "tierstream_output_records_total", {"topic": out.topic}
    )
    assert sample == 0


@pytest.mark.parametrize("out", OUTPUTS, ids=lambda o: o.kind)
def test_the_data_keys_are_the_schemas(out: OutputTopic) -> None:
    """The row says what the encoder writes; the schema says what consumers may read."""
    schema = load_schema(out.schema)
    props = schema["properties"]["data"]["properties"]
    keys = [k for k, _ in out.data_fields]
    assert sorted(keys) == sorted(props)
    time_pattern = schema["properties"]["time"]["pattern"]
    for key in keys:  # the encoder writes *_at keys as the CloudEvent's time: so does the schema
        if key.endswith("_at"):
            assert props[key]["pattern"] == time_pattern, key


@pytest.mark.parametrize("out", OUTPUTS, ids=lambda o: o.kind)
def test_the_report_takes_every_output_type(out: OutputTopic) -> None:
    data = {"customer_id": "c1", "to_tier": "A", "to_stage": "new", "severity": "high"}
    event = {"time": "2024-05-01T10:00:00.000Z", "data": data | {"policy": POLICY}}
    parsed = report.parse_outputs([orjson.dumps(event | {"type": out.cloudevent_type})])
    assert parsed.skipped == 0 and parsed.policies["p v1"] == 1
    other = report.parse_outputs([orjson.dumps(event | {"type": "x.other.v1"})])
    assert other.skipped == 1 and not other.policies


def test_the_report_counts_an_output_it_has_no_view_of(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new output on the report's topics is no "not a tierstream output" line."""
    monkeypatch.setattr(report, "KNOWN_TYPES", report.KNOWN_TYPES | {"io.tierstream.new.v1"})
    event = {"type": "io.tierstream.new.v1", "time": "2024-05-01T10:00:00.000Z"}
    parsed = report.parse_outputs(
        [orjson.dumps(event | {"data": {"customer_id": "c1", "policy": POLICY}})]
    )
    assert parsed.skipped == 0 and parsed.lines == 1 and parsed.policies["p v1"] == 1


@pytest.mark.parametrize("inp", INPUTS, ids=lambda t: t.name)
def test_every_input_topic_is_wired(inp: InputTopic, worker_metrics: metrics.WorkerMetrics) -> None:
    assert inp.schema in SCHEMA_FILES
    assert TABLE[inp.name] == ("in", TABLE[inp.name][1])
    assert f"`{SCHEMA_FILES[inp.schema]}`" in TABLE[inp.name][1]
    assert INPUT_KINDS[inp.name] == inp.kind
    settings = Settings()
    record = to_record({"customer_id": "c1", "kind": inp.kind}, settings)
    assert record.topic == settings.topic(inp.name)
    sample = worker_metrics.registry.get_sample_value(
        "tierstream_events_processed_total", {"kind": inp.kind, "outcome": "applied"}
    )
    assert sample == 0


def test_customers_dead_letter_and_control_topics_are_wired(
    worker_metrics: metrics.WorkerMetrics,
) -> None:
    assert f"`{SCHEMA_FILES[CUSTOMERS.schema or '']}`" in TABLE[CUSTOMERS.name][1]
    assert CUSTOMERS.name == report.CUSTOMERS_TOPIC
    for topic in (CUSTOMERS, DEAD_LETTER):
        assert TABLE[topic.name][0] == "out"
        sample = worker_metrics.registry.get_sample_value(
            "tierstream_output_records_total", {"topic": topic.name}
        )
        assert sample == 0
    assert tuple(t.name for t in CONTROL) == control.CONTROL_TOPICS
    for topic in CONTROL:
        assert TABLE[topic.name][0] == "control"


def test_the_readme_lists_exactly_the_topics_of_the_table() -> None:
    documented = {name for name, (direction, _) in TABLE.items() if direction != "internal"}
    assert documented == {t.name for t in INPUTS} | set(WRITTEN) | {t.name for t in CONTROL}
    row = next(line for line in README.splitlines() if "`tierstream_output_records_total`" in line)
    labels = row.split("|")[3].split("logical:", 1)[1]
    assert re.findall(r"`([a-z-]+)`", labels) == list(WRITTEN)
