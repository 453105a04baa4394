"""``tierstream classify``: the core over a file, without Kafka
(:mod:`app.service.batch_replay`)."""

from __future__ import annotations

import contextlib
import sys
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
    open_out,
    read_lines,
    report_rejected,
    settings_from_options,
)
from app.errors import ConfigError, InvalidEvent


@cli.command(
    help="Classify customers from an event file with the core, without Kafka."
    + READ_NOTES
    + """
    The events are sorted by event time (stable: file order among equal times) and
    replayed through the same core the worker runs, so the output equals what the stream
    would produce for the same ordered input. Then every customer is advanced to --as-of
    (default: the latest event time), so what silence and rolling windows do after a
    customer's last event happens too, at the time it falls due. The outputs (tier
    changes, lifecycle changes, upgrade candidates, churn warnings and clearings) go to
    --out as CloudEvents JSON Lines
    in time order; --customers-out gets one JSON object per customer (tier, stage, rolling
    aggregates, RFM summary). A policy with percentile conditions is decided with the
    exact cut-offs of all customers as of --as-of, unless --cutoffs gives others.
    Invalid lines are counted and reported (stderr; all of them with
    --errors-out), not fatal; as in the worker, that includes events dated more than
    TIERSTREAM_MAX_FUTURE_SKEW_S (default one day) past now. A summary goes to stderr.
    Exit code 0 unless the file or the policy cannot be read (2).

    Env: TIERSTREAM_POLICY_FILE (policy default), TIERSTREAM_MAX_FUTURE_SKEW_S.
"""
)
def classify(
    events_file: Path = typer.Argument(
        ...,
        help="Event file (.jsonl/.json/.csv; - reads JSON Lines from stdin).",
        show_default=False,
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Tier changes, lifecycle changes and upgrade candidates, CloudEvents JSONL "
        "(default: stdout).",
    ),
    customers_out: Path | None = typer.Option(
        None, help="Per-customer snapshots, JSONL (default: not written)."
    ),
    errors_out: Path | None = typer.Option(
        None, help="Invalid lines as JSONL {line, reason, detail, raw} (default: not written)."
    ),
    as_of: str | None = typer.Option(
        None,
        help="Advance every customer to this date/time (ISO-8601) as the worker's timer "
        "does, and report --customers-out as of it (default: advance to the latest event "
        "time; snapshots as of each customer's last evaluation, as the streaming customers "
        "topic carries them).",
    ),
    cutoffs: Path | None = typer.Option(
        None,
        help="Population cut-offs JSON for percentile conditions (as published by the "
        "workers; default: exact cut-offs of this file's customers).",
    ),
    policy: Path | None = typer.Option(
        None, help="Policy YAML (env TIERSTREAM_POLICY_FILE; default: the packaged one)."
    ),
    fmt: str | None = typer.Option(None, "--format", help=FORMAT_HELP),
    map_: list[str] | None = typer.Option(None, "--map", help=MAP_HELP),
    delimiter: str | None = typer.Option(None, help=DELIM_HELP + " [default: comma]"),
    header: bool = typer.Option(True, "--header/--no-header", help=HEADER_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No summary on stderr."),
) -> None:
    from rich.console import Console

    from app.adapters.policy_files import load_cutoffs, load_policy
    from app.domain.lifecycle import STAGES
    from app.service.batch_replay import classify_lines, write_outputs
    from schemas.codec import iso, parse_timestamp

    settings = settings_from_options(policy_file=policy)
    pol = load_policy(settings.policy_file)
    as_of_ms: int | None = None
    if as_of is not None:
        try:
            as_of_ms = parse_timestamp(as_of, "--as-of")
        except InvalidEvent as exc:
            raise ConfigError(exc.detail) from None
    # Like the worker: events dated further than the allowed skew past now are invalid.
    max_ts = int((time.time() + settings.max_future_skew_s) * 1000)
    cuts = load_cutoffs(cutoffs) if cutoffs is not None else None
    lines = read_lines(events_file, fmt, map_, delimiter, header)
    result = classify_lines(lines, pol, max_ts, as_of_ms, cuts)
    with contextlib.ExitStack() as stack:
        write_outputs(
            result,
            open_out(out, stack),
            open_out(customers_out, stack) if customers_out else None,
            open_out(errors_out, stack) if errors_out else None,
            as_of_ms,
        )
        sys.stdout.flush()
    err = Console(stderr=True)
    report_rejected(err, [(r.line, r.reason, r.detail) for r in result.rejected], errors_out)
    if not quiet:
        from rich.table import Table

        rr = result.replay
        table = Table(title="classify summary", caption=f"policy {pol.name} v{pol.version}")
        table.add_column("what")
        table.add_column("count", justify="right")
        table.add_row("events", f"{rr.events:,}")
        table.add_row("customers", f"{len(rr.states):,}")
        table.add_row("duplicates dropped", f"{rr.duplicates:,}")
        table.add_row("invalid lines", f"{len(result.rejected):,}")
        table.add_row("tier changes", f"{result.tier_changes:,}")
        table.add_row("lifecycle changes", f"{result.count('lifecycle_change'):,}")
        table.add_row("upgrade candidates", f"{result.count('upgrade_candidate'):,}")
        if pol.churn is not None:
            table.add_row("churn warnings", f"{result.count('churn_warning'):,}")
            table.add_row("churn warnings cleared", f"{result.count('churn_cleared'):,}")
        table.add_row("advanced to", iso(result.as_of) if result.as_of else "-")
        counts = result.customers_per_tier()
        total = max(sum(counts.values()), 1)
        for t in sorted(counts, key=pol.rank):
            table.add_row(f"tier {t}", f"{counts[t]:,} ({counts[t] / total:.1%})")
        stages = result.customers_per_stage()
        for st in sorted(stages, key=lambda x: STAGES.index(x) if x in STAGES else 99):
            table.add_row(f"stage {st}", f"{stages[st]:,} ({stages[st] / total:.1%})")
        err.print(table)
