"""k8s/release.sh: the shadow slot and its mirrored fraction, promote and rollback.

There is no GCP project here, so `gcloud storage` and `kubectl apply` are stand-in scripts
on PATH: the first keeps objects under a folder (gs://BUCKET/x -> DIR/BUCKET/x), the second
keeps the manifest it was given. release.sh itself, render.sh and envsubst run for real.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.deploy.manifests import EXAMPLE_ENV, ROOT

RELEASE = ROOT / "k8s" / "release.sh"
BUCKET = EXAMPLE_ENV["BUCKET"]
PRIMARY = f"gs://{BUCKET}/models/train-1/model.safetensors"
CANDIDATE = f"gs://{BUCKET}/models/sweep-2/model.safetensors"

FAKE_GCLOUD = r"""#!/usr/bin/env bash
# gcloud storage cat|cp - |ls on a folder standing in for GCS
set -euo pipefail
[[ $1 == storage ]] || exit 3
path() { printf '%s/%s' "$FAKE_GCS" "${1#gs://}"; }
case $2 in
  cat) cat "$(path "$3")" ;;
  cp) mkdir -p "$(dirname "$(path "$4")")"; cat > "$(path "$4")" ;;
  ls) test -e "$(path "$3")" ;;
  *) exit 3 ;;
esac
"""
FAKE_KUBECTL = r"""#!/usr/bin/env bash
# kubectl apply -f - keeps what it was given
set -euo pipefail
[[ "$*" == "apply -f -" ]] || exit 3
cat > "$FAKE_APPLIED"
"""


@pytest.fixture
def release(tmp_path):
    if shutil.which("envsubst") is None:
        pytest.skip("k8s/release.sh needs envsubst (Debian package gettext-base)")
    bin_dir, gcs = tmp_path / "bin", tmp_path / "gcs"
    bin_dir.mkdir()
    for name, text in (("gcloud", FAKE_GCLOUD), ("kubectl", FAKE_KUBECTL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    for uri in (PRIMARY, CANDIDATE):  # the checkpoints release.sh checks exist
        model = gcs / uri.removeprefix("gs://")
        model.parent.mkdir(parents=True)
        model.write_bytes(b"weights")
    applied = tmp_path / "applied.yaml"
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_GCS": str(gcs),
        "FAKE_APPLIED": str(applied),
        **{k: EXAMPLE_ENV[k] for k in ("BUCKET", "PROJECT_ID", "REGION", "REDIS_HOST")},
    }

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        applied.unlink(missing_ok=True)
        result = subprocess.run(
            ["bash", str(RELEASE), *args], capture_output=True, text=True, env=env, timeout=60
        )
        if check:
            assert result.returncode == 0, result.stderr
        return result

    def ingress_and_shadow() -> tuple[dict[str, Any], dict[str, Any]]:
        rayservice = yaml.safe_load(applied.read_text())
        config = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
        found = {d["name"]: d for d in config["applications"][0]["deployments"]}
        return found["Ingress"]["user_config"], found["Shadow"]["user_config"]

    run("image", "0123abc")  # no primary yet: recorded, nothing applied
    run("primary", PRIMARY)
    return run, ingress_and_shadow


def test_no_shadow_mirrors_nothing(release):
    run, applied = release
    run("apply")
    ingress, shadow = applied()
    assert ingress["shadow_fraction"] == 0.0
    assert shadow["model_uri"] is None


def test_shadow_sets_the_model_and_the_given_fraction(release):
    run, applied = release
    run("shadow", CANDIDATE, "0.25")
    ingress, shadow = applied()
    assert ingress["shadow_fraction"] == 0.25
    assert shadow["model_uri"] == CANDIDATE
    run("apply")  # a later apply (a new image) keeps mirroring the same share
    assert applied()[0]["shadow_fraction"] == 0.25


def test_shadow_without_a_fraction_mirrors_the_default_share(release):
    run, applied = release
    run("shadow", CANDIDATE)
    assert applied()[0]["shadow_fraction"] == 0.1


@pytest.mark.parametrize("bad", ["0", "0.0", "1.5", "-0.1", "ten", "0.1.2"])
def test_shadow_refuses_a_fraction_outside_zero_to_one(release, bad):
    run, _ = release
    result = run("shadow", CANDIDATE, bad, check=False)
    assert result.returncode == 2
    assert "FRACTION must be a number in (0, 1]" in result.stderr


def test_promote_makes_the_shadow_primary_and_returns_the_fraction_to_idle(release):
    run, applied = release
    run("shadow", CANDIDATE, "0.5")
    run("promote")
    ingress, shadow = applied()
    assert ingress["shadow_fraction"] == 0.0
    assert shadow["model_uri"] is None
    shown = run("show").stdout
    assert f"primary    {CANDIDATE}" in shown
    assert f"previous   {PRIMARY}" in shown


def test_rollback_restores_the_previous_primary_and_the_idle_fraction(release):
    run, applied = release
    run("shadow", CANDIDATE, "0.5")
    run("promote")
    run("shadow", PRIMARY, "0.2")  # a candidate being mirrored when the rollback comes
    run("rollback")
    ingress, _ = applied()
    assert ingress["shadow_fraction"] == 0.0
    assert f"primary    {PRIMARY}" in run("show").stdout


def test_clear_shadow_stops_mirroring(release):
    run, applied = release
    run("shadow", CANDIDATE, "0.3")
    run("clear-shadow")
    ingress, shadow = applied()
    assert (ingress["shadow_fraction"], shadow["model_uri"]) == (0.0, None)
