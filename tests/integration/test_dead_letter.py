"""Bad input goes to the dead-letter topic with its reason and origin; the stream goes on.

Bad records sit between good ones of the same customer on the same partitions, so the
good events around them must be processed (the final state equals the replay of the good
events alone).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from app.adapters.policy_files import load_policy
from app.domain.outputs import snapshot
from app.domain.replay import replay, sort_key
from schemas import decode_event
from tests.integration._worker_data import START_MS, normalize
from tests.integration._worker_proc import (
    INPUT_TOPICS,
    Names,
    WorkerProcess,
    consume,
    create_topics,
    last_by_key,
    produce,
)

pytestmark = pytest.mark.integration

DAY = 86_400_000
CID = "c-dead-letter"
KEY = CID.encode()


def purchase(n: int, **over: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "event_id": f"dl-p{n}",
        "customer_id": CID,
        "type": "purchase",
        "occurred_at": START_MS + n * DAY,
        "amount": 120.0 + n,
    }
    doc.update(over)
    return doc


#: (reason expected in error.reason, topic, key, value)
BAD: list[tuple[str, str, bytes | None, bytes | None]] = [
    ("malformed_json", "purchases", KEY, b'{"event_id": "x1", "customer_id": '),
    ("not_an_object", "interactions", KEY, b"[1, 2, 3]"),
    (
        "missing_field",
        "purchases",
        KEY,
        orjson.dumps({k: v for k, v in purchase(90).items() if k != "event_id"}),
    ),
    (
        "missing_field",
        "purchases",
        KEY,
        orjson.dumps({k: v for k, v in purchase(91).items() if k != "amount"}),
    ),
    ("wrong_type", "purchases", KEY, orjson.dumps(purchase(92, amount="12.50"))),
    ("wrong_type", "interactions", KEY, orjson.dumps({**purchase(93), "customer_id": 42})),
    (
        "timestamp_out_of_range",
        "purchases",
        KEY,
        orjson.dumps(purchase(94, occurred_at="9999-12-31T00:00:00Z")),
    ),
    (
        "timestamp_out_of_range",
        "purchases",
        KEY,
        orjson.dumps(purchase(95, occurred_at=1_717_000_000)),
    ),
    (
        "timestamp_in_future",
        "purchases",
        KEY,
        orjson.dumps(purchase(96, occurred_at="2099-06-01T00:00:00Z")),
    ),
    (
        "invalid_timestamp",
        "interactions",
        KEY,
        orjson.dumps({**purchase(97), "occurred_at": "last tuesday"}),
    ),
    (
        "wrong_type",
        "profiles",
        KEY,
        orjson.dumps({**purchase(98), "type": "profile", "attributes": [1]}),
    ),
    ("key_mismatch", "purchases", b"someone-else", orjson.dumps(purchase(99))),
    ("missing_value", "purchases", KEY, None),
]


def test_bad_input_is_dead_lettered_and_the_stream_goes_on(names: Names, tmp_path: Path) -> None:
    good = [purchase(n) for n in range(len(BAD) + 1)]
    records: list[tuple[str, bytes | None, bytes | None]] = []
    for i, doc in enumerate(good):  # good, bad, good, bad, ..., good
        records.append(("purchases", KEY, orjson.dumps(doc)))
        if i < len(BAD):
            _, topic, key, value = BAD[i]
            records.append((topic, key, value))

    asyncio.run(create_topics(names, INPUT_TOPICS))
    worker = WorkerProcess(names, tmp_path).start()
    try:
        worker.wait_healthy()
        sent = asyncio.run(produce(names, [], records))
        dead = asyncio.run(
            consume(names, "dead-letter", until=lambda r: len(r) >= len(BAD), idle_s=1.0)
        )
        snaps = asyncio.run(
            consume(
                names,
                "customers",
                idle_s=0.5,
                until=lambda r: (
                    last_by_key(r).get(CID, {}).get("lifetime", {}).get("purchases") == len(good)
                ),
            )
        )
        health = worker.healthz()
    finally:
        code = worker.stop()
    assert code == 0, worker.log()

    # every bad record, once, with its original key and bytes, reason and origin
    meta_of_bad = [sent[2 * i + 1] for i in range(len(BAD))]
    assert len(dead) == len(BAD), [d.headers for d in dead]
    by_origin = {(d.headers["origin.topic"], int(d.headers["origin.offset"])): d for d in dead}
    for (reason, topic, key, value), meta in zip(BAD, meta_of_bad, strict=True):
        d = by_origin[(names.topic(topic).encode(), meta.offset)]
        assert d.headers["error.reason"].decode() == reason, d.headers
        assert len(d.headers["error.detail"]) > 10
        assert int(d.headers["origin.partition"]) == meta.partition
        assert (d.key, d.value) == (key, value)

    # the good events around them were all processed, exactly as the replay says
    policy = load_policy()
    state = replay(sorted((decode_event(g, kind="purchase") for g in good), key=sort_key), policy)
    assert last_by_key(snaps)[CID] == normalize(snapshot(state.states[CID]))
    assert health is not None
    assert sum(health["counters"]["dead_letters"].values()) == len(BAD)


def test_a_record_too_large_to_dead_letter_whole_is_cut_and_nothing_stalls(
    names: Names, tmp_path: Path
) -> None:
    """A 1.2 MB record used to stop the partition: its dead letter (the original bytes)
    was refused by the producer (MessageSizeTooLargeError), the agent failed, the other
    bad records of its batch were never dead-lettered, commits stopped and SIGTERM hung.
    Now it is dead-lettered cut to fit, with ``error.truncated``, and everything else
    goes on: the next bad record is dead-lettered, later events are applied, the input is
    committed (a restart has nothing left to do) and the worker stops cleanly."""
    huge = b'{"event_id": "' + b"x" * 1_200_000
    good = [purchase(n) for n in range(4)]
    records: list[tuple[str, bytes | None, bytes | None]] = [
        ("purchases", KEY, orjson.dumps(good[0])),
        ("purchases", KEY, orjson.dumps(good[1])),
        ("purchases", KEY, huge),
        ("purchases", KEY, b"[1]"),
        ("purchases", KEY, orjson.dumps(good[2])),
        ("purchases", KEY, orjson.dumps(good[3])),
    ]

    async def send() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=names.bootstrap,
            enable_idempotence=False,
            linger_ms=20,
            max_request_size=4_000_000,
        )
        await producer.start()
        try:
            futures = [await producer.send(names.topic(t), v, key=k) for t, k, v in records]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    asyncio.run(create_topics(names, INPUT_TOPICS))
    asyncio.run(send())
    worker = WorkerProcess(names, tmp_path)
    try:
        worker.start().wait_healthy()
        dead = asyncio.run(consume(names, "dead-letter", until=lambda r: len(r) >= 2, idle_s=1))
        snaps = asyncio.run(
            consume(
                names,
                "customers",
                idle_s=0.5,
                until=lambda r: (
                    last_by_key(r).get(CID, {}).get("lifetime", {}).get("purchases") == len(good)
                ),
            )
        )
        assert worker.stop() == 0, worker.log()  # promptly: nothing waits for the record
        # a restart finds everything committed: nothing is processed again
        worker.start().wait_healthy()
        time.sleep(3)
        again = worker.healthz()
    finally:
        code = worker.stop()
    assert code == 0, worker.log()
    assert "Traceback" not in worker.log(tail=200_000)
    assert [d.headers["error.reason"] for d in dead] == [b"malformed_json", b"not_an_object"]
    cut = dead[0]
    assert cut.headers["error.truncated"] == b"key %d bytes, value %d bytes" % (
        len(KEY),
        len(huge),
    )
    assert cut.value is not None and huge.startswith(cut.value) and len(cut.value) >= 500_000
    assert last_by_key(snaps)[CID]["lifetime"]["purchases"] == len(good)
    assert again is not None and again["counters"]["events"] == 0, again
