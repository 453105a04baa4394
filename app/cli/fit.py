"""``tierstream fit``: the BG/NBD and Gamma-Gamma fit (:mod:`app.tools.fit`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from app.errors import ConfigError, InvalidEvent

if TYPE_CHECKING:
    from rich.console import Console

    from app.tools.fit import FitResult

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


@cli.command(
    help="Fit the BG/NBD churn model and the Gamma-Gamma spend model to an event file."
    + READ_NOTES
    + """
    Maximum likelihood over every customer with a purchase on or before --until (default:
    the day of the latest purchase). Each customer's RFM summary is the one the core
    computes (frequency: repeat purchase days; recency and T: from the first purchase day
    to the last one and to the --until day; monetary value: mean spend of the repeat days;
    refunds left out), with times in --unit: weeks are days / 7, as Fader, Hardie and Lee
    (2005) measured CDNOW. Purchases after --until are left out. BG/NBD gives r, alpha
    (purchase rates) and a, b (drop-out); Gamma-Gamma, fitted on the repeat customers,
    gives p, q, v (spend per purchase day).

    Prints the parameters, log-likelihoods and customer counts (stderr; --quiet: not),
    then the policy's `model:` block (stdout). With --policy FILE the block replaces the
    file's top-level `model:` block (or is appended), and the result is checked to load as
    a policy; with --write it is also written back, every other line and comment as it
    was. Exit code 0; 1 when the policy with the new block would not load (nothing
    written); 2 when the file cannot be read or the model cannot be fitted (no purchases,
    no repeat customers, no convergence).

    Env: TIERSTREAM_MAX_FUTURE_SKEW_S.
"""
)
def fit(
    events_file: Path = typer.Argument(
        ...,
        help="Event file (.jsonl/.json/.csv; - reads JSON Lines from stdin).",
        show_default=False,
    ),
    until: str | None = typer.Option(
        None,
        help="Last day of the calibration period (ISO-8601 date or time; its UTC day "
        "counts whole). Default: the day of the latest purchase.",
    ),
    unit: str = typer.Option("weeks", help="Time unit of the model: days or weeks."),
    policy: Path | None = typer.Option(
        None, help="Policy YAML to put the model block into (checked; written with --write)."
    ),
    write: bool = typer.Option(
        False, "--write", help="Write the model block into --policy (default: only check)."
    ),
    fmt: str | None = typer.Option(None, "--format", help=FORMAT_HELP),
    map_: list[str] | None = typer.Option(None, "--map", help=MAP_HELP),
    delimiter: str | None = typer.Option(None, help=DELIM_HELP + " [default: comma]"),
    header: bool = typer.Option(True, "--header/--no-header", help=HEADER_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No summary on stderr."),
) -> None:
    from rich.console import Console

    from app.domain.bgnbd import model_to_yaml
    from app.domain.errors import PolicyError
    from app.service.batch_replay import decode_lines
    from app.tools.fit import fit_events, write_model
    from schemas.codec import parse_timestamp

    if unit not in ("days", "weeks"):
        raise ConfigError(f"--unit must be days or weeks, got {unit!r}")
    if write and policy is None:
        raise ConfigError("--write needs --policy FILE")
    until_ms: int | None = None
    if until is not None:
        try:
            until_ms = parse_timestamp(until, "--until")
        except InvalidEvent as exc:
            raise ConfigError(exc.detail) from None
    settings = settings_from_options()
    # As classify and the worker: events dated further than the allowed skew are invalid.
    max_ts = int((time.time() + settings.max_future_skew_s) * 1000)
    events, rejected = decode_lines(read_lines(events_file, fmt, map_, delimiter, header), max_ts)
    err = Console(stderr=True)
    report_rejected(err, [(r.line, r.reason, r.detail) for r in rejected], None)
    source = "stdin" if str(events_file) == "-" else events_file.name
    result = fit_events(events, until_ms, "weeks" if unit == "weeks" else "days", source)
    if not quiet:
        _print_fit(err, result, len(rejected))
    typer.echo(model_to_yaml(result.model), nl=False)
    if policy is None:
        return
    try:
        write_model(policy, result.model, write)
    except PolicyError as exc:
        err.print(f"not written: {policy} with this model block would not load:", markup=False)
        for where, what in exc.problems:
            err.print(f"  {where}: {what}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    if write:
        err.print(f"wrote the model block into {policy}", markup=False, highlight=False)
    else:
        err.print(
            f"{policy} loads with this model block; --write writes it",
            markup=False,
            highlight=False,
        )


def _print_fit(err: Console, result: FitResult, invalid: int) -> None:
    from rich.table import Table

    model, s = result.model, result.summaries
    b = model.bgnbd
    assert b is not None  # fit_events always fits BG/NBD
    unit = model.unit.rstrip("s")
    table = Table(title=f"fit: BG/NBD and Gamma-Gamma, in {model.unit}")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_column("meaning")
    table.add_row(
        "customers", f"{result.customers:,}", f"first purchase by {model.fitted['until']}"
    )
    table.add_row("repeat customers", f"{result.repeat_customers:,}", "bought on 2+ days")
    table.add_row("purchases", f"{s.purchases:,}", "events in the calibration period")
    table.add_row("invalid lines", f"{invalid:,}", "")
    table.add_row("r", f"{b.r:.6g}", "purchase rate ~ Gamma(r, alpha): shape")
    table.add_row("alpha", f"{b.alpha:.6g}", f"purchase rate: scale, in {model.unit}")
    table.add_row("a", f"{b.a:.6g}", "drop-out probability ~ Beta(a, b)")
    table.add_row("b", f"{b.b:.6g}", "")
    table.add_row("log-likelihood", f"{result.log_likelihood:,.2f}", "BG/NBD")
    table.add_row("mean purchase rate", f"{b.r / b.alpha:.4g}", f"per {unit}, r / alpha")
    table.add_row("mean drop-out", f"{b.a / (b.a + b.b):.4g}", "per repeat purchase, a / (a + b)")
    g = model.gamma_gamma
    if g is not None and result.spend_log_likelihood is not None:
        table.add_row("p", f"{g.p:.6g}", "spend per purchase day ~ Gamma(p, nu)")
        table.add_row("q", f"{g.q:.6g}", "nu ~ Gamma(q, v)")
        table.add_row("v", f"{g.v:.6g}", "")
        table.add_row("mean spend", f"{g.population_mean:,.2f}", "per purchase day, p v / (q - 1)")
        table.add_row("log-likelihood", f"{result.spend_log_likelihood:,.2f}", "Gamma-Gamma")
        table.add_row("spend customers", f"{result.spend_customers:,}", "repeat, spend > 0")
    if result.spend_correlation is not None:
        table.add_row(
            "corr(frequency, spend)",
            f"{result.spend_correlation:.3f}",
            "Gamma-Gamma assumes about 0",
        )
    err.print(table)
    for note in result.notes:
        err.print(f"note: {note}", markup=False, highlight=False)
