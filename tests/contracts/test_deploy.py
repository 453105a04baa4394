"""deploy/ is code: the alert rules pass promtool's checks and their unit tests, the
dashboard and the alerts only query metrics the worker serves (a renamed metric or label
breaks this test), and the docker-compose and Kubernetes manifests agree with
app/settings.py on ports, probe paths, the metrics path and the environment.

promtool ships in the Debian package ``prometheus`` (``.ci/run`` installs it). Without it
the promtool tests skip, except in CI (``CI=true``) where they fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from app.adapters.policy_files import parse_policy
from app.settings import Settings
from app.stream.metrics import METRICS as WORKER_METRICS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
K8S = DEPLOY / "k8s"
DASHBOARD = GRAFANA / "dashboards" / "tierstream.json"

#: The metrics the worker serves (the contract of issue 6): name -> (type, label names).
METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    name: (kind, tuple(labels)) for name, (kind, labels) in WORKER_METRICS.items()
}
#: Labels Prometheus adds to every series, and the histogram bucket label.
TARGET_LABELS = {"instance", "job", "le"}
METRIC_NAME = re.compile(r"\btierstream_[a-z_]+\b")
BY_CLAUSE = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"")


def series_names() -> dict[str, str]:
    """Every exposed series name -> its metric (a histogram has _bucket, _sum, _count)."""
    out = {}
    for name, (kind, _) in METRICS.items():
        out[name] = name
        if kind == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                out[name + suffix] = name
    return out


def metrics_in(expr: str) -> set[str]:
    return set(METRIC_NAME.findall(expr))


def labels_in(expr: str) -> set[str]:
    """Label names an expression groups, matches or selects by."""
    names: set[str] = set()
    for group in BY_CLAUSE.findall(expr):
        names |= {n.strip() for n in group.split(",") if n.strip()}
    names |= set(MATCHER.findall(expr))
    return names


def check_expr(expr: str) -> list[str]:
    """Problems of one PromQL expression against the metrics contract."""
    known = series_names()
    problems = [f"unknown metric {m}" for m in sorted(metrics_in(expr)) if m not in known]
    allowed = set(TARGET_LABELS)
    for m in metrics_in(expr):
        if m in known:
            allowed |= set(METRICS[known[m]][1])
    problems += [f"unknown label {lb}" for lb in sorted(labels_in(expr) - allowed)]
    return problems


# --- promtool ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        reason = (
            "promtool not installed: it ships in the Debian package 'prometheus' "
            "(apt-get install prometheus; .ci/run installs it)"
        )
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{reason}; CI must run these tests")
        pytest.skip(reason)
    return path


def run_promtool(promtool: str, *args: str) -> str:
    proc = subprocess.run(
        [promtool, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    return out


def test_alert_rules_pass_promtool_check(promtool: str) -> None:
    out = run_promtool(promtool, "check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert "SUCCESS" in out


def test_alert_rule_unit_tests_pass(promtool: str) -> None:
    out = run_promtool(promtool, "test", "rules", str(PROMETHEUS / "alerts_test.yml"))
    assert "SUCCESS" in out


def test_prometheus_config_passes_promtool_check(promtool: str) -> None:
    out = run_promtool(promtool, "check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert "SUCCESS" in out


# --- alert rules -------------------------------------------------------------------------

ALERTS_DOC = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text("utf-8"))
RULES = [r for g in ALERTS_DOC["groups"] for r in g["rules"]]
ALERT_NAMES = [r["alert"] for r in RULES if "alert" in r]


def test_the_five_alerts_exist() -> None:
    assert sorted(ALERT_NAMES) == sorted(
        [
            "TierstreamWorkerDown",
            "TierstreamConsumerLagGrowing",
            "TierstreamDeadLetterRateHigh",
            "TierstreamNotProcessing",
            "TierstreamRecoveryStuck",
        ]
    )


@pytest.mark.parametrize("rule", RULES, ids=lambda r: str(r.get("alert")))
def test_alert_has_severity_summary_description_and_known_metrics(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in ("critical", "warning", "info")
    assert rule["annotations"]["summary"].strip()
    assert rule["annotations"]["description"].strip()
    assert rule.get("for"), "an alert should hold for a while before it fires"
    assert check_expr(rule["expr"]) == []


def test_worker_down_alert_watches_the_scrape_job_of_the_workers() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text("utf-8"))
    jobs = {j["job_name"] for j in config["scrape_configs"]}
    down = next(r for r in RULES if r.get("alert") == "TierstreamWorkerDown")
    job = re.search(r'job="([^"]+)"', down["expr"])
    assert job is not None and job.group(1) in jobs


@pytest.mark.parametrize("alert", ALERT_NAMES)
def test_every_alert_is_unit_tested_firing_and_not_firing(alert: str) -> None:
    doc = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text("utf-8"))
    assert doc["rule_files"] == ["alerts.yml"]
    cases = [
        c for t in doc["tests"] for c in t.get("alert_rule_test", []) if c["alertname"] == alert
    ]
    assert any(c.get("exp_alerts") for c in cases), f"{alert} is never shown firing"
    assert any(not c.get("exp_alerts") for c in cases), f"{alert} is never shown quiet"


# --- the dashboard -----------------------------------------------------------------------

DASH = json.loads(DASHBOARD.read_text("utf-8"))
PANELS = [p for p in DASH["panels"] if p["type"] != "row"]


def panel_exprs(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title / refId, PromQL) of every query of every panel, rows included."""
    for p in dashboard["panels"]:
        for q in [*p.get("panels", []), p]:
            for t in q.get("targets", []):
                yield f"{q['title']} / {t['refId']}", t["expr"]


def test_dashboard_is_a_grafana_dashboard() -> None:
    assert DASH["schemaVersion"] >= 36
    assert DASH["uid"] == "tierstream"
    assert len(PANELS) >= 12
    ids = [p["id"] for p in DASH["panels"]]
    assert len(ids) == len(set(ids))
    for p in PANELS:
        assert p["type"] in ("timeseries", "stat", "table", "bargauge", "gauge"), p["title"]
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]


@pytest.mark.parametrize("panel", PANELS, ids=lambda p: str(p["title"]))
def test_every_panel_has_prometheus_targets(panel: dict[str, Any]) -> None:
    assert panel["targets"], panel["title"]
    for source in (panel["datasource"], *(t["datasource"] for t in panel["targets"])):
        assert source == {"type": "prometheus", "uid": "${datasource}"}
    for t in panel["targets"]:
        assert t["expr"].strip() and t["refId"]
    assert panel.get("description"), "say what the panel shows"


@pytest.mark.parametrize("where,expr", list(panel_exprs(DASH)))
def test_dashboard_queries_only_metrics_and_labels_the_worker_serves(where: str, expr: str) -> None:
    assert metrics_in(expr) or expr.startswith("sum(up{"), where
    assert check_expr(expr) == [], where


def test_a_renamed_metric_or_label_is_caught() -> None:
    assert check_expr("sum by (tier) (tierstream_customers)") == []
    assert "unknown metric tierstream_customer" in check_expr("sum(tierstream_customer)")
    assert check_expr("sum by (tiers) (tierstream_customers)") == ["unknown label tiers"]
    assert check_expr('rate(tierstream_processing_latency_seconds_bucket{le="1"}[1m])') == []


def test_every_served_metric_is_on_the_dashboard_or_in_an_alert() -> None:
    known = series_names()
    used = {known[m] for _, e in panel_exprs(DASH) for m in metrics_in(e) if m in known}
    used |= {known[m] for r in RULES for m in metrics_in(r["expr"]) if m in known}
    assert sorted(set(METRICS) - used) == []


def test_dashboard_panels_the_issue_asks_for() -> None:
    exprs = " ".join(e for _, e in panel_exprs(DASH))
    for needle in (
        "sum by (kind, outcome) (rate(tierstream_events_processed_total",
        "sum by (topic) (rate(tierstream_output_records_total",
        "tierstream_consumer_lag_messages",
        "tierstream_event_time_lag_seconds",
        "histogram_quantile(0.5, sum by (le) (rate(tierstream_processing_latency_seconds_bucket",
        "histogram_quantile(0.99, sum by (le) (rate(tierstream_processing_latency_seconds_bucket",
        "sum by (tier) (tierstream_customers{",
        "sum by (from_tier, to_tier) (rate(tierstream_tier_changes_total",
        "sum by (from_stage, to_stage) (rate(tierstream_lifecycle_changes_total",
        "sum by (severity) (rate(tierstream_churn_warnings_total",
        "tierstream_churn_cleared_total",
        "sum by (reason) (rate(tierstream_dead_letters_total",
        "tierstream_duplicates_dropped_total",
        "tierstream_rebalances_total",
        "tierstream_recovering",
        "tierstream_recovery_seconds",
        "tierstream_policy_info",
    ):
        assert needle in exprs, needle


def test_dashboard_datasource_variable_defaults_to_the_provisioned_datasource() -> None:
    variables = {v["name"]: v for v in DASH["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ds = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yaml").read_text("utf-8"))
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus"
    assert variables["datasource"]["current"]["value"] == source["uid"]
    # the datasource URL is the compose Prometheus service
    url = urlsplit(source["url"])
    assert url.hostname in COMPOSE["services"]
    assert url.port == 9090


# --- docker-compose ----------------------------------------------------------------------

COMPOSE = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text("utf-8"))
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
WORKERS = {
    name: svc
    for name, svc in SERVICES.items()
    if any(k.startswith("TIERSTREAM_") for k in svc.get("environment", {}))
}
DEFAULT_WEB_PORT = Settings.model_fields["web_port"].default


def settings_from(env: dict[str, Any]) -> Settings:
    """The worker's settings from a manifest's TIERSTREAM_* environment (validated)."""
    fields = {
        k.removeprefix("TIERSTREAM_").lower(): str(v)
        for k, v in env.items()
        if k.startswith("TIERSTREAM_")
    }
    unknown = set(fields) - set(Settings.model_fields)
    assert not unknown, f"not settings: {sorted(unknown)}"
    return Settings.model_validate(fields)


def container_port(mapping: str) -> int:
    """``"6067:6066"`` -> 6066."""
    return int(str(mapping).rsplit(":", 1)[-1].split("/")[0])


def mounts(svc: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path of a service's bind mounts (relative to deploy/)."""
    out = {}
    for v in svc.get("volumes", []):
        host, target, *_ = v.split(":")
        out[target] = host
    return out


def test_compose_runs_two_workers_kafka_kraft_prometheus_and_grafana() -> None:
    assert len(WORKERS) == 2
    kafka = SERVICES["kafka"]
    assert kafka["image"].startswith(("apache/kafka", "bitnami/kafka"))
    env = kafka["environment"]
    roles = env.get("KAFKA_PROCESS_ROLES") or env.get("KAFKA_CFG_PROCESS_ROLES")
    assert set(roles.split(",")) == {"broker", "controller"}  # KRaft, no ZooKeeper
    assert "zookeeper" not in SERVICES
    assert {"prometheus", "grafana"} <= set(SERVICES)


@pytest.mark.parametrize("name", sorted(WORKERS))
def test_compose_worker_settings_ports_and_health(name: str) -> None:
    svc = WORKERS[name]
    settings = settings_from(svc["environment"])
    # the broker is the Kafka service's in-network listener
    host, port = settings.bootstrap_servers.split(":")
    advertised = SERVICES["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert host == "kafka" and f"PLAINTEXT://kafka:{port}" in advertised
    assert settings.store.startswith("rocksdb://")
    assert settings.web_port == DEFAULT_WEB_PORT
    assert settings.web_host == name  # reachable by the other worker and by Prometheus
    assert [container_port(p) for p in svc["ports"]] == [settings.web_port]
    assert str(settings.data_dir) in mounts(svc)
    test = " ".join(svc["healthcheck"]["test"])
    assert f"http://{name}:{settings.web_port}/readyz" in test
    assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (DEPLOY / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()


def test_compose_workers_share_one_consumer_group() -> None:
    groups = {settings_from(s["environment"]).app_id for s in WORKERS.values()}
    assert len(groups) == 1


def test_prometheus_scrapes_the_compose_workers_on_their_web_port() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text("utf-8"))
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "tierstream"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = {t for sc in job["static_configs"] for t in sc["targets"]}
    want = {f"{n}:{settings_from(s['environment']).web_port}" for n, s in WORKERS.items()}
    assert targets == want
    # the rule files are mounted next to the config, where rule_files points
    prom = mounts(SERVICES["prometheus"])
    config_path = next(a for a in SERVICES["prometheus"]["command"] if "config.file" in a)
    config_dir = Path(config_path.split("=", 1)[1]).parent
    assert prom[str(config_dir / "prometheus.yml")] == "./prometheus/prometheus.yml"
    for rule_file in config["rule_files"]:
        assert prom[str(config_dir / rule_file)] == f"./prometheus/{rule_file}"
        assert (PROMETHEUS / rule_file).is_file()


def test_grafana_mounts_the_provisioning_and_the_dashboards_folder() -> None:
    graf = mounts(SERVICES["grafana"])
    assert graf["/etc/grafana/provisioning"] == "./grafana/provisioning"
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/tierstream.yaml").read_text())
    (p,) = provider["providers"]
    assert p["type"] == "file"
    assert graf[p["options"]["path"]] == "./grafana/dashboards"
    for host in graf.values():
        assert (DEPLOY / host).exists(), host


def test_dockerfile_exposes_the_web_port_and_sets_only_settings() -> None:
    text = (DEPLOY / "Dockerfile").read_text("utf-8")
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    assert re.search(rf"^EXPOSE {DEFAULT_WEB_PORT}$", text, re.M)
    env = dict(re.findall(r"(TIERSTREAM_[A-Z_]+)=(\S+)", text))
    assert settings_from(env).web_port == DEFAULT_WEB_PORT
    assert "/healthz" in text


# --- Kubernetes --------------------------------------------------------------------------


def k8s_objects() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [d for d in yaml.safe_load_all(path.read_text("utf-8")) if d]
    return docs


OBJECTS = k8s_objects()


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in OBJECTS if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


STS = one("StatefulSet")
POD = STS["spec"]["template"]
(CONTAINER,) = POD["spec"]["containers"]
POD_ENV = {
    e["name"]: e.get("value", "") for e in CONTAINER["env"] if e["name"].startswith("TIERSTREAM_")
}
K8S_SETTINGS = settings_from({**POD_ENV, "TIERSTREAM_WEB_HOST": "10.0.0.1"})  # $(POD_IP)


def named_port(name: str) -> int:
    return int(next(p["containerPort"] for p in CONTAINER["ports"] if p["name"] == name))


def test_kustomization_lists_every_manifest() -> None:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text("utf-8"))
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kust["resources"]) == files


def test_statefulset_web_port_probes_and_scrape_annotations() -> None:
    assert K8S_SETTINGS.web_port == DEFAULT_WEB_PORT == named_port("http")
    assert POD_ENV["TIERSTREAM_WEB_HOST"] == "$(POD_IP)"
    pod_ip = next(e for e in CONTAINER["env"] if e["name"] == "POD_IP")
    assert pod_ip["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    live, ready = CONTAINER["livenessProbe"]["httpGet"], CONTAINER["readinessProbe"]["httpGet"]
    assert live["path"] == "/healthz" and ready["path"] == "/readyz"
    assert live["port"] == ready["port"] == "http"
    notes = POD["metadata"]["annotations"]
    assert notes["prometheus.io/scrape"] == "true"
    assert int(notes["prometheus.io/port"]) == K8S_SETTINGS.web_port
    assert notes["prometheus.io/path"] == "/metrics"


def test_statefulset_keeps_rocksdb_on_a_claimed_volume() -> None:
    assert K8S_SETTINGS.store.startswith("rocksdb://")
    (claim,) = STS["spec"]["volumeClaimTemplates"]
    mount = next(m for m in CONTAINER["volumeMounts"] if m["name"] == claim["metadata"]["name"])
    assert Path(mount["mountPath"]) == K8S_SETTINGS.data_dir
    assert claim["spec"]["resources"]["requests"]["storage"]


def test_statefulset_reads_the_policy_from_the_configmap_and_it_parses() -> None:
    assert K8S_SETTINGS.policy_file is not None
    volume = next(v for v in POD["spec"]["volumes"] if "configMap" in v)
    mount = next(m for m in CONTAINER["volumeMounts"] if m["name"] == volume["name"])
    assert K8S_SETTINGS.policy_file.parent == Path(mount["mountPath"])
    cm = one("ConfigMap", volume["configMap"]["name"])
    policy = parse_policy(cm["data"][K8S_SETTINGS.policy_file.name], "configmap")
    assert policy.tiers


def test_services_select_the_pods_on_the_web_port() -> None:
    labels = POD["metadata"]["labels"]
    assert STS["spec"]["selector"]["matchLabels"].items() <= labels.items()
    headless = one("Service", STS["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    services = [o for o in OBJECTS if o["kind"] == "Service"]
    assert any(s["spec"].get("clusterIP") != "None" for s in services)
    for svc in services:
        assert svc["spec"]["selector"].items() <= labels.items()
        (port,) = svc["spec"]["ports"]
        assert port["port"] == K8S_SETTINGS.web_port and port["targetPort"] == "http"


def test_podmonitor_scrapes_metrics_with_the_job_the_alerts_expect() -> None:
    pm = one("PodMonitor")
    labels = POD["metadata"]["labels"]
    assert pm["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (endpoint,) = pm["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    down = next(r for r in RULES if r.get("alert") == "TierstreamWorkerDown")
    assert f'job="{labels[pm["spec"]["jobLabel"]]}"' in down["expr"]
