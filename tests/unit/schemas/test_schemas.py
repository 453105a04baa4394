"""The JSON Schema documents and the Python codec agree.

- a table of valid and invalid input documents gets the same verdict from the schema of
  its kind and from ``decode_event`` (and invalid ones the expected reason code);
- encoded outputs validate against the output schemas, and use no undocumented field;
- every output of replays over generated events validates;
- every reason code the codec can raise is documented in ``REASONS``.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

import schemas
import schemas.codec
from app.adapters.policy_files import load_policy
from app.domain.engine import advance
from app.domain.errors import InvalidEvent
from app.domain.events import EventKind
from app.domain.outputs import snapshot
from app.domain.replay import replay
from schemas import (
    REASONS,
    SCHEMA_FILES,
    decode_event,
    encode_output,
    encode_snapshot,
    load_schema,
)
from schemas.topics import OUTPUTS
from tests.kit.builders import random_events
from tests.kit.policies import VALUE_TIERS_V2


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(load_schema(name))


VALIDATORS = {name: validator(name) for name in SCHEMA_FILES}

PURCHASE: dict[str, Any] = {  # a minimal valid purchase
    "event_id": "e1",
    "customer_id": "c1",
    "type": "purchase",
    "occurred_at": "2024-05-01T10:00:00Z",
    "amount": 19.99,
}
INTERACTION: dict[str, Any] = {
    "event_id": "e2",
    "customer_id": "c1",
    "type": "visit",
    "occurred_at": 1714557600000,
}
PROFILE: dict[str, Any] = {
    "event_id": "e3",
    "customer_id": "c1",
    "type": "profile",
    "occurred_at": "2024-05-01",
    "attributes": {"industry": "retail", "employees": 40, "public": False, "region": None},
}
DROP = object()


def doc(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = dict(base)
    for k, v in changes.items():
        if v is DROP:
            out.pop(k, None)
        else:
            out[k] = v
    return out


# (kind, document, expected reason or None for valid)
CASES: list[tuple[EventKind, Any, str | None]] = [
    # valid
    ("purchase", PURCHASE, None),
    ("purchase", doc(PURCHASE, amount=0), None),
    ("purchase", doc(PURCHASE, amount=-5.5), None),  # a refund as a negative purchase
    ("purchase", doc(PURCHASE, type="refund", amount=-5.5), None),
    ("purchase", doc(PURCHASE, type="refund", amount=0), None),
    ("purchase", doc(PURCHASE, type="order", amount=10), None),
    (
        "purchase",
        doc(
            PURCHASE,
            currency="EUR",
            order_id="o-1",
            quantity=2,
            margin=0.3,
            category="books",
            channel="web",
        ),
        None,
    ),
    ("purchase", doc(PURCHASE, currency=None, quantity=None, order_id=None), None),
    ("purchase", doc(PURCHASE, unknown_extra={"nested": [1, 2]}, kind="purchase"), None),
    ("purchase", doc(PURCHASE, occurred_at=1714557600000), None),
    ("purchase", doc(PURCHASE, occurred_at=1714557600000.7), None),
    ("purchase", doc(PURCHASE, occurred_at="2024-05-01"), None),
    ("purchase", doc(PURCHASE, occurred_at="2024-05-01T10:00"), None),
    ("purchase", doc(PURCHASE, occurred_at="2024-05-01 10:00:00"), None),
    ("purchase", doc(PURCHASE, occurred_at="2024-05-01T10:00:00.123456789Z"), None),
    ("purchase", doc(PURCHASE, occurred_at="2024-05-01T10:00:00+05:30"), None),
    ("purchase", doc(PURCHASE, occurred_at="2024-05-01T10:00:00-08:00"), None),
    ("purchase", doc(PURCHASE, occurred_at=631152000000), None),  # 1990-01-01, the first instant
    ("purchase", doc(PURCHASE, occurred_at="1990-01-01T00:00:00Z"), None),
    ("purchase", doc(PURCHASE, occurred_at="2099-12-31T23:59:59.999Z"), None),
    ("purchase", doc(PURCHASE, event_id="x" * 256), None),
    ("interaction", INTERACTION, None),
    ("interaction", doc(INTERACTION, type="email_click", channel="email"), None),
    ("interaction", doc(INTERACTION, amount="not used by interactions"), None),
    ("profile", PROFILE, None),
    ("profile", doc(PROFILE, attributes={}), None),
    # invalid: structure
    ("purchase", [PURCHASE], "not_an_object"),
    ("purchase", "a string", "not_an_object"),
    ("purchase", 42, "not_an_object"),
    ("purchase", None, "not_an_object"),
    # invalid: required fields
    ("purchase", doc(PURCHASE, event_id=DROP), "missing_field"),
    ("purchase", doc(PURCHASE, customer_id=DROP), "missing_field"),
    ("purchase", doc(PURCHASE, type=DROP), "missing_field"),
    ("purchase", doc(PURCHASE, occurred_at=DROP), "missing_field"),
    ("purchase", doc(PURCHASE, occurred_at=None), "missing_field"),
    ("purchase", doc(PURCHASE, amount=DROP), "missing_field"),
    ("purchase", doc(PURCHASE, amount=None), "missing_field"),
    ("interaction", doc(INTERACTION, customer_id=None), "missing_field"),
    ("profile", doc(PROFILE, attributes=DROP), "missing_field"),
    # invalid: types
    ("purchase", doc(PURCHASE, amount="19.99"), "wrong_type"),
    ("purchase", doc(PURCHASE, amount=True), "wrong_type"),
    ("purchase", doc(PURCHASE, event_id=17), "wrong_type"),
    ("purchase", doc(PURCHASE, customer_id=["c1"]), "wrong_type"),
    ("purchase", doc(PURCHASE, type=1), "wrong_type"),
    ("purchase", doc(PURCHASE, quantity="2"), "wrong_type"),
    ("purchase", doc(PURCHASE, margin=False), "wrong_type"),
    ("purchase", doc(PURCHASE, currency=840), "wrong_type"),
    ("purchase", doc(PURCHASE, order_id=5), "wrong_type"),
    ("purchase", doc(PURCHASE, occurred_at=True), "wrong_type"),
    ("purchase", doc(PURCHASE, occurred_at={"ms": 1}), "wrong_type"),
    ("interaction", doc(INTERACTION, channel=3), "wrong_type"),
    ("profile", doc(PROFILE, attributes=[1, 2]), "wrong_type"),
    ("profile", doc(PROFILE, attributes={"tags": ["a", "b"]}), "wrong_type"),
    ("profile", doc(PROFILE, attributes={"address": {"city": "x"}}), "wrong_type"),
    # invalid: values
    ("purchase", doc(PURCHASE, event_id=""), "invalid_value"),
    ("purchase", doc(PURCHASE, customer_id=""), "invalid_value"),
    ("purchase", doc(PURCHASE, type=""), "invalid_value"),
    ("purchase", doc(PURCHASE, event_id="x" * 257), "invalid_value"),
    ("purchase", doc(PURCHASE, type="refund", amount=5.5), "invalid_value"),
    ("purchase", doc(PURCHASE, amount=1e15), None),
    ("purchase", doc(PURCHASE, amount=-1e15), None),
    ("purchase", doc(PURCHASE, amount=1.0000000000000002e15), "invalid_value"),
    ("purchase", doc(PURCHASE, amount=-(10**16)), "invalid_value"),
    # every other number has the same bound (sums of margins once overflowed the snapshot)
    ("purchase", doc(PURCHASE, margin=1e15, quantity=-1e15), None),
    ("purchase", doc(PURCHASE, margin=-(10**15), quantity=10**15), None),
    ("purchase", doc(PURCHASE, margin=1e308), "invalid_value"),
    ("purchase", doc(PURCHASE, margin=-1.0000000000000002e15), "invalid_value"),
    ("purchase", doc(PURCHASE, quantity=10**16), "invalid_value"),
    ("purchase", doc(PURCHASE, quantity=2**64 - 1), "invalid_value"),
    ("purchase", doc(PURCHASE, quantity=-1e300), "invalid_value"),
    ("profile", doc(PROFILE, attributes={"employees": 10**15, "x": -1e15, "y": 0.5}), None),
    ("profile", doc(PROFILE, attributes={"employees": 10**15 + 1}), "invalid_value"),
    ("profile", doc(PROFILE, attributes={"revenue": 1e308}), "invalid_value"),
    ("profile", doc(PROFILE, attributes={"code": -(2**63)}), "invalid_value"),
    ("profile", doc(PROFILE, attributes={"code": "12345678901234567890"}), None),
    # invalid: timestamps
    ("purchase", doc(PURCHASE, occurred_at="yesterday"), "invalid_timestamp"),
    (
        "purchase",
        doc(PURCHASE, occurred_at="2024-05-01T10:00:00.123"[:-4] + "Q"),
        "invalid_timestamp",
    ),
    ("purchase", doc(PURCHASE, occurred_at="2024-13-01"), "invalid_timestamp"),
    ("purchase", doc(PURCHASE, occurred_at="2024-05-01T24:00:00Z"), "invalid_timestamp"),
    ("purchase", doc(PURCHASE, occurred_at="2024-05-01T10:00:00z"), "invalid_timestamp"),
    ("purchase", doc(PURCHASE, occurred_at="2024-W18-3"), "invalid_timestamp"),
    ("purchase", doc(PURCHASE, occurred_at="20240501T100000Z"), "invalid_timestamp"),
    ("purchase", doc(PURCHASE, occurred_at=" 2024-05-01"), "invalid_timestamp"),
    ("purchase", doc(PURCHASE, occurred_at="2024-05-01T10:00:00+0530"), "invalid_timestamp"),
    ("purchase", doc(PURCHASE, occurred_at="2024-05-01T10Z"), "invalid_timestamp"),
    ("purchase", doc(PURCHASE, occurred_at="1989-12-31T23:59:59Z"), "timestamp_out_of_range"),
    ("purchase", doc(PURCHASE, occurred_at="2100-01-01"), "timestamp_out_of_range"),
    ("purchase", doc(PURCHASE, occurred_at="9999-12-31T00:00:00Z"), "timestamp_out_of_range"),
    ("purchase", doc(PURCHASE, occurred_at="0000-01-01"), "invalid_timestamp"),
    ("purchase", doc(PURCHASE, occurred_at=1714557600), "timestamp_out_of_range"),  # seconds
    ("purchase", doc(PURCHASE, occurred_at=631151999999), "timestamp_out_of_range"),
    ("purchase", doc(PURCHASE, occurred_at=4102444800000), "timestamp_out_of_range"),
    ("purchase", doc(PURCHASE, occurred_at=-1), "timestamp_out_of_range"),
]


def _decode(kind: EventKind, document: Any) -> str | None:
    try:
        decode_event(orjson.dumps(document), kind=kind)
    except InvalidEvent as exc:
        return exc.reason
    return None


@pytest.mark.parametrize(("kind", "document", "reason"), CASES)
def test_schema_and_decoder_give_the_same_verdict(
    kind: EventKind, document: Any, reason: str | None
) -> None:
    schema_ok = VALIDATORS[kind].is_valid(document)
    got = _decode(kind, document)
    assert got == reason
    assert schema_ok == (got is None), (
        f"schema says {'valid' if schema_ok else 'invalid'}, decode_event says {got or 'valid'}"
    )


def test_pattern_in_the_schemas_is_the_decoders() -> None:
    for kind in ("purchase", "interaction", "profile"):
        ts = load_schema(kind)["$defs"]["timestamp"]["oneOf"]
        assert ts[1]["pattern"] == schemas.ISO_TIMESTAMP_PATTERN
        assert ts[0]["minimum"] == schemas.codec.MIN_TIMESTAMP_MS
        assert ts[0]["exclusiveMaximum"] == schemas.codec.MAX_TIMESTAMP_MS


def test_number_bounds_in_the_schemas_are_the_decoders() -> None:
    bound = schemas.codec.MAX_NUMBER
    purchase = load_schema("purchase")
    for name in ("amount",):
        assert (
            purchase["properties"][name]["maximum"]
            == bound
            == -purchase["properties"][name]["minimum"]
        )
    for kind in ("purchase", "interaction", "profile"):
        number = load_schema(kind)["$defs"]["optional_number"]
        assert number["maximum"] == bound == -number["minimum"]
    attrs = load_schema("profile")["properties"]["attributes"]["additionalProperties"]
    assert attrs["maximum"] == bound == -attrs["minimum"]


def test_schemas_are_valid_2020_12_documents_shipped_as_package_data() -> None:
    for name, file in SCHEMA_FILES.items():
        document = load_schema(name)
        Draft202012Validator.check_schema(document)
        assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert document["$id"].endswith(file)


def test_every_reason_the_codec_raises_is_documented() -> None:
    source = inspect.getsource(schemas.codec)
    raised: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "InvalidEvent"
        ):
            first = node.args[0]
            if isinstance(first, ast.Constant):
                raised.add(first.value)
            elif isinstance(first, ast.IfExp):  # "a" if cond else "b"
                raised.update(
                    n.value for n in (first.body, first.orelse) if isinstance(n, ast.Constant)
                )
            else:
                raise AssertionError(f"reason not a literal at line {node.lineno}")
    assert raised <= set(REASONS), f"undocumented: {raised - set(REASONS)}"
    assert set(REASONS) - raised == set(), "documented but never raised"
    assert {reason for _, _, reason in CASES if reason} <= set(REASONS)
    assert all(isinstance(v, str) and v for v in REASONS.values())


def test_malformed_bytes() -> None:
    for raw in (b"{", b"\xff\xfe", b"", b'{"a": NaN}'):
        with pytest.raises(InvalidEvent) as err:
            decode_event(raw, kind="purchase")
        assert err.value.reason == "malformed_json"


# --- outputs -----------------------------------------------------------------------------
def _check_documented(instance: Any, schema: dict[str, Any], path: str = "$") -> None:
    """No field in an output that its schema does not name (schemas allow extensions for
    consumers' sake; our own outputs must not drift from the contract silently)."""
    props = schema.get("properties")
    if isinstance(instance, dict) and props is not None:
        for key, value in instance.items():
            assert key in props, f"{path}.{key} is not in the schema"
            _check_documented(value, props[key], f"{path}.{key}")


CHURN_POLICY = load_policy(
    Path(__file__).resolve().parents[3] / "examples/churn-early-warning.yaml"
)


def _outputs(seed: int) -> tuple[list[bytes], list[bytes]]:
    events = list(random_events(seed, customers=12, n=800))
    result = replay(events, VALUE_TIERS_V2)
    changes = [encode_output(o) for o in result.outputs]
    churn = replay(events, CHURN_POLICY)  # and silence to the end: warnings, clearings
    end = max(e.occurred_at for e in events) + 400 * 86_400_000
    for st in churn.states.values():
        churn.outputs.extend(advance(st, end, CHURN_POLICY))
    changes += [encode_output(o) for o in churn.outputs]
    snaps = [encode_snapshot(snapshot(s)) for s in result.states.values()]
    snaps += [encode_snapshot(snapshot(s, as_of=0)) for s in result.states.values()]
    return changes, snaps


OUTPUT_SCHEMAS = tuple(o.schema for o in OUTPUTS)


@pytest.mark.parametrize("seed", range(5))
def test_generated_outputs_validate(seed: int) -> None:
    changes, snaps = _outputs(seed)
    assert changes and snaps
    cs, cs_schema = VALIDATORS["customer-snapshot"], load_schema("customer-snapshot")
    by_type = {load_schema(n)["properties"]["type"]["const"]: n for n in OUTPUT_SCHEMAS}
    seen = set()
    for raw in changes:
        document = orjson.loads(raw)
        name = by_type[document["type"]]
        seen.add(name)
        errors = [e.message for e in VALIDATORS[name].iter_errors(document)]
        assert errors == [], errors
        _check_documented(document, load_schema(name))
    assert seen >= {"tier-change", "lifecycle-change", "churn-warning", "churn-cleared"}
    for raw in snaps:
        document = orjson.loads(raw)
        errors = [e.message for e in cs.iter_errors(document)]
        assert errors == [], errors
        _check_documented(document, cs_schema)


def test_first_tier_change_has_null_from_tier_and_infinite_features_as_null() -> None:
    events = [
        decode_event(doc(INTERACTION, event_id=f"v{i}"), kind="interaction") for i in range(2)
    ]
    out = [o for o in replay(events, VALUE_TIERS_V2).outputs if o.kind == "tier_change"]
    assert len(out) == 1
    ce = orjson.loads(encode_output(out[0]))
    assert ce["data"]["from_tier"] is None and ce["data"]["direction"] == "new"
    assert ce["time"] == "2024-05-01T10:00:00.000Z"
    assert ce["subject"] == "c1" and ce["id"] == out[0].id
    assert VALIDATORS["tier-change"].is_valid(ce)
    bad = dataclasses.replace(out[0], direction="sideways")  # type: ignore[arg-type]
    assert not VALIDATORS["tier-change"].is_valid(orjson.loads(encode_output(bad)))
