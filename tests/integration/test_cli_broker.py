"""The command line's error handling against the real broker (the rest of it, which needs
no broker, is ``tests/unit/cli/test_cli_errors.py``): ``produce`` reports a line of bytes
that are not UTF-8 and sends the rest; the worker's broker check passes quickly when the
broker answers."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest

from app.adapters.broker import LocalBroker
from app.settings import load_settings
from tests.unit.cli.test_cli_errors import BAD_AT, bad_byte_files, invoke

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return bad_byte_files(tmp_path_factory.mktemp("bad-bytes"))


def test_produce_reports_the_bad_byte_line_and_sends_the_rest(
    broker: LocalBroker, files: tuple[Path, Path]
) -> None:
    from aiokafka import AIOKafkaConsumer

    _, bad = files
    prefix = f"t{uuid.uuid4().hex[:8]}."
    result = invoke(["produce", str(bad), "--broker", broker.bootstrap, "--topic-prefix", prefix])
    assert result.exit_code == 0, result.output
    assert f"line {BAD_AT}: malformed_json: not valid UTF-8: byte 0xE9" in result.output
    expected = len(bad.read_bytes().splitlines()) - 1
    assert f"sent {expected:,} events" in result.output

    async def count() -> int:
        consumer = AIOKafkaConsumer(
            *(prefix + t for t in ("purchases", "interactions", "profiles")),
            bootstrap_servers=broker.bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        seen = 0
        try:
            for _ in range(40):
                batches = await consumer.getmany(timeout_ms=250)
                seen += sum(len(m) for m in batches.values())
                if seen >= expected and not batches:
                    break
        finally:
            await consumer.stop()
        return seen

    assert asyncio.run(count()) == expected


def test_check_broker_passes_when_the_broker_answers(broker: LocalBroker) -> None:
    from app.worker import check_broker

    started = time.monotonic()
    check_broker(load_settings(broker=broker.bootstrap))
    assert time.monotonic() - started < 5
