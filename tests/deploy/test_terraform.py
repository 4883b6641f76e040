"""terraform/: formatted, every variable and output described, checkov clean or skips justified."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.deploy.manifests import ROOT, require_tool

TERRAFORM = ROOT / "terraform"
CHECKOV_HOW = "`make deploy-tools` installs it into .venv-tools"
_BLOCK = re.compile(r'^(variable|output) "([^"]+)" \{(.*?)^\}', re.MULTILINE | re.DOTALL)
# `# checkov:skip=CKV_X: reason` in files, `checkov.io/skipN: CKV_X=reason` in k8s annotations
_SKIP = re.compile(r"checkov(?::skip=|\.io/skip\d+:\s*)(CKV2?_[A-Z0-9_]+)(.*)$", re.MULTILINE)


def _blocks(kind: str) -> dict[str, str]:
    found = {}
    for path in TERRAFORM.glob("*.tf"):
        for block_kind, name, body in _BLOCK.findall(path.read_text()):
            if block_kind == kind:
                found[name] = body
    return found


def test_terraform_fmt_check():
    terraform = require_tool("terraform", "https://developer.hashicorp.com/terraform/install")
    result = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff"],
        cwd=TERRAFORM, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout


def test_every_variable_and_output_has_a_description():
    variables, outputs = _blocks("variable"), _blocks("output")
    assert {"project_id", "region", "t4_spot", "budget_amount", "github_repository"} <= set(
        variables
    )
    assert {"bucket_name", "registry", "cluster_name", "ingress_ip"} <= set(outputs)
    for name, body in {**variables, **outputs}.items():
        assert re.search(r'description\s*=\s*"\S', body), f"{name} has no description"


def test_example_tfvars_sets_only_declared_variables_and_every_required_one():
    variables = _blocks("variable")
    example = (TERRAFORM / "terraform.tfvars.example").read_text()
    assigned = set(re.findall(r"^(\w+)\s*=", example, re.MULTILINE))
    assert assigned <= set(variables)
    required = {name for name, body in variables.items() if "default" not in body}
    assert required <= assigned


def test_the_t4_pool_scales_from_zero_with_the_driver_installed():
    gke = (TERRAFORM / "gke.tf").read_text()
    t4 = gke[gke.index('resource "google_container_node_pool" "t4"') :]
    assert re.search(r"total_min_node_count\s*=\s*0", t4)
    assert 'type  = "nvidia-tesla-t4"' in t4
    assert "gpu_driver_installation_config" in t4
    assert re.search(r"spot\s*=\s*var\.t4_spot", t4)


def test_every_checkov_skip_gives_a_reason():
    files = [*TERRAFORM.glob("*.tf"), *(ROOT / "k8s").rglob("*.yaml"), ROOT / "docker/Dockerfile"]
    skips = [(path.name, m) for path in files for m in _SKIP.finditer(path.read_text())]
    assert {"CKV_GCP_12", "CKV_K8S_43", "CKV_DOCKER_2"} <= {m.group(1) for _, m in skips}
    for name, match in skips:
        assert re.match(r"\s*[:=]\s*\w.{15,}", match.group(2)), (
            f"{name}: {match.group(1)} unexplained"
        )


@pytest.mark.slow
def test_checkov_passes_on_terraform_kubernetes_and_dockerfile(tmp_path):
    checkov = require_tool("checkov", CHECKOV_HOW)
    result = subprocess.run(
        [
            checkov, "--quiet", "--compact", "--skip-download", "--output", "json",
            "--framework", "terraform", "kubernetes", "dockerfile",
            "--directory", "terraform", "--directory", "k8s", "--file", "docker/Dockerfile",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={"BC_SKIP_MAPPING": "TRUE", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )  # fmt: skip
    reports = _json_documents(result.stdout)
    failed = [
        f"{r['check_type']}: {c['check_id']} {c['resource']} ({c['file_path']})"
        for r in reports
        for c in r.get("results", {}).get("failed_checks", [])
    ]
    passed = sum(r.get("summary", {}).get("passed", 0) for r in reports)
    assert passed > 100, result.stderr[-2000:]
    assert failed == []


def _json_documents(text: str) -> list[dict]:
    """Checkov prints one JSON document per directory: objects and lists of objects."""
    decoder, documents, position = json.JSONDecoder(), [], 0
    while position < len(text.rstrip()):
        while text[position].isspace():
            position += 1
        document, position = decoder.raw_decode(text, position)
        documents += document if isinstance(document, list) else [document]
    return documents


def test_binary_authorization_has_its_api_and_a_policy_that_denies_unlisted_images():
    apis = (TERRAFORM / "apis.tf").read_text()
    assert '"binaryauthorization.googleapis.com"' in apis
    gke = (TERRAFORM / "gke.tf").read_text()
    assert 'evaluation_mode = "PROJECT_SINGLETON_POLICY_ENFORCE"' in gke
    policy = (TERRAFORM / "binauthz.tf").read_text()
    assert 'resource "google_binary_authorization_policy" "ppd"' in policy
    assert re.search(r'evaluation_mode\s*=\s*"ALWAYS_DENY"', policy)
    assert '"${var.region}-docker.pkg.dev/${var.project_id}/ppd/*"' in policy
    variables = _blocks("variable")
    assert (
        '"ENFORCED_BLOCK_AND_AUDIT_LOG"'
        in variables["binauthz_enforcement_mode"].split("default")[1].splitlines()[0]
    )
    # the images docs/deploy.md installs by name are admitted
    allowed = variables["binauthz_allowed_images"]
    assert '"quay.io/kuberay/*"' in allowed
    operator_values = (ROOT / "k8s" / "helm" / "kuberay-operator-values.yaml").read_text()
    assert "repository: quay.io/kuberay/operator" in operator_values


def test_the_gcs_store_is_a_highly_available_redis_with_auth_and_tls():
    apis = (TERRAFORM / "apis.tf").read_text()
    assert '"redis.googleapis.com"' in apis
    redis = (TERRAFORM / "redis.tf").read_text()
    assert re.search(r'tier\s*=\s*"STANDARD_HA"', redis)
    assert re.search(r"auth_enabled\s*=\s*true", redis)
    assert re.search(r'transit_encryption_mode\s*=\s*"SERVER_AUTHENTICATION"', redis)
    assert re.search(r"authorized_network\s*=\s*google_compute_network\.vpc\.id", redis)


def test_bucket_access_goes_by_prefix():
    iam = (TERRAFORM / "iam.tf").read_text()
    assert 'roles/storage.objectUser" # read' not in iam
    grants = dict(re.findall(r"^\s+([a-z-]+)\s+= \{ (member = [^}]+)\}", iam, re.MULTILINE))
    by_member: dict[str, set[str]] = {}
    for value in grants.values():
        member = re.search(r"member = local\.(\w+)_member", value).group(1)
        prefix = re.search(r'prefix = "([^"]+)"', value).group(1)
        role = re.search(r'role = "roles/storage\.(\w+)"', value).group(1)
        by_member.setdefault(member, set()).add(f"{role}:{prefix}")
    assert by_member == {
        "serve": {"objectViewer:models/"},
        "train": {
            "objectViewer:data/",
            "objectUser:ray_results/",
            "objectUser:models/",
            "objectUser:mlflow/",
        },
        "ci": {"objectViewer:models/", "objectUser:releases/"},
    }
    # only conditional grants on the bucket
    assert len(re.findall(r'resource "google_storage_bucket_iam_member"', iam)) == 1
    assert "objectListPrefix" in iam
