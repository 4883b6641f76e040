"""k8s/render.sh fills in exactly the placeholders the manifests use, and refuses the rest."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from tests.deploy.manifests import EXAMPLE_ENV, MANIFESTS, PLACEHOLDER, ROOT, render

RENDER = ROOT / "k8s" / "render.sh"


def _render_sh(manifest, env: dict[str, str]) -> subprocess.CompletedProcess:
    if shutil.which("bash") is None or shutil.which("envsubst") is None:
        pytest.skip("k8s/render.sh needs bash and envsubst (Debian package gettext-base)")
    return subprocess.run(
        ["bash", str(RENDER), str(manifest)],
        capture_output=True, text=True, timeout=60,
        env={"PATH": os.environ["PATH"], **env},
    )  # fmt: skip


def test_manifests_use_only_placeholders_render_sh_knows():
    script = RENDER.read_text()
    known = set(script.split("PLACEHOLDERS=(")[1].split(")")[0].split())
    assert known == set(EXAMPLE_ENV)
    for path in MANIFESTS:
        assert set(PLACEHOLDER.findall((ROOT / path).read_text())) <= known, path


@pytest.mark.parametrize("path", MANIFESTS)
def test_render_sh_gives_what_the_checks_validate(path):
    result = _render_sh(ROOT / path, EXAMPLE_ENV)
    assert result.returncode == 0, result.stderr
    assert result.stdout == render((ROOT / path).read_text())
    assert not PLACEHOLDER.search(result.stdout)


def test_render_sh_leaves_other_dollar_signs_alone(tmp_path):
    manifest = tmp_path / "m.yaml"
    manifest.write_text("a: ${BUCKET}\nb: $HOME and $(date)\n")
    result = _render_sh(manifest, {"BUCKET": "bkt"})
    assert yaml.safe_load(result.stdout) == {"a": "bkt", "b": "$HOME and $(date)"}


def test_render_sh_names_a_missing_variable(tmp_path):
    result = _render_sh(ROOT / "k8s/rayjob-train.yaml", {"BUCKET": "b", "RUN_NAME": "r"})
    assert result.returncode == 1
    assert "needs PROJECT_ID" in result.stderr


def test_render_sh_refuses_an_unknown_placeholder(tmp_path):
    manifest = tmp_path / "m.yaml"
    manifest.write_text("a: ${NOT_A_PLACEHOLDER}\n")
    result = _render_sh(manifest, {})
    assert result.returncode == 1
    assert "unknown placeholder ${NOT_A_PLACEHOLDER}" in result.stderr


def test_an_empty_shadow_model_uri_renders_as_no_shadow_model():
    env = {**EXAMPLE_ENV, "SHADOW_MODEL_URI": ""}
    result = _render_sh(ROOT / "k8s/rayservice.yaml", env)
    assert result.returncode == 0, result.stderr
    serve_config = yaml.safe_load(yaml.safe_load(result.stdout)["spec"]["serveConfigV2"])
    deployments = {d["name"]: d for d in serve_config["applications"][0]["deployments"]}
    assert deployments["Shadow"]["user_config"]["model_uri"] is None
