"""The training and sweep RayJobs: valid for KubeRay 1.7, on T4s, on GCS, cleaned up after."""

from __future__ import annotations

import importlib.util
import shlex
import subprocess
import sys
from typing import Any

import jsonschema
import pytest

from tests.deploy.manifests import EXAMPLE_ENV, ROOT, crd_schema, load_one, pod_templates, strict

JOBS = {"train": "k8s/rayjob-train.yaml", "sweep": "k8s/rayjob-sweep.yaml"}
ENTRY_MODULES = {"train": "train.driver", "sweep": "tune.sweep"}


@pytest.fixture(scope="module", params=sorted(JOBS))
def job(request) -> tuple[str, dict[str, Any]]:
    return request.param, load_one(JOBS[request.param], "RayJob")


def test_rayjob_validates_against_the_kuberay_crd_refusing_unknown_keys(job):
    _, rayjob = job
    jsonschema.validate(rayjob, strict(crd_schema("rayjobs")))


def test_rayjob_cleans_up_its_cluster_and_itself(job):
    """KubeRay 1.7's rules (rayjob webhook validation): rules exclude the legacy fields, TTLs do
    not decrease from DeleteCluster to DeleteSelf, DeleteWorkers is refused with autoscaling."""
    _, rayjob = job
    spec = rayjob["spec"]
    assert "shutdownAfterJobFinishes" not in spec and "ttlSecondsAfterFinished" not in spec
    rules = spec["deletionStrategy"]["deletionRules"]
    by_condition: dict[tuple[str, str], dict[str, int]] = {}
    for rule in rules:
        condition = rule["condition"]
        key = (
            ("jobStatus", condition["jobStatus"])
            if "jobStatus" in condition
            else ("jobDeploymentStatus", condition["jobDeploymentStatus"])
        )
        assert rule["policy"] not in by_condition.setdefault(key, {}), rule
        by_condition[key][rule["policy"]] = condition.get("ttlSeconds", 0)
    assert set(by_condition) == {
        ("jobStatus", "SUCCEEDED"),
        ("jobStatus", "FAILED"),
        ("jobDeploymentStatus", "Failed"),
    }
    assert spec["rayClusterSpec"]["enableInTreeAutoscaling"] is True
    for key, ttls in by_condition.items():
        assert "DeleteWorkers" not in ttls, key
        assert set(ttls) == {"DeleteCluster", "DeleteSelf"}, key
        assert ttls["DeleteCluster"] <= ttls["DeleteSelf"], key
    assert by_condition[("jobStatus", "SUCCEEDED")]["DeleteCluster"] == 0  # T4s go at once
    assert spec["activeDeadlineSeconds"] > spec["preRunningDeadlineSeconds"] > 0


def test_a_failed_gate_is_not_retried_on_a_new_cluster(job):
    _, rayjob = job
    assert rayjob["spec"]["backoffLimit"] == 0


def test_autoscaler_sidecar_runs_unprivileged(job):
    _, rayjob = job
    context = rayjob["spec"]["rayClusterSpec"]["autoscalerOptions"]["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]


def test_rayjob_trains_on_t4_workers(job):
    _, rayjob = job
    templates = pod_templates(rayjob)
    t4 = templates["t4"]["spec"]
    assert t4["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}
    assert t4["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "/ppd-gpu:" in t4["containers"][0]["image"]
    assert rayjob["spec"]["rayClusterSpec"]["rayVersion"] == "2.60.0"
    for group, template in templates.items():
        account = "ppd-train" if group == "head" else "ppd-train-worker"
        assert template["spec"]["serviceAccountName"] == account
        env = {e["name"]: e.get("value") for e in template["spec"]["containers"][0]["env"]}
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.ppd.svc:5000"


def test_entrypoint_keeps_checkpoints_and_models_on_gcs(job):
    name, rayjob = job
    args = shlex.split(rayjob["spec"]["entrypoint"])
    assert args[:3] == ["python", "-m", ENTRY_MODULES[name]]
    bucket = f"gs://{EXAMPLE_ENV['BUCKET']}/"
    flags = _flags(args[3:])
    assert flags["--storage-path"].startswith(bucket)
    assert flags["--data-dir"].startswith(bucket)
    assert flags["--out"] == f"{bucket}models/{EXAMPLE_ENV['RUN_NAME']}/model.safetensors"
    assert "--use-gpu" in flags


def test_entrypoint_flags_are_ones_the_entry_point_accepts(job):
    name, rayjob = job
    module = ENTRY_MODULES[name]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not written yet")
    help_text = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        capture_output=True, text=True, check=True, cwd=ROOT, timeout=120,
    ).stdout  # fmt: skip
    for flag in _flags(shlex.split(rayjob["spec"]["entrypoint"])[3:]):
        assert flag in help_text, f"{module} has no {flag}"


def _flags(args: list[str]) -> dict[str, str | None]:
    flags: dict[str, str | None] = {}
    for i, arg in enumerate(args):
        if arg.startswith("--"):
            value = args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith("--") else None
            flags[arg] = value
    return flags
