"""The codec in detail: timestamps, kinds, decoded fields, CloudEvents encoding."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

import schemas
import schemas.codec
import schemas.topics
from app.domain.errors import InvalidEvent
from app.domain.outputs import TierChange
from schemas import (
    decode_event,
    encode_input,
    encode_output,
    encode_snapshot,
    kind_of,
    output_to_cloudevent,
    parse_timestamp,
)
from schemas.codec import iso

T = 1_714_557_600_000  # 2024-05-01T10:00:00Z

TIMESTAMPS: list[tuple[Any, int]] = [
    (T, T),
    (float(T), T),
    (T + 0.999, T),  # fractions of a ms are floored
    ("2024-05-01T10:00:00Z", T),
    ("2024-05-01T10:00:00", T),  # no zone: UTC
    ("2024-05-01 10:00:00", T),
    ("2024-05-01T10:00Z", T),
    ("2024-05-01", T - 10 * 3_600_000),
    ("2024-05-01T12:00:00+02:00", T),
    ("2024-05-01T05:30:00-04:30", T),
    ("2024-05-01T10:00:00.1Z", T + 100),
    ("2024-05-01T10:00:00.12Z", T + 120),
    ("2024-05-01T10:00:00.999999999Z", T + 999),
    # float artefacts of timestamp()*1000 used to lose a millisecond on these:
    ("2024-05-01T10:00:00.123Z", T + 123),
    ("2021-03-14T01:59:26.535Z", 1_615_687_166_535),
    ("2024-02-29T23:59:59.999Z", 1_709_251_199_999),
]


@pytest.mark.parametrize(("value", "ms"), TIMESTAMPS)
def test_parse_timestamp(value: Any, ms: int) -> None:
    assert parse_timestamp(value) == ms


def test_parse_timestamp_is_exact_for_every_millisecond_of_a_second() -> None:
    base = datetime(2023, 7, 1, 12, 34, 56, tzinfo=UTC)
    for k in range(1000):
        text = (base + timedelta(milliseconds=k)).isoformat(timespec="milliseconds")
        assert parse_timestamp(text) == 1_688_214_896_000 + k, text


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("2023-02-29", "invalid_timestamp"),  # not a leap year
        ("2024-04-31T00:00:00Z", "invalid_timestamp"),
        (float("nan"), "invalid_timestamp"),
        (float("inf"), "invalid_timestamp"),
        ("1990-01-01T00:30:00+01:00", "timestamp_out_of_range"),  # 1989 in UTC
        (None, "missing_field"),
        (b"2024", "wrong_type"),
    ],
)
def test_parse_timestamp_rejects(value: Any, reason: str) -> None:
    with pytest.raises(InvalidEvent) as err:
        parse_timestamp(value)
    assert err.value.reason == reason
    assert err.value.reason in schemas.REASONS


@pytest.mark.parametrize(
    ("document", "kind"),
    [
        ({"type": "purchase"}, "purchase"),
        ({"type": "order"}, "purchase"),
        ({"type": "refund"}, "purchase"),
        ({"type": "profile"}, "profile"),
        ({"type": "visit"}, "interaction"),
        ({"type": "email_open", "kind": "purchase"}, "purchase"),
        ({"type": "purchase", "kind": "bogus"}, "purchase"),
        ({}, "interaction"),
    ],
)
def test_kind_of(document: dict[str, Any], kind: str) -> None:
    assert kind_of(document) == kind


def test_decoded_purchase_keeps_contract_fields_and_drops_extras() -> None:
    raw = {
        "event_id": "e1",
        "customer_id": "c1",
        "type": "order",
        "occurred_at": "2024-05-01T10:00:00Z",
        "amount": 20,
        "currency": "USD",
        "order_id": "o1",
        "quantity": 3,
        "margin": 4.5,
        "category": "books",
        "channel": "web",
        "secret_extra": "kept out of state",
    }
    e = decode_event(orjson.dumps(raw))
    assert (e.kind, e.type, e.occurred_at, e.amount) == ("purchase", "order", T, 20.0)
    assert isinstance(e.amount, float) and e.quantity == 3.0 and e.margin == 4.5
    assert (e.currency, e.order_id, e.category, e.channel) == ("USD", "o1", "books", "web")
    assert "secret_extra" not in repr(e)


def test_topic_kind_overrides_inference_and_max_ts() -> None:
    raw = {"event_id": "e", "customer_id": "c", "type": "purchase", "occurred_at": T}
    assert decode_event(raw, kind="interaction").kind == "interaction"
    assert decode_event(raw, kind="interaction", max_ts=T).occurred_at == T
    with pytest.raises(InvalidEvent) as err:
        decode_event(raw, kind="interaction", max_ts=T - 1)
    assert err.value.reason == "timestamp_in_future"


def test_decode_accepts_str_bytes_and_mappings_alike() -> None:
    raw = {"event_id": "e", "customer_id": "c", "type": "visit", "occurred_at": T}
    text = orjson.dumps(raw).decode()
    assert decode_event(raw) == decode_event(text) == decode_event(encode_input(raw))


def test_non_finite_numbers_from_python_mappings() -> None:
    raw = {"event_id": "e", "customer_id": "c", "type": "purchase", "occurred_at": T}
    with pytest.raises(InvalidEvent) as err:
        decode_event({**raw, "amount": float("inf")})
    assert err.value.reason == "invalid_value"
    with pytest.raises(InvalidEvent) as err:
        decode_event({**raw, "type": "profile", "attributes": {"x": float("nan")}})
    assert err.value.reason == "invalid_value"


# Integers beyond the float range reach the decoder from Python mappings and CSV cells
# (``int(text)``); JSON bytes cannot carry them (orjson reads an integer beyond 64 bits as a
# float, and a float literal beyond the range is malformed JSON).
HUGE = 10**400


def _short_id(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 24 else f"{text[:8]}...({len(text)} chars)"


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("amount", HUGE, "invalid_value"),
        ("amount", -HUGE, "invalid_value"),
        ("margin", HUGE, "invalid_value"),
        ("margin", 1e308, "invalid_value"),
        ("margin", float("nan"), "invalid_value"),
        ("margin", float("-inf"), "invalid_value"),
        ("quantity", 10**30, "invalid_value"),
        ("quantity", HUGE, "invalid_value"),
        ("occurred_at", 10**30, "timestamp_out_of_range"),
        ("occurred_at", -HUGE, "timestamp_out_of_range"),
        ("occurred_at", 1e300, "timestamp_out_of_range"),
    ],
    ids=_short_id,
)
def test_numbers_beyond_the_bound_are_rejected_never_raised(
    field: str, value: Any, reason: str
) -> None:
    raw = {"event_id": "e", "customer_id": "c", "type": "purchase", "occurred_at": T, "amount": 1}
    with pytest.raises(InvalidEvent) as err:
        decode_event({**raw, field: value}, kind="purchase")
    assert err.value.reason == reason
    assert field in err.value.detail and len(err.value.detail) < 200  # no 400-digit echo


@pytest.mark.parametrize(
    "value", [HUGE, -(10**20), 1e16, float("inf"), float("nan")], ids=_short_id
)
def test_numeric_attributes_are_bounded(value: Any) -> None:
    raw = {"event_id": "e", "customer_id": "c", "type": "profile", "occurred_at": T}
    with pytest.raises(InvalidEvent) as err:
        decode_event({**raw, "attributes": {"ok": 1e15, "size": value}}, kind="profile")
    assert err.value.reason == "invalid_value"
    assert "attributes.size" in err.value.detail


def test_csv_cell_with_a_huge_integer_is_an_invalid_value() -> None:
    from app.adapters.files import parse_cell

    cell = parse_cell("quantity", "1" + "0" * 400)
    assert cell == HUGE  # the CSV reader keeps it an exact int
    raw = {"event_id": "e", "customer_id": "c", "type": "purchase", "occurred_at": T}
    with pytest.raises(InvalidEvent) as err:
        decode_event({**raw, "amount": 1, "quantity": cell}, kind="purchase")
    assert err.value.reason == "invalid_value"


@pytest.mark.parametrize(
    ("number", "reason"),
    [
        (b"NaN", "malformed_json"),
        (b"Infinity", "malformed_json"),
        (b"-Infinity", "malformed_json"),
        (b"1e400", "malformed_json"),  # orjson: "number is infinity when parsed as double"
        (b"-1e309", "malformed_json"),
        (b"1" + b"0" * 30, "invalid_value"),  # beyond 64 bits: read as the float 1e30
        (b"18446744073709551615", "invalid_value"),  # 2**64 - 1, an int
        (b"1e308", "invalid_value"),
        (b"1000000000000000", None),  # 1e15 itself is allowed
    ],
    ids=_short_id,
)
def test_numbers_in_json_bytes(number: bytes, reason: str | None) -> None:
    head = b'{"event_id": "e", "customer_id": "c", "type": "purchase", "occurred_at": 1714557600000'
    for field in (b"amount", b"margin", b"quantity"):
        amount = b"" if field == b"amount" else b', "amount": 1'
        raw = head + amount + b', "' + field + b'": ' + number + b"}"
        if reason is None:
            assert decode_event(raw, kind="purchase") is not None
            continue
        with pytest.raises(InvalidEvent) as err:
            decode_event(raw, kind="purchase")
        assert err.value.reason == reason, raw


def test_timestamps_in_json_bytes_beyond_64_bits() -> None:
    raw = b'{"event_id": "e", "customer_id": "c", "type": "visit", "occurred_at": 1' + b"0" * 30
    with pytest.raises(InvalidEvent) as err:
        decode_event(raw + b"}", kind="interaction")
    assert err.value.reason == "timestamp_out_of_range"


def _change(**kw: Any) -> TierChange:
    base: dict[str, Any] = {
        "id": "4a2f0e1c-0000-5000-8000-000000000000",
        "customer_id": "c1",
        "at": T + 7,
        "from_tier": "B",
        "to_tier": "A",
        "direction": "up",
        "reasons": ("spend_365d 3500 >= 3000",),
        "features": {"spend_365d": 3500.0, "days_since_last_purchase": float("inf")},
        "policy_name": "value-tiers",
        "policy_version": "1",
        "service_level": {"queue_priority": 1},
        "cause": "e9",
    }
    base.update(kw)
    return TierChange(**base)


def test_cloudevent_form() -> None:
    ce = output_to_cloudevent(_change())
    assert ce["specversion"] == "1.0" and ce["type"] == schemas.EVENT_TYPES["tier_change"]
    assert ce["time"] == "2024-05-01T10:00:00.007Z"
    assert ce["subject"] == "c1" and ce["datacontenttype"] == "application/json"
    assert ce["data"]["features"] == {"spend_365d": 3500.0, "days_since_last_purchase": None}
    assert ce["data"]["policy"] == {"name": "value-tiers", "version": "1"}
    assert orjson.loads(encode_output(_change())) == ce


@pytest.mark.parametrize("ms", [631_152_000_000, T, T + 1, T + 999, T + 1000, 4_102_444_799_999])
def test_iso_is_exact(ms: int) -> None:
    text = iso(ms)
    assert text.endswith("Z") and len(text) == 24
    assert parse_timestamp(text) == ms


def test_encode_snapshot_is_plain_json() -> None:
    snap = {"customer_id": "c", "rolling": {"spend_30d": 0.1 + 0.2}}
    assert orjson.loads(encode_snapshot(snap)) == snap


def _profile(attributes: dict[str, object]) -> dict[str, object]:
    return {
        "event_id": "f1",
        "customer_id": "c1",
        "type": "profile",
        "occurred_at": "2024-01-01",
        "attributes": attributes,
    }


@pytest.mark.parametrize(
    ("attributes", "detail"),
    [
        ({f"a{i}": i for i in range(65)}, "65 attributes: at most 64"),
        ({"n" * 65: 1}, "longer than 64 characters"),
        ({"industry": "x" * 1025}, "attributes.industry is longer than 1024"),
    ],
    ids=["too many", "long name", "long text"],
)
def test_profile_attributes_are_bounded(attributes: dict[str, object], detail: str) -> None:
    """A profile's attributes stay in the customer's state: a 1 MB attribute would make
    the state too large to write, so it is rejected when decoded."""
    with pytest.raises(InvalidEvent) as caught:
        decode_event(_profile(attributes), kind="profile")
    assert caught.value.reason == "invalid_value" and detail in caught.value.detail


def test_profile_attributes_at_the_bounds_are_accepted() -> None:
    attributes: dict[str, object] = {f"a{i:02d}" + "n" * 61: "x" * 1024 for i in range(64)}
    event = decode_event(_profile(attributes), kind="profile")
    assert event.attributes == attributes
