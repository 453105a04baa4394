"""Decode input events (strict on required fields and types, tolerant of unknown extra
fields) and encode output events as CloudEvents 1.0 structured JSON.

Every rejection raises :class:`app.domain.errors.InvalidEvent` with a short ``reason``
code (used as the dead-letter header and metric label) and a readable ``detail``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import orjson

from app.domain.errors import InvalidEvent
from app.domain.events import AttributeValue, Event, EventKind
from app.domain.outputs import Output
from schemas.topics import CORE_OUTPUTS, INPUTS, OUTPUTS

#: Event times before this are rejected as absurd (1990-01-01T00:00:00Z).
MIN_TIMESTAMP_MS = 631_152_000_000
#: ... and after this (2100-01-01T00:00:00Z); the worker also rejects far-future times.
MAX_TIMESTAMP_MS = 4_102_444_800_000
#: Longest accepted ``event_id`` / ``customer_id`` (characters): ids live in state.
MAX_ID_LENGTH = 256
#: Largest accepted absolute value of every number an event carries: ``amount``,
#: ``margin``, ``quantity`` and numeric profile ``attributes`` (integers too). It keeps
#: every aggregate finite: a customer's sums (windows, lifetime totals, RFM, value at risk)
#: add at most one such value per event, so even 10**12 events at the bound stay below
#: 1e27, far from the float limit (1.8e308) that ``math.fsum`` and JSON (no infinity)
#: need. Below 2**53 (9.007e15), so an integral value is exact as a float as well.
MAX_NUMBER = 1e15
#: A profile event carries at most this many attributes, with names of at most
#: :data:`MAX_ATTRIBUTE_NAME` characters and text values of at most
#: :data:`MAX_ATTRIBUTE_TEXT` (they are kept in the customer's state, which must stay far
#: below the broker's record size limit).
MAX_ATTRIBUTES = 64
MAX_ATTRIBUTE_NAME = 64
MAX_ATTRIBUTE_TEXT = 1024
#: The bound of ``amount`` (kept as a name: it is older than :data:`MAX_NUMBER`).
MAX_AMOUNT = MAX_NUMBER

#: CloudEvents ``type`` of each output kind (:data:`schemas.topics.OUTPUTS`).
EVENT_TYPES = {o.kind: o.cloudevent_type for o in OUTPUTS}
#: Output kind -> topic (without the prefix) (:data:`schemas.topics.OUTPUTS`).
OUTPUT_TOPICS = {o.kind: o.topic for o in OUTPUTS}
CLOUDEVENTS_SOURCE = "tierstream"

#: Every ``reason`` code :func:`decode_event` can raise (dead-letter header and metric
#: label), with what it means. A test checks the codec raises no other code.
REASONS: dict[str, str] = {
    "malformed_json": "the bytes are not valid JSON (or not UTF-8)",
    "not_an_object": "the JSON document is not an object",
    "missing_field": "a required field is absent or null",
    "wrong_type": "a field has the wrong JSON type (e.g. amount is a string)",
    "invalid_value": (
        "a field has the right type but a forbidden value: an empty or over-long id, a "
        "non-finite number, a number (amount, margin, quantity, a numeric attribute) beyond "
        "+-1e15, a refund with a positive amount"
    ),
    "invalid_timestamp": (
        "occurred_at is a string but not one of the accepted ISO-8601 forms, or not a "
        "real calendar date/time"
    ),
    "timestamp_out_of_range": (
        "occurred_at is before 1990-01-01 or from 2100-01-01 on (epoch seconds sent as ms?)"
    ),
    "timestamp_in_future": "occurred_at is later than the caller's max_ts (wall clock + skew)",
}

#: Accepted ISO-8601 forms of ``occurred_at``: a date (midnight UTC), or date and time
#: with ``T`` or a space, optional seconds and fraction (up to 9 digits, truncated to ms),
#: optional ``Z`` or ``+hh:mm``/``-hh:mm`` offset (none means UTC). The decoder parses any
#: 4-digit year and reports years outside the range as ``timestamp_out_of_range``.
_ISO_FORM = (
    "^{year}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    "([T ]([01][0-9]|2[0-3]):([0-5][0-9])(:([0-5][0-9])(\\.([0-9]{{1,9}}))?)?"
    "(Z|([+-])([01][0-9]|2[0-3]):([0-5][0-9]))?)?$"
)
#: The ``pattern`` of ``occurred_at`` strings in the JSON Schemas: the same forms, years
#: 1990..2099 only (a schema cannot compare dates, so the range is in the pattern).
ISO_TIMESTAMP_PATTERN = _ISO_FORM.format(year="(199[0-9]|20[0-9]{2})")
_ISO = re.compile(_ISO_FORM.format(year="([0-9]{4})"))
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)

_PURCHASE_TYPES = frozenset({"purchase", "refund", "order"})
#: The input kinds (:data:`schemas.topics.INPUTS`), each its own value (typed).
_KINDS: dict[str, EventKind] = {t.kind: t.kind for t in INPUTS}


def kind_of(doc: Mapping[str, Any]) -> EventKind:
    """The input kind of an event read from a file: an explicit ``kind`` field, else by
    ``type`` (purchase/refund/order -> purchase, profile -> profile, else interaction).

    >>> kind_of({"type": "refund"}), kind_of({"type": "visit"}), kind_of({"kind": "profile"})
    ('purchase', 'interaction', 'profile')
    """
    kind = doc.get("kind")
    if isinstance(kind, str) and kind in _KINDS:
        return _KINDS[kind]
    typ = doc.get("type")
    if typ in _PURCHASE_TYPES:
        return "purchase"
    if typ == "profile":
        return "profile"
    return "interaction"


def parse_timestamp(value: Any, field: str = "occurred_at") -> int:
    """ISO-8601 (see :data:`ISO_TIMESTAMP_PATTERN`; no zone means UTC) or epoch
    milliseconds (any finite number; a fraction is floored) -> epoch ms, exactly.

    >>> parse_timestamp("2024-01-01T00:00:00.123Z"), parse_timestamp(1704067200123)
    (1704067200123, 1704067200123)
    >>> parse_timestamp("2024-01-01T01:00:00+01:00")
    1704067200000
    """
    if isinstance(value, bool):
        raise InvalidEvent("wrong_type", f"{field} must be ISO-8601 or epoch ms, got a boolean")
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidEvent("invalid_timestamp", f"{field} is not finite")
        ms = math.floor(value)
    elif isinstance(value, str):
        ms = _parse_iso(value, field)
    else:
        raise InvalidEvent(
            "wrong_type" if value is not None else "missing_field",
            f"{field} must be ISO-8601 or epoch ms, got {type(value).__name__}",
        )
    if not MIN_TIMESTAMP_MS <= ms < MAX_TIMESTAMP_MS:
        raise InvalidEvent(
            "timestamp_out_of_range",
            f"{field}={_short(value)} is outside 1990-01-01..2100-01-01 "
            "(epoch seconds instead of ms?)",
        )
    return ms


def _parse_iso(value: str, field: str) -> int:
    m = _ISO.fullmatch(value)
    if m is None:
        raise InvalidEvent(
            "invalid_timestamp",
            f"{field} {value[:40]!r} is not ISO-8601 (YYYY-MM-DD[THH:MM[:SS[.fff]]][Z|+hh:mm])",
        )
    try:  # the form is checked above; fromisoformat checks the calendar, fast
        dt = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidEvent("invalid_timestamp", f"{field} {value!r}: {exc}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // _ONE_MS  # integer arithmetic: exact, fractions floored


def _require_str(doc: Mapping[str, Any], name: str, max_length: int | None = None) -> str:
    value = doc.get(name)
    if value is None:
        raise InvalidEvent("missing_field", f"required field {name!r} is missing")
    if not isinstance(value, str):
        raise InvalidEvent("wrong_type", f"{name} must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidEvent("invalid_value", f"{name} must not be empty")
    if max_length is not None and len(value) > max_length:
        raise InvalidEvent("invalid_value", f"{name} is longer than {max_length} characters")
    return value


def _short(value: Any) -> str:
    """``repr`` of a value for an error detail, cut to 40 characters (a 400-digit integer
    from a CSV cell must not fill the dead-letter header)."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _check_number(value: int | float, name: str) -> None:
    """Reject a number beyond +-:data:`MAX_NUMBER` (non-finite ones too). The comparison
    comes first: ``math.isfinite`` and ``float`` raise OverflowError on an integer beyond
    the float range (a Python mapping or a CSV cell can hold one; JSON bytes cannot, orjson
    reads integers beyond 64 bits as floats)."""
    if -MAX_NUMBER <= value <= MAX_NUMBER:  # False for NaN
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidEvent("invalid_value", f"{name} must be a finite number")
    raise InvalidEvent("invalid_value", f"{name} {_short(value)} is beyond +-{MAX_NUMBER:g}")


def _number(doc: Mapping[str, Any], name: str, required: bool) -> float | None:
    value = doc.get(name)
    if value is None:
        if required:
            raise InvalidEvent("missing_field", f"required field {name!r} is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidEvent("wrong_type", f"{name} must be a number, got {type(value).__name__}")
    _check_number(value, name)
    return float(value)


def _opt_str(doc: Mapping[str, Any], name: str) -> str | None:
    value = doc.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidEvent("wrong_type", f"{name} must be a string, got {type(value).__name__}")
    return value


def decode_event(
    raw: bytes | str | Mapping[str, Any], kind: EventKind | None = None, max_ts: int | None = None
) -> Event:
    """Decode one input event. ``kind`` comes from the topic (``None``: infer, see
    :func:`kind_of`); ``max_ts`` rejects events dated after it (wall clock + skew).

    Accepts exactly what ``schemas/<kind>.schema.json`` accepts (a test holds both to the
    same table of documents); unknown extra fields are ignored. Raises
    :class:`InvalidEvent` with a ``reason`` from :data:`REASONS`.

    >>> e = decode_event(b'{"event_id": "e1", "customer_id": "c1", "type": "purchase",'
    ...                  b' "occurred_at": "2024-05-01T10:00:00Z", "amount": 19.5, "x": 1}')
    >>> e.kind, e.amount, e.occurred_at
    ('purchase', 19.5, 1714557600000)
    >>> decode_event({"event_id": "e1", "customer_id": "c1", "type": "visit"})
    Traceback (most recent call last):
    ...
    app.domain.errors.InvalidEvent: missing_field: required field 'occurred_at' is missing
    """
    if isinstance(raw, bytes | str):
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidEvent("malformed_json", f"not valid JSON: {exc}") from None
    else:
        doc = raw
    if not isinstance(doc, dict):
        raise InvalidEvent(
            "not_an_object", f"an event must be a JSON object, got {type(doc).__name__}"
        )
    kind = kind or kind_of(doc)
    event_id = _require_str(doc, "event_id", MAX_ID_LENGTH)
    customer_id = _require_str(doc, "customer_id", MAX_ID_LENGTH)
    typ = _require_str(doc, "type")
    if doc.get("occurred_at") is None:
        raise InvalidEvent("missing_field", "required field 'occurred_at' is missing")
    ts = parse_timestamp(doc["occurred_at"])
    if max_ts is not None and ts > max_ts:
        raise InvalidEvent(
            "timestamp_in_future", f"occurred_at={doc['occurred_at']!r} is too far in the future"
        )
    if kind == "purchase":
        amount = _number(doc, "amount", required=True) or 0.0
        if typ == "refund" and amount > 0:
            raise InvalidEvent(
                "invalid_value", "a refund's amount must be <= 0 (refunds are negative purchases)"
            )
        return Event(
            event_id,
            customer_id,
            "purchase",
            typ,
            ts,
            amount,
            quantity=_number(doc, "quantity", required=False),
            margin=_number(doc, "margin", required=False),
            currency=_opt_str(doc, "currency"),
            order_id=_opt_str(doc, "order_id"),
            category=_opt_str(doc, "category"),
            channel=_opt_str(doc, "channel"),
        )
    if kind == "profile":
        return Event(
            event_id, customer_id, "profile", typ, ts, attributes=_attributes(doc.get("attributes"))
        )
    return Event(event_id, customer_id, "interaction", typ, ts, channel=_opt_str(doc, "channel"))


def _attributes(value: Any) -> dict[str, AttributeValue]:
    if value is None:
        raise InvalidEvent("missing_field", "required field 'attributes' is missing")
    if not isinstance(value, dict):
        raise InvalidEvent("wrong_type", "attributes must be an object")
    if len(value) > MAX_ATTRIBUTES:
        raise InvalidEvent(
            "invalid_value", f"{len(value)} attributes: at most {MAX_ATTRIBUTES} per event"
        )
    for k, v in value.items():
        if len(k) > MAX_ATTRIBUTE_NAME:
            raise InvalidEvent(
                "invalid_value",
                f"attribute name {_short(k)} is longer than {MAX_ATTRIBUTE_NAME} characters",
            )
        if v is not None and not isinstance(v, str | int | float | bool):
            raise InvalidEvent("wrong_type", f"attributes.{k} must be a scalar")
        if isinstance(v, str) and len(v) > MAX_ATTRIBUTE_TEXT:
            raise InvalidEvent(
                "invalid_value",
                f"attributes.{k} is longer than {MAX_ATTRIBUTE_TEXT} characters",
            )
        if isinstance(v, int | float) and not isinstance(v, bool):
            _check_number(v, f"attributes.{k}")
    return dict(value)


def encode_input(doc: Mapping[str, Any]) -> bytes:
    """Serialize an input event document (as read from a file) for the input topics."""
    return orjson.dumps(doc)


def iso(ms: int) -> str:
    """Epoch ms -> RFC 3339 UTC with millisecond precision."""
    dt = _EPOCH + timedelta(milliseconds=ms)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def output_to_cloudevent(out: Output) -> dict[str, Any]:
    """The CloudEvents 1.0 structured form of an output of the core. Its ``data`` holds
    the keys its row of :data:`schemas.topics.OUTPUTS` lists, in that order: ``policy`` is
    ``{"name", "version"}``; a key ending in ``_at`` is an epoch-ms attribute written as an
    RFC 3339 UTC string (:func:`iso`); any other is the attribute's value, with tuples as
    lists, mappings as plain objects and non-finite numbers as null (JSON has no infinity:
    "days since last purchase" of a prospect is null)."""
    return {
        "specversion": "1.0",
        "id": out.id,
        "source": CLOUDEVENTS_SOURCE,
        "type": EVENT_TYPES[out.kind],
        "subject": out.customer_id,
        "time": iso(out.at),
        "datacontenttype": "application/json",
        "data": {key: get(out) for key, get in _DATA[out.kind]},
    }


def _policy(out: Any) -> dict[str, str]:
    return {"name": out.policy_name, "version": out.policy_version}


def _getter(cls: type, key: str, attribute: str) -> Callable[[Any], Any]:
    """How the value of ``data[key]`` is read from an output of class ``cls`` (see
    :func:`output_to_cloudevent`), chosen once by the attribute's declared type."""
    if key == "policy":
        return _policy
    get = attrgetter(attribute)
    if key.endswith("_at"):
        return lambda out: None if (ms := get(out)) is None else iso(ms)
    hint = get_type_hints(cls)[attribute]
    leaves = _leaf_types(hint)
    if leaves <= _PLAIN:
        return get
    if leaves <= {float, *_PLAIN}:
        return lambda out: _json_number(get(out))
    if leaves == {tuple} and _leaf_types(get_args(hint)[0]) <= _PLAIN:  # tuple[str, ...]
        return lambda out: list(get(out))
    return lambda out: _json_value(get(out))


_PLAIN = frozenset({str, int, bool, type(None)})


def _leaf_types(hint: Any) -> set[Any]:
    """The types a value of a declared type may have (a Literal's by its values)."""
    if get_origin(hint) is Literal:
        return {type(v) for v in get_args(hint)}
    if isinstance(hint, UnionType) or get_origin(hint) is Union:
        return set().union(*(_leaf_types(h) for h in get_args(hint)))
    return {get_origin(hint) or hint}


def _json_number(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _json_value(v: Any) -> Any:
    t = type(v)
    if t is float:
        return v if math.isfinite(v) else None
    if t in _PLAIN:
        return v
    if t is tuple or t is list:
        return [_json_value(x) for x in v]
    if isinstance(v, Mapping):
        return {k: _json_value(x) for k, x in v.items()}
    return _json_number(v)


#: Output kind -> (key, how its value is read), in the order of ``data``.
_DATA: dict[str, tuple[tuple[str, Callable[[Any], Any]], ...]] = {
    o.kind: tuple((k, _getter(CORE_OUTPUTS[o.kind], k, a)) for k, a in o.data_fields)
    for o in OUTPUTS
}


def encode_output(out: Output) -> bytes:
    return orjson.dumps(output_to_cloudevent(out))


def encode_snapshot(snap: Mapping[str, Any]) -> bytes:
    """The ``tierstream.customers`` value (see :func:`app.domain.outputs.snapshot`)."""
    return orjson.dumps(snap)
