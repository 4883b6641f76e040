"""Core Kubernetes objects and the pod templates inside the Ray CRs, by kubernetes-validate."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.manifests import (
    KUBERNETES_VERSION,
    MANIFESTS,
    load_documents,
    pod_templates,
)

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is not installed (pip install -e '.[dev]')"
)

# Custom resources kubernetes-validate has no schema for; the Ray ones are checked against
# the KubeRay CRDs (test_rayservice.py, test_rayjobs.py), the monitoring ones by promtool.
CUSTOM_KINDS = {
    ("ray.io/v1", "RayService"),
    ("ray.io/v1", "RayJob"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("networking.gke.io/v1", "ManagedCertificate"),
    ("networking.gke.io/v1beta1", "FrontendConfig"),
    ("cloud.google.com/v1", "BackendConfig"),
}


def _all_documents() -> list[tuple[str, dict[str, Any]]]:
    return [(path, doc) for path in MANIFESTS for doc in load_documents(path)]


def _core(doc: dict[str, Any]) -> bool:
    return (doc["apiVersion"], doc["kind"]) not in CUSTOM_KINDS


@pytest.mark.parametrize(
    "path,doc",
    [(p, d) for p, d in _all_documents() if _core(d)],
    ids=lambda v: v if isinstance(v, str) else f"{v['kind']}/{v['metadata']['name']}",
)
def test_core_object_is_valid_kubernetes(path, doc):
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(
    "path", ["k8s/rayservice.yaml", "k8s/rayjob-train.yaml", "k8s/rayjob-sweep.yaml"]
)
def test_ray_pod_templates_are_valid_pods(path):
    (ray_object,) = [d for d in load_documents(path) if d["kind"] in ("RayService", "RayJob")]
    for group, template in pod_templates(ray_object).items():
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"ray-{group}", **template.get("metadata", {})},
            "spec": template["spec"],
        }
        kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)


def test_every_object_is_a_known_kind_in_the_ppd_namespace():
    for path, doc in _all_documents():
        assert _core(doc) or (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS, path
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "ppd", f"{path}: {doc['metadata']['name']}"


def test_a_broken_core_object_is_refused():
    (deployment,) = [d for d in load_documents("k8s/mlflow.yaml") if d["kind"] == "Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["port"] = 5000  # not a field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_service_accounts_are_bound_to_google_service_accounts_by_workload_identity():
    accounts = {
        d["metadata"]["name"]: d["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
        for d in load_documents("k8s/namespace.yaml")
        if d["kind"] == "ServiceAccount"
    }
    assert accounts == {
        "ppd-serve": "ppd-serve@ppd-example-123.iam.gserviceaccount.com",
        "ppd-train": "ppd-train@ppd-example-123.iam.gserviceaccount.com",
    }
