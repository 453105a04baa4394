"""``tierstream worker``: a stream-processing worker (:mod:`app.worker`)."""

from __future__ import annotations

from pathlib import Path

import typer

from app.cli._base import (
    cli,
    settings_from_options,
)


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
    from app.worker import run_worker

    settings = settings_from_options(
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


# --- batch and tooling commands ---------------------------------------------------------
