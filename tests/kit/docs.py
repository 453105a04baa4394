"""Wire-level builders: input events as the JSON documents a producer sends, and the
records the worker's processor takes (:class:`app.service.processor.InputRecord`), in the
spirit of ``bytewax.testing.TestingSource``. Tests build their documents here rather than
hand-rolling JSON; the topic of each kind comes from :data:`schemas.topics.INPUTS`, under
the prefix :data:`PREFIX`.

>>> d = purchase_doc("c1", 25.0, at("2024-03-01"), margin=5.0, event_id="p1")
>>> d["event_id"], d["customer_id"], d["type"], d["occurred_at"], d["amount"], d["margin"]
('p1', 'c1', 'purchase', 1709251200000, 25.0, 5.0)
>>> r = record(d, offset=7)
>>> r.topic, r.partition, r.offset, r.key
('t.purchases', 0, 7, b'c1')
>>> e = decode_event(r.value, kind=TOPIC_KINDS[r.topic])
>>> e.kind, e.customer_id, e.amount, e.margin, e.occurred_at == at("2024-03-01")
('purchase', 'c1', 25.0, 5.0, True)
>>> [x.topic for x in records([interaction_doc("c2", 0), profile_doc("c2", 0, {"region": "emea"})])]
['t.interactions', 't.profiles']
>>> decode_event(refund_doc("c1", 10, at("2024-03-02"))).amount
-10.0
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from app.domain.events import AttributeValue, EventKind
from app.service.processor import InputRecord
from schemas.codec import decode_event, kind_of
from schemas.topics import INPUTS
from tests.kit.builders import at, next_id

__all__ = [
    "PREFIX",
    "TOPIC_KINDS",
    "at",
    "decode_event",
    "interaction_doc",
    "profile_doc",
    "purchase_doc",
    "record",
    "records",
    "refund_doc",
]

#: The topic prefix of the records built here (the worker's is a setting).
PREFIX = "t."
#: Input topic (with :data:`PREFIX`) -> the event kind its records carry: what the
#: processor is constructed with.
TOPIC_KINDS: dict[str, EventKind] = {PREFIX + t.name: t.kind for t in INPUTS}
_TOPIC_OF: dict[EventKind, str] = {t.kind: PREFIX + t.name for t in INPUTS}

Doc = dict[str, Any]


def purchase_doc(customer: str, amount: float, at: int | str, **over: Any) -> Doc:
    """A purchase document; ``over`` adds or replaces fields (``event_id``, ``margin``,
    ``quantity``, ``type``...). ``at`` is epoch ms or an ISO-8601 string, as on the wire."""
    return {
        "event_id": next_id("p"),
        "customer_id": customer,
        "type": "purchase",
        "occurred_at": at,
        "amount": amount,
        **over,
    }


def refund_doc(customer: str, amount: float, at: int | str, **over: Any) -> Doc:
    """A refund of ``abs(amount)`` (on the wire: a purchase of type ``refund`` with a
    negative amount)."""
    return purchase_doc(customer, -abs(amount), at, type="refund", **over)


def interaction_doc(customer: str, at: int | str, type: str = "visit", **over: Any) -> Doc:
    """An interaction document (a visit unless ``type`` says otherwise)."""
    return {
        "event_id": next_id("i"),
        "customer_id": customer,
        "type": type,
        "occurred_at": at,
        **over,
    }


def profile_doc(
    customer: str, at: int | str, attributes: Mapping[str, AttributeValue], **over: Any
) -> Doc:
    """A profile document carrying ``attributes``."""
    return {
        "event_id": next_id("a"),
        "customer_id": customer,
        "type": "profile",
        "occurred_at": at,
        "attributes": dict(attributes),
        **over,
    }


def record(
    doc: Doc | bytes,
    topic: str | None = None,
    partition: int = 0,
    offset: int = 0,
    key: bytes | None = None,
) -> InputRecord:
    """``doc`` as a consumed record: its JSON bytes (``bytes`` are sent as they are, for
    records that are not valid events) on ``topic`` (default: the input topic of the
    document's kind; ``t.purchases`` for bytes), keyed by the customer id unless ``key``
    is given."""
    if isinstance(doc, bytes):
        return InputRecord(topic or _TOPIC_OF["purchase"], partition, offset, key, doc)
    if key is None and isinstance(doc.get("customer_id"), str):
        key = doc["customer_id"].encode()
    return InputRecord(topic or _TOPIC_OF[kind_of(doc)], partition, offset, key, orjson.dumps(doc))


def records(docs: Iterable[Doc | bytes], partition: int = 0, offset: int = 0) -> list[InputRecord]:
    """:func:`record` of each document, at consecutive offsets from ``offset``."""
    return [record(d, partition=partition, offset=offset + i) for i, d in enumerate(docs)]
