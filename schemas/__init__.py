"""Wire contracts: JSON Schema documents (``*.schema.json`` beside this file, draft
2020-12) and the Python decode/encode, tested against those documents.

>>> sorted(SCHEMA_FILES)[:4]
['churn-cleared', 'churn-warning', 'customer-snapshot', 'interaction']
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

#: Contract name -> JSON Schema file shipped in this package. Input kinds are named as
#: :data:`app.domain.events.EventKind`.
SCHEMA_FILES: dict[str, str] = {
    "purchase": "purchase.schema.json",
    "interaction": "interaction.schema.json",
    "profile": "profile.schema.json",
    "tier-change": "tier-change.schema.json",
    "customer-snapshot": "customer-snapshot.schema.json",
    "lifecycle-change": "lifecycle-change.schema.json",
    "upgrade-candidate": "upgrade-candidate.schema.json",
    "churn-warning": "churn-warning.schema.json",
    "churn-cleared": "churn-cleared.schema.json",
}


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
