"""The dashboard and the alerts are tested against reality: a real worker with traffic on
the real broker, scraped every second by a real Prometheus server (the Debian package
``prometheus``) that loads deploy/prometheus/alerts.yml. Every PromQL expression of every
panel of deploy/grafana/dashboards/tierstream.json must answer with at least one series,
and every alert expression must evaluate without error (Prometheus's own rule evaluation
included). A metric renamed in the worker or in the dashboard leaves a panel empty and
breaks this test.

Without the ``prometheus`` binary the test skips, except in CI (``CI=true``) where it fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.adapters.broker import free_port
from tests.contracts.test_deploy import DASH, METRICS, RULES, panel_exprs
from tests.integration._worker_data import generate
from tests.integration._worker_proc import (
    INPUT_TOPICS,
    REPO,
    Names,
    WorkerProcess,
    create_topics,
    produce,
    wait_processed,
)

pytestmark = pytest.mark.integration

ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
#: Value tiers with churn warnings, so that every panel of the dashboard has data.
POLICY = """\
name: dashboard-check
version: "1"
tiers:
  - name: A
    when: {spend_365d: {gte: 3000}, purchases_365d: {gte: 12}}
  - name: B
    when: {spend_365d: {gte: 1000}, purchases_365d: {gte: 6}}
  - name: C
    when: {spend_90d: {gte: 100}}
  - name: D
churn:
  usual_gap: {of: p90, min_gaps: 3, default_days: 45}
  severity:
    - name: critical
      when: {silence_ratio: {gte: 3}}
    - name: warning
      when: {silence_ratio: {gte: 1.5}}
  actions:
    "*": {warning: email, critical: winback_offer}
"""
CUSTOMERS = 150
#: What Grafana substitutes for its variables (the instance variable's "All" is ``.+``).
GRAFANA_VARIABLES = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "5m",
    "instance": ".+",
}


def promql(expr: str) -> str:
    """A dashboard expression with Grafana's variables replaced as Grafana would."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        assert name in GRAFANA_VARIABLES, f"unknown Grafana variable ${name} in {expr}"
        return GRAFANA_VARIABLES[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, expr)


@pytest.fixture(scope="module")
def prometheus_bin() -> str:
    path = shutil.which("prometheus")
    if path is None:
        reason = (
            "prometheus not installed: it is the Debian package 'prometheus' "
            "(apt-get install prometheus; .ci/run installs it)"
        )
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{reason}; CI must run this test")
        pytest.skip(reason)
    return path


class PrometheusServer:
    """``prometheus`` on a free loopback port, scraping one worker every second."""

    def __init__(self, binary: str, workdir: Path, worker_port: int) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.log_path = workdir / "prometheus.log"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [
                {
                    "job_name": "tierstream",  # as in deploy/prometheus/prometheus.yml
                    "metrics_path": "/metrics",
                    "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}],
                }
            ],
        }
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.args = [
            binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PrometheusServer:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.args,
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"prometheus exited:\n{self.log()}"
            try:
                with urllib.request.urlopen(self.url("/-/ready"), timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready in 30s:\n{self.log()}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def api(self, path: str, **params: str) -> dict[str, Any]:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(self.url(path + query), timeout=10) as resp:
                body: dict[str, Any] = json.loads(resp.read())
        except urllib.error.HTTPError as exc:  # 400/422: the query itself is bad
            body = json.loads(exc.read())
        return body

    def query(self, expr: str) -> dict[str, Any]:
        """The /api/v1/query answer's data; fails on an error answer."""
        body = self.api("/api/v1/query", query=expr)
        assert body.get("status") == "success", (expr, body)
        data: dict[str, Any] = body["data"]
        return data

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return "<no log>"


@dataclass
class Stack:
    names: Names
    worker: WorkerProcess
    prom: PrometheusServer
    events: int


@pytest.fixture
def stack(names: Names, tmp_path: Path, prometheus_bin: str) -> Iterator[Stack]:
    """A worker with traffic, scraped by Prometheus."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    asyncio.run(create_topics(names, INPUT_TOPICS))
    worker = WorkerProcess(names, tmp_path, TIERSTREAM_POLICY_FILE=str(policy))
    prom = PrometheusServer(prometheus_bin, tmp_path, worker.web_port)
    try:
        worker.start().wait_healthy(60)
        url = f"http://127.0.0.1:{worker.web_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            assert resp.status == 200
            assert b"tierstream_build_info" in resp.read()
        prom.start()
        docs = generate(customers=CUSTOMERS)
        bad = [
            ("purchases", b"c0001", b'{"event_id": "bad-1", "customer_id": '),
            ("interactions", b"c0002", b"[1, 2, 3]"),
        ]
        asyncio.run(produce(names, docs, raw=bad))
        wait_processed(worker, len(docs), timeout=120)
        yield Stack(names, worker, prom, len(docs))
    finally:
        prom.stop()
        worker.stop()


def wait_for(prom: PrometheusServer, expr: str, ok: Any, timeout: float = 60.0) -> Any:
    """Poll an instant query until ``ok(result)``; returns the result."""
    deadline = time.monotonic() + timeout
    result: Any = None
    while time.monotonic() < deadline:
        result = prom.query(expr)["result"]
        if ok(result):
            return result
        time.sleep(0.5)
    raise AssertionError(f"{expr} never satisfied the wait: {result}\n{prom.log()}")


def value(result: list[dict[str, Any]]) -> float:
    (sample,) = result
    return float(sample["value"][1])


def test_every_dashboard_panel_and_alert_answers_from_a_real_prometheus(stack: Stack) -> None:
    prom, events = stack.prom, stack.events
    # Prometheus has scraped the worker since the traffic was processed, a few times over.
    wait_for(prom, 'up{job="tierstream"}', lambda r: r and value(r) == 1)
    wait_for(
        prom,
        "sum(tierstream_events_processed_total)",
        lambda r: r and value(r) >= events,
    )
    wait_for(prom, 'count_over_time(up{job="tierstream"}[1m])', lambda r: r and value(r) >= 8)

    # Every metric of the contract is scraped under its contract name.
    served = {
        s["metric"]["__name__"]
        for s in prom.query('count by (__name__) ({__name__=~"tierstream_.+"})')["result"]
    }
    for name, (kind, _) in METRICS.items():
        assert (name + "_bucket" if kind == "histogram" else name) in served, name

    # Every query of every panel answers with data.
    queries = list(panel_exprs(DASH))
    assert len(queries) >= 20
    empty = []
    for where, expr in queries:
        data = prom.query(promql(expr))
        assert data["resultType"] == "vector", (where, data)
        if not data["result"]:
            empty.append(f"{where}: {promql(expr)}")
    assert empty == [], "panels without data:\n" + "\n".join(empty)

    # A few panels must show what the traffic did.
    by_title = dict(queries)
    population = prom.query(promql(by_title["Tier population / A"]))["result"]
    assert sum(float(s["value"][1]) for s in population) == CUSTOMERS
    assert {s["metric"]["tier"] for s in population} <= {"A", "B", "C", "D"}
    rates = prom.query(promql(by_title["Events in, by outcome / A"]))["result"]
    assert any(float(s["value"][1]) > 0 for s in rates), rates
    dead = prom.query('sum by (reason) (tierstream_dead_letters_total{job="tierstream"})')
    reasons = {s["metric"]["reason"]: float(s["value"][1]) for s in dead["result"]}
    assert reasons["malformed_json"] == 1 and reasons["not_an_object"] == 1
    (policy,) = prom.query(promql(by_title["Policy in force / A"]))["result"]
    assert policy["metric"]["name"] == "dashboard-check"

    # Every alert expression evaluates (it may select nothing: nothing is wrong here).
    for rule in RULES:
        data = prom.query(rule["expr"])
        assert data["resultType"] == "vector", (rule["alert"], data)

    # And Prometheus's own evaluation of alerts.yml: every rule loaded, evaluated, healthy,
    # none firing on a healthy worker.
    def evaluated(groups: list[dict[str, Any]]) -> bool:
        rules = [r for g in groups for r in g["rules"]]
        return len(rules) == len(RULES) and all(
            r["health"] == "ok" and not r["lastEvaluation"].startswith("0001") for r in rules
        )

    deadline = time.monotonic() + 30
    groups: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        groups = prom.api("/api/v1/rules")["data"]["groups"]
        if evaluated(groups):
            break
        time.sleep(0.5)
    rules = {r["name"]: r for g in groups for r in g["rules"]}
    assert set(rules) == {r["alert"] for r in RULES}
    for name, r in rules.items():
        assert r["health"] == "ok" and not r.get("lastError"), (name, r)
        assert r["state"] == "inactive", (name, r)

    # The alerts select what they should on the real thing: a flood of bad records makes
    # the dead-letter alert pending, a stopped worker is down.
    rule = {r["alert"]: r for r in RULES}
    flood = [("purchases", b"c0003", b"{not json") for _ in range(200)]
    asyncio.run(produce(stack.names, [], raw=flood))
    wait_for(prom, rule["TierstreamDeadLetterRateHigh"]["expr"], bool)
    wait_for(prom, 'ALERTS{alertname="TierstreamDeadLetterRateHigh", alertstate="pending"}', bool)
    stack.worker.stop()
    (down,) = wait_for(prom, rule["TierstreamWorkerDown"]["expr"], bool)
    assert down["metric"]["job"] == "tierstream"
    wait_for(prom, 'ALERTS{alertname="TierstreamWorkerDown", alertstate="pending"}', bool)
