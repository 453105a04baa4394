"""``tierstream demo``: a short real run (own broker, real worker subprocess) that must show
tier changes, exit 0 and leave no process behind; after Ctrl-C a summary that is final
(the report's counts); and a clear failure when the worker cannot start."""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from app.tools.demo import DemoConfig, run_demo

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    """True when ``pid`` runs (a zombie does not count: it has exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _group_members(pgid: int) -> list[int]:
    """Live processes whose process group is ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _pids(output: str) -> tuple[int, int]:
    broker = re.search(r"broker pid (\d+)", output)
    worker = re.search(r"worker pid (\d+)", output)
    assert broker and worker, output
    return int(broker.group(1)), int(worker.group(1))


def test_demo_shows_tier_changes_and_cleans_up() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "demo", "--duration", "20", "--customers", "200"],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "COLUMNS": "200"},
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    # stdout is a pipe here, so the demo prints plain lines instead of the live view.
    changes = [line for line in proc.stdout.splitlines() if line.startswith("tier change ")]
    assert len(changes) >= 5, output
    assert any(" up: " in line for line in changes), output
    summary = re.search(r"summary: events sent (\d+), tier changes (\d+)", proc.stdout)
    assert summary and int(summary.group(1)) > 1000 and int(summary.group(2)) > 100, output
    churn = re.search(r"churn warnings (\d+) \(.*\), cleared (\d+)", proc.stdout)
    assert churn and int(churn.group(1)) > 0, output  # silence, from the packaged policy
    assert "customers per tier" in proc.stdout
    assert "stopped worker (exit code 0) and broker" in proc.stdout
    _check_report(proc.stdout, int(summary.group(2)))
    broker_pid, worker_pid = _pids(proc.stdout)
    assert not _alive(broker_pid)
    assert not _alive(worker_pid)
    assert _group_members(worker_pid) == []
    assert _group_members(broker_pid) == []


def _check_report(stdout: str, tier_changes: int, customers: int | None = 200) -> None:
    """The report page the demo wrote from the topics it left: every section, the tier
    changes the summary counted, snapshots of all the customers; only it is kept."""
    m = re.search(r"report written to (\S+) \(([\d,]+) tier changes, ([\d,]+) customer", stdout)
    assert m, stdout
    path = Path(m.group(1))
    try:
        assert path.name == "report.html" and path.is_file()
        assert [p.name for p in path.parent.iterdir()] == ["report.html"]  # logs removed
        html = path.read_text("utf-8")
        for section in ("population", "transitions", "churn", "revenue", "lifecycle"):
            part = html.split(f'<section id="{section}">')[1].split("</section>")[0]
            assert "<svg" in part, section  # the default policy warns of churn too
        assert "Revenue share by tier" in html and 'data-measure="spend_365d"' in html
        assert "policy value-tiers v2" in html
        # The summary and the report are made from one reading of the topics, after the
        # worker stopped: the same count.
        assert int(m.group(2).replace(",", "")) == tier_changes
        snapshots = int(m.group(3).replace(",", ""))
        assert snapshots == customers if customers is not None else snapshots > 0
        assert "demo-probe" not in html and "<script" not in html
        assert "http://" not in html and "https://" not in html
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)


def test_demo_summary_after_ctrl_c_is_final(tmp_path: Path) -> None:
    """Ctrl-C while the stream flows: the worker is stopped before the summary, which
    counts what the report (read from the output topics) counts, not what the live view
    had seen at the moment of the Ctrl-C."""
    out = tmp_path / "demo.out"
    with out.open("wb") as sink:
        demo = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "demo", "--duration", "40", "--customers", "300"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "200"},
        )
    try:
        deadline = time.monotonic() + 150
        while "worker is up" not in out.read_text() and time.monotonic() < deadline:
            assert demo.poll() is None, out.read_text()
            time.sleep(0.2)
        assert "worker is up" in out.read_text()
        # Mid-stream, tier changes flowing: the live view is behind what the worker has
        # emitted and the worker behind what was sent.
        while out.read_text().count("tier change ") < 20 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3)
        demo.send_signal(signal.SIGINT)
        demo.wait(180)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    output = out.read_text()
    assert demo.returncode == 0, output
    assert "stopping early" in output
    summary = re.search(r"summary: events sent (\d+), tier changes (\d+)", output)
    simulated = re.search(r"simulated ([\d,]+) events", output)
    assert summary and simulated, output
    # interrupted mid-stream, with tier changes to count
    assert 0 < int(summary.group(1)) < int(simulated.group(1).replace(",", "")), output
    assert int(summary.group(2)) > 20, output
    assert output.index("worker stopped (exit code 0)") < output.index("summary: ")
    _check_report(output, int(summary.group(2)), customers=None)
    broker_pid, worker_pid = _pids(output)
    assert not _alive(broker_pid)
    assert not _alive(worker_pid)


def test_demo_fails_clearly_when_the_worker_cannot_start() -> None:
    buf = io.StringIO()
    console = Console(file=buf, width=200)
    code = run_demo(
        DemoConfig(
            duration=5,
            customers=20,
            days=30,
            worker_command=(sys.executable, "-c", "print('boom: no worker here'); exit(3)"),
        ),
        console,
    )
    output = buf.getvalue()
    assert code == 1, output
    assert "demo failed: the worker exited with code 3 while starting" in output
    assert "boom: no worker here" in output
    broker_pid, worker_pid = _pids(output)
    assert not _alive(broker_pid)
    assert not _alive(worker_pid)


def test_live_view_renders_changes_and_counts() -> None:
    """The terminal view (no broker needed): latest changes with from -> to, direction and
    reason, counters and customers per tier; the probe customer is not counted."""
    from app.tools.demo import PROBE_CUSTOMER, DemoState, render

    def ce(cid: str, frm: str | None, to: str, direction: str, reasons: list[str]) -> dict:
        return {
            "time": "2024-05-01T10:00:00.000Z",
            "data": {
                "customer_id": cid,
                "from_tier": frm,
                "to_tier": to,
                "direction": direction,
                "reasons": reasons,
            },
        }

    state = DemoState(total_events=100, sent=40)
    state.apply(ce(PROBE_CUSTOMER, None, "D", "new", ["no better tier's conditions hold"]))
    assert state.probe_seen.is_set() and state.tier_changes == 0
    state.apply(ce("c1", None, "D", "new", ["no better tier's conditions hold", "not C: x"]))
    state.apply(ce("c1", "D", "C", "up", ["spend_90d 120 >= 100"]))
    state.apply(ce("c2", "B", "A", "up", ["spend_365d 3100 >= 3000"]))
    assert state.tier_changes == 3 and dict(state.per_tier()) == {"C": 1, "A": 1}
    buf = io.StringIO()
    Console(file=buf, width=140, color_system=None).print(
        render(state, DemoConfig(customers=2, days=30), "127.0.0.1:1")
    )
    text = buf.getvalue()
    for needle in ("events sent 40/100", "tier changes 3", "B → A", "▲ up", "spend_365d 3100"):
        assert needle in text, text
    assert "not C: x" in text  # the catch-all tier shows what just failed
