"""Replay evaluation of the churn early warning on simulated customers whose churn is known
(``make churn-eval``; not a test).

    python -m tests.bench.churn_eval [--customers 3000] [--days 730] [--seed 1]
                                     [--churn-share 0.3] [--warmup-days 365]
                                     [--horizon-days 120] [--workers 2]

What is run. :func:`app.tools.simulate.simulate` generates the stream (every event type: purchases,
refunds, visits, e-mails, tickets, profiles, duplicates) and, per customer, the truth:
``churned_at`` (the customer makes no purchase after it), the yearly purchase rate and
whether the rate grows. The BG/NBD model is fitted (:func:`app.tools.fit.fit_events`) on the
calibration period, the first ``--warmup-days`` of the data. Then the whole stream is
replayed through the core (:func:`app.domain.replay.replay`) once per policy, and every
customer is advanced (:func:`app.domain.engine.advance`) to the end of the data, so that
customers who went silent get the warnings their due times give them. The policies are
``examples/churn-early-warning.yaml`` (its tiers, ``usual_gap`` and ``falling`` sections)
with the fitted model and only ``churn.severity`` changed, one level each:

- silence: ``silence_ratio >= 2`` (days silent over the customer's usual gap, the p90 of
  their own gaps between purchase days, 45 days with fewer than 3 gaps),
- falling: ``purchases_drop >= 0.75`` (purchases per day in the last 30 days at most a
  quarter of the 90 days before; compared only with at least 3 purchases in those 90),
- P(alive): ``p_alive < 0.3`` (BG/NBD with the fitted parameters),
- combination: any of the three,
- and the example policy's own three levels (watch / warning / critical) as it is, with
  the fitted model instead of the CDNOW one: once with any level as the alert, once with
  the first ``warning`` or ``critical`` of an episode as the alert.

Definitions (all times are event times):

- Window. ``W0`` = start + warm-up (= the end of the calibration period); ``L`` = end of
  the data - horizon. Warnings are counted from ``W0`` to the end of the data.
- Labels. Churner (positive): ``churned_at`` in ``[W0, L)``. Non-churner (negative): never
  churns in the data. Customers who churn before ``W0`` (already gone when the window
  opens) or after ``L`` (too close to the end to be noticed) are left out, and counted.
- Eligible: at least 2 purchases on different days before ``L`` (a one-time buyer has no
  rhythm, no repeat purchase for BG/NBD). Only eligible labelled customers are scored.
- Alert. A ``churn_warning`` that opens an episode (``previous_severity`` None; for the
  example's "warning+" row, the first ``warning``/``critical`` of an episode).
- Predicted churner, two ways: *standing*: the customer has an alert still standing at the
  end of the data (its episode was not cleared by a later purchase), whenever it was sent;
  *any*: the customer got at least one alert in ``[W0, end)``, cleared or not.
- Precision = TP / (TP + FP), recall = TP / (TP + FN), F1 their harmonic mean, over the
  eligible labelled customers.
- Lead before the expected purchase (true positives of *standing*): the purchase that never
  came was due, in expectation, one mean gap after the stop: ``churned_at + 365 / rate``
  days (a Poisson process has no memory; for growing customers the rate at the stop). Lead
  = that time - the alert time, in days: positive = warned before the missed purchase was
  even due. Delay after the stop = alert time - ``churned_at`` (negative = warned between
  the customer's last purchase and the stop). The tables give medians.
- Alerts sent: alerts in ``[W0, end)`` to eligible labelled customers. A false alarm is an
  alert to a customer who, in truth, had not made their last purchase yet: a non-churner,
  or a churner who bought again after the alert. Alerts sent before a customer's first
  purchase are counted apart (a check: a customer who never purchased is not silent, so
  there should be none; an earlier version of the core sent them).
- Rate bands: the standing precision / recall again, per band of the true purchase rate
  (at the stop for churners).

The run is deterministic for a seed (and does not depend on ``--workers``: customers are
split into shards, each replayed on its own, and a customer's outputs depend only on their
own events).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from app.domain.bgnbd import Model
from app.domain.engine import advance
from app.domain.events import Event
from app.domain.outputs import ChurnCleared, ChurnWarning
from app.domain.policy import Policy
from app.domain.policy_doc import policy_from_dict
from app.domain.replay import replay
from app.tools.fit import FitResult, fit_events
from app.tools.simulate import CustomerTruth, SimulationConfig, simulate
from schemas.codec import decode_event

DAY_MS = 86_400_000
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "churn-early-warning.yaml"

SILENCE: dict[str, Any] = {"silence_ratio": {"gte": 2}}
FALLING: dict[str, Any] = {"purchases_drop": {"gte": 0.75}}
P_ALIVE: dict[str, Any] = {"p_alive": {"lt": 0.3}}

#: Rows of the table: label -> (policy variant, severities that count as the alert).
ROWS: dict[str, tuple[str, frozenset[str] | None]] = {
    "silence: ratio >= 2": ("silence", None),
    "falling: drop >= 0.75": ("falling", None),
    "P(alive) < 0.3": ("p_alive", None),
    "combination (any)": ("combination", None),
    "example, any level": ("example", None),
    "example, warning+": ("example", frozenset({"warning", "critical"})),
}
#: Purchase-rate bands (purchases per year, the truth) for the recall breakdown.
BANDS: tuple[tuple[str, float, float], ...] = (
    ("< 6/yr", 0.0, 6.0),
    ("6-24/yr", 6.0, 24.0),
    (">= 24/yr", 24.0, math.inf),
)


# --- policies -------------------------------------------------------------------------------


def model_section(model: Model) -> dict[str, Any]:
    assert model.bgnbd is not None
    b = model.bgnbd
    return {"unit": model.unit, "bgnbd": {"r": b.r, "alpha": b.alpha, "a": b.a, "b": b.b}}


def build_policies(model: Model) -> dict[str, Policy]:
    """The example's tiers and churn settings with the fitted model; only the severity
    levels differ."""
    base = yaml.safe_load(EXAMPLE.read_text("utf-8"))
    base["model"] = model_section(model)
    one_level: dict[str, dict[str, Any]] = {
        "silence": {"when": SILENCE},
        "falling": {"when": FALLING},
        "p_alive": {"when": P_ALIVE},
        "combination": {"any": [SILENCE, FALLING, P_ALIVE]},
    }
    out: dict[str, Policy] = {}
    for name, level in one_level.items():
        doc = yaml.safe_load(yaml.safe_dump(base))
        doc["name"] = f"churn-eval-{name}"
        doc["version"] = "eval"
        doc["churn"]["severity"] = [{"name": "warning", **level}]
        doc["churn"]["actions"] = {"*": {"warning": "email"}}
        out[name] = policy_from_dict(doc, f"<churn-eval {name}>")
    doc = yaml.safe_load(yaml.safe_dump(base))
    doc["version"] = "eval"
    out["example"] = policy_from_dict(doc, "<churn-eval example>")
    return out


# --- replay (in worker processes) -----------------------------------------------------------

#: Set in the parent before the pool forks: the decoded stream, each customer's shard, the
#: policies and the end of the data.
_SHARED: dict[str, Any] = {}

#: A churn output, compactly: (customer, is_warning, at, severity, previous, episode start,
#: whether the customer had never bought at the time).
Row = tuple[str, bool, int, str, str | None, int, bool]


def replay_shard(variant: str, shard: int) -> list[Row]:
    events: list[Event] = _SHARED["events"]
    shard_of: dict[str, int] = _SHARED["shard_of"]
    policy: Policy = _SHARED["policies"][variant]
    end: int = _SHARED["end"]
    mine = [e for e in events if shard_of[e.customer_id] == shard]
    result = replay(mine, policy)
    outputs = list(result.outputs)
    for cid in sorted(result.states):
        outputs.extend(advance(result.states[cid], end - 1, policy))
    rows: list[Row] = []
    for o in outputs:
        if isinstance(o, ChurnWarning):
            never_bought = o.days_silent is None
            rows.append(
                (
                    o.customer_id,
                    True,
                    o.at,
                    o.severity,
                    o.previous_severity,
                    o.episode_started_at,
                    never_bought,
                )
            )
        elif isinstance(o, ChurnCleared):
            rows.append((o.customer_id, False, o.at, o.severity, None, o.episode_started_at, False))
    return rows


@dataclass(slots=True)
class Episode:
    start: int
    #: severity -> when it was first sent in the episode.
    sent: dict[str, int] = field(default_factory=dict)
    cleared_at: int | None = None
    #: Opened while the customer had never bought (should not happen any more).
    never_bought: bool = False

    def alert_at(self, levels: frozenset[str] | None) -> int | None:
        if levels is None:
            return self.start
        times = [t for s, t in self.sent.items() if s in levels]
        return min(times) if times else None


def episodes_of(rows: Iterable[Row]) -> dict[str, list[Episode]]:
    """Per customer, the churn-warning episodes in order (outputs of one customer are in
    event-time order)."""
    out: dict[str, list[Episode]] = defaultdict(list)
    for cid, is_warning, at, severity, previous, started, never_bought in rows:
        eps = out[cid]
        if is_warning:
            if previous is None:
                eps.append(Episode(started, never_bought=never_bought))
            ep = eps[-1]
            assert ep.start == started, (cid, ep.start, started)
            ep.sent.setdefault(severity, at)
        else:
            ep = eps[-1]
            assert ep.start == started and ep.cleared_at is None, (cid, ep.start, started)
            ep.cleared_at = at
    return out


# --- scoring --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Customer:
    cid: str
    label: bool  # churns in [W0, L)
    churned_at: int | None
    last_purchase_at: int
    rate_at_stop: float  # purchases per year at the stop (churners), else the base rate


@dataclass(slots=True)
class Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def f1(self) -> float | None:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p and r else None

    def add(self, predicted: bool, actual: bool) -> None:
        if predicted and actual:
            self.tp += 1
        elif predicted:
            self.fp += 1
        elif actual:
            self.fn += 1
        else:
            self.tn += 1


@dataclass(slots=True)
class RowResult:
    standing: Score = field(default_factory=Score)
    any_alert: Score = field(default_factory=Score)
    leads: list[float] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)
    alerts: int = 0
    false_alarms: int = 0
    #: Alerts sent while the customer had never bought (all of them false alarms).
    never_bought_alerts: int = 0
    by_band: dict[str, Score] = field(default_factory=lambda: defaultdict(Score))


def band_of(rate: float) -> str:
    return next(name for name, lo, hi in BANDS if lo <= rate < hi)


def score(
    customers: Sequence[Customer],
    episodes: Mapping[str, list[Episode]],
    levels: frozenset[str] | None,
    w0: int,
    end: int,
) -> RowResult:
    res = RowResult()
    for c in customers:
        alerts = [
            (t, ep)
            for ep in episodes.get(c.cid, [])
            if (t := ep.alert_at(levels)) is not None and w0 <= t < end
        ]
        standing = [
            (t, ep)
            for ep in episodes.get(c.cid, [])
            if ep.cleared_at is None and (t := ep.alert_at(levels)) is not None and t < end
        ]
        res.standing.add(bool(standing), c.label)
        res.any_alert.add(bool(alerts), c.label)
        res.by_band[band_of(c.rate_at_stop)].add(bool(standing), c.label)
        for t, ep in alerts:
            res.alerts += 1
            if c.churned_at is None or c.last_purchase_at > t:
                res.false_alarms += 1
            res.never_bought_alerts += ep.never_bought
        if standing and c.label:
            assert c.churned_at is not None
            t = standing[-1][0]
            expected = c.churned_at + 365.0 / c.rate_at_stop * DAY_MS
            res.leads.append((expected - t) / DAY_MS)
            res.delays.append((t - c.churned_at) / DAY_MS)
    return res


def rate_at(truth: CustomerTruth, t: int, end: int) -> float:
    """The true yearly purchase rate at ``t``: growing customers' rate rises linearly from
    the base rate at joining to twice it at the end (see
    :func:`app.tools.simulate._thinned_growth`)."""
    if not truth.grows:
        return truth.purchase_rate_per_year
    span = max(end - truth.joined_at, 1)
    return truth.purchase_rate_per_year * (1.0 + (t - truth.joined_at) / span)


@dataclass(slots=True)
class Population:
    customers: list[Customer]
    churned_before: int = 0
    churned_late: int = 0
    ineligible_pos: int = 0
    ineligible_neg: int = 0


def population(
    truth: Sequence[CustomerTruth], events: Sequence[Event], w0: int, label_end: int, end: int
) -> Population:
    days: dict[str, set[int]] = defaultdict(set)
    last: dict[str, int] = {}
    for e in events:
        if e.kind != "purchase" or e.amount < 0 or e.type == "refund":
            continue
        if e.occurred_at < label_end:
            days[e.customer_id].add(e.occurred_at // DAY_MS)
        if e.occurred_at > last.get(e.customer_id, -1):
            last[e.customer_id] = e.occurred_at
    pop = Population([])
    for t in truth:
        if t.churned_at is not None and t.churned_at < w0:
            pop.churned_before += 1
            continue
        if t.churned_at is not None and t.churned_at >= label_end:
            pop.churned_late += 1
            continue
        label = t.churned_at is not None
        if len(days[t.customer_id]) < 2:
            if label:
                pop.ineligible_pos += 1
            else:
                pop.ineligible_neg += 1
            continue
        rate = rate_at(t, t.churned_at if t.churned_at is not None else end, end)
        pop.customers.append(
            Customer(t.customer_id, label, t.churned_at, last[t.customer_id], rate)
        )
    return pop


# --- the run --------------------------------------------------------------------------------


def _date(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).date().isoformat()


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f} %"


def _days(values: list[float]) -> str:
    return "-" if not values else f"{statistics.median(values):+.0f}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m tests.bench.churn_eval", description=__doc__)
    ap.add_argument("--customers", type=int, default=3000)
    ap.add_argument("--days", type=int, default=730)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--churn-share", type=float, default=0.3)
    ap.add_argument(
        "--warmup-days",
        type=int,
        default=365,
        help="calibration period of the BG/NBD fit; warnings count after it",
    )
    ap.add_argument(
        "--horizon-days",
        type=int,
        default=120,
        help="churners count if they stop at least this long before the end of the data",
    )
    ap.add_argument("--workers", type=int, default=min(2, multiprocessing.cpu_count()))
    args = ap.parse_args(argv)
    if not 0 < args.warmup_days < args.days - args.horizon_days:
        ap.error("need 0 < --warmup-days < --days - --horizon-days")
    console = Console(highlight=False, width=170)
    t_start = time.perf_counter()

    cfg = SimulationConfig(
        customers=args.customers, days=args.days, seed=args.seed, churn_share=args.churn_share
    )
    sim = simulate(cfg)
    events = [decode_event(d) for d in sim.events]
    start, end = cfg.start_ms, cfg.end_ms
    w0 = start + args.warmup_days * DAY_MS
    label_end = end - args.horizon_days * DAY_MS
    t_sim = time.perf_counter()

    fit: FitResult = fit_events(events, until=w0 - 1, unit="weeks")
    policies = build_policies(fit.model)
    t_fit = time.perf_counter()

    workers = max(args.workers, 1)
    ids = sorted({t.customer_id for t in sim.truth})
    _SHARED.update(
        events=events,
        shard_of={cid: i % workers for i, cid in enumerate(ids)},
        policies=policies,
        end=end,
    )
    variants = sorted({v for v, _ in ROWS.values()})
    rows_by_variant: dict[str, list[Row]] = {v: [] for v in variants}
    tasks = [(v, k) for v in variants for k in range(workers)]
    if workers == 1:
        for v, k in tasks:
            rows_by_variant[v].extend(replay_shard(v, k))
    else:
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            futures = [(v, pool.submit(replay_shard, v, k)) for v, k in tasks]
            for v, fut in futures:
                rows_by_variant[v].extend(fut.result())
    t_replay = time.perf_counter()

    pop = population(sim.truth, events, w0, label_end, end)
    episodes = {v: episodes_of(rows) for v, rows in rows_by_variant.items()}
    results = {
        label: score(pop.customers, episodes[v], levels, w0, end)
        for label, (v, levels) in ROWS.items()
    }

    # --- report ---
    positives = sum(c.label for c in pop.customers)
    negatives = len(pop.customers) - positives
    churners = sum(t.churned_at is not None for t in sim.truth)
    console.print(
        f"[bold]Churn early warning, replay evaluation[/bold]: {args.customers:,} customers, "
        f"{args.days} days from {_date(start)} (seed {args.seed}, churn share "
        f"{args.churn_share:g}: {churners:,} churners), {len(events):,} events"
    )
    console.print(
        f"window: warnings from {_date(w0)} (after {args.warmup_days} days of warm-up = BG/NBD "
        f"calibration) to {_date(end)} (end of data); churners = stop in "
        f"[{_date(w0)}, {_date(label_end)}) (>= {args.horizon_days} days before the end)"
    )
    console.print(
        f"scored: {len(pop.customers):,} eligible customers (>= 2 purchase days before "
        f"{_date(label_end)}): {positives:,} churners, {negatives:,} non-churners; left out: "
        f"{pop.churned_before:,} stopped before the window, {pop.churned_late:,} stopped "
        f"within {args.horizon_days} days of the end, {pop.ineligible_pos:,} churners and "
        f"{pop.ineligible_neg:,} non-churners with < 2 purchase days"
    )
    b = fit.model.bgnbd
    assert b is not None
    truth_alpha = cfg.rate_shape / (cfg.rate_mean_per_year / 365.0 * 7.0)
    console.print(
        f"BG/NBD fitted on purchases until {_date(w0 - 1)} ({fit.customers:,} customers, "
        f"{fit.repeat_customers:,} with repeat purchases; log-likelihood "
        f"{fit.log_likelihood:,.1f}): r = {b.r:.4g}, alpha = {b.alpha:.4g} weeks, "
        f"a = {b.a:.4g}, b = {b.b:.4g} (the simulator's purchase rates are "
        f"Gamma(r = {cfg.rate_shape:g}, alpha = {truth_alpha:.3g} weeks); its churn is not "
        "BG/NBD's drop-out after a purchase, so a and b have no true value)"
    )

    table = Table(title="Predicted churner = an alert still standing at the end (not cleared)")
    for col in (
        "signal",
        "precision",
        "recall",
        "F1",
        "median lead before\nexpected purchase (d)",
        "median delay\nafter stop (d)",
        "alerts sent",
        "false alarms",
        "of which before\nany purchase",
    ):
        table.add_column(col, justify="left" if col == "signal" else "right")
    for label, r in results.items():
        s = r.standing
        table.add_row(
            label,
            _pct(s.precision),
            f"{_pct(s.recall)} ({s.tp}/{s.tp + s.fn})",
            _pct(s.f1),
            _days(r.leads),
            _days(r.delays),
            f"{r.alerts:,}",
            f"{r.false_alarms:,} ({_pct(r.false_alarms / r.alerts if r.alerts else None)})",
            f"{r.never_bought_alerts:,}",
        )
    console.print(table)

    table = Table(title="Predicted churner = any alert in the window (cleared or not)")
    for col in ("signal", "precision", "recall", "F1"):
        table.add_column(col, justify="left" if col == "signal" else "right")
    for label, r in results.items():
        s = r.any_alert
        table.add_row(
            label, _pct(s.precision), f"{_pct(s.recall)} ({s.tp}/{s.tp + s.fn})", _pct(s.f1)
        )
    console.print(table)

    table = Table(title="Standing alerts by true purchase rate: precision / recall (churners)")
    table.add_column("signal")
    first = next(iter(results.values()))
    for name, _, _ in BANDS:
        sc = first.by_band[name]
        table.add_column(f"{name}\n({sc.tp + sc.fn} churners,\n{sc.fp + sc.tn} others)")
    for label, r in results.items():
        table.add_row(
            label,
            *(f"{_pct(r.by_band[n].precision)} / {_pct(r.by_band[n].recall)}" for n, _, _ in BANDS),
        )
    console.print(table)
    t_end = time.perf_counter()
    console.print(
        f"time: simulate+decode {t_sim - t_start:.1f} s, fit {t_fit - t_sim:.1f} s, replay of "
        f"{len(variants)} policies on {workers} worker(s) {t_replay - t_fit:.1f} s, total "
        f"{t_end - t_start:.1f} s"
    )


if __name__ == "__main__":
    main()
