"""``tierstream explain CUSTOMER_ID``: why a customer is in their tier, asked of a running
worker (any one: the question goes to the owner of the customer's partition)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console


from app.cli._base import (
    cli,
    settings_from_options,
)
from app.cli.worker_http import (
    NoAnswer,
    default_url,
    error_of,
    fail,
    request,
)

EXPLAIN_HELP = """Why a customer is in their tier: asks a running worker.

    Prints the customer's tier and lifecycle stage (with since when), a demotion that
    hysteresis holds back, an upgrade-candidate flag, the policy and the time the customer
    was last evaluated, the features that decided, and the reasons: the conditions that
    held and, for every better tier, the first that failed; where scores, percentiles and
    RFM scores come from; what holds the customer in a tier whose entry conditions no
    longer hold; why the stage. --json prints the worker's answer as is.

    Any worker of the deployment will do: the request is routed to the worker that owns
    the customer's partition. Exit code 0; 1 when no worker knows the customer; 2 when no
    worker answers at --url (or it answers an error, e.g. 503 while rebalancing: retry).

    Env: TIERSTREAM_WEB_HOST and TIERSTREAM_WEB_PORT (--url default).
"""


def explain(
    customer_id: str = typer.Argument(..., help="The customer id.", show_default=False),
    url: str | None = typer.Option(
        None,
        "--url",
        help="Any worker's web address [default: http://TIERSTREAM_WEB_HOST:"
        "TIERSTREAM_WEB_PORT, i.e. http://127.0.0.1:6066].",
        show_default=False,
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the worker's JSON answer."),
) -> None:
    from rich.console import Console

    base = (url or default_url(settings_from_options())).rstrip("/")
    target = f"{base}/customers/{urllib.parse.quote(customer_id, safe='')}/explain"
    try:
        status, doc = request("GET", target)
    except (NoAnswer, ValueError) as exc:
        fail(str(exc))
    if status == 404 and isinstance(doc, Mapping) and doc.get("customer_id") == customer_id:
        fail(f"unknown customer {customer_id!r}: no worker at {base} has seen it", 1)
    if status != 200 or not isinstance(doc, Mapping):
        fail(f"the worker at {base} answered {status}: {error_of(doc)}")
    if json_out:
        typer.echo(json.dumps(doc, indent=2, ensure_ascii=False))
        return
    render_explain(doc, Console())


def _when(ms: Any) -> str:
    from schemas.codec import iso

    return iso(int(ms)) if isinstance(ms, int) else "-"


def _value(v: Any) -> str:
    from app.domain.conditions import fmt

    if v is None:
        return "null (none, or infinite)"
    return fmt(v)


def render_explain(doc: Mapping[str, Any], console: Console) -> None:
    """Print an explain document (:func:`app.service.explain.explain`) for people."""
    from rich.table import Table
    from rich.text import Text

    tier, stage = doc.get("tier"), doc.get("stage")
    console.print(
        Text.assemble(
            (str(doc.get("customer_id")), "bold"),
            "  tier ",
            (str(tier), "bold cyan"),
            f" since {_when(doc.get('tier_since'))}",
            "  stage ",
            (str(stage), "bold"),
            f" since {_when(doc.get('stage_since'))}",
        )
    )
    policy = doc.get("policy") or {}
    under = policy.get("evaluated_under")
    line = f"policy {policy.get('key')}"
    if under != policy.get("key"):
        line += f" (last evaluated under {under or 'no policy'})"
    console.print(
        f"{line}; as of the last evaluation, {_when(doc.get('as_of'))}",
        markup=False,
        highlight=False,
    )
    if doc.get("pending_tier") is not None:
        console.print(
            Text(
                f"demotion to {doc['pending_tier']} pending since "
                f"{_when(doc.get('pending_since'))} (hysteresis)",
                style="yellow",
            )
        )
    if doc.get("upgrade_candidate_since") is not None:
        console.print(
            Text(
                f"upgrade candidate since {_when(doc['upgrade_candidate_since'])}: "
                + "; ".join(doc.get("upgrade_reasons") or []),
                style="green",
            )
        )

    def lines(head: str, items: list[Any], style: str = "") -> None:
        """A bold heading, then one indented (and wrapped indented) line per item."""
        if not items:
            return
        console.print(Text(head, style="bold"))
        grid = Table.grid(padding=(0, 1))
        grid.add_column(width=1)
        grid.add_column()
        for item in items:
            grid.add_row("", Text(str(item), style=style))
        console.print(grid)

    entry = doc.get("entry_tier")
    console.print()
    if entry == tier:
        lines(f"why {tier}:", list(doc.get("reasons") or []))
    else:
        lines(f"{entry}'s conditions are the first that hold now:", list(doc.get("reasons") or []))
    if doc.get("hysteresis"):
        lines(f"why still {tier}:", [doc["hysteresis"]], "yellow")
    if doc.get("stage_reason"):
        lines(f"why {stage}:", [doc["stage_reason"]])
    churn = doc.get("churn")
    if churn:
        if churn.get("severity"):
            head = f"churn warning: {churn['severity']} since {_when(churn['since'])}"
        else:
            head = "churn signals (no warning open):"
        lines(head, list(churn.get("reasons") or []), "red" if churn.get("severity") else "")
    lines("notes:", list(doc.get("notes") or []), "yellow")

    deciding = doc.get("deciding") or {}
    if deciding:
        table = Table(title="key features", title_justify="left", show_edge=False)
        table.add_column("feature")
        table.add_column("value", justify="right")
        for name, value in deciding.items():
            table.add_row(Text(name), Text(_value(value)))
        console.print()
        console.print(table)


cli.command("explain", help=EXPLAIN_HELP)(explain)
