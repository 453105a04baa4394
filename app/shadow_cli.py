"""``tierstream policy diff``: shadow evaluation on the command line (registered in
:mod:`app.cli` next to the other ``policy`` commands).

The command computes a :class:`app.service.shadow.PolicyDiff` and hands it to :func:`render_diff`
(or prints its JSON form). Rendering only needs the diff, so a diff fetched from running
workers (``PolicyDiff.from_dict`` of each, then ``merge``) is shown the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from app.service.shadow import PolicyDiff

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
    import time

    import orjson
    from rich.console import Console

    from app.adapters.policy_files import load_policy
    from app.cli import _read, _report_rejected, _settings
    from app.errors import ConfigError, InvalidEvent
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
        from app.query_cli import diff_workers

        diff_workers(new_file, worker, examples, as_of_ms, json_out)
        return
    assert events is not None
    settings = _settings(policy_file=policy)
    old = load_policy(settings.policy_file)
    new = load_policy(new_file)
    # As classify and the worker: events dated further than the allowed skew are invalid.
    max_ts = int((time.time() + settings.max_future_skew_s) * 1000)
    decoded, rejected = decode_lines(_read(events, fmt, map_, delimiter, header), max_ts)
    diff = diff_events(decoded, old, new, as_of_ms, examples)
    err = Console(stderr=True)
    _report_rejected(err, [(r.line, r.reason, r.detail) for r in rejected], None)
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
