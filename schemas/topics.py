"""The one table of topics: every topic tierstream reads or writes, by logical name (the
settings add the prefix: ``purchases`` is ``tierstream.purchases`` by default), with what
it carries. Every other list of topics, input kinds, output kinds, CloudEvents types and
schema files derives from this table (codec, processor, producer, worker, metrics,
report, demo, control plane), and the table checks itself against the core at import: the
input kinds are :data:`app.domain.events.EventKind`, the output kinds are those of
:data:`app.domain.outputs.Output`. ``tests/contracts/test_topics.py`` holds the rest to it
(schema files, README topics table, report, metrics).

A new output: its class in :mod:`app.domain.outputs`, its row in :data:`OUTPUTS` (topic,
schema, CloudEvents type and the keys of its ``data``), its ``*.schema.json``.

>>> [t.name for t in INPUTS]
['purchases', 'interactions', 'profiles']
>>> OUTPUT_BY_KIND["churn_warning"].topic, OUTPUT_BY_KIND["churn_cleared"].topic
('churn-warnings', 'churn-warnings')
>>> WRITTEN[-2:], [t.name for t in CONTROL]
(('customers', 'dead-letter'), ['policy', 'population-sketches', 'cutoffs'])
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal, get_args

from app.domain.events import EventKind
from app.domain.outputs import Output


@dataclass(frozen=True, slots=True)
class InputTopic:
    """A topic the worker consumes: input events of one kind."""

    #: logical topic name (without the prefix)
    name: str
    #: the event kind its records carry (:data:`app.domain.events.EventKind`)
    kind: EventKind
    #: the JSON Schema of its records (``schemas/<schema>.schema.json``)
    schema: str


#: A key of an output's CloudEvent ``data``: the attribute of the same name, or
#: ``(key, attribute)`` when the wire name differs.
DataKey = str | tuple[str, str]


@dataclass(frozen=True, slots=True)
class OutputTopic:
    """Where one kind of output of the core goes, and how it looks there: a CloudEvent
    (structured JSON) of type ``cloudevent_type`` whose ``data`` holds ``data``'s keys in
    that order (:func:`schemas.codec.output_to_cloudevent` says how each is encoded)."""

    #: the output's ``kind`` (:data:`app.domain.outputs.Output`)
    kind: str
    #: logical topic name (without the prefix); several kinds may share one
    topic: str
    #: the JSON Schema of its records (``schemas/<schema>.schema.json``)
    schema: str
    #: CloudEvents ``type``: versioned, never renamed in place
    cloudevent_type: str
    #: the keys of ``data``, in wire order
    data: tuple[DataKey, ...]

    @property
    def data_fields(self) -> tuple[tuple[str, str], ...]:
        """The keys of ``data``, each with the output's attribute it is read from."""
        return tuple((k, k) if isinstance(k, str) else k for k in self.data)


@dataclass(frozen=True, slots=True)
class Topic:
    """Any other topic the worker or a command writes: the customer snapshots, the dead
    letters and the control plane's topics (:mod:`app.stream.control`)."""

    #: logical topic name (without the prefix)
    name: str
    #: ``out``: written by the worker; ``control``: one partition, shared by every worker
    role: Literal["out", "control"]
    #: the JSON Schema of its records, if it has one
    schema: str | None
    #: a compacted topic (the latest record per key is what counts)
    compacted: bool


INPUTS = (
    InputTopic("purchases", "purchase", "purchase"),
    InputTopic("interactions", "interaction", "interaction"),
    InputTopic("profiles", "profile", "profile"),
)

OUTPUTS = (
    OutputTopic(
        "tier_change",
        "tier-changes",
        "tier-change",
        "io.tierstream.tier.changed.v1",
        (
            "customer_id",
            "from_tier",
            "to_tier",
            "direction",
            "score",
            "reasons",
            "features",
            "policy",
            "service_level",
            "stage",
            "cause",
            "trigger",
        ),
    ),
    OutputTopic(
        "lifecycle_change",
        "lifecycle-changes",
        "lifecycle-change",
        "io.tierstream.lifecycle.changed.v1",
        ("customer_id", "from_stage", "to_stage", "reason", "tier", "policy", "cause", "trigger"),
    ),
    OutputTopic(
        "upgrade_candidate",
        "upgrade-candidates",
        "upgrade-candidate",
        "io.tierstream.upgrade.candidate.v1",
        ("customer_id", "tier", "next_tier", "reasons", "features", "policy", "cause", "trigger"),
    ),
    OutputTopic(
        "churn_warning",
        "churn-warnings",
        "churn-warning",
        "io.tierstream.churn.warning.v1",
        (
            "customer_id",
            "severity",
            "previous_severity",
            "episode_started_at",
            "tier",
            "stage",
            "p_alive",
            "days_silent",
            "usual_gap_days",
            "usual_gap_basis",
            "falling",
            "expected_purchases",
            "value_at_risk",
            "horizon_days",
            ("suggested_action", "action"),
            "reasons",
            "features",
            "policy",
            "cause",
            "trigger",
        ),
    ),
    OutputTopic(
        "churn_cleared",
        "churn-warnings",
        "churn-cleared",
        "io.tierstream.churn.cleared.v1",
        (
            "customer_id",
            "severity",
            "episode_started_at",
            "episode_days",
            "tier",
            "stage",
            "policy",
            "cause",
            "trigger",
        ),
    ),
)

#: The customer snapshots (:func:`app.domain.outputs.snapshot`), the latest per customer.
CUSTOMERS = Topic("customers", "out", "customer-snapshot", compacted=True)
#: Records the worker could not process: the original bytes, with error headers.
DEAD_LETTER = Topic("dead-letter", "out", None, compacted=False)
#: The control plane (:mod:`app.stream.control`): the policy in force, the population
#: sketches of each table partition, the global cut-offs.
POLICY = Topic("policy", "control", None, compacted=True)
SKETCHES = Topic("population-sketches", "control", None, compacted=True)
CUTOFFS = Topic("cutoffs", "control", None, compacted=True)
CONTROL = (POLICY, SKETCHES, CUTOFFS)

# -- derived ------------------------------------------------------------------------------

#: Output kind -> its row.
OUTPUT_BY_KIND = {o.kind: o for o in OUTPUTS}
#: The output event topics, each once, in table order.
EVENT_TOPICS = tuple(dict.fromkeys(o.topic for o in OUTPUTS))
#: Every topic the worker writes (the ``topic`` label of
#: ``tierstream_output_records_total``).
WRITTEN = (*EVENT_TOPICS, CUSTOMERS.name, DEAD_LETTER.name)
#: Every topic, by logical name.
ALL = (*(t.name for t in INPUTS), *WRITTEN, *(t.name for t in CONTROL))
#: Contract name -> JSON Schema file (package data beside this module).
SCHEMA_FILES = {
    name: f"{name}.schema.json"
    for name in (
        *(t.schema for t in INPUTS),
        *(o.schema for o in OUTPUTS),
        *(t.schema for t in (CUSTOMERS, DEAD_LETTER, *CONTROL) if t.schema is not None),
    )
}


def _kind_of(cls: type) -> str:
    return next(str(f.default) for f in fields(cls) if f.name == "kind")


#: The core's output classes (:data:`app.domain.outputs.Output`) by their ``kind``.
CORE_OUTPUTS: dict[str, type] = {_kind_of(c): c for c in get_args(Output)}

assert {t.kind for t in INPUTS} == set(get_args(EventKind)), "INPUTS: one row per EventKind"
assert len(OUTPUT_BY_KIND) == len(OUTPUTS) and OUTPUT_BY_KIND.keys() == CORE_OUTPUTS.keys(), (
    "OUTPUTS: one row per kind of app.domain.outputs.Output; without a row: "
    f"{sorted(CORE_OUTPUTS.keys() - OUTPUT_BY_KIND.keys())}, without a class: "
    f"{sorted(OUTPUT_BY_KIND.keys() - CORE_OUTPUTS.keys())}"
)
assert len(set(ALL)) == len(ALL), "a topic name is used twice"
