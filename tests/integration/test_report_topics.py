"""``tierstream report --from-topics``: the outputs and snapshots read back from the
topics give the same page as the files they came from (the snapshots topic holding
older snapshots too: the latest per customer counts)."""

from __future__ import annotations

import asyncio
import re
from datetime import date
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from app.adapters.kafka import ensure_topics, make_producer
from app.adapters.policy_files import load_policy
from app.cli.main import cli
from app.service.batch_replay import classify_events, customer_snapshots, output_lines, write_lines
from app.settings import load_settings
from app.tools.simulate import SimulationConfig, simulate
from schemas.codec import decode_event, encode_snapshot
from tests.integration._worker_proc import Names

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TOPIC_OF = {
    "io.tierstream.tier.changed.v1": "tier-changes",
    "io.tierstream.lifecycle.changed.v1": "lifecycle-changes",
    "io.tierstream.upgrade.candidate.v1": "upgrade-candidates",
    "io.tierstream.churn.warning.v1": "churn-warnings",
    "io.tierstream.churn.cleared.v1": "churn-warnings",
}


def _marks(html: str) -> list[str]:
    """The chart marks that carry numbers (matrix cells, revenue shares), and the header."""
    return [
        *sorted(re.findall(r"<rect [^>]*data-[^>]*>", html)),
        html.split('<p class="sub">')[1].split("·")[0],
        html.split("<dl")[1].split("</dl>")[0],
    ]


def test_report_from_topics_equals_report_from_files(names: Names, tmp_path: Path) -> None:
    sim = simulate(SimulationConfig(customers=80, days=200, seed=4, start=date(2024, 3, 1)))
    result, _, _ = classify_events(
        [decode_event(d) for d in sim.events],
        load_policy(ROOT / "examples" / "churn-early-warning.yaml"),
    )
    outputs, customers = tmp_path / "out.jsonl", tmp_path / "customers.jsonl"
    with outputs.open("wb") as f:
        write_lines(f, output_lines(result))
    with customers.open("wb") as f:
        write_lines(f, (encode_snapshot(s) for s in customer_snapshots(result)))
    # An older snapshot of every customer first, as an uncompacted topic holds them.
    older = [orjson.loads(line) for line in customers.read_bytes().splitlines()]
    for snap in older:
        snap["as_of"] -= 1
        snap["tier"] = "D"

    settings = load_settings(broker=names.bootstrap, topic_prefix=names.prefix, partitions=3)

    async def publish() -> None:
        await ensure_topics(
            settings, [settings.topic(t) for t in {*TOPIC_OF.values(), "customers"}]
        )
        producer = make_producer(settings)
        await producer.start()
        try:
            for line in outputs.read_bytes().splitlines():
                ce = orjson.loads(line)
                key = ce["subject"].encode()
                await producer.send(settings.topic(TOPIC_OF[ce["type"]]), value=line, key=key)
            for snap in older:
                await producer.send(
                    settings.topic("customers"),
                    value=orjson.dumps(snap),
                    key=snap["customer_id"].encode(),
                )
            for line in customers.read_bytes().splitlines():
                key = orjson.loads(line)["customer_id"].encode()
                await producer.send(settings.topic("customers"), value=line, key=key)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(publish())
    runner = CliRunner()
    from_files, from_topics = tmp_path / "files.html", tmp_path / "topics.html"
    r = runner.invoke(cli, ["report", str(outputs), "-c", str(customers), "-o", str(from_files)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        cli,
        ["report", "--from-topics", "--broker", names.bootstrap, "-o", str(from_topics)],
        env={"TIERSTREAM_TOPIC_PREFIX": names.prefix},
    )
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == str(from_topics)
    a, b = from_files.read_text("utf-8"), from_topics.read_text("utf-8")
    assert _marks(a) == _marks(b)
    assert "churn warnings" in b and 'data-measure="spend_365d"' in b
    assert f"topics {names.prefix}* on {names.bootstrap}" in b
