"""Dead letters always fit a produce request (app.service.processor): a record the producer refuses
would stop its partition, neither sendable nor skippable."""

from __future__ import annotations

import pytest

from app.domain.policy import Policy
from app.service.processor import (
    DEAD_LETTER_MAX_BYTES,
    DEAD_LETTER_MAX_DETAIL,
    CustomerBatch,
)
from tests.kit.docs import TOPIC_KINDS as KINDS
from tests.kit.docs import record
from tests.kit.fakes import Store
from tests.kit.policies import VALUE_TIERS_V2
from tests.unit.service.test_batching import doc


@pytest.fixture(scope="module")
def policy() -> Policy:
    return VALUE_TIERS_V2


def test_an_oversized_record_is_dead_lettered_truncated_with_its_sizes(policy: Policy) -> None:
    huge = b'{"event_id": "' + b"x" * 1_200_000  # 1.2 MB, not even JSON
    records = [
        record(doc("c1", 0)),
        record(huge, offset=1, key=b"c1"),
        record(b"[]", offset=2, key=b"c1"),  # another bad one, same batch
    ]
    out = CustomerBatch(policy, KINDS, 86_400).process(records, Store().load)
    assert out.events == 1
    first, second = out.dead_letters
    headers = dict(first.headers)
    assert first.reason == "malformed_json"
    assert len(first.key or b"") + len(first.value or b"") <= DEAD_LETTER_MAX_BYTES
    assert (first.value or b"") == huge[: len(first.value or b"")]  # a prefix, as it came
    assert headers["error.truncated"] == b"key 2 bytes, value 1200014 bytes"
    assert headers["origin.offset"] == b"1"
    # the next bad record of the batch is dead-lettered as it came
    assert second.reason == "not_an_object" and second.value == b"[]"
    assert "error.truncated" not in dict(second.headers)


def test_an_oversized_key_is_cut_too(policy: Policy) -> None:
    key = b"k" * 800_000
    value = b"v" * 800_000
    out = CustomerBatch(policy, KINDS, 86_400).process(
        [record(value, partition=3, offset=7, key=key)], Store().load
    )
    (dl,) = out.dead_letters
    assert dl.key is not None and dl.value is not None
    assert len(dl.key) == DEAD_LETTER_MAX_BYTES // 2
    assert len(dl.key) + len(dl.value) == DEAD_LETTER_MAX_BYTES
    assert dict(dl.headers)["error.truncated"] == b"key 800000 bytes, value 800000 bytes"


def test_a_record_that_fits_is_kept_whole_and_the_detail_is_bounded(policy: Policy) -> None:
    value = b"x" * (DEAD_LETTER_MAX_BYTES - 10)
    out = CustomerBatch(policy, KINDS, 86_400).process([record(value, key=b"c1")], Store().load)
    (dl,) = out.dead_letters
    assert dl.value == value and "error.truncated" not in dict(dl.headers)
    assert len(dict(dl.headers)["error.detail"].decode()) <= DEAD_LETTER_MAX_DETAIL
