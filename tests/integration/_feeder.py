"""An external producer for the fault-injection suite: librdkafka (``confluent-kafka``), in
its own process, at a steady rate.

The tests do not pre-load the input: a worker under test sees records arrive while it is
killed, paused or rebalanced, as it would from a real upstream service. This process reads
a *plan* (JSON Lines, one record a line: full topic name, key and value as base64 or null)
and produces it in order at ``--rate`` records per second, each record with the header
``fault.seq`` (its line number), so the test can tell every record on the input topics by
its place in the plan (a retry could write one twice).

Standard output: ``progress sent=N acked=M failed=F`` about every 0.2 s (what the test
triggers its faults on), then ``done sent=N acked=M failed=F``. ``--report`` gets one JSON
line per record once delivered: ``{"seq", "partition", "offset", "error"}``.
Exit code 0 when every record was delivered, 1 otherwise.

Producer settings (the local broker has no InitProducerId, so no idempotence):

- ``partitioner: murmur2_random``: the Java client's (and aiokafka's) placement of keyed
  records, which the tests' expectations assume (librdkafka's default is CRC32);
- ``max.in.flight.requests.per.connection: 1``: without idempotence a retried request may
  otherwise overtake a later one and reorder a partition;
- ``message.max.bytes``: the poison battery sends values over 1 MB;
- ``message.timeout.ms`` well past the longest broker pause of the suite.

Run: ``python -m tests.integration._feeder --bootstrap HOST:PORT --plan F --rate 300``.
"""

from __future__ import annotations

import argparse
import base64
import re
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

SEQ_HEADER = "fault.seq"


def producer_config(bootstrap: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": False,
        "acks": "all",
        "partitioner": "murmur2_random",
        "max.in.flight.requests.per.connection": 1,
        "message.max.bytes": 8_000_000,
        "linger.ms": 5,
        "message.timeout.ms": 180_000,
        "request.timeout.ms": 60_000,
        "log_level": 4,  # warnings and worse (connection losses while the broker is paused)
    }


def _b64(value: str | None) -> bytes | None:
    return None if value is None else base64.b64decode(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--plan", required=True, help="JSON Lines: {topic, key, value}")
    parser.add_argument("--rate", type=float, default=300.0, help="records per second")
    parser.add_argument("--report", help="delivery report (JSON Lines)")
    args = parser.parse_args(argv)
    from confluent_kafka import KafkaError, Message, Producer

    with open(args.plan, "rb") as f:
        plan = [orjson.loads(line) for line in f if line.strip()]
    producer = Producer(producer_config(args.bootstrap))
    acked = failed = 0
    reports: list[bytes] = []

    def delivered(err: KafkaError | None, msg: Message, seq: int) -> None:
        nonlocal acked, failed
        if err is None:
            acked += 1
        else:
            failed += 1
        reports.append(
            orjson.dumps(
                {
                    "seq": seq,
                    "partition": msg.partition(),
                    "offset": msg.offset(),
                    "error": None if err is None else str(err),
                }
            )
        )

    def progress(word: str, sent: int) -> None:
        sys.stdout.write(f"{word} sent={sent} acked={acked} failed={failed}\n")
        sys.stdout.flush()

    start = time.monotonic()
    last_progress = 0.0
    for seq, rec in enumerate(plan):
        due = start + seq / args.rate
        while True:
            now = time.monotonic()
            if now - last_progress >= 0.2:
                progress("progress", seq)
                last_progress = now
            if now >= due:
                break
            producer.poll(min(0.05, due - now))
        while True:
            try:
                producer.produce(
                    rec["topic"],
                    key=_b64(rec["key"]),
                    value=_b64(rec["value"]),
                    headers=[(SEQ_HEADER, str(seq).encode())],
                    on_delivery=lambda err, msg, seq=seq: delivered(err, msg, seq),
                )
                break
            except BufferError:  # the local queue is full (a long broker pause): wait
                producer.poll(0.1)
        producer.poll(0)
    sent = len(plan)
    progress("progress", sent)
    while producer.flush(0.2) > 0:
        progress("progress", sent)
    progress("done", sent)
    if args.report:
        with open(args.report, "wb") as f:
            f.write(b"".join(r + b"\n" for r in reports))
    return 0 if failed == 0 and acked == sent else 1


class Feeder:
    """The feeder in a subprocess, seen from the test: its progress, then its report.

    ``plan`` holds ``(full topic name, key, value)`` in the order to produce them."""

    def __init__(
        self,
        bootstrap: str,
        plan: Sequence[tuple[str, bytes | None, bytes | None]],
        workdir: Path,
        rate: float,
    ) -> None:
        self.bootstrap = bootstrap
        self.total = len(plan)
        self.rate = rate
        self.plan_path = workdir / "feeder-plan.jsonl"
        self.report_path = workdir / "feeder-report.jsonl"
        self.log_path = workdir / "feeder.log"
        enc = base64.b64encode
        with open(self.plan_path, "wb") as f:
            for topic, key, value in plan:
                rec = {
                    "topic": topic,
                    "key": None if key is None else enc(key).decode(),
                    "value": None if value is None else enc(value).decode(),
                }
                f.write(orjson.dumps(rec) + b"\n")
        self.sent = self.acked = self.failed = 0
        self.done = False
        self.proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self.started_at = 0.0

    def start(self) -> Feeder:
        cmd = [sys.executable, "-m", "tests.integration._feeder", "--bootstrap", self.bootstrap]
        cmd += ["--plan", str(self.plan_path), "--rate", str(self.rate)]
        cmd += ["--report", str(self.report_path)]
        repo = Path(__file__).resolve().parents[2]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=repo, stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1
            )
        self.started_at = time.monotonic()
        self._reader = threading.Thread(target=self._read, daemon=True, name="feeder-progress")
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        pattern = re.compile(r"^(progress|done) sent=(\d+) acked=(\d+) failed=(\d+)$")
        for line in self.proc.stdout:
            m = pattern.match(line.strip())
            if m:
                self.sent, self.acked, self.failed = (int(m[i]) for i in (2, 3, 4))
                if m[1] == "done":
                    self.done = True

    def _alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None and not self.done:
            raise AssertionError(f"the feeder exited with {self.proc.returncode}: {self.log()}")

    def wait_sent(self, fraction: float, timeout: float = 120.0) -> int:
        """Wait until ``fraction`` of the plan was handed to the producer."""
        want = int(self.total * fraction)
        deadline = time.monotonic() + timeout
        while self.sent < want:
            self._alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"the feeder sent {self.sent}/{want} in {timeout}s")
            time.sleep(0.05)
        return self.sent

    def wait_done(self, timeout: float = 240.0) -> list[dict[str, Any]]:
        """Wait until every record is delivered; the delivery report."""
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(
                f"the feeder did not finish in {timeout}s "
                f"(sent {self.sent}, acked {self.acked}): {self.log()}"
            ) from None
        if self._reader is not None:
            self._reader.join(5)
        report = [orjson.loads(line) for line in self.report_path.read_bytes().splitlines()]
        failed = [r for r in report if r["error"] is not None]
        assert code == 0 and not failed and len(report) == self.total, (
            f"the feeder could not deliver {len(failed)} of {self.total} records "
            f"(exit {code}): {failed[:3]} {self.log()}"
        )
        return report

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return "<no log>"


if __name__ == "__main__":
    sys.exit(main())
