"""Commands that ask running workers over HTTP (:mod:`app.stream.web`): ``tierstream explain``
and the ``--worker`` mode of ``tierstream policy diff`` (registered in :mod:`app.cli` and
:mod:`app.shadow_cli`). Plain ``urllib``: no HTTP client dependency.

Exit codes: 0; 1 for an unknown customer; 2 when no worker answers (or answers an
error, such as 503 during a rebalance: retry), or the policy is invalid.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from app.service.shadow import PolicyDiff
    from app.settings import Settings

#: Seconds to wait for an explain, and for one worker's policy diff (it decides every
#: customer of the worker's partitions).
EXPLAIN_TIMEOUT_S = 15.0
DIFF_TIMEOUT_S = 600.0

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


def default_url(settings: Settings) -> str:
    """The worker URL the settings describe (a wildcard bind address means this host)."""
    host = settings.web_host
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.web_port}"


class NoAnswer(Exception):
    """Nobody answers at a URL (refused, unreachable, timed out)."""


def request(
    method: str, url: str, body: bytes | None = None, timeout: float = EXPLAIN_TIMEOUT_S
) -> tuple[int, Any]:
    """``(status, JSON body)``; raises :class:`NoAnswer` when nothing answers, and
    ValueError when the answer is not JSON (not a tierstream worker)."""
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/yaml"
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except urllib.error.URLError as exc:
        raise NoAnswer(f"no worker answers at {url}: {exc.reason}") from None
    except (OSError, TimeoutError) as exc:
        raise NoAnswer(f"no worker answers at {url}: {exc}") from None
    try:
        return status, json.loads(raw)
    except ValueError:
        raise ValueError(
            f"{url} answered {status} with something that is not JSON: not a tierstream worker?"
        ) from None


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _error_of(doc: Any) -> str:
    return str(doc.get("error", doc)) if isinstance(doc, Mapping) else str(doc)


# --- tierstream explain ------------------------------------------------------------------


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

    from app.cli import _settings

    base = (url or default_url(_settings())).rstrip("/")
    target = f"{base}/customers/{urllib.parse.quote(customer_id, safe='')}/explain"
    try:
        status, doc = request("GET", target)
    except (NoAnswer, ValueError) as exc:
        _fail(str(exc))
    if status == 404 and isinstance(doc, Mapping) and doc.get("customer_id") == customer_id:
        _fail(f"unknown customer {customer_id!r}: no worker at {base} has seen it", 1)
    if status != 200 or not isinstance(doc, Mapping):
        _fail(f"the worker at {base} answered {status}: {_error_of(doc)}")
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
    from app.shadow_cli import render_diff

    new = load_policy(new_file)  # invalid: the problems, exit 2, before asking anybody
    text = new_file.read_bytes()
    base = worker.rstrip("/")
    try:
        status, cluster = request("GET", f"{base}/cluster")
    except (NoAnswer, ValueError) as exc:
        _fail(str(exc))
    if status != 200 or not isinstance(cluster, Mapping):
        _fail(f"the worker at {base} answered {status}: {_error_of(cluster)}")
    workers = [w for w in cluster["workers"] if w["partitions"]]
    if cluster["unassigned"] or not workers:
        _fail(
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
        _fail(str(exc))
    diffs: list[PolicyDiff] = []
    covered: list[int] = []
    for w, (status, doc) in zip(workers, answers, strict=True):
        if status == 400 and isinstance(doc, Mapping) and doc.get("problems"):
            problems = "".join(f"\n  {p['path']}: {p['problem']}" for p in doc["problems"])
            _fail(f"the worker at {w['url']} rejects {new_file}:{problems}")
        if status != 200 or not isinstance(doc, Mapping):
            _fail(f"the worker at {w['url']} answered {status}: {_error_of(doc)}")
        covered.extend(doc["worker"]["partitions"])
        try:
            diffs.append(PolicyDiff.from_dict(doc))
        except ValueError as exc:
            _fail(f"the worker at {w['url']} answered {exc}")
    if sorted(covered) != list(range(int(cluster["partitions"]))):
        _fail(
            f"the workers covered partitions {sorted(covered)}, not each of 0 to "
            f"{int(cluster['partitions']) - 1} once (a rebalance meanwhile?); retry"
        )
    try:
        diff = functools.reduce(PolicyDiff.merge, diffs)
    except ValueError as exc:  # e.g. a new policy version is being rolled out
        _fail(f"the workers' diffs do not add up: {exc}")
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
