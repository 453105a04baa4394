"""``tierstream report``: outputs -> one HTML page (:mod:`app.tools.report`). Exit codes: 0; 2
when the input cannot be read or holds no tierstream outputs, or the page cannot be written."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from app.errors import ConfigError

if TYPE_CHECKING:
    from app.tools.report import Outputs

from app.cli._base import (
    cli,
    settings_from_options,
)

REPORT_HELP = """Turn tier changes and customer snapshots into one self-contained HTML page.

    Reads OUTPUTS_FILE, the CloudEvents JSON Lines of `tierstream classify --out` (tier
    changes, lifecycle changes, upgrade candidates, churn warnings and clearings), and
    optionally --customers, customer snapshots as JSON Lines (`classify --customers-out`,
    or the compacted customers topic dumped as one value per line: that is a running
    worker's snapshot of every customer; the last line of a customer wins). With
    --from-topics it reads both from the broker instead (TIERSTREAM_BROKER,
    TIERSTREAM_TOPIC_PREFIX): the output topics and the customers topic from the start.

    The page shows the policy, the period and the counts; customers per tier over time;
    the tier transition matrix (from -> to, with first tiers); churn warnings over time
    by severity, and clearings; each tier's share of the customers and of the revenue
    (spend over 365 days and lifetime, from the snapshots); customers per lifecycle stage
    and tier. One file, inline CSS and SVG: no scripts, fonts or anything loaded over
    the network; aggregates only, no customer ids. Tiers are ordered best first as the
    tier changes' up/down directions show (or as in --policy).

    Prints the path of the written page. Exit code 0; 2 when an input cannot be read or
    holds no tierstream outputs, or the page cannot be written.
"""


def report(
    outputs_file: Path | None = typer.Argument(
        None,
        help="Outputs of `classify --out`: CloudEvents JSON Lines.",
        show_default=False,
    ),
    customers: Path | None = typer.Option(
        None,
        "--customers",
        "-c",
        help="Customer snapshots, JSON Lines (`classify --customers-out`, or the customers "
        "topic dumped); without them the page has no revenue share.",
    ),
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="The HTML page to write."),
    policy: Path | None = typer.Option(
        None, help="Policy YAML: order tiers and churn severities as it does."
    ),
    from_topics: bool = typer.Option(
        False,
        "--from-topics",
        help="Read the output topics and the customers topic from the broker instead of "
        "files (env TIERSTREAM_BROKER, TIERSTREAM_TOPIC_PREFIX).",
    ),
    broker: str | None = typer.Option(
        None, help="Bootstrap servers for --from-topics (env TIERSTREAM_BROKER)."
    ),
) -> None:
    from app.domain.errors import TierstreamError
    from app.tools.report import load_outputs, load_snapshots, write_report

    def fail(message: str) -> typer.Exit:
        typer.echo(f"error: {message}", err=True)
        return typer.Exit(2)

    if from_topics == (outputs_file is not None):
        raise fail("give an OUTPUTS_FILE or --from-topics (one of them)")
    try:
        tier_order: list[str] | None = None
        severity_order: list[str] | None = None
        if policy is not None:
            from app.adapters.policy_files import load_policy

            pol = load_policy(policy)
            tier_order = [t.name for t in pol.tiers]
            if pol.churn is not None:
                severity_order = [s.name for s in pol.churn.severities]
        if outputs_file is not None:
            outputs = load_outputs(outputs_file)
            snaps = load_snapshots(customers) if customers is not None else None
        else:
            outputs, snaps = _from_topics(broker)
            if customers is not None:
                snaps = load_snapshots(customers)
        result = write_report(outputs, snaps, out, tier_order, severity_order)
    except TierstreamError as exc:
        raise fail(str(exc)) from None
    typer.echo(
        f"{result.customers:,} customers, {result.counts['tier changes']:,} tier changes, "
        f"{len(result.tiers)} tiers"
        + ("" if result.revenue is not None else "; no snapshots: no revenue share"),
        err=True,
    )
    typer.echo(str(out))


def _from_topics(broker: str | None) -> tuple[Outputs, dict[str, dict[str, Any]]]:
    from aiokafka.errors import KafkaError

    from app.tools.report import load_from_broker

    settings = settings_from_options(broker=broker)
    try:
        return load_from_broker(settings)
    except (KafkaError, OSError, TimeoutError) as exc:
        raise ConfigError(f"cannot read the topics on {settings.broker}: {exc}") from None


cli.command("report", help=REPORT_HELP)(report)
