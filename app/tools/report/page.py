"""The ``tierstream report`` page: one HTML document with inline CSS, the charts of
:mod:`app.tools.report.charts` and tables, every text escaped (:func:`render_html`), and
:func:`write_report`, which builds, renders and writes it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from app.tools.report.aggregates import DAY_MS, Report, build_report, revenue_shares
from app.tools.report.charts import (
    CLEARED_COLOUR,
    LAST_TIER_COLOUR,
    churn_chart,
    population_chart,
    revenue_chart,
    severity_colours,
    stage_chart,
    tier_colours,
    transition_matrix,
)
from app.tools.report.data import Outputs, ReportError
from app.tools.report.svg import ymd

CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #f5f6f8; color: #1f2328;
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; }
main { max-width: 980px; margin: 0 auto; padding: 24px 20px 40px; }
header { margin-bottom: 18px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 0 0 4px; }
.sub { color: #57606a; margin: 0 0 14px; }
.kpis { display: grid; grid-template-columns: repeat(auto-fill, minmax(140px, 1fr));
  gap: 10px; margin: 0; }
.kpi { background: #fff; border: 1px solid #d8dee4; border-radius: 8px; padding: 10px 12px; }
.kpi dt { color: #57606a; font-size: 12.5px; }
.kpi dd { margin: 2px 0 0; font-size: 21px; font-weight: 600; }
.kpi dd.detail { font-size: 12px; font-weight: 400; color: #57606a; margin: 0; }
nav { margin: 14px 0 0; font-size: 14px; }
nav a { color: #0969da; margin-right: 14px; text-decoration: none; }
section { background: #fff; border: 1px solid #d8dee4; border-radius: 10px;
  padding: 18px 20px 14px; margin: 16px 0; }
.note { color: #57606a; margin: 0 0 10px; font-size: 14px; }
.empty { color: #57606a; font-style: italic; padding: 18px 0; }
svg { display: block; max-width: 100%; height: auto; margin: 6px 0 4px; }
svg text { font-family: inherit; fill: #1f2328; }
svg .tick { font-size: 12px; fill: #57606a; }
svg .axis-label { font-size: 12.5px; fill: #57606a; }
svg .legend { font-size: 13px; }
svg .legend-muted { font-size: 12px; fill: #6e7781; }
svg .head { font-size: 14px; font-weight: 600; }
svg .head-muted { font-size: 13px; fill: #6e7781; }
svg .end-label { font-size: 13px; font-weight: 600; }
svg .cell-num { font-size: 14px; }
svg .cell-num-light { font-size: 14px; fill: #fff; font-weight: 600; }
svg .cell-none { font-size: 13px; fill: #b0b7be; }
svg .cell-total { font-size: 13px; fill: #57606a; }
svg .bar-label { font-size: 13px; fill: #fff; font-weight: 600; }
svg .grid { stroke: #eaeef2; stroke-width: 1; }
svg .axis { stroke: #8c959f; stroke-width: 1; }
svg .axis-strong { stroke: #57606a; stroke-width: 1.2; }
table { border-collapse: collapse; margin: 10px 0 4px; font-size: 14px; }
th, td { padding: 5px 12px; border-bottom: 1px solid #eaeef2; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { color: #57606a; font-weight: 600; }
.swatch { display: inline-block; width: 11px; height: 11px; border-radius: 2px;
  margin-right: 6px; vertical-align: -1px; }
footer { color: #6e7781; font-size: 12.5px; margin-top: 20px; }
"""


def _kpi(label: str, value: str, *details: str) -> str:
    s = "".join(f'<dd class="detail">{escape(d)}</dd>' for d in details)
    return f'<div class="kpi"><dt>{escape(label)}</dt><dd>{escape(value)}</dd>{s}</div>'


def _section(ident: str, title: str, note: str, body: str) -> str:
    return (
        f'<section id="{ident}"><h2>{escape(title)}</h2><p class="note">{escape(note)}</p>'
        f"{body}</section>"
    )


def _empty(text: str) -> str:
    return f'<p class="empty">{escape(text)}</p>'


def _swatch(colour: str) -> str:
    return f'<span class="swatch" style="background:{colour}"></span>'


def render_html(report: Report) -> str:
    """The page: one HTML document, inline CSS and SVG, every text escaped."""
    r = report
    colours = tier_colours(r.tiers)
    policy = ", ".join(r.policies) if r.policies else "unknown policy"
    if r.period is not None:
        days = (r.period[1] - r.period[0]) / DAY_MS
        period = f"{ymd(r.period[0])} to {ymd(r.period[1])} ({days:,.0f} days of event time)"
    else:
        period = "no events"
    sub = f"policy {policy} · {period}"
    if r.sources:
        sub += " · from " + ", ".join(r.sources)
    d = r.directions
    kpis = [
        _kpi("customers", f"{r.customers:,}"),
        _kpi(
            "tier changes",
            f"{r.counts['tier changes']:,}",
            f"▲ {d['up']:,} up",
            f"▼ {d['down']:,} down",
            f"● {d['new']:,} first tiers",
        ),
        _kpi("lifecycle changes", f"{r.counts['lifecycle changes']:,}"),
        _kpi("upgrade candidates", f"{r.counts['upgrade candidates']:,}"),
        _kpi("churn warnings", f"{r.counts['churn warnings']:,}"),
        _kpi("warnings cleared", f"{r.counts['churn warnings cleared']:,}"),
    ]
    tiers_now = " · ".join(f"{t} {r.final_tiers.get(t, 0):,}" for t in r.tiers)
    parts: list[str] = [
        "<header>",
        f"<h1>{escape(r.title)}</h1>",
        f'<p class="sub">{escape(sub)}</p>',
        f'<dl class="kpis">{"".join(kpis)}</dl>',
        f'<p class="sub" style="margin-top:12px">customers per tier at the end: '
        f"{escape(tiers_now or '-')}</p>",
        '<nav><a href="#population">population</a><a href="#transitions">transitions</a>'
        '<a href="#churn">churn warnings</a><a href="#revenue">revenue share</a>'
        '<a href="#lifecycle">lifecycle stages</a></nav>',
        "</header>",
    ]

    if r.population is not None:
        body = population_chart(r.population, r.tiers, colours)
    else:
        body = _empty("No tier changes in these outputs.")
    parts.append(
        _section(
            "population",
            "Tier population over time",
            "Customers in each tier, replaying the tier changes in event time: a customer "
            "counts in their latest tier from their first tier change on.",
            body,
        )
    )

    if r.transitions:
        body = transition_matrix(r.transitions, r.tiers, colours)
    else:
        body = _empty("No tier changes in these outputs.")
    parts.append(
        _section(
            "transitions",
            "Tier transitions",
            "Every tier change, counted by the tier a customer left (rows; “none” is a "
            "customer's first tier) and the tier they entered (columns).",
            body,
        )
    )

    if r.churn is not None and r.cleared is not None:
        sev = severity_colours(r.severities)
        body = churn_chart(r.churn, r.cleared, r.severities, sev)
        totals = Counter({s: sum(r.churn.values[s]) for s in r.severities})
        rows = "".join(
            f"<tr><td>{_swatch(sev[s])}{escape(s)}</td><td>{totals[s]:,}</td></tr>"
            for s in r.severities
        )
        body += (
            "<table><tr><th>severity</th><th>warning events</th></tr>"
            f"{rows}<tr><td>{_swatch(CLEARED_COLOUR)}cleared</td>"
            f"<td>{sum(r.cleared.values['cleared']):,}</td></tr></table>"
        )
    else:
        body = _empty(
            "No churn warnings in these outputs (the policy has no churn: section, or nobody "
            "went quiet)."
        )
    parts.append(
        _section(
            "churn",
            "Churn warnings over time",
            "Warnings raised or escalated per period, by severity (above the axis), and "
            "episodes cleared because the customer purchased again (below).",
            body,
        )
    )

    if r.revenue is not None:
        shares = revenue_shares(r.revenue)
        body = revenue_chart(r.revenue, colours)
        rows = "".join(
            f"<tr><td>{_swatch(colours.get(x.tier, LAST_TIER_COLOUR))}{escape(x.tier)}</td>"
            f"<td>{x.customers:,}</td><td>{shares['customers'][x.tier]:.1f}%</td>"
            f"<td>{x.spend_365d:,.0f}</td><td>{shares['spend_365d'][x.tier]:.1f}%</td>"
            f"<td>{x.lifetime_spend:,.0f}</td><td>{shares['lifetime_spend'][x.tier]:.1f}%</td>"
            "</tr>"
            for x in r.revenue
        )
        body += (
            '<table class="revenue"><tr><th>tier</th><th>customers</th><th>share</th>'
            "<th>spend, 365 days</th><th>share</th><th>lifetime spend</th><th>share</th></tr>"
            f"{rows}</table>"
        )
        note = (
            f"From the customer snapshots ({r.snapshot_customers:,} customers): each tier's "
            "share of the customers, of the spend over the last 365 days and of the "
            "lifetime spend (refunds subtracted)."
        )
    else:
        body = _empty(
            "No customer snapshots given: revenue needs them (classify --customers-out, or "
            "the customers topic; tierstream report --customers FILE)."
        )
        note = "Each tier's share of the customers and of the spend."
    parts.append(_section("revenue", "Revenue share by tier", note, body))

    if r.stages:
        body = stage_chart(r.stages, r.stage_tiers, r.tiers, colours)
    else:
        body = _empty("No lifecycle changes in these outputs.")
    parts.append(
        _section(
            "lifecycle",
            "Lifecycle stages",
            f"Customers per lifecycle stage at the end (from the {r.stage_source}), split "
            "by their tier.",
            body,
        )
    )
    foot = (
        "Generated by tierstream report. Self-contained: no scripts and nothing loaded "
        "from elsewhere. Aggregates only: no customer ids."
    )
    if r.skipped:
        foot += f" {r.skipped:,} input lines were not tierstream outputs and were skipped."
    parts.append(f"<footer>{escape(foot)}</footer>")
    head = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'\">"
        f"<title>{escape(r.title)} — {escape(policy)}</title><style>{CSS}</style></head>"
        "<body><main>"
    )
    return head + "\n".join(parts) + "</main></body></html>\n"


def write_report(
    outputs: Outputs,
    snapshots: Mapping[str, Mapping[str, Any]] | None,
    path: Path,
    tier_order: Sequence[str] | None = None,
    severity_order: Sequence[str] | None = None,
) -> Report:
    """Build, render and write the page to ``path``; returns what it shows."""
    report = build_report(outputs, snapshots, tier_order, severity_order)
    try:
        path.write_text(render_html(report), "utf-8")
    except OSError as exc:
        raise ReportError(f"cannot write {path}: {exc.strerror or exc}") from None
    return report
