"""Alerts (promtool), the Grafana dashboard and the scrape targets, against real metric names.

A metric is real when Ray 2.60 exports it (k8s/monitoring/ray-metrics.txt, written by
k8s/monitoring/list_ray_metrics.py from a running Serve application) or when the application
makes it in deployments/metrics.py (`ppd_x` becomes `ray_ppd_x`, counters get `_total`).
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.manifests import ROOT, load_documents, load_one, pod_templates, require_tool

MONITORING = ROOT / "k8s" / "monitoring"
PROMTOOL_HOW = "Debian package prometheus; .ci/run installs it"
_HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
_METRIC_TOKEN = re.compile(r"\b(ray_[a-zA-Z0-9_]+)")


def ray_metric_names() -> set[str]:
    names = set()
    for line in (MONITORING / "ray-metrics.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, kind = line.split()
            names |= {name + s for s in _HISTOGRAM_SERIES} if kind == "histogram" else {name}
    return names


def app_metric_names() -> set[str]:
    """The series names deployments/metrics.py makes, as Ray's exporter names them."""
    tree = ast.parse((ROOT / "deployments" / "metrics.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args:
            kind, first = node.func.id, node.args[0]
            if kind in ("Counter", "Gauge", "Histogram") and isinstance(first, ast.Constant):
                base = f"ray_{first.value}"
                if kind == "Counter":
                    names.add(base + "_total")
                elif kind == "Gauge":
                    names.add(base)
                else:
                    names |= {base + s for s in _HISTOGRAM_SERIES}
    return names


KNOWN_METRICS = ray_metric_names() | app_metric_names()


def metrics_in(expr: str) -> set[str]:
    return set(_METRIC_TOKEN.findall(expr))


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads((MONITORING / "grafana-dashboard.json").read_text())


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def test_the_catalogues_hold_the_names_the_checks_rely_on():
    assert "ray_ppd_http_requests_total" in KNOWN_METRICS
    assert "ray_ppd_stage_latency_ms_bucket" in KNOWN_METRICS
    assert "ray_ppd_drift_score" in KNOWN_METRICS
    assert "ray_serve_deployment_replica_healthy" in KNOWN_METRICS
    assert "ray_node_gpus_utilization" in KNOWN_METRICS
    assert "ray_ppd_http_requests" not in KNOWN_METRICS  # counters only exist with _total


def test_dashboard_has_at_least_16_panels_each_querying_real_metrics(dashboard):
    panels = _panels(dashboard)
    assert len(panels) >= 16
    for panel in panels:
        used = set().union(*(metrics_in(t["expr"]) for t in panel["targets"]))
        assert used, f"panel {panel['title']!r} queries no metric"
        unknown = used - KNOWN_METRICS
        assert not unknown, f"panel {panel['title']!r} queries metrics nobody exports: {unknown}"


def test_dashboard_panels_have_unique_ids_and_titles(dashboard):
    ids = [p["id"] for p in dashboard["panels"]]
    titles = [p["title"] for p in _panels(dashboard)]
    assert len(ids) == len(set(ids))
    assert len(titles) == len(set(titles))


def test_alerts_query_real_metrics():
    rule = load_one("k8s/monitoring/prometheusrule.yaml", "PrometheusRule")
    recorded = {r["record"] for g in rule["spec"]["groups"] for r in g["rules"] if "record" in r}
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            unknown = metrics_in(r["expr"]) - KNOWN_METRICS - recorded
            assert not unknown, f"{r.get('alert') or r['record']} uses unknown {unknown}"


def test_required_alerts_exist():
    rule = load_one("k8s/monitoring/prometheusrule.yaml", "PrometheusRule")
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert {
        "PPDHighErrorRate",
        "PPDHighLatencyP99",
        "PPDDriftDetected",
        "PPDShadowDisagreement",
        "PPDNoReadyReplicas",
    } <= alerts


def _rules_dir(tmp_path: Path) -> Path:
    rule = load_one("k8s/monitoring/prometheusrule.yaml", "PrometheusRule")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule["spec"], sort_keys=False))
    shutil.copy(MONITORING / "alerts.test.yaml", tmp_path / "alerts.test.yaml")
    return tmp_path


def test_promtool_check_rules(tmp_path):
    promtool = require_tool("promtool", PROMTOOL_HOW)
    directory = _rules_dir(tmp_path)
    result = subprocess.run(
        [promtool, "check", "rules", "rules.yaml"],
        cwd=directory, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_promtool_test_that_fires_it_and_one_that_does_not():
    rule = load_one("k8s/monitoring/prometheusrule.yaml", "PrometheusRule")
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    cases = yaml.safe_load((MONITORING / "alerts.test.yaml").read_text())["tests"]
    checks = [c for case in cases for c in case["alert_rule_test"]]
    fired = {c["alertname"] for c in checks if c["exp_alerts"]}
    quiet = {c["alertname"] for c in checks if not c["exp_alerts"]}
    assert alerts <= fired, f"never shown firing: {sorted(alerts - fired)}"
    assert alerts <= quiet, f"never shown quiet: {sorted(alerts - quiet)}"


def test_promtool_unit_tests_of_the_alerts(tmp_path):
    promtool = require_tool("promtool", PROMTOOL_HOW)
    directory = _rules_dir(tmp_path)
    result = subprocess.run(
        [promtool, "test", "rules", "alerts.test.yaml"],
        cwd=directory, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_dashboard_query_is_valid_promql(tmp_path, dashboard):
    promtool = require_tool("promtool", PROMTOOL_HOW)
    grafana_vars = {"$__rate_interval": "5m", "$__interval": "1m"}
    rules = []
    for panel in _panels(dashboard):
        for target in panel["targets"]:
            expr = target["expr"]
            for var, value in grafana_vars.items():
                expr = expr.replace(var, value)
            rules.append(
                {"record": f"dashboard:panel_{panel['id']}_{target['refId']}", "expr": expr}
            )
    (tmp_path / "dashboard.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]})
    )
    result = subprocess.run(
        [promtool, "check", "rules", "dashboard.yaml"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_pod_monitors_scrape_ports_the_ray_pods_declare():
    declared: dict[str, set[str]] = {}
    for path, kind in (("k8s/rayservice.yaml", "RayService"), ("k8s/rayjob-train.yaml", "RayJob")):
        for group, template in pod_templates(load_one(path, kind)).items():
            ports = {p["name"] for p in template["spec"]["containers"][0]["ports"]}
            declared.setdefault("head" if group == "head" else "worker", set()).update(ports)
    monitors = {
        d["metadata"]["name"]: d
        for d in load_documents("k8s/monitoring/podmonitors.yaml")
        if d["kind"] == "PodMonitor"
    }
    nodes = [e["port"] for e in monitors["ray-nodes"]["spec"]["podMetricsEndpoints"]]
    head = [e["port"] for e in monitors["ray-head"]["spec"]["podMetricsEndpoints"]]
    assert set(nodes) <= declared["head"] & declared["worker"]
    assert set(head) <= declared["head"]
    assert monitors["ray-nodes"]["spec"]["selector"]["matchLabels"] == {"ray.io/is-ray-node": "yes"}
