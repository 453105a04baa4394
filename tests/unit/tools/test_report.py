"""``tierstream report``: a simulated stream classified into files, then the page: well-formed,
every section with its chart, numbers equal to counts made here from the files, shares
adding up to 100 %, no customer ids, nothing loaded from elsewhere, text escaped."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from datetime import date
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from app.adapters.policy_files import load_policy
from app.cli.main import cli
from app.service.batch_replay import classify_events, customer_snapshots, output_lines, write_lines
from app.tools.report.aggregates import DAY_MS, build_report, infer_order
from app.tools.report.data import Outputs, parse_outputs
from app.tools.report.page import render_html
from app.tools.report.svg import nice_ticks, time_ticks
from app.tools.simulate import SimulationConfig, simulate
from schemas.codec import decode_event, encode_snapshot

ROOT = Path(__file__).resolve().parents[3]
CHURN_POLICY = ROOT / "examples" / "churn-early-warning.yaml"
SECTIONS = ("population", "transitions", "churn", "revenue", "lifecycle")
VOID = {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "wbr", "source"}


class Page(HTMLParser):
    """Checks nesting and collects sections, SVGs, attributes of the chart's marks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.section: str | None = None
        self.svgs: Counter[str] = Counter()
        self.sections: list[str] = []
        self.cells: list[dict[str, str]] = []
        self.shares: list[dict[str, str]] = []
        self.attrs: list[tuple[str, str, str]] = []
        self.text: list[str] = []

    def _attrs(self, tag: str, attrs: list[tuple[str, str | None]]) -> dict[str, str]:
        a = {k: v or "" for k, v in attrs}
        for k, v in a.items():
            self.attrs.append((tag, k, v))
        if tag == "section":
            self.section = a.get("id")
            self.sections.append(a.get("id", ""))
        if tag == "svg" and self.section:
            self.svgs[self.section] += 1
        if tag == "rect" and a.get("class") == "cell":
            self.cells.append(a)
        if tag == "rect" and a.get("class") == "share":
            self.shares.append(a)
        return a

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._attrs(tag, attrs)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._attrs(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()
        if tag == "section":
            self.section = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    page.close()
    assert not page.errors, page.errors[:5]
    assert page.stack == [], page.stack
    return page


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def run_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, set[str]]:
    """classify (the app's functions) of a small simulated stream into an outputs file and
    a snapshots file, under the churn policy so that every kind of output occurs."""
    d = tmp_path_factory.mktemp("report")
    sim = simulate(SimulationConfig(customers=160, days=300, seed=11, start=date(2024, 2, 1)))
    events = [decode_event(doc) for doc in sim.events]
    result, _, _ = classify_events(events, load_policy(CHURN_POLICY))
    outputs, customers = d / "out.jsonl", d / "customers.jsonl"
    with outputs.open("wb") as f:
        write_lines(f, output_lines(result))
    with customers.open("wb") as f:
        write_lines(f, (encode_snapshot(s) for s in customer_snapshots(result)))
    return outputs, customers, {str(doc["customer_id"]) for doc in sim.events}


def run(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, args)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def page_html(
    run_files: tuple[Path, Path, set[str]], tmp_path_factory: pytest.TempPathFactory
) -> str:
    outputs, customers, _ = run_files
    target = tmp_path_factory.mktemp("page") / "report.html"
    code, stdout, _ = run(
        ["report", str(outputs), "--customers", str(customers), "-o", str(target)]
    )
    assert code == 0
    assert stdout.strip() == str(target)
    return target.read_text("utf-8")


def test_page_is_well_formed_with_every_section_and_chart(page_html: str) -> None:
    assert page_html.startswith("<!DOCTYPE html>")
    page = parse(page_html)
    assert page.sections == list(SECTIONS)
    for section in SECTIONS:
        assert page.svgs[section] == 1, section
    text = " ".join(page.text)
    for title in (
        "Tier population over time",
        "Tier transitions",
        "Churn warnings over time",
        "Revenue share by tier",
        "Lifecycle stages",
    ):
        assert title in text
    assert "policy churn-early-warning v1" in text


def test_transition_matrix_counts_equal_the_tier_changes(
    page_html: str, run_files: tuple[Path, Path, set[str]]
) -> None:
    expected: Counter[tuple[str, str]] = Counter()
    for ce in jsonl(run_files[0]):
        if ce["type"] == "io.tierstream.tier.changed.v1":
            expected[(ce["data"]["from_tier"] or "none", ce["data"]["to_tier"])] += 1
    cells = {(c["data-from"], c["data-to"]): int(c["data-count"]) for c in parse(page_html).cells}
    assert sum(expected.values()) > 100 and len(expected) >= 6
    # Every from -> to pair is a cell (none of A..D -> A..D is left out), with its count.
    assert set(cells) == {(f, t) for f in ("none", "A", "B", "C", "D") for t in "ABCD"}
    assert {k: v for k, v in cells.items() if v} == dict(expected)


def test_revenue_shares_add_up_and_equal_the_snapshots(
    page_html: str, run_files: tuple[Path, Path, set[str]]
) -> None:
    spend: dict[str, float] = defaultdict(float)
    for snap in jsonl(run_files[1]):
        spend[snap["tier"]] += snap["rolling"]["spend_365d"]
    per_measure: dict[str, dict[str, float]] = defaultdict(dict)
    for s in parse(page_html).shares:
        per_measure[s["data-measure"]][s["data-tier"]] = float(s["data-pct"])
    assert set(per_measure) == {"customers", "spend_365d", "lifetime_spend"}
    for measure, shares in per_measure.items():
        assert sum(shares.values()) == pytest.approx(100.0, abs=1e-3), measure
    total = sum(spend.values())
    for tier, pct in per_measure["spend_365d"].items():
        assert pct == pytest.approx(100 * spend[tier] / total, abs=1e-3)
    # The best tier: few customers, a much larger share of the spend.
    assert per_measure["spend_365d"]["A"] > 3 * per_measure["customers"]["A"]


def test_churn_and_lifecycle_numbers(
    page_html: str, run_files: tuple[Path, Path, set[str]]
) -> None:
    ces = jsonl(run_files[0])
    severities = Counter(
        ce["data"]["severity"] for ce in ces if ce["type"] == "io.tierstream.churn.warning.v1"
    )
    cleared = sum(1 for ce in ces if ce["type"] == "io.tierstream.churn.cleared.v1")
    assert set(severities) == {"critical", "warning", "watch"} and cleared
    churn = page_html.split('<section id="churn">')[1].split("</section>")[0]
    for severity, n in severities.items():
        assert f"{severity}</td><td>{n:,}</td>" in churn
    assert f"cleared</td><td>{cleared:,}</td>" in churn
    # The population at the end is the snapshots' tiers.
    tiers = Counter(s["tier"] for s in jsonl(run_files[1]))
    head = page_html.split("</header>")[0]
    assert (
        "customers per tier at the end: " + " · ".join(f"{t} {tiers[t]:,}" for t in "ABCD") in head
    )


def test_no_customer_ids_and_nothing_from_elsewhere(
    page_html: str, run_files: tuple[Path, Path, set[str]]
) -> None:
    ids = run_files[2]
    assert len(ids) > 100
    leaked = [cid for cid in ids if re.search(rf"(?<![#\w]){re.escape(cid)}(?!\w)", page_html)]
    assert leaked == []
    assert "http://" not in page_html and "https://" not in page_html
    assert "<script" not in page_html.lower() and "@import" not in page_html
    page = parse(page_html)
    for tag, name, value in page.attrs:
        assert name != "src", (tag, value)
        if name == "href":
            assert value.startswith("#"), value
        assert "url(" not in value, (tag, name, value)


def test_without_snapshots_the_page_says_so(
    run_files: tuple[Path, Path, set[str]], tmp_path: Path
) -> None:
    target = tmp_path / "r.html"
    code, _, stderr = run(["report", str(run_files[0]), "-o", str(target)])
    assert code == 0, stderr
    html = target.read_text("utf-8")
    parse(html)
    revenue = html.split('<section id="revenue">')[1].split("</section>")[0]
    assert "No customer snapshots given" in revenue and "<svg" not in revenue
    assert "no revenue share" in stderr


def test_unreadable_input_exits_2(run_files: tuple[Path, Path, set[str]], tmp_path: Path) -> None:
    code, _, err = run(["report", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "x.html")])
    assert code == 2 and "cannot read" in err and "missing.jsonl" in err
    # The snapshots file is not an outputs file.
    code, _, err = run(["report", str(run_files[1]), "-o", str(tmp_path / "x.html")])
    assert code == 2 and "holds no tierstream outputs" in err
    # Outputs given as snapshots.
    code, _, err = run(
        ["report", str(run_files[0]), "-c", str(run_files[0]), "-o", str(tmp_path / "x.html")]
    )
    assert code == 2 and "holds no customer snapshots" in err
    code, _, err = run(["report", "-o", str(tmp_path / "x.html")])
    assert code == 2 and "OUTPUTS_FILE or --from-topics" in err
    assert not (tmp_path / "x.html").exists()


def _ce(typ: str, time: str, data: dict[str, Any]) -> bytes:
    return orjson.dumps({"type": f"io.tierstream.{typ}.v1", "time": time, "data": data})


def test_hostile_names_are_escaped_and_ids_stay_out() -> None:
    """Tier names come from the policy, severities too: markup in them stays text."""
    pol = {"name": "<b>p&q</b>", "version": "1"}
    lines = [
        _ce(
            "tier.changed",
            "2024-01-01T00:00:00Z",
            {"customer_id": "<img src=x>", "from_tier": None, "to_tier": "<i>", "policy": pol},
        ),
        _ce(
            "tier.changed",
            "2024-01-03T00:00:00Z",
            {
                "customer_id": "<img src=x>",
                "from_tier": "<i>",
                "to_tier": "T&1",
                "direction": "up",
                "policy": pol,
            },
        ),
        _ce(
            "churn.warning",
            "2024-01-05T00:00:00Z",
            {"customer_id": "secret-42", "severity": "<u>", "previous_severity": None},
        ),
        b"not json",
    ]
    snaps = {
        "secret-42": {
            "customer_id": "secret-42",
            "tier": "T&1",
            "stage": "new",
            "rolling": {"spend_365d": 5.0},
            "lifetime": {"spend": 5.0},
        }
    }
    out = parse_outputs(lines)
    assert out.skipped == 1
    report = build_report(out, snaps)
    assert report.tiers == ["T&1", "<i>"]  # up: T&1 ranks above <i>
    html = render_html(report)
    parse(html)
    for raw in ("<b>p&q</b>", "<i>", "<u>", "T&1", "<img"):
        assert raw not in html, raw
    assert "&lt;b&gt;p&amp;q&lt;/b&gt;" in html and "T&amp;1" in html
    assert "secret-42" not in html and "img src" not in html
    assert "1 input lines were not tierstream outputs" in html


def test_orders_and_axes() -> None:
    # Tiers ordered best first from up/down moves alone.
    assert infer_order("DCBA", [("C", "D"), ("B", "C"), ("A", "B")]) == ["A", "B", "C", "D"]
    # Without evidence, the fallback (severities), then names.
    assert infer_order({"watch", "critical", "x"}, [], ("critical", "warning", "watch")) == [
        "critical",
        "watch",
        "x",
    ]
    assert nice_ticks(307) == [0, 100, 200, 300, 400]
    assert nice_ticks(0) == [0.0, 1.0]
    start = 1704067200000  # 2024-01-01
    year = [label for _, label in time_ticks(start, start + 366 * DAY_MS)]
    assert year[0] == "Jan 2024" and year[1] == "Feb" and year[-1] == "Jan 2025"
    assert len(time_ticks(start, start + 30 * DAY_MS)) == 5  # weekly ticks
    assert build_report(Outputs()).period is None
    parse(render_html(build_report(Outputs())))
