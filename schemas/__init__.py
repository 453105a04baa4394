"""Wire contracts: JSON Schema documents (``*.schema.json`` beside this file) and the
Python decode/encode, tested against those documents."""

from schemas.codec import (
    EVENT_TYPES,
    decode_event,
    encode_input,
    encode_snapshot,
    encode_tier_change,
    kind_of,
    parse_timestamp,
    tier_change_to_cloudevent,
)

__all__ = [
    "EVENT_TYPES",
    "decode_event",
    "encode_input",
    "encode_snapshot",
    "encode_tier_change",
    "kind_of",
    "parse_timestamp",
    "tier_change_to_cloudevent",
]
