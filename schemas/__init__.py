"""Wire contracts: the topics (:mod:`schemas.topics`, the one table every list of topics,
kinds and schema files derives from), JSON Schema documents (``*.schema.json`` beside this
file, draft 2020-12; :data:`SCHEMA_FILES` by contract name, from the topic table) and the
Python decode/encode, tested against those documents.

>>> SCHEMA_FILES["tier-change"], SCHEMA_FILES["customer-snapshot"]
('tier-change.schema.json', 'customer-snapshot.schema.json')
>>> load_schema("purchase")["required"][:2]
['event_id', 'customer_id']
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from schemas.codec import (
    EVENT_TYPES,
    ISO_TIMESTAMP_PATTERN,
    OUTPUT_TOPICS,
    REASONS,
    decode_event,
    encode_input,
    encode_output,
    encode_snapshot,
    kind_of,
    output_to_cloudevent,
    parse_timestamp,
)
from schemas.topics import SCHEMA_FILES


@cache
def _load(name: str) -> str:
    if name not in SCHEMA_FILES:
        raise KeyError(f"no schema {name!r} (one of {', '.join(SCHEMA_FILES)})")
    return resources.files("schemas").joinpath(SCHEMA_FILES[name]).read_text("utf-8")


def load_schema(name: str) -> dict[str, Any]:
    """The JSON Schema document of a contract (a fresh copy), e.g. ``"tier-change"``."""
    doc: dict[str, Any] = json.loads(_load(name))
    return doc


__all__ = [
    "EVENT_TYPES",
    "ISO_TIMESTAMP_PATTERN",
    "OUTPUT_TOPICS",
    "REASONS",
    "SCHEMA_FILES",
    "decode_event",
    "encode_input",
    "encode_output",
    "encode_snapshot",
    "kind_of",
    "load_schema",
    "output_to_cloudevent",
    "parse_timestamp",
]
