"""Serve caps a replica's batches by its `max_ongoing_requests`, silently: every config we ship
leaves room for the largest batches its batchers can form."""

from collections.abc import Callable
from typing import Any

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from bench.serving import GPU_CHANGES, with_changes
from deployments.classifier import ClassifierConfig
from deployments.ingress import GATHER_CONCURRENT_CALLS, IngressConfig
from tests.conftest import APP_NAME, ROOT
from tests.deploy.manifests import render

SERVE_DEFAULT_MAX_ONGOING = 5


def _serve_config() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "serve_config.yaml").read_text())


def _rayservice() -> dict[str, Any]:
    """The RayService's serve config as `k8s/render.sh` renders it (example values)."""
    documents = yaml.safe_load_all(render((ROOT / "k8s" / "rayservice.yaml").read_text()))
    (rayservice,) = [d for d in documents if d and d.get("kind") == "RayService"]
    return yaml.safe_load(rayservice["spec"]["serveConfigV2"])


def _gpu_benchmark() -> dict[str, Any]:
    return with_changes(_serve_config(), GPU_CHANGES)


CONFIGS: dict[str, Callable[[], dict[str, Any]]] = {
    "serve_config.yaml": _serve_config,
    "k8s RayService": _rayservice,
    "bench --device cuda": _gpu_benchmark,
}


@pytest.mark.parametrize("name", CONFIGS)
def test_max_ongoing_requests_leaves_room_for_full_batches(name):
    config = CONFIGS[name]()
    ServeDeploySchema.model_validate(config)
    (app,) = [a for a in config["applications"] if a["name"] == APP_NAME]
    deployments = {d["name"]: d for d in app["deployments"]}

    ingress = deployments["Ingress"]
    gather = IngressConfig.model_validate(ingress.get("user_config", {}))
    ongoing = ingress.get("max_ongoing_requests", SERVE_DEFAULT_MAX_ONGOING)
    assert ongoing >= GATHER_CONCURRENT_CALLS * gather.gather_max_images

    for role in ("Classifier", "Shadow"):
        deployment = deployments[role]
        batching = ClassifierConfig.model_validate(deployment.get("user_config", {}))
        ongoing = deployment.get("max_ongoing_requests", SERVE_DEFAULT_MAX_ONGOING)
        assert ongoing >= batching.max_batch_size, role
