"""Core Kubernetes objects and the pod templates inside the Ray CRs, by kubernetes-validate."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.manifests import (
    KUBERNETES_VERSION,
    MANIFESTS,
    ROOT,
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
        d["metadata"]["name"]: d
        for d in load_documents("k8s/namespace.yaml")
        if d["kind"] == "ServiceAccount"
    }
    bound = {
        name: a["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
        for name, a in accounts.items()
    }
    assert bound == {
        "ppd-serve": "ppd-serve@ppd-example-123.iam.gserviceaccount.com",
        "ppd-serve-worker": "ppd-serve@ppd-example-123.iam.gserviceaccount.com",
        "ppd-train": "ppd-train@ppd-example-123.iam.gserviceaccount.com",
        "ppd-train-worker": "ppd-train@ppd-example-123.iam.gserviceaccount.com",
    }
    tokens = {name: a["automountServiceAccountToken"] for name, a in accounts.items()}
    assert tokens == {
        "ppd-serve": True,
        "ppd-serve-worker": False,
        "ppd-train": True,
        "ppd-train-worker": False,
    }
    terraform_iam = (ROOT / "terraform" / "iam.tf").read_text()
    for name in bound:  # each may act as its Google account (Workload Identity binding)
        assert f"    {name} " in terraform_iam, name


@pytest.mark.parametrize(
    "path", ["k8s/rayservice.yaml", "k8s/rayjob-train.yaml", "k8s/rayjob-sweep.yaml"]
)
def test_only_heads_get_an_api_token(path):
    (ray_object,) = [d for d in load_documents(path) if d["kind"] in ("RayService", "RayJob")]
    for group, template in pod_templates(ray_object).items():
        spec = template["spec"]
        if group == "head":
            assert not spec["serviceAccountName"].endswith("-worker")
            assert spec.get("automountServiceAccountToken", True) is True
        else:
            assert spec["serviceAccountName"].endswith("-worker"), group
            assert spec["automountServiceAccountToken"] is False, group


def test_ci_may_change_only_namespaced_objects_and_never_secrets_or_rbac():
    docs = load_documents("k8s/namespace.yaml")
    (role,) = [d for d in docs if d["kind"] == "Role"]
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding"]
    assert binding["subjects"] == [
        {
            "kind": "User",
            "apiGroup": "rbac.authorization.k8s.io",
            "name": "ppd-ci@ppd-example-123.iam.gserviceaccount.com",
        }
    ]
    resources = {r for rule in role["rules"] for r in rule["resources"]}
    assert {"rayservices", "rayjobs", "deployments"} <= resources
    assert not resources & {"secrets", "roles", "rolebindings", "networkpolicies", "*"}
    iam = (ROOT / "terraform" / "iam.tf").read_text()
    assert "roles/container.developer" not in iam
    assert "roles/container.clusterViewer" in iam


def test_ray_ports_are_open_only_to_the_cluster_the_operator_and_prometheus():
    (policy,) = [
        d
        for d in load_documents("k8s/policies.yaml")
        if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "ray-pods"
    ]
    for rule in policy["spec"]["ingress"]:
        ports = {p["port"] for p in rule.get("ports", [])}
        if rule.get("from") != [{"podSelector": policy["spec"]["podSelector"]}]:
            # Ray 2.60 binds HAProxy's stats page (8404, no auth) and exporter (9101) on every
            # interface, with no setting: only the Ray pods themselves may reach them
            assert ports and not ports & {8404, 9101}, rule
        if "from" not in rule:  # open to anyone: only the Serve port
            assert ports == {8000}
        elif ports & {6379, 8265, 10001}:
            sources = rule["from"]
            assert all("ipBlock" not in s for s in sources), rule
    (budget,) = [
        d for d in load_documents("k8s/policies.yaml") if d["kind"] == "PodDisruptionBudget"
    ]
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == (
        "ray-worker-cpu"
    )
