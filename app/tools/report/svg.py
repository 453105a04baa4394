"""The drawing kit of the report's charts: a tiny SVG builder that escapes every text,
round axis ticks for counts and for event time, and label placement."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from html import escape

from app.tools.report.aggregates import DAY_MS


def nice_ticks(hi: float, count: int = 5) -> list[float]:
    """0 and round steps up to at least ``hi``."""
    if hi <= 0:
        return [0.0, 1.0]
    raw = hi / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    n = math.ceil(hi / step - 1e-9)
    return [i * step for i in range(n + 1)]


def fmt_num(v: float) -> str:
    """An axis value: a whole number with thousands separators, else one decimal."""
    if abs(v - round(v)) < 1e-9:
        return f"{round(v):,}"
    return f"{v:,.1f}"


def _date(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


def ymd(ms: int) -> str:
    """The UTC date of epoch milliseconds as YYYY-MM-DD."""
    return _date(ms).strftime("%Y-%m-%d")


def time_ticks(t0: int, t1: int) -> list[tuple[int, str]]:
    """Tick positions and labels for a time axis from ``t0`` to ``t1`` (ms)."""
    days = (t1 - t0) / DAY_MS
    d0 = _date(t0)
    ticks: list[tuple[int, str]] = []
    if days <= 21:
        d = datetime(d0.year, d0.month, d0.day, tzinfo=UTC)
        step = 1 if days <= 10 else 2
        while (ms := int(d.timestamp() * 1000)) <= t1:
            if ms >= t0:
                ticks.append((ms, d.strftime("%b %d")))
            d += timedelta(days=step)
        return ticks
    if days <= 120:
        d = datetime(d0.year, d0.month, d0.day, tzinfo=UTC)
        d -= timedelta(days=d.weekday())
        while (ms := int(d.timestamp() * 1000)) <= t1:
            if ms >= t0:
                ticks.append((ms, d.strftime("%b %d")))
            d += timedelta(days=7 if days <= 60 else 14)
        return ticks
    months = 1 if days <= 550 else 3 if days <= 1500 else 12
    y, m = d0.year, d0.month
    while True:
        d = datetime(y, m, 1, tzinfo=UTC)
        ms = int(d.timestamp() * 1000)
        if ms > t1:
            break
        if ms >= t0 and (m - 1) % months == 0:
            label = d.strftime("%Y") if months == 12 else d.strftime("%b %Y")
            if months == 1 and m != 1 and ticks:
                label = d.strftime("%b")
            ticks.append((ms, label))
        m += 1
        if m > 12:
            y, m = y + 1, 1
    return ticks


class Svg:
    """A tiny SVG builder: every text is escaped."""

    def __init__(self, width: int, height: int, label: str) -> None:
        self.width = width
        self.height = height
        self.parts: list[str] = [
            f'<svg viewBox="0 0 {width} {height}" '
            f'width="{width}" height="{height}" role="img" aria-label="{escape(label)}">'
        ]

    def add(self, markup: str) -> None:
        self.parts.append(markup)

    def text(
        self,
        x: float,
        y: float,
        content: str,
        anchor: str = "start",
        cls: str = "",
        extra: str = "",
    ) -> None:
        c = f' class="{cls}"' if cls else ""
        self.parts.append(
            f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{c}{extra}>'
            f"{escape(content)}</text>"
        )

    def rect(
        self,
        x: float,
        y: float,
        w: float,
        h: float,
        fill: str,
        tip: str | None = None,
        extra: str = "",
    ) -> None:
        body = f"<title>{escape(tip)}</title>" if tip else ""
        self.parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" height="{max(h, 0):.1f}" '
            f'fill="{fill}"{extra}>{body}</rect>'
            if body
            else f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" '
            f'height="{max(h, 0):.1f}" fill="{fill}"{extra}/>'
        )

    def line(self, x1: float, y1: float, x2: float, y2: float, cls: str) -> None:
        self.parts.append(
            f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" class="{cls}"/>'
        )

    def legend(self, x: float, y: float, items: Sequence[tuple[str, str]]) -> None:
        """A horizontal legend of colour swatches and names starting at (x, y)."""
        for name, colour in items:
            self.rect(x, y - 10, 12, 12, colour)
            self.text(x + 17, y, name, cls="legend")
            x += 30 + 7.5 * len(name)

    def done(self) -> str:
        return "".join([*self.parts, "</svg>"])


def spread(ys: Sequence[float], gap: float, lo: float, hi: float) -> list[float]:
    """Sorted label positions moved apart by at least ``gap`` and kept within [lo, hi]
    where they fit: pushed down, then back up from ``hi``."""
    out: list[float] = []
    for y in ys:
        out.append(max(y, out[-1] + gap) if out else y)
    if out and out[-1] > hi:
        out[-1] = hi
        for i in range(len(out) - 2, -1, -1):
            out[i] = min(out[i], out[i + 1] - gap)
    return [max(y, lo) if len(out) * gap <= hi - lo else y for y in out]
