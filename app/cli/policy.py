"""``tierstream policy check | features | apply | diff``.

``diff`` is the shadow evaluation: it computes a :class:`app.service.shadow.PolicyDiff` and
hands it to :func:`render_diff` (or prints its JSON form); with ``--worker`` it asks every
running worker for the diff of its partitions and merges them (:func:`diff_workers`)."""

from __future__ import annotations

import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from app.errors import ConfigError, InvalidEvent

if TYPE_CHECKING:
    from rich.console import Console

    from app.service.shadow import PolicyDiff

from app.cli._base import (
    policy_cli,
    read_lines,
    report_rejected,
    settings_from_options,
)
from app.cli.worker_http import (
    DIFF_TIMEOUT_S,
    NoAnswer,
    error_of,
    fail,
    request,
)


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

    settings = settings_from_options(broker=broker)
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


DIFF_HELP = """Shadow evaluation: how many customers would move from which tier to which under
    a new policy, with examples. Nothing is emitted.

    Replays --events with the current policy (--policy) exactly as `tierstream classify`
    does, advancing every customer to --as-of (default: the latest event time). Then every
    customer is decided again by NEW_FILE, afresh: as when a new policy version is deployed,
    its hysteresis (stay conditions, demotion grace) holds nobody back on this first
    decision. Each customer is decided as of their last evaluation, as the engine does on a
    policy change; with --as-of, as of that time. Percentile conditions of either policy
    are decided with the exact cut-offs of the file's customers.

    Prints the transition matrix (rows: current tiers in the current policy's order;
    columns: new tiers in the new policy's order; unchanged cells dimmed, moves up green,
    down red, reassigned yellow; totals are the customers per tier before and after), the
    line "N of M customers (x %) would change tier: u up, d down, r reassigned", and up to
    --examples customers per moving cell (the smallest customer ids) with the new policy's
    reasons and why they are in their current tier. --json prints the same as one JSON
    object instead.

    Up, down and reassigned, exactly as the tier changes the new policy would emit say:
    when a customer's current tier name is also a tier of the new policy, the two tiers'
    places in the new policy compare (up or down). Otherwise (a renamed or removed tier,
    e.g. A B C D against Gold Silver Bronze) the move is "reassigned": a change of scheme,
    neither up nor down.

    Invalid lines are reported on stderr and skipped. Exit code 0; 2 when a policy or the
    event file cannot be read.

    With --worker URL instead of --events, the customers are the running workers' own:
    the worker at URL lists every worker of its deployment (GET /cluster), each decides
    the customers of its partitions (POST /policy/diff, the newest state, in memory or
    in its table) and the diffs are added up. The current policy is the one the workers
    run; each customer is decided as of their last evaluation (with --as-of: as of that
    time, or their last evaluation if later; nobody is advanced); percentile conditions
    of the new policy use the cut-offs the workers hold. Exit code 2 when a worker does
    not answer, rejects the policy, or partitions moved meanwhile (retry).

    Env: TIERSTREAM_POLICY_FILE (--policy default), TIERSTREAM_MAX_FUTURE_SKEW_S.
"""


def policy_diff(
    new_file: Path = typer.Argument(
        ..., help="The new policy YAML, to compare with the current one.", show_default=False
    ),
    events: Path | None = typer.Option(
        None,
        "--events",
        "-e",
        help="Event file to replay (.jsonl/.json/.csv; - reads JSON Lines from stdin), "
        "read as `classify` reads it.",
        show_default=False,
    ),
    worker: str | None = typer.Option(
        None,
        "--worker",
        "-w",
        help="Instead of --events: any running worker's web address (e.g. "
        "http://127.0.0.1:6066); every worker of its deployment diffs its own customers.",
        show_default=False,
    ),
    policy: Path | None = typer.Option(
        None,
        "--policy",
        help="The current policy YAML (env TIERSTREAM_POLICY_FILE; default: the packaged one).",
    ),
    as_of: str | None = typer.Option(
        None,
        help="Advance every customer to this date/time (ISO-8601) and decide them with the "
        "new policy as of it (default: advance to the latest event time; decide each "
        "customer as of their last evaluation).",
    ),
    examples: int = typer.Option(
        3, min=0, help="Example customers shown per moving cell (0: none)."
    ),
    json_out: bool = typer.Option(
        False, "--json", help="Print the diff as one JSON object instead of the tables."
    ),
    fmt: str | None = typer.Option(
        None, "--format", help="Input format: jsonl or csv (default: from the extension)."
    ),
    map_: list[str] | None = typer.Option(
        None,
        "--map",
        help="CSV column of each event field, FIELD=COLUMN[,...], as for `classify`. Repeatable.",
    ),
    delimiter: str | None = typer.Option(
        None, help="CSV delimiter, as for `classify`. [default: comma]"
    ),
    header: bool = typer.Option(
        True, "--header/--no-header", help="Whether the CSV's first row names the columns."
    ),
) -> None:

    import orjson
    from rich.console import Console

    from app.adapters.policy_files import load_policy
    from app.errors import ConfigError
    from app.service.batch_replay import decode_lines
    from app.service.shadow import diff_events
    from schemas.codec import parse_timestamp

    if (events is None) == (worker is None):
        raise ConfigError("give exactly one of --events FILE and --worker URL")
    if worker is not None and (policy is not None or fmt or map_ or delimiter):
        raise ConfigError(
            "--policy, --format, --map and --delimiter go with --events; with --worker the "
            "current policy is the one the workers run"
        )
    as_of_ms: int | None = None
    if as_of is not None:
        try:
            as_of_ms = parse_timestamp(as_of, "--as-of")
        except InvalidEvent as exc:
            raise ConfigError(exc.detail) from None
    if worker is not None:
        diff_workers(new_file, worker, examples, as_of_ms, json_out)
        return
    assert events is not None
    settings = settings_from_options(policy_file=policy)
    old = load_policy(settings.policy_file)
    new = load_policy(new_file)
    # As classify and the worker: events dated further than the allowed skew are invalid.
    max_ts = int((time.time() + settings.max_future_skew_s) * 1000)
    decoded, rejected = decode_lines(read_lines(events, fmt, map_, delimiter, header), max_ts)
    diff = diff_events(decoded, old, new, as_of_ms, examples)
    err = Console(stderr=True)
    report_rejected(err, [(r.line, r.reason, r.detail) for r in rejected], None)
    if json_out:
        typer.echo(orjson.dumps(diff.to_dict(), option=orjson.OPT_INDENT_2).decode())
        return
    source = f"{events} replayed with {old.key}"
    if old.ranked or new.ranked:
        source += "; percentiles use the exact cut-offs of its customers"
    render_diff(diff, Console(), source)


def render_diff(diff: PolicyDiff, console: Console, source: str | None = None) -> None:
    """Print a diff: the transition matrix, the summary line, notes and the examples.

    ``source`` says where the customers came from (a replayed file, running workers)."""
    from rich.table import Table
    from rich.text import Text

    from schemas.codec import iso

    rows, columns = diff.rows(), diff.columns()
    before, after = diff.before(), diff.after()
    total = diff.customers
    if diff.at is not None:
        when = f"as of {iso(diff.at)} (or their last evaluation, if later)"
    elif diff.evaluated_from is None or diff.evaluated_to is None:
        when = "as of their last evaluation"
    elif diff.evaluated_from == diff.evaluated_to:
        when = f"as of their last evaluation, {iso(diff.evaluated_from)}"
    else:
        when = (
            f"as of their last evaluation, {iso(diff.evaluated_from)} to {iso(diff.evaluated_to)}"
        )
    head = (
        f"current {diff.old_policy} -> new {diff.new_policy}: {total:,} customers, decided {when}"
    )
    console.print(head + (f"\n({source})" if source else ""), markup=False, highlight=False)

    table = Table(
        title="tier transitions",
        caption="rows: current tier; columns: new tier",
    )
    table.add_column(Text("current \\ new"))
    for c in columns:
        table.add_column(Text(c), justify="right")
    table.add_column("total", justify="right")
    styles = {"same": "dim", "up": "green", "down": "red", "reassigned": "yellow", "new": ""}
    for r in rows:
        cells: list[Text] = []
        for c in columns:
            n = diff.counts.get((r, c), 0)
            cells.append(Text(f"{n:,}", style=styles[diff.movement(r, c)]) if n else Text(""))
        table.add_row(Text(r), *cells, Text(f"{before[r]:,}"))
    table.add_section()
    table.add_row(Text("total"), *(Text(f"{after[c]:,}") for c in columns), Text(f"{total:,}"))
    console.print(table)

    moves = diff.moves()
    share = f" ({100 * moves['changed'] / total:.1f} %)" if total else ""
    summary = (
        f"{moves['changed']:,} of {total:,} customers{share} would change tier: "
        f"{moves['up']:,} up, {moves['down']:,} down"
    )
    if moves["reassigned"]:
        summary += f", {moves['reassigned']:,} reassigned (from a tier the new policy lacks)"
    if moves["new"]:
        summary += f", {moves['new']:,} new (no tier yet)"
    console.print(summary, markup=False, highlight=False)
    notes: list[str] = []
    if diff.old_policy == diff.new_policy:
        notes.append(
            f"both policies are {diff.old_policy}: the engine decides afresh only when the "
            "name or version changes (with the same version, hysteresis keeps applying)"
        )
    if diff.held:
        notes.append(
            f"{diff.held:,} customers are held in their current tier by hysteresis (stay "
            "conditions or a demotion grace); the new policy decides them afresh"
        )
    if diff.other_policy:
        notes.append(
            f"{diff.other_policy:,} customers were last evaluated under another policy than "
            f"{diff.old_policy}; their current tier comes from it"
        )
    for note in notes:
        console.print("note: " + note, markup=False, highlight=False)

    for r in rows:
        for c in columns:
            kept = diff.examples.get((r, c))
            if not kept:
                continue
            n = diff.counts.get((r, c), 0)
            shown = "" if len(kept) >= n else "; the first by customer id"
            if 1 < len(kept) < n:
                shown = f"; the first {len(kept)} by customer id"
            console.print()
            console.print(
                Text.assemble(
                    (f"{r} -> {c}", "bold"),
                    f": {n:,} customer{'s' if n != 1 else ''}, {diff.movement(r, c)}{shown}",
                )
            )
            grid = Table.grid(padding=(0, 1))
            grid.add_column(width=1)
            grid.add_column(no_wrap=True)
            grid.add_column()
            for e in kept:
                grid.add_row("", Text(e.customer_id, style="bold"), Text(f"as of {iso(e.at)}"))
                grid.add_row("", Text(f"  new {c}:"), Text("; ".join(e.reasons)))
                grid.add_row("", Text(f"  was {r}:"), Text("; ".join(e.old_reasons)))
            console.print(grid)


# --- tierstream policy diff --worker -------------------------------------------------------


def diff_workers(
    new_file: Path, worker: str, examples: int, as_of: int | None, json_out: bool
) -> None:
    """``policy diff --worker``: every worker's diff of its partitions, merged."""
    import functools

    import orjson
    from rich.console import Console

    from app.adapters.policy_files import load_policy
    from app.service.shadow import PolicyDiff

    new = load_policy(new_file)  # invalid: the problems, exit 2, before asking anybody
    text = new_file.read_bytes()
    base = worker.rstrip("/")
    try:
        status, cluster = request("GET", f"{base}/cluster")
    except (NoAnswer, ValueError) as exc:
        fail(str(exc))
    if status != 200 or not isinstance(cluster, Mapping):
        fail(f"the worker at {base} answered {status}: {error_of(cluster)}")
    workers = [w for w in cluster["workers"] if w["partitions"]]
    if cluster["unassigned"] or not workers:
        fail(
            f"partitions {cluster['unassigned']} of {cluster['app_id']} have no worker "
            "(starting or rebalancing?); retry"
        )
    query: dict[str, int] = {"examples": examples}
    if as_of is not None:
        query["as_of"] = as_of
    params = urllib.parse.urlencode(query)

    def ask(w: Mapping[str, Any]) -> tuple[int, Any]:
        url = f"{str(w['url']).rstrip('/')}/policy/diff?{params}"
        return request("POST", url, text, timeout=DIFF_TIMEOUT_S)

    try:
        with ThreadPoolExecutor(max_workers=len(workers)) as pool:
            answers = list(pool.map(ask, workers))
    except (NoAnswer, ValueError) as exc:
        fail(str(exc))
    diffs: list[PolicyDiff] = []
    covered: list[int] = []
    for w, (status, doc) in zip(workers, answers, strict=True):
        if status == 400 and isinstance(doc, Mapping) and doc.get("problems"):
            problems = "".join(f"\n  {p['path']}: {p['problem']}" for p in doc["problems"])
            fail(f"the worker at {w['url']} rejects {new_file}:{problems}")
        if status != 200 or not isinstance(doc, Mapping):
            fail(f"the worker at {w['url']} answered {status}: {error_of(doc)}")
        covered.extend(doc["worker"]["partitions"])
        try:
            diffs.append(PolicyDiff.from_dict(doc))
        except ValueError as exc:
            fail(f"the worker at {w['url']} answered {exc}")
    if sorted(covered) != list(range(int(cluster["partitions"]))):
        fail(
            f"the workers covered partitions {sorted(covered)}, not each of 0 to "
            f"{int(cluster['partitions']) - 1} once (a rebalance meanwhile?); retry"
        )
    try:
        diff = functools.reduce(PolicyDiff.merge, diffs)
    except ValueError as exc:  # e.g. a new policy version is being rolled out
        fail(f"the workers' diffs do not add up: {exc}")
    if json_out:
        typer.echo(orjson.dumps(diff.to_dict(), option=orjson.OPT_INDENT_2).decode())
        return
    source = (
        f"{len(diffs)} worker{'s' if len(diffs) != 1 else ''} of {cluster['app_id']} "
        f"via {base}, current policy as they run it"
    )
    if new.ranked:
        source += "; percentiles use the cut-offs the workers hold"
    render_diff(diff, Console(), source)


policy_cli.command("diff", help=DIFF_HELP)(policy_diff)
