"""``tierstream report``: one self-contained HTML page about a run's outputs.

What callers use, re-exported from the module that holds it.
"""

from app.tools.report.data import (
    CUSTOMERS_TOPIC,
    OUTPUT_TOPICS,
    Outputs,
    Report,
    ReportError,
    build_report,
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
