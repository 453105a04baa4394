"""``tierstream demo``: broker, worker, simulated traffic, live view (:mod:`app.tools.demo`)."""

from __future__ import annotations

from pathlib import Path

import typer

from app.cli._base import (
    cli,
    settings_from_options,
)


@cli.command(
    help="""Run the whole thing locally for a minute: broker, worker, live tier changes.

    Starts the local broker on a free port and a worker subprocess (fresh app id, memory
    store), sends a simulated stream at a steady rate so that months of customer history
    flow by within --duration seconds, and shows tier changes as they come out of the
    worker: a live table on a terminal, plain lines otherwise. Then it stops the worker
    (SIGTERM), reads everything it emitted (output and customers topics) and from that
    one reading prints customers per tier and the counts and writes a report page
    (`report.html` in the demo's work directory, as `tierstream report` makes; its path
    is printed), then stops the broker. Ctrl-C stops the feed early and ends the same
    way (the summary is final, as the report); a second Ctrl-C aborts. Exit code 0 on
    success, 1 when the worker fails to start or dies.

    Env: TIERSTREAM_LOG_LEVEL (worker log level); the broker, app id, store and ports
    are chosen by the demo.
"""
)
def demo(
    duration: float = typer.Option(
        60.0,
        min=1.0,
        help="Seconds of feeding the stream (starting the worker and shutting down add "
        "some 10-15 s).",
    ),
    customers: int = typer.Option(500, min=1, help="Simulated customers."),
    days: int = typer.Option(365, min=1, help="Days of event time to simulate."),
    seed: int = typer.Option(1, help="Simulation seed."),
    rate: float | None = typer.Option(
        None, help="Events per second (default: the whole stream within --duration)."
    ),
    partitions: int = typer.Option(4, min=1, help="Partitions of the demo topics."),
    policy: Path | None = typer.Option(None, help="Policy YAML (default: the packaged one)."),
    plain: bool | None = typer.Option(
        None,
        "--plain/--live",
        help="Plain lines or the live view (default: live on a terminal, plain otherwise).",
        show_default=False,
    ),
    worker_timeout: float = typer.Option(
        90.0, min=1.0, help="Seconds to wait for the worker to process a first event."
    ),
    keep_logs: bool = typer.Option(False, help="Keep the broker and worker logs."),
    report: bool = typer.Option(
        True, help="Write report.html (as `tierstream report`) at the end and print its path."
    ),
) -> None:
    from app.tools.demo import DemoConfig, run_demo

    settings_from_options()  # the environment's TIERSTREAM_* settings must be valid
    code = run_demo(
        DemoConfig(
            duration=duration,
            customers=customers,
            days=days,
            seed=seed,
            rate=rate,
            partitions=partitions,
            policy_file=policy,
            plain=plain,
            worker_timeout=worker_timeout,
            keep_logs=keep_logs,
            report=report,
        )
    )
    raise typer.Exit(code)
