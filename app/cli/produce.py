"""``tierstream produce``: an event file to the input topics (:mod:`app.tools.produce`)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from app.cli._base import (
    DELIM_HELP,
    FORMAT_HELP,
    HEADER_HELP,
    MAP_HELP,
    READ_NOTES,
    cli,
    read_lines,
    report_rejected,
    settings_from_options,
)
from app.errors import BrokerError


@cli.command(
    help="Publish an event file into the input topics."
    + READ_NOTES
    + """
    Each event goes to TOPIC_PREFIX + purchases / interactions / profiles, chosen by its
    kind (field kind, else type: purchase/refund/order are purchases, profile is a
    profile, anything else an interaction), keyed by customer_id, with the original
    object re-encoded as JSON. Content is not validated: the worker dead-letters invalid
    events, with the reason. Only lines that are not JSON objects (not JSON, bytes that
    are not UTF-8) or have no customer_id (nothing to key by) are skipped and reported.
    Missing input topics are created with TIERSTREAM_PARTITIONS partitions.

    Env: TIERSTREAM_BROKER, TIERSTREAM_TOPIC_PREFIX, TIERSTREAM_PARTITIONS and the
    TIERSTREAM_SECURITY_PROTOCOL / SASL_* / SSL_CAFILE settings of a real cluster.
"""
)
def produce(
    events_file: Path = typer.Argument(
        ...,
        help="Event file (.jsonl/.json/.csv; - reads JSON Lines from stdin).",
        show_default=False,
    ),
    broker: str | None = typer.Option(
        None,
        help="Kafka bootstrap servers host:port[,...] (env TIERSTREAM_BROKER; "
        "default 127.0.0.1:9092).",
    ),
    topic_prefix: str | None = typer.Option(
        None, help="Topic name prefix (env TIERSTREAM_TOPIC_PREFIX; default 'tierstream.')."
    ),
    rate: float | None = typer.Option(
        None, help="Events per second, evenly spaced (default: as fast as possible)."
    ),
    partitions: int | None = typer.Option(
        None, help="Partitions of topics created here (env TIERSTREAM_PARTITIONS; default 4)."
    ),
    fmt: str | None = typer.Option(None, "--format", help=FORMAT_HELP),
    map_: list[str] | None = typer.Option(None, "--map", help=MAP_HELP),
    delimiter: str | None = typer.Option(None, help=DELIM_HELP + " [default: comma]"),
    header: bool = typer.Option(True, "--header/--no-header", help=HEADER_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
) -> None:
    import asyncio

    from aiokafka.errors import KafkaError
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    from app.tools.produce import produce_lines

    settings = settings_from_options(
        broker=broker, topic_prefix=topic_prefix, partitions=partitions
    )
    lines = list(read_lines(events_file, fmt, map_, delimiter, header))
    err = Console(stderr=True)
    progress = Progress(
        TextColumn("[bold]producing"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[speed]}"),
        TimeRemainingColumn(),
        console=err,
        disable=quiet,
        transient=False,
    )
    task = progress.add_task("produce", total=None, speed="")
    started = time.monotonic()

    def on_total(n: int) -> None:
        progress.update(task, total=n)

    def on_sent(_: object) -> None:
        progress.advance(task)
        done = progress.tasks[0].completed
        if done % 500 == 0:
            speed = done / max(time.monotonic() - started, 1e-6)
            progress.update(task, speed=f"{speed:,.0f} ev/s")

    try:
        with progress:
            report = asyncio.run(
                produce_lines(lines, settings, rate=rate, on_sent=on_sent, on_total=on_total)
            )
    except KafkaError as exc:
        raise BrokerError(f"cannot produce to {settings.bootstrap_servers}: {exc}") from exc
    report_rejected(err, [(s.line, s.reason, s.detail) for s in report.skipped], None)
    if not quiet:
        per_topic = ", ".join(f"{t} {n:,}" for t, n in sorted(report.per_topic.items()))
        err.print(
            f"sent {report.sent:,} events in {report.seconds:.1f}s "
            f"({report.sent / max(report.seconds, 1e-6):,.0f}/s) to {settings.bootstrap_servers}: "
            f"{per_topic or 'nothing'}; skipped {len(report.skipped):,}",
            highlight=False,
        )
