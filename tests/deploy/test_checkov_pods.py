"""checkov on the Ray pod templates: its Kubernetes scan does not look inside custom resources,
so the head and worker templates of the RayService and the RayJobs are written out as Pods
(rendered, in namespace ppd, their annotations carrying the justified skips) and scanned with
the NetworkPolicies of k8s/policies.yaml."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from tests.deploy.manifests import ROOT, load_documents, pod_templates, require_tool
from tests.deploy.test_terraform import CHECKOV_HOW, _json_documents

RAY_OBJECTS = ("k8s/rayservice.yaml", "k8s/rayjob-train.yaml", "k8s/rayjob-sweep.yaml")


def ray_pods() -> dict[str, dict]:
    """file name -> the Pod a Ray group's template makes (what KubeRay would create)."""
    pods = {}
    for path in RAY_OBJECTS:
        (ray_object,) = [d for d in load_documents(path) if d["kind"] in ("RayService", "RayJob")]
        for group, template in pod_templates(ray_object).items():
            name = f"{path.removeprefix('k8s/').removesuffix('.yaml')}-{group}"
            metadata = template.get("metadata", {})
            pods[f"{name}.yaml"] = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": "ppd", **metadata},
                "spec": template["spec"],
            }
    return pods


def test_every_ray_group_becomes_a_pod():
    names = set(ray_pods())
    assert len(names) == 3 + 2 + 2  # head, cpu, t4; head, t4; head, t4


@pytest.mark.slow
def test_checkov_passes_on_the_ray_pod_templates(tmp_path):
    checkov = require_tool("checkov", CHECKOV_HOW)
    pods = tmp_path / "pods"
    pods.mkdir()
    for name, pod in ray_pods().items():
        (pods / name).write_text(yaml.safe_dump(pod, sort_keys=False))
    # the NetworkPolicies that select them (checkov's CKV2_K8S_6 connects pods to policies)
    (pods / "policies.yaml").write_text(yaml.safe_dump_all(load_documents("k8s/policies.yaml")))
    result = subprocess.run(
        [
            checkov, "--quiet", "--compact", "--skip-download", "--output", "json",
            "--framework", "kubernetes", "--directory", str(pods),
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={"BC_SKIP_MAPPING": "TRUE", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )  # fmt: skip
    reports = _json_documents(result.stdout)
    failed = [
        f"{c['check_id']} {c['resource']}: {c['check_name']}"
        for r in reports
        for c in r.get("results", {}).get("failed_checks", [])
    ]
    skipped = {
        c["check_id"] for r in reports for c in r.get("results", {}).get("skipped_checks", [])
    }
    passed = sum(r.get("summary", {}).get("passed", 0) for r in reports)
    assert passed > 7 * 20, result.stderr[-2000:] + json.dumps(reports)[:2000]
    assert failed == []
    # every skip is one of the justified ones written in the templates' annotations
    assert skipped <= {"CKV_K8S_8", "CKV_K8S_9", "CKV_K8S_15", "CKV_K8S_22", "CKV_K8S_38",
                       "CKV_K8S_40", "CKV_K8S_43"}  # fmt: skip
