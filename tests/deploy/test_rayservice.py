"""The RayService: generated from serve_config.yaml, valid for KubeRay 1.7 and for Ray Serve."""

from __future__ import annotations

import importlib
import pkgutil
import tomllib
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from pydantic import BaseModel
from ray.serve.schema import ServeDeploySchema

import deployments
from tests.deploy.manifests import (
    ROOT,
    crd_schema,
    load_one,
    load_script,
    pod_templates,
    render,
    strict,
)

generate = load_script("k8s/generate.py")
APP_NAME = "product-photo-detector"


@pytest.fixture(scope="module")
def rayservice() -> dict[str, Any]:
    return load_one("k8s/rayservice.yaml", "RayService")


@pytest.fixture(scope="module")
def serve_config(rayservice) -> dict[str, Any]:
    return yaml.safe_load(rayservice["spec"]["serveConfigV2"])


def _deployments(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (app,) = [a for a in config["applications"] if a["name"] == APP_NAME]
    return {d["name"]: d for d in app["deployments"]}


def test_generated_rayservice_is_up_to_date():
    committed = (ROOT / "k8s" / "rayservice.yaml").read_text()
    assert committed == generate.render_rayservice(), "run `make k8s-manifests`"


def test_rayservice_validates_against_the_kuberay_crd_refusing_unknown_keys(rayservice):
    jsonschema.validate(rayservice, strict(crd_schema("rayservices")))


def test_the_strict_crd_schema_catches_an_unknown_key(rayservice):
    broken = yaml.safe_load(yaml.safe_dump(rayservice))
    broken["spec"]["rayClusterConfig"]["workerGroupSpecs"][1]["minReplica"] = 0  # typo
    with pytest.raises(jsonschema.ValidationError, match="minReplica"):
        jsonschema.validate(broken, strict(crd_schema("rayservices")))


def test_serve_config_v2_is_a_valid_serve_deploy_config(serve_config):
    ServeDeploySchema.model_validate(serve_config)


def test_serve_config_v2_is_serve_config_yaml_with_the_overlay(serve_config):
    source = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    assert set(_deployments(serve_config)) == set(_deployments(source))
    assert serve_config["http_options"]["host"] == "0.0.0.0"  # noqa: S104 - in the pod
    assert serve_config["http_options"]["port"] == 8000
    assert serve_config["logging_config"] == source["logging_config"]
    for name, deployment in _deployments(serve_config).items():
        assert not ("num_replicas" in deployment and "autoscaling_config" in deployment), name
    classifier = _deployments(serve_config)["Classifier"]
    assert classifier["ray_actor_options"]["num_gpus"] > 0
    assert classifier["user_config"]["model_uri"].startswith("gs://")
    assert classifier["max_ongoing_requests"] >= classifier["user_config"]["max_batch_size"]
    assert classifier["autoscaling_config"]["min_replicas"] >= 1


def test_every_user_config_is_accepted_by_its_deployment_code(serve_config):
    config_classes = _config_classes()
    checked = []
    for name, deployment in _deployments(serve_config).items():
        if "user_config" not in deployment:
            continue
        config_class = config_classes.get("Classifier" if name == "Shadow" else name)
        if config_class is not None:
            config_class.model_validate(deployment["user_config"])  # strict: wrong keys/types raise
            checked.append(name)
    assert {"Classifier", "Ingress"} <= set(checked)


def _config_classes() -> dict[str, type]:
    """Deployment name -> its `<Name>Config` pydantic model, in deployments/."""
    found = {}
    for info in pkgutil.iter_modules(deployments.__path__):
        module = importlib.import_module(f"deployments.{info.name}")
        for attr, value in vars(module).items():
            if attr.endswith("Config") and isinstance(value, type) and issubclass(value, BaseModel):
                found[attr.removesuffix("Config")] = value
    return found


def test_empty_shadow_model_uri_means_no_shadow_model():
    text = (ROOT / "k8s" / "rayservice.yaml").read_text()
    from tests.deploy.manifests import EXAMPLE_ENV

    rendered = yaml.safe_load(render(text, {**EXAMPLE_ENV, "SHADOW_MODEL_URI": ""}))
    config = yaml.safe_load(rendered["spec"]["serveConfigV2"])
    shadow = _deployments(config).get("Shadow")
    if shadow is None:
        pytest.skip("serve_config.yaml has no Shadow deployment yet")
    assert shadow["user_config"]["model_uri"] is None


def test_ray_version_and_images_are_pinned_to_the_projects_ray(rayservice):
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pinned = next(d for d in pyproject["project"]["dependencies"] if d.startswith("ray["))
    version = pinned.split("==")[1]
    assert version == ray.__version__
    assert rayservice["spec"]["rayClusterConfig"]["rayVersion"] == version
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert f"FROM rayproject/ray:{version}-py311 AS cpu" in dockerfile
    assert f"FROM rayproject/ray:{version}-py311-gpu AS gpu" in dockerfile
    for group, template in pod_templates(rayservice).items():
        image = template["spec"]["containers"][0]["image"]
        assert image.endswith(":0123456789abcdef0123456789abcdef01234567"), group
        assert ("/ppd-gpu:" in image) == (group == "t4"), group


def test_t4_group_asks_for_one_t4_and_tolerates_the_gpu_taint(rayservice):
    t4 = pod_templates(rayservice)["t4"]["spec"]
    assert t4["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}
    container = t4["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in t4[
        "tolerations"
    ]


def test_ray_autoscaling_and_upgrade_strategy(rayservice):
    spec = rayservice["spec"]
    cluster = spec["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert groups["t4"]["minReplicas"] == 0 < groups["t4"]["maxReplicas"]
    assert groups["cpu"]["minReplicas"] <= groups["cpu"]["maxReplicas"]
    assert spec["upgradeStrategy"]["type"] == "NewCluster"


def test_api_keys_come_from_a_mounted_secret_never_from_the_manifest(rayservice):
    for group, template in pod_templates(rayservice).items():
        spec = template["spec"]
        container = spec["containers"][0]
        env = {e["name"]: e for e in container["env"]}
        assert not {"API_KEYS", "API_KEY_HASHES"} & set(env), group
        assert env["REQUIRE_AUTH"]["value"] == "true"
        path = env["API_KEY_HASHES_FILE"]["value"]
        (mount,) = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
        assert mount["readOnly"] is True
        (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        assert volume["secret"]["secretName"] == "ppd-api-keys"
        assert [i["path"] for i in volume["secret"]["items"]] == [path.rsplit("/", 1)[1]]


def test_workers_run_with_the_heads_settings(rayservice):
    templates = pod_templates(rayservice)
    head_env = templates["head"]["spec"]["containers"][0]["env"]
    for group in ("cpu", "t4"):
        worker_env = templates[group]["spec"]["containers"][0]["env"]
        assert all(e in head_env for e in worker_env), group


def test_the_head_survives_a_restart_and_is_never_moved_by_the_autoscaler(rayservice):
    cluster = rayservice["spec"]["rayClusterConfig"]
    options = cluster["gcsFaultToleranceOptions"]
    assert options["redisAddress"] == "rediss://10.40.0.3:6378"  # TLS to Memorystore
    assert options["redisPassword"]["valueFrom"]["secretKeyRef"] == {
        "name": "ppd-redis",
        "key": "password",
    }
    head = cluster["headGroupSpec"]["template"]
    annotations = head["metadata"]["annotations"]
    assert annotations["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "false"
    env = {e["name"]: e.get("value") for e in head["spec"]["containers"][0]["env"]}
    ca = env["RAY_REDIS_CA_CERT"]
    mounts = head["spec"]["containers"][0]["volumeMounts"]
    assert any(ca.startswith(m["mountPath"] + "/") for m in mounts)
    assert "redis_host" in (ROOT / "terraform" / "outputs.tf").read_text()


def test_the_dashboard_shows_grafana_panels(rayservice):
    head = pod_templates(rayservice)["head"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in head["env"]}
    assert env["RAY_PROMETHEUS_HOST"].startswith("http://prometheus-operated.monitoring.svc")
    assert env["RAY_GRAFANA_HOST"] == "http://kps-grafana.monitoring.svc:80"
    assert env["RAY_GRAFANA_IFRAME_HOST"] == "http://127.0.0.1:3000"  # docs/deploy.md's forward
    assert "RAY_GRAFANA_IFRAME_HOST" in (ROOT / "docs" / "deploy.md").read_text()


def test_autoscaler_sidecar_runs_unprivileged(rayservice):
    context = rayservice["spec"]["rayClusterConfig"]["autoscalerOptions"]["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]


def test_the_cluster_mirrors_the_recorded_shadow_fraction(serve_config):
    ingress = _deployments(serve_config)["Ingress"]["user_config"]
    assert ingress["shadow_fraction"] == 0.1  # EXAMPLE_ENV's SHADOW_FRACTION
    source = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    assert _deployments(source)["Ingress"]["user_config"]["shadow_fraction"] == 0.0


def test_no_template_is_left_where_kubectl_apply_would_pick_it_up():
    for path in sorted((ROOT / "k8s").glob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc and {"apiVersion", "kind"} <= set(doc), f"{path.name} is not a manifest"
        assert "GENERATED\n" not in path.read_text().replace("# GENERATED", ""), path.name


# --- the generator's merge rules


def test_overlay_null_removes_a_key_and_mappings_merge():
    merged = generate.merge({"a": 1, "b": {"c": 2, "d": 3}}, {"a": None, "b": {"d": 4}})
    assert merged == {"b": {"c": 2, "d": 4}}


def test_overlay_naming_a_missing_deployment_is_an_error_unless_optional():
    config = {"applications": [{"name": "app", "deployments": [{"name": "A"}]}]}
    overlay = {"applications": {"app": {"deployments": {"B": {"num_replicas": 2}}}}}
    with pytest.raises(generate.GenerationError, match="'B'"):
        generate.cluster_serve_config(config, overlay)
    overlay["applications"]["app"]["deployments"]["B"]["optional"] = True
    assert generate.cluster_serve_config(config, overlay) == config


def test_optional_overlay_entries_apply_once_serve_config_lists_them():
    config = {"applications": [{"name": "app", "deployments": [{"name": "B", "num_replicas": 1}]}]}
    overlay = {"applications": {"app": {"deployments": {"B": {"optional": True, "x": 1}}}}}
    result = generate.cluster_serve_config(config, overlay)
    assert result["applications"][0]["deployments"] == [{"name": "B", "num_replicas": 1, "x": 1}]


def test_planned_deployments_get_their_cluster_settings_once_serve_config_lists_them(tmp_path):
    source = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    (app,) = source["applications"]
    app["deployments"] += [
        {"name": "Shadow", "user_config": {"model_uri": None, "max_batch_size": 16}},
        {"name": "Explainer", "user_config": {"model_uri": "artifacts/demo/model.safetensors"}},
    ]
    path = tmp_path / "serve_config.yaml"
    path.write_text(yaml.safe_dump(source))
    text = generate.render_rayservice(serve_config_path=path)
    assert "Not applied" not in text
    config = yaml.safe_load(yaml.safe_load(render(text))["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(config)
    found = _deployments(config)
    assert found["Shadow"]["user_config"]["model_uri"].endswith(
        "sweep-20260102-000000/model.safetensors"
    )
    assert found["Shadow"]["ray_actor_options"]["num_gpus"] == 0.25
    assert (
        found["Explainer"]["user_config"]["model_uri"]
        == found["Classifier"]["user_config"]["model_uri"]
    )
    gpus = sum(d.get("ray_actor_options", {}).get("num_gpus", 0) for d in found.values())
    assert gpus <= 1, "the minimum GPU footprint should fit one T4"


def test_serve_autoscaling_never_asks_for_more_gpus_than_the_t4_group_has(rayservice, serve_config):
    groups = {g["groupName"]: g for g in rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    t4_gpus = groups["t4"]["maxReplicas"] * 1  # one T4 a node
    most = 0.0
    for deployment in _deployments(serve_config).values():
        replicas = deployment.get("autoscaling_config", {}).get("max_replicas") or deployment.get(
            "num_replicas", 1
        )
        most += replicas * deployment.get("ray_actor_options", {}).get("num_gpus", 0)
    assert 0 < most <= t4_gpus
