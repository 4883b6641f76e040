"""The stack's configuration, generated from the files the Kubernetes deployment uses: Prometheus's
scrape config and rules (the `spec.groups` of k8s/monitoring/prometheusrule.yaml) and Grafana's
provisioning for k8s/monitoring/grafana-dashboard.json. Nothing here is committed as a copy;
`python -m observe render` and `make observe` write it at start.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import yaml

__all__ = [
    "DASHBOARD",
    "HOST",
    "RAY_SERVICE_DISCOVERY",
    "alert_rules",
    "grafana_env",
    "grafana_provisioning",
    "prometheus_config",
    "render",
]

ROOT = Path(__file__).resolve().parents[1]
RULES_SOURCE = ROOT / "k8s" / "monitoring" / "prometheusrule.yaml"
DASHBOARD = ROOT / "k8s" / "monitoring" / "grafana-dashboard.json"
HOST = "127.0.0.1"  # every service listens on loopback only
# Written by the dashboard of the newest local Ray instance (a link into its session folder).
RAY_SERVICE_DISCOVERY = "/tmp/ray/prom_metrics_service_discovery.json"  # noqa: S108  # nosec B108


def alert_rules(source: Path = RULES_SOURCE) -> dict:
    """A Prometheus rules file: the groups of the project's PrometheusRule."""
    (rule,) = (d for d in yaml.safe_load_all(source.read_text()) if d["kind"] == "PrometheusRule")
    return {"groups": rule["spec"]["groups"]}


def prometheus_config(
    scrape_interval: str = "15s",
    ray_sd: str | None = RAY_SERVICE_DISCOVERY,
    app_url: str | None = None,
) -> dict:
    """Scrape the application's `/metrics` when `app_url` is given, else the Ray nodes in Ray's
    service-discovery file (their ports carry the same `ray_ppd_*` series plus Ray's own, so
    scraping both would count every prediction twice). Rules come from rules.yml beside it."""
    if app_url:
        url = urlsplit(app_url)
        job = {
            "job_name": "ppd-app",
            "scheme": url.scheme or "http",
            "metrics_path": url.path.rstrip("/") + "/metrics",
            "static_configs": [{"targets": [url.netloc]}],
        }
    elif ray_sd:
        job = {
            "job_name": "ray",
            "file_sd_configs": [{"files": [ray_sd], "refresh_interval": "10s"}],
        }
    else:
        raise ValueError("nothing to scrape: give Ray's service-discovery file or the app's URL")
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "rule_files": ["rules.yml"],  # relative to prometheus.yml
        "scrape_configs": [job],
    }


def grafana_provisioning(prometheus_url: str, dashboards_dir: str) -> dict[str, dict]:
    """Grafana's provisioning files (path under the provisioning folder -> content)."""
    datasource = {"name": "Prometheus", "uid": "prometheus", "type": "prometheus",
                  "access": "proxy", "url": prometheus_url, "isDefault": True}  # fmt: skip
    provider = {"name": "product-photo-detector", "type": "file", "folder": "",
                "allowUiUpdates": False, "options": {"path": dashboards_dir}}  # fmt: skip
    return {
        "datasources/prometheus.yml": {"apiVersion": 1, "datasources": [datasource]},
        "dashboards/product-photo-detector.yml": {"apiVersion": 1, "providers": [provider]},
    }


def grafana_env(port: int | str, provisioning: str, home_dashboard: str) -> dict[str, str]:
    """Grafana's settings, the same here and in docker-compose.yml: loopback, anonymous viewers,
    no calls home, the project's dashboard as the home page."""
    return {
        "GF_SERVER_HTTP_ADDR": HOST,
        "GF_SERVER_HTTP_PORT": str(port),
        "GF_PATHS_PROVISIONING": provisioning,
        "GF_AUTH_ANONYMOUS_ENABLED": "true",
        "GF_AUTH_ANONYMOUS_ORG_ROLE": "Viewer",
        "GF_ANALYTICS_REPORTING_ENABLED": "false",
        "GF_ANALYTICS_CHECK_FOR_UPDATES": "false",
        "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH": home_dashboard,
    }


def render(
    out: Path,
    prometheus_port: int,
    scrape_interval: str = "15s",
    ray_sd: str | None = RAY_SERVICE_DISCOVERY,
    app_url: str | None = None,
    dashboards_dir: str | None = None,
) -> None:
    """Write prometheus/{prometheus,rules}.yml and grafana/provisioning/ under `out`.

    Without `dashboards_dir`, grafana/dashboards/ gets a link to the project's dashboard.
    """
    prometheus = out / "prometheus"
    prometheus.mkdir(parents=True, exist_ok=True)
    config = prometheus_config(scrape_interval, ray_sd, app_url)
    (prometheus / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    (prometheus / "rules.yml").write_text(yaml.safe_dump(alert_rules(), sort_keys=False))
    if dashboards_dir is None:
        folder = out / "grafana" / "dashboards"
        folder.mkdir(parents=True, exist_ok=True)
        link = folder / DASHBOARD.name
        link.unlink(missing_ok=True)
        link.symlink_to(DASHBOARD)
        dashboards_dir = str(folder)
    files = grafana_provisioning(f"http://{HOST}:{prometheus_port}", dashboards_dir)
    for relative, content in files.items():
        path = out / "grafana" / "provisioning" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(content, sort_keys=False))
