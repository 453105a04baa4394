"""The charts of the ``tierstream report`` page, drawn here as inline SVG (no scripts,
fonts or images): tier population over time, the tier transition matrix, churn warnings
over time, revenue share and lifecycle stages by tier; and the colours of tiers and
severities, which the page's tables use too. The builder and the axes are in
:mod:`app.tools.report.svg`."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from html import escape

from app.tools.report.aggregates import DAY_MS, NO_TIER, RevenueRow, Series, revenue_shares
from app.tools.report.svg import Svg, fmt_num, nice_ticks, spread, time_ticks, ymd

#: Tier colours by rank (best first); the last tier of a policy is always grey.
TIER_PALETTE = ("#6a3d9a", "#1f78b4", "#2a9d8f", "#33a02c", "#b8860b", "#e07b00", "#8c564b")
LAST_TIER_COLOUR = "#9aa0a6"
SEVERITY_COLOURS = {"critical": "#c62828", "warning": "#ef6c00", "watch": "#f2b705"}
SEVERITY_FALLBACK = ("#ad1457", "#6d4c41", "#5d4037")
CLEARED_COLOUR = "#1e88e5"


def tier_colours(tiers: Sequence[str]) -> dict[str, str]:
    """A colour per tier by rank; the last (catch-all) tier grey; "none" light grey."""
    colours = {NO_TIER: "#d0d4d9"}
    for i, t in enumerate(tiers):
        last = i == len(tiers) - 1 and len(tiers) > 1
        colours[t] = LAST_TIER_COLOUR if last else TIER_PALETTE[i % len(TIER_PALETTE)]
    return colours


def severity_colours(severities: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    extra = 0
    for s in severities:
        if s in SEVERITY_COLOURS:
            out[s] = SEVERITY_COLOURS[s]
        else:
            out[s] = SEVERITY_FALLBACK[extra % len(SEVERITY_FALLBACK)]
            extra += 1
    return out


def _text_colour(colour: str) -> str:
    """Tier colours are dark enough for text on white, except the light grey."""
    return "#6e7781" if colour == LAST_TIER_COLOUR else colour


def population_chart(series: Series, tiers: Sequence[str], colours: Mapping[str, str]) -> str:
    """Step lines: customers per tier at the end of each bucket."""
    w, h = 900, 340
    left, right, top, bottom = 62, 120, 34, 46
    pw, ph = w - left - right, h - top - bottom
    width_ms = series.bucket_days * DAY_MS
    t0, t1 = series.starts[0], series.starts[-1] + width_ms
    hi = max((max(v) for v in series.values.values() if v), default=0)
    yt = nice_ticks(hi)
    ymax = yt[-1]

    def x(ms: float) -> float:
        return left + (ms - t0) / max(t1 - t0, 1) * pw

    def y(v: float) -> float:
        return top + ph - v / ymax * ph

    svg = Svg(w, h, "customers per tier over time")
    for v in yt:
        svg.line(left, y(v), left + pw, y(v), "grid")
        svg.text(left - 8, y(v) + 4, fmt_num(v), "end", "tick")
    for ms, label in time_ticks(t0, t1):
        svg.line(x(ms), top + ph, x(ms), top + ph + 5, "axis")
        svg.text(x(ms), top + ph + 19, label, "middle", "tick")
    svg.line(left, top + ph, left + pw, top + ph, "axis")
    svg.line(left, top, left, top + ph, "axis")
    svg.text(
        14,
        top + ph / 2,
        "customers",
        "middle",
        "axis-label",
        f' transform="rotate(-90 14 {top + ph / 2:.1f})"',
    )
    unit = {1: "day", 7: "week"}.get(series.bucket_days, f"{series.bucket_days} days")
    svg.text(
        left + pw / 2,
        h - 6,
        f"event time (value at the end of each {unit})",
        "middle",
        "axis-label",
    )
    ends: list[tuple[float, str, int]] = []
    for t in tiers:
        vals = series.values.get(t) or []
        if not vals:
            continue
        pts = [f"M{x(t0):.1f},{y(0):.1f}"]
        for i, v in enumerate(vals):
            pts.append(f"V{y(v):.1f}H{x(series.starts[i] + width_ms):.1f}")
        svg.add(
            f'<path d="{"".join(pts)}" fill="none" stroke="{colours[t]}" stroke-width="2.2" '
            f'stroke-linejoin="round"><title>{escape(f"tier {t}")}</title></path>'
        )
        ends.append((y(vals[-1]), t, vals[-1]))
    # End labels, pushed apart so they do not overlap.
    ends.sort()
    placed = spread([e[0] for e in ends], 14.0, top, top + ph + 4)
    for yy, (_, t, v) in zip(placed, ends, strict=True):
        svg.text(
            left + pw + 8,
            yy + 4,
            f"{t}  {v:,}",
            cls="end-label",
            extra=f' style="fill:{_text_colour(colours[t])}"',
        )
    svg.legend(left, 16, [(f"tier {t}", colours[t]) for t in tiers])
    return svg.done()


def _cell_fill(kind: str, share: float) -> str:
    """Blend white towards the kind's colour by ``share`` (0..1)."""
    base = {"up": (46, 125, 50), "down": (198, 40, 40), "new": (30, 136, 229)}[kind]
    a = 0.12 + 0.88 * share if share > 0 else 0.0
    r, g, b = (round(255 + (c - 255) * a) for c in base)
    return f"#{r:02x}{g:02x}{b:02x}"


def transition_matrix(
    transitions: Mapping[tuple[str, str], int], tiers: Sequence[str], colours: Mapping[str, str]
) -> str:
    """From (rows, incl. "none": a first tier) -> to (columns) counts, shaded."""
    rows = [NO_TIER, *tiers]
    cols = list(tiers)
    cell_w, cell_h = 92, 40
    left, top = 150, 74
    w = left + cell_w * (len(cols) + 1) + 24
    h = top + cell_h * len(rows) + 56
    hi = max(transitions.values(), default=0)
    rank = {t: i for i, t in enumerate(tiers)}
    svg = Svg(w, h, "tier transition matrix")
    svg.text(left + cell_w * len(cols) / 2, 18, "to tier", "middle", "axis-label")
    svg.text(left - 14, top - 12, "from tier", "end", "axis-label")
    for j, t in enumerate(cols):
        cx = left + j * cell_w + cell_w / 2
        svg.rect(cx - 24, 32, 48, 6, colours[t])
        svg.text(cx, 58, t, "middle", "head")
    svg.text(left + len(cols) * cell_w + cell_w / 2, 58, "total", "middle", "head-muted")
    for i, frm in enumerate(rows):
        cy = top + i * cell_h
        label = "none (first tier)" if frm == NO_TIER else frm
        svg.rect(left - 12, cy + 8, 6, cell_h - 16, colours.get(frm, LAST_TIER_COLOUR))
        svg.text(left - 18, cy + cell_h / 2 + 5, label, "end", "head")
        total = 0
        for j, to in enumerate(cols):
            n = transitions.get((frm, to), 0)
            total += n
            x = left + j * cell_w
            if frm == NO_TIER:
                kind = "new"
            elif frm == to:
                kind = ""
            else:
                kind = "up" if rank.get(to, 0) < rank.get(frm, 0) else "down"
            share = math.sqrt(n / hi) if hi and n else 0.0
            fill = "#f3f4f6" if not kind else _cell_fill(kind, share) if n else "#ffffff"
            tip = f"{label} → {to}: {n:,}"
            svg.rect(
                x + 1,
                cy + 1,
                cell_w - 2,
                cell_h - 2,
                fill,
                tip,
                f' class="cell" data-from="{escape(frm)}" data-to="{escape(to)}" data-count="{n}"',
            )
            if kind:
                dark = share > 0.6
                svg.text(
                    x + cell_w / 2,
                    cy + cell_h / 2 + 5,
                    f"{n:,}" if n else "·",
                    "middle",
                    "cell-num-light" if dark else "cell-num",
                )
            else:
                svg.text(x + cell_w / 2, cy + cell_h / 2 + 5, "—", "middle", "cell-none")
        svg.text(
            left + len(cols) * cell_w + cell_w / 2,
            cy + cell_h / 2 + 5,
            f"{total:,}",
            "middle",
            "cell-total",
        )
    ly = top + cell_h * len(rows) + 32
    svg.legend(
        left,
        ly,
        [
            ("first tier", _cell_fill("new", 0.7)),
            ("upgrade", _cell_fill("up", 0.7)),
            ("downgrade", _cell_fill("down", 0.7)),
        ],
    )
    svg.text(left + 330, ly, "darker = more customers", cls="legend-muted")
    return svg.done()


def churn_chart(
    warnings: Series, cleared: Series, severities: Sequence[str], colours: Mapping[str, str]
) -> str:
    """Stacked bars of warnings by severity above the axis, clearings below it."""
    w, h = 900, 360
    left, right, top, bottom = 62, 96, 34, 46
    pw, ph = w - left - right, h - top - bottom
    n = len(warnings.starts)
    width_ms = warnings.bucket_days * DAY_MS
    t0, t1 = warnings.starts[0], warnings.starts[-1] + width_ms
    up = [sum(warnings.values[s][i] for s in severities) for i in range(n)]
    down = cleared.values["cleared"]
    hi_up, hi_down = max(up, default=0), max(down, default=0)
    step_ticks = nice_ticks(max(hi_up, hi_down, 1))
    step = step_ticks[1] - step_ticks[0]
    top_max = math.ceil(hi_up / step) * step if hi_up else step
    bottom_max = max(hi_down * 1.08, step * 0.3) if hi_down else 0
    span = top_max + bottom_max

    def y(v: float) -> float:  # v > 0 above the axis, v < 0 below
        return top + (top_max - v) / span * ph

    def x(ms: float) -> float:
        return left + (ms - t0) / max(t1 - t0, 1) * pw

    svg = Svg(w, h, "churn warnings over time")
    v = -math.floor(bottom_max / step) * step
    while v <= top_max + 1e-9:
        svg.line(left, y(v), left + pw, y(v), "grid")
        svg.text(left - 8, y(v) + 4, fmt_num(abs(v)), "end", "tick")
        v += step
    bw = pw / n
    unit = {1: "day", 7: "week"}.get(warnings.bucket_days, f"{warnings.bucket_days} days")
    for i, start in enumerate(warnings.starts):
        bx = x(start) + bw * 0.12
        base = 0.0
        # Most severe at the bottom, next to the axis.
        for s in severities:
            c = warnings.values[s][i]
            if not c:
                continue
            svg.rect(
                bx,
                y(base + c),
                bw * 0.76,
                y(base) - y(base + c),
                colours[s],
                f"{unit} of {ymd(start)}: {c:,} {s}",
            )
            base += c
        c = down[i]
        if c:
            svg.rect(
                bx,
                y(0),
                bw * 0.76,
                y(-c) - y(0),
                CLEARED_COLOUR,
                f"{unit} of {ymd(start)}: {c:,} cleared",
            )
    for ms, label in time_ticks(t0, t1):
        svg.line(x(ms), top + ph, x(ms), top + ph + 5, "axis")
        svg.text(x(ms), top + ph + 19, label, "middle", "tick")
    svg.line(left, y(0), left + pw, y(0), "axis-strong")
    svg.line(left, top, left, top + ph, "axis")
    svg.line(left, top + ph, left + pw, top + ph, "axis")
    mid = top + ph / 2
    svg.text(
        14, mid, f"per {unit}", "middle", "axis-label", f' transform="rotate(-90 14 {mid:.1f})"'
    )
    # What is above and below the axis, to the right of the bars.
    svg.text(left + pw + 8, y(0) - 22, "▲ warnings", cls="legend-muted")
    svg.text(left + pw + 8, y(0) - 8, "raised", cls="legend-muted")
    if bottom_max:
        svg.text(left + pw + 8, y(0) + 16, "▼ cleared", cls="legend-muted")
        svg.text(left + pw + 8, y(0) + 30, "(bought again)", cls="legend-muted")
    svg.text(left + pw / 2, h - 6, "event time", "middle", "axis-label")
    svg.legend(left, 16, [*((s, colours[s]) for s in severities), ("cleared", CLEARED_COLOUR)])
    return svg.done()


def revenue_chart(rows: Sequence[RevenueRow], colours: Mapping[str, str]) -> str:
    """100 % bars: customers, spend over the last 365 days and lifetime spend by tier."""
    shares = revenue_shares(rows)
    labels = {
        "customers": "customers",
        "spend_365d": "spend, last 365 days",
        "lifetime_spend": "lifetime spend",
    }
    w, bar_h, gap = 900, 38, 22
    left, right, top = 190, 24, 40
    pw = w - left - right
    h = top + len(labels) * (bar_h + gap) + 30
    svg = Svg(w, h, "share of customers and revenue by tier")
    for k, (measure, label) in enumerate(labels.items()):
        y = top + k * (bar_h + gap)
        svg.text(left - 12, y + bar_h / 2 + 5, label, "end", "head")
        x = float(left)
        for r in rows:
            pct = shares[measure].get(r.tier, 0.0)
            if pct <= 0:
                continue
            bw = pw * pct / 100
            svg.rect(
                x,
                y,
                bw,
                bar_h,
                colours.get(r.tier, LAST_TIER_COLOUR),
                f"tier {r.tier}: {pct:.1f}% of {label}",
                f' class="share" data-measure="{measure}" data-tier="{escape(r.tier)}"'
                f' data-pct="{pct:.4f}"',
            )
            if bw >= 46:
                svg.text(
                    x + bw / 2, y + bar_h / 2 + 5, f"{r.tier} {pct:.0f}%", "middle", "bar-label"
                )
            elif bw >= 22:
                svg.text(x + bw / 2, y + bar_h / 2 + 5, f"{pct:.0f}", "middle", "bar-label")
            x += bw
    for p in (0, 25, 50, 75, 100):
        xx = left + pw * p / 100
        svg.line(
            xx,
            top + len(labels) * (bar_h + gap) - gap + 4,
            xx,
            top + len(labels) * (bar_h + gap) - gap + 9,
            "axis",
        )
        svg.text(xx, top + len(labels) * (bar_h + gap) - gap + 22, f"{p}%", "middle", "tick")
    svg.legend(left, 18, [(f"tier {r.tier}", colours.get(r.tier, LAST_TIER_COLOUR)) for r in rows])
    return svg.done()


def stage_chart(
    stages: Sequence[str],
    stage_tiers: Mapping[str, Counter[str]],
    tiers: Sequence[str],
    colours: Mapping[str, str],
) -> str:
    """Horizontal bars: customers per lifecycle stage, split by their tier."""
    w, bar_h, gap = 900, 26, 12
    left, right, top = 120, 80, 40
    pw = w - left - right
    h = top + len(stages) * (bar_h + gap) + 34
    hi = max((sum(stage_tiers[s].values()) for s in stages), default=0)
    xt = nice_ticks(hi)
    xmax = xt[-1]
    order = [*tiers, *sorted(set().union(*stage_tiers.values()) - set(tiers))]
    svg = Svg(w, h, "customers per lifecycle stage and tier")
    base_y = top + len(stages) * (bar_h + gap)
    for v in xt:
        xx = left + pw * v / xmax
        svg.line(xx, top - 6, xx, base_y - gap + 4, "grid")
        svg.text(xx, base_y + 8, fmt_num(v), "middle", "tick")
    for k, stage in enumerate(stages):
        y = top + k * (bar_h + gap)
        svg.text(left - 12, y + bar_h / 2 + 5, stage.replace("_", " "), "end", "head")
        x = float(left)
        counts = stage_tiers[stage]
        for t in order:
            c = counts.get(t, 0)
            if not c:
                continue
            bw = pw * c / xmax
            svg.rect(x, y, bw, bar_h, colours.get(t, LAST_TIER_COLOUR), f"{stage}, tier {t}: {c:,}")
            x += bw
        svg.text(x + 6, y + bar_h / 2 + 5, f"{sum(counts.values()):,}", cls="end-label")
    svg.text(left + pw / 2, h - 4, "customers", "middle", "axis-label")
    legend = [t for t in order if any(stage_tiers[s].get(t) for s in stages)]
    svg.legend(
        left,
        18,
        [
            (f"tier {t}" if t != NO_TIER else "no tier", colours.get(t, LAST_TIER_COLOUR))
            for t in legend
        ],
    )
    return svg.done()
