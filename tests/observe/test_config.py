"""What `make observe` and docker-compose.yml configure, checked offline: Prometheus's config
and rules pass promtool, Grafana gets the project's dashboard, and the compose file's services
refer to files that exist or that `observe render` writes."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path, PurePosixPath

import pytest
import yaml

from observe.config import DASHBOARD, alert_rules, grafana_env, prometheus_config, render
from observe.stack import parser
from tests.conftest import ROOT
from tests.deploy.manifests import load_one, require_tool
from tests.observe.conftest import PROMETHEUS_HOW

COMPOSE = ROOT / "docker-compose.yml"
_DEFAULT = re.compile(r"\$\{[A-Z_]+:-([^}]*)\}")  # ${VAR:-default}, as compose reads it unset


def _compose() -> dict:
    return yaml.safe_load(_DEFAULT.sub(r"\1", COMPOSE.read_text()))


def test_the_rules_file_is_the_prometheusrules_groups():
    rule = load_one("k8s/monitoring/prometheusrule.yaml", "PrometheusRule")
    assert alert_rules() == {"groups": rule["spec"]["groups"]}


def test_prometheus_scrapes_the_ray_nodes_or_else_the_app():
    (ray,) = prometheus_config()["scrape_configs"]
    assert ray["file_sd_configs"][0]["files"] == ["/tmp/ray/prom_metrics_service_discovery.json"]
    (app,) = prometheus_config("2s", app_url="http://127.0.0.1:8123")["scrape_configs"]
    assert app["static_configs"] == [{"targets": ["127.0.0.1:8123"]}]
    assert app["metrics_path"] == "/metrics"
    with pytest.raises(ValueError, match="nothing to scrape"):
        prometheus_config(ray_sd=None)


@pytest.mark.parametrize("app_url", [None, "http://127.0.0.1:8123"])
def test_rendered_prometheus_config_and_rules_pass_promtool(tmp_path, app_url):
    promtool = require_tool("promtool", PROMETHEUS_HOW)
    render(tmp_path, 9999, "2s", app_url=app_url)
    result = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus" / "prometheus.yml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    rules = sum(len(g["rules"]) for g in alert_rules()["groups"])
    assert f"SUCCESS: {rules} rules found" in result.stdout


def test_grafana_is_provisioned_with_the_kubernetes_dashboard_and_prometheus(tmp_path):
    render(tmp_path, 9999)
    provisioning = tmp_path / "grafana" / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    (datasource,) = datasources["datasources"]
    assert (datasource["type"], datasource["url"]) == ("prometheus", "http://127.0.0.1:9999")
    (provider,) = yaml.safe_load(
        (provisioning / "dashboards" / "product-photo-detector.yml").read_text()
    )["providers"]
    (dashboard,) = Path(provider["options"]["path"]).glob("*.json")
    assert dashboard.resolve() == DASHBOARD == ROOT / "k8s/monitoring/grafana-dashboard.json"
    variable = json.loads(dashboard.read_text())["templating"]["list"][0]
    assert (variable["type"], variable["query"]) == ("datasource", datasource["type"])


def test_compose_runs_the_same_stack_on_loopback():
    services = _compose()["services"]
    assert set(services) == {"config", "mlflow", "prometheus", "grafana"}
    for name in ("mlflow", "prometheus", "grafana"):
        assert services[name]["network_mode"] == "host"  # loopback, as `make observe`
        assert "ports" not in services[name]
        image, _, tag = services[name]["image"].rpartition(":")
        assert image and tag not in ("", "latest")
    assert "--host=127.0.0.1" in services["mlflow"]["command"]
    assert "--web.listen-address=127.0.0.1:9090" in services["prometheus"]["command"]
    assert services["grafana"]["environment"]["GF_SERVER_HTTP_ADDR"] == "127.0.0.1"


def test_compose_volumes_are_declared_or_exist():
    compose = _compose()
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source}"
            elif source.startswith("/"):
                assert source == "/tmp/ray" and volume["bind"]["create_host_path"] is False
            else:
                assert source in compose["volumes"], f"{name}: undeclared volume {source}"


def test_compose_services_read_what_the_config_service_renders(tmp_path):
    services = _compose()["services"]
    args = parser().parse_args(services["config"]["command"][3:])  # python -m observe ...
    assert args.command == "render"
    config_root = PurePosixPath(args.out)
    render(tmp_path, args.prometheus_port, args.scrape_interval, args.ray_sd, args.app_url,
           args.dashboards_dir)  # fmt: skip

    def rendered(container_path: str) -> Path:
        return tmp_path / PurePosixPath(container_path).relative_to(config_root)

    flags = dict(f.split("=", 1) for f in services["prometheus"]["command"])
    config = yaml.safe_load(rendered(flags["--config.file"]).read_text())
    assert config["scrape_configs"][0]["job_name"] == "ray"  # OBSERVE_APP_URL unset
    assert (rendered(flags["--config.file"]).parent / config["rule_files"][0]).exists()

    grafana = services["grafana"]
    env = grafana_env(
        3000, "/config/grafana/provisioning", args.dashboards_dir + "/" + DASHBOARD.name
    )
    assert {k: str(v) for k, v in grafana["environment"].items()} == env
    assert rendered(env["GF_PATHS_PROVISIONING"]).is_dir()
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"] if isinstance(v, str))
    assert (
        mounts["./k8s/monitoring/grafana-dashboard.json"]
        == env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    )
    provider_file = rendered(env["GF_PATHS_PROVISIONING"]) / "dashboards/product-photo-detector.yml"
    (provider,) = yaml.safe_load(provider_file.read_text())["providers"]
    assert provider["options"]["path"] == args.dashboards_dir
