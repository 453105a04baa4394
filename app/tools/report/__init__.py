"""``tierstream report``: a self-contained HTML page about a run's outputs.

Input: the CloudEvents a ``classify --out`` file (or the output topics) carries — tier
changes, lifecycle changes, upgrade candidates, churn warnings and clearings — and,
optionally, customer snapshots (``classify --customers-out`` or the compacted
``customers`` topic). Output: one HTML file with inline CSS and inline SVG charts drawn
here (no scripts, fonts, images or network), showing aggregates only: customer ids are
read to follow each customer but never written.

The page: a header (policy, period, counts), tier population over time, the tier
transition matrix, churn warnings over time by severity (and clearings), per-tier revenue
share (needs snapshots) and lifecycle stages by tier.

One module per reason to change: :mod:`~app.tools.report.data` parses the outputs and
snapshots (files, lines or topics), :mod:`~app.tools.report.aggregates` computes what
the page shows (:func:`build_report`), :mod:`~app.tools.report.charts` draws the SVG
charts with the kit of :mod:`~app.tools.report.svg` (builder, axis ticks),
:mod:`~app.tools.report.page` assembles the HTML (:func:`render_html`) and writes it
(:func:`write_report`). What callers use is re-exported here.
"""

from app.tools.report.aggregates import Report, build_report
from app.tools.report.data import (
    CUSTOMERS_TOPIC,
    OUTPUT_TOPICS,
    Outputs,
    ReportError,
    load_from_broker,
    load_outputs,
    load_snapshots,
    parse_outputs,
    parse_snapshots,
    read_topics,
)
from app.tools.report.page import render_html, write_report

__all__ = [
    "CUSTOMERS_TOPIC",
    "OUTPUT_TOPICS",
    "Outputs",
    "Report",
    "ReportError",
    "build_report",
    "load_from_broker",
    "load_outputs",
    "load_snapshots",
    "parse_outputs",
    "parse_snapshots",
    "read_topics",
    "render_html",
    "write_report",
]
