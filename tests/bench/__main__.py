"""``make bench``: throughput of the tierstream worker against its references, on one
local broker started here, over the same pre-produced input.

    python -m tests.bench [--events 100000] [--repeat 3] [--only raw,faust-idiomatic,...]

Prints a table (events/s median (min-max), ratio vs idiomatic Faust, ratio vs raw) and
writes the results as JSON (default ``out/bench.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from app.adapters.broker import LocalBroker
from tests.bench.harness import (
    Result,
    create_topics,
    now_utc,
    produce,
    purchase_events,
    render_table,
)
from tests.bench.raw import run_raw
from tests.bench.subproc import run_json_process

REFERENCE = "faust-idiomatic"
RAW = "raw"


@dataclass(frozen=True)
class Context:
    bootstrap: str
    prefix: str
    topic: str
    events: int
    partitions: int
    batch_size: int
    timeout_s: float


@dataclass(frozen=True)
class Pipeline:
    name: str
    description: str
    run: Callable[[Context], float]
    default: bool = True


def _faust(kind: str, fast: bool, gc: bool = False) -> Callable[[Context], float]:
    def run(ctx: Context) -> float:
        cmd = [
            sys.executable,
            "-m",
            "tests.bench.faust_pipelines",
            "--kind",
            kind,
            "--broker",
            ctx.bootstrap,
            "--topic",
            ctx.topic,
            "--events",
            str(ctx.events),
            "--app-id",
            f"bench-{kind}-{uuid.uuid4().hex[:8]}",
            "--partitions",
            str(ctx.partitions),
            "--batch-size",
            str(ctx.batch_size),
        ]
        if fast:
            cmd.append("--fast")
        if gc:
            cmd.append("--gc")
        return float(run_json_process(cmd, ctx.timeout_s)["rate"])

    return run


def _raw(ctx: Context) -> float:
    return asyncio.run(run_raw(ctx.bootstrap, ctx.topic, ctx.events, ctx.timeout_s))


def _worker(ctx: Context) -> float:
    from tests.bench.worker import run_worker_bench

    return run_worker_bench(
        bootstrap=ctx.bootstrap,
        prefix=ctx.prefix,
        events=ctx.events,
        partitions=ctx.partitions,
        timeout_s=ctx.timeout_s,
    )


PIPELINES: list[Pipeline] = [
    Pipeline(RAW, "aiokafka getmany + orjson.loads per event (the limit)", _raw),
    Pipeline(
        REFERENCE,
        "Faust: faust.Record value + table[k] += amount per event (changelog)",
        _faust("idiomatic", fast=False),
    ),
    Pipeline(
        "faust-idiomatic+gc",
        "same, with the worker's garbage collector tuning (app.worker.tune_gc)",
        _faust("idiomatic", fast=False, gc=True),
    ),
    Pipeline("faust-bare", "Faust: async for over raw bytes, no work", _faust("bare", False)),
    Pipeline(
        "faust-bare+fastpath",
        "same, with app.stream.fastpath installed",
        _faust("bare", fast=True),
    ),
    Pipeline(
        "faust-batch",
        "stand-in: take_events(500) + decode + 1 table write & 1 send per customer per batch",
        _faust("batch", fast=False),
    ),
    Pipeline(
        "faust-batch+fastpath",
        "same, with app.stream.fastpath installed",
        _faust("batch", fast=True),
    ),
    Pipeline(
        "tierstream-worker",
        "the tierstream worker as shipped (`tierstream worker`: fast path, batches, outputs)",
        _worker,
    ),
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    p.add_argument("--events", type=int, default=100_000, help="input events (default 100k)")
    p.add_argument("--customers", type=int, default=20_000, help="distinct customer ids")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--repeat", type=int, default=3, help="repetitions per pipeline")
    p.add_argument(
        "--only",
        default="",
        help="comma-separated pipelines (default: all): " + ",".join(x.name for x in PIPELINES),
    )
    p.add_argument(
        "--batch-size", type=int, default=500, help="batch size of the faust-batch stand-in"
    )
    p.add_argument("--timeout", type=float, default=180.0, help="max seconds per run")
    p.add_argument("--broker", default="", help="use this broker instead of starting one")
    p.add_argument("--out", type=Path, default=Path("out/bench.json"))
    return p.parse_args(argv)


def _sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # run the finally blocks: stop children and the broker


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _sigterm)
    args = parse_args(argv)
    wanted = [w.strip() for w in args.only.split(",") if w.strip()]
    names = {x.name for x in PIPELINES}
    unknown = [w for w in wanted if w not in names]
    if unknown:
        print(f"unknown pipeline(s): {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        return 2
    chosen = [x for x in PIPELINES if (x.name in wanted if wanted else x.default)]
    broker = None if args.broker else LocalBroker()
    try:
        if broker is not None:
            broker.start()
        bootstrap = args.broker or (broker.bootstrap if broker else "")
        prefix = f"bench{uuid.uuid4().hex[:6]}."
        topic = f"{prefix}purchases"
        asyncio.run(create_topics(bootstrap, [topic], args.partitions))
        t0 = time.perf_counter()
        n = asyncio.run(produce(bootstrap, topic, purchase_events(args.events, args.customers)))
        print(
            f"produced {n:,} purchase events ({args.customers:,} customers, "
            f"{args.partitions} partitions) to {topic} on {bootstrap} "
            f"in {time.perf_counter() - t0:.1f}s"
        )
        ctx = Context(bootstrap, prefix, topic, n, args.partitions, args.batch_size, args.timeout)
        results = [Result(x.name, x.description) for x in chosen]
        # Interleave the repetitions (round-robin over pipelines) so that a noisy minute on
        # this shared machine spreads over every pipeline instead of hitting one.
        for rep in range(args.repeat):
            for pipe, result in zip(chosen, results, strict=True):
                try:
                    rate = pipe.run(ctx)
                except Exception as exc:
                    result.errors.append(f"{type(exc).__name__}: {exc}")
                    print(f"  [{rep + 1}/{args.repeat}] {pipe.name}: FAILED {exc}", flush=True)
                else:
                    result.rates.append(rate)
                    print(f"  [{rep + 1}/{args.repeat}] {pipe.name}: {rate:,.0f}/s", flush=True)
        print()
        print(render_table(results, REFERENCE, RAW))
        write_json(args, n, results)
        return 0 if all(r.rates for r in results) else 1
    finally:
        if broker is not None:
            broker.stop()


def write_json(args: argparse.Namespace, n: int, results: list[Result]) -> None:
    ref = next((r.median for r in results if r.pipeline == REFERENCE), None)
    raw = next((r.median for r in results if r.pipeline == RAW), None)
    doc: dict[str, Any] = {
        "when": now_utc(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "input": {
            "events": n,
            "customers": args.customers,
            "partitions": args.partitions,
            "repeat": args.repeat,
        },
        "results": [
            {
                **r.to_json(),
                "vs_idiomatic_faust": (r.median / ref) if r.median and ref else None,
                "vs_raw": (r.median / raw) if r.median and raw else None,
            }
            for r in results
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
