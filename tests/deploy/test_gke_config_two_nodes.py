"""The serve config GKE runs, run: k8s/rayservice.yaml's serveConfigV2 as rendered (the
Preprocessor hop, the overlay's replicas, GPU shares and mirrored shadow fraction), from the
installed wheel, on a two-node local Ray cluster (`ray.cluster_utils.Cluster`).

Heavy (a second Ray cluster, eight deployments, minutes on two cores), so it runs only when
asked: `make check-gke-config` (PPD_TWO_NODE_CLUSTER=1). Local deviations from the rendered
config, and only these: model URIs are local checkpoints; the HTTP port is a free loopback one;
the proxy runs on the head only (two nodes on one machine cannot both bind the port); the
environment of the pods (REQUIRE_AUTH, the key digests file) is set on the Ray processes.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from bench.server_process import free_port
from common.settings import hash_api_key
from tests.conftest import make_checkpoint
from tests.deploy.manifests import EXAMPLE_ENV, ROOT, load_one, render
from tests.deploy.test_wheel import _source_copy
from tests.deployments.test_http_api import TOLERANCE, bare_probability
from tests.images import image_bytes

pytestmark = [
    pytest.mark.slow,
    pytest.mark.serve,
    pytest.mark.timeout(1800),  # beyond the suite's 600 s: a cluster, a wheel, eight deployments
    pytest.mark.skipif(
        os.environ.get("PPD_TWO_NODE_CLUSTER") != "1",
        reason="heavy: a two-node Ray cluster; run with `make check-gke-config`",
    ),
]
API_KEY = "two-node-key"  # a test key, given to the cluster as its digest only


def _rendered_config(primary, shadow, port: int) -> dict:
    env = {
        **EXAMPLE_ENV,
        "MODEL_URI": str(primary),
        "SHADOW_MODEL_URI": str(shadow),
        "SHADOW_FRACTION": "1.0",  # every answered image mirrored: the counters move at once
    }
    rayservice = yaml.safe_load(render((ROOT / "k8s" / "rayservice.yaml").read_text(), env))
    config = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    config["http_options"].update(host="127.0.0.1", port=port)
    config["proxy_location"] = "HeadOnly"
    return config


def test_the_rendered_gke_config_serves_every_route_from_the_wheel(tmp_path):
    assert load_one("k8s/rayservice.yaml", "RayService")  # the manifest renders
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    primary = make_checkpoint(checkpoints / "primary.safetensors", "gke-primary", seed=1)
    shadow = make_checkpoint(checkpoints / "shadow.safetensors", "gke-shadow", seed=2)
    config = _rendered_config(primary, shadow, free_port())
    deployments = {d["name"]: d for d in config["applications"][0]["deployments"]}
    assert deployments["Ingress"]["user_config"]["preprocess_in_ingress"] is False

    source = _source_copy(tmp_path / "source")
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(wheels), str(source)],
        check=True, timeout=600, capture_output=True,
    )  # fmt: skip
    (wheel,) = wheels.glob("*.whl")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(site),
         str(wheel)],
        check=True, timeout=600, capture_output=True,
    )  # fmt: skip

    run_dir = tmp_path / "run"  # outside the source tree: only the wheel has `deployments`
    run_dir.mkdir()
    hashes = run_dir / "api-key-hashes"
    hashes.write_text(hash_api_key(API_KEY) + "\n")
    images = [image_bytes(i, "PNG") for i in range(6)]
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "images.json").write_text(json.dumps([base64.b64encode(i).decode() for i in images]))
    driver = run_dir / "driver.py"
    driver.write_text((ROOT / "tests" / "deploy" / "gke_local_driver.py").read_text())
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "PYTHONPATH": str(site),
        "RAY_AUTH_MODE": "disabled",
        "REQUIRE_AUTH": "true",
        "API_KEY_HASHES_FILE": str(hashes),
        "RATE_LIMIT_PER_MINUTE": "0",
    }
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, str(driver), "config.json", "images.json", "result.json", API_KEY],
        cwd=run_dir, env=env, capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    assert (run_dir / "result.json").exists(), run.stdout[-3000:] + run.stderr[-5000:]
    result = json.loads((run_dir / "result.json").read_text())
    assert "error" not in result, result["error"]
    print(f"two-node run: deployed in {result['deployed_s']:.0f} s, "
          f"{time.monotonic() - started:.0f} s in all")  # fmt: skip

    assert result["statuses"] == {
        "/": 200, "/docs": 200, "/openapi.json": 200, "/healthz": 200, "/health": 200,
        "/metrics": 200, "/predict": 200, "/predict/batch": 200, "/predict/explain": 200,
        "/predict/compare": 200, "no key": 401,
    }  # fmt: skip
    expected = [bare_probability(primary, data) for data in images]
    assert result["probabilities"] == pytest.approx(expected, abs=TOLERANCE)
    assert result["batch_probabilities"] == pytest.approx(expected[:3], abs=TOLERANCE)
    assert result["explain_has_heatmap"] is True
    assert result["compare_shadow"] == "gke-shadow"
    assert result["shadow_comparisons"] > 0  # the overlay's shadow fraction mirrors traffic
