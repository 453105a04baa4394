"""Faust reference pipelines, each run in its own process by the benchmark:

    python -m tests.bench.faust_pipelines --kind idiomatic --broker HOST:PORT --topic T \
        --events N --app-id ID [--fast]

Kinds:
- ``idiomatic``: a ``faust.Record`` value type and ``table[k] += x`` per event (changelog on).
- ``bare``: ``async for`` over raw bytes, nothing else (Faust's own per-event floor).
- ``batch``: a stand-in for the worker's shape: ``take_events`` batches, orjson decode,
  each touched customer read and written once per batch (changelog on), one output send
  per touched customer.

``--fast`` installs :mod:`app.stream.fastpath` on the app; ``--gc`` applies the worker's garbage
collector tuning (:func:`app.worker.tune_gc`), to show how much of the worker's lead that
alone would give the reference. The process prints one JSON line
``{"rate": events_per_s, "seconds": ..., "events": N}`` when the N-th event has been
processed (timed from the first event processed) and exits.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import AsyncIterable
from typing import Any

import faust
import orjson


class Purchase(faust.Record, serializer="json"):
    event_id: str
    customer_id: str
    type: str
    occurred_at: int
    amount: float
    currency: str | None = None
    order_id: str | None = None
    quantity: int | None = None
    margin: float | None = None
    category: str | None = None
    channel: str | None = None


class Clock:
    """Counts processed events; prints the result and exits at the target."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.n = 0
        self.first = 0.0

    def add(self, k: int) -> None:
        if self.n == 0:
            self.first = time.perf_counter()
        self.n += k
        if self.n >= self.target:
            seconds = time.perf_counter() - self.first
            line = {"rate": self.n / seconds, "seconds": seconds, "events": self.n}
            # fd 1 directly: the Faust worker redirects sys.stdout into its logger.
            os.write(1, orjson.dumps(line) + b"\n")
            os._exit(0)


def build_app(args: argparse.Namespace) -> faust.App:
    app = faust.App(
        args.app_id,
        broker=f"kafka://{args.broker}",
        store="memory://",
        topic_partitions=args.partitions,
        web_enabled=False,
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
        producer_linger_ms=5,
    )
    clock = Clock(args.events)
    if args.kind == "idiomatic":
        source = app.topic(args.topic, key_type=str, value_type=Purchase)
        spend = app.Table("spend", default=float, partitions=args.partitions)

        @app.agent(source)
        async def idiomatic(stream: AsyncIterable[Purchase]) -> None:
            async for p in stream:
                spend[p.customer_id] += p.amount
                clock.add(1)

    elif args.kind == "bare":
        raw = app.topic(args.topic, key_type=bytes, value_type=bytes, value_serializer="raw")

        @app.agent(raw)
        async def bare(stream: AsyncIterable[bytes]) -> None:
            async for _value in stream:
                clock.add(1)

    elif args.kind == "batch":
        raw = app.topic(args.topic, key_type=bytes, value_type=bytes, value_serializer="raw")
        out = app.topic(
            args.topic + ".bench-out",
            key_type=bytes,
            value_type=bytes,
            value_serializer="raw",
            partitions=args.partitions,
        )
        totals = app.Table("totals", partitions=args.partitions, key_type=bytes)

        @app.agent(raw)
        async def batched(stream: Any) -> None:
            async for events in stream.take_events(args.batch_size, within=0.05):
                touched: dict[bytes, tuple[dict[str, Any], int]] = {}
                for event in events:
                    doc = orjson.loads(event.value)
                    cid = event.key
                    seen = touched.get(cid)
                    state = seen[0] if seen else totals.get(cid) or {"spend": 0.0, "n": 0}
                    state["spend"] += doc["amount"]
                    state["n"] += 1
                    touched[cid] = (state, event.message.partition)
                # Once per customer per batch. Outside per-event iteration there is no
                # current event to take the partition from, so pass the source partition.
                for cid, (state, partition) in touched.items():
                    totals.data[cid] = state
                    totals.send_changelog(partition, cid, state)
                    await out.send(key=cid, value=orjson.dumps(state), partition=partition)
                clock.add(len(events))

    else:  # pragma: no cover - argparse restricts the choices
        raise SystemExit(f"unknown kind {args.kind}")
    if args.fast:
        from app.stream import fastpath

        fastpath.install(app)
    if args.gc:
        from app.worker import tune_gc

        tune_gc()
    return app


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--kind", choices=("idiomatic", "bare", "batch"), required=True)
    p.add_argument("--broker", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--events", type=int, required=True)
    p.add_argument("--app-id", required=True)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--fast", action="store_true")
    p.add_argument("--gc", action="store_true")
    args = p.parse_args(argv)
    app = build_app(args)
    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
