"""``tierstream simulate``: a generated event stream (:mod:`app.tools.simulate`)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import typer

from app.cli._base import (
    cli,
    open_out,
)
from app.errors import ConfigError


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
        stream = open_out(out, stack)
        for doc in sim.events:
            stream.write(orjson.dumps(doc) + b"\n")
        if truth_out is not None:
            truth = open_out(truth_out, stack)
            for t in sim.truth:
                truth.write(orjson.dumps(t.to_dict()) + b"\n")
        sys.stdout.flush()
    churners = sum(1 for t in sim.truth if t.churned_at is not None)
    Console(stderr=True).print(
        f"simulated {len(sim.events):,} events of {customers:,} customers over {days} days "
        f"from {start_date.isoformat()} (seed {seed}; {churners:,} churners)",
        highlight=False,
    )
