"""`serve deploy` of a new model URI under a stream of requests: nothing fails, the version
switches in place."""

import copy
import threading
import time

import httpx
import pytest

from tests.conftest import deploy, deployment
from tests.images import image_bytes

pytestmark = pytest.mark.serve


def test_new_model_uri_rolls_out_without_errors(served_app, checkpoints, api_key):
    versions: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def stream():
        data = image_bytes(3)
        with httpx.Client(base_url=served_app.url, headers={"X-API-Key": api_key}, timeout=60) as c:
            while not stop.is_set():
                response = c.post("/predict", files={"file": ("r.jpg", data)})
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text}")
                else:
                    versions.append(response.json()["model_version"])
                time.sleep(0.05)

    new = copy.deepcopy(served_app.config)
    for name in ("Classifier", "Explainer"):
        deployment(new, name)["user_config"]["model_uri"] = str(checkpoints["other"])

    worker = threading.Thread(target=stream)
    worker.start()
    try:
        time.sleep(1.0)
        deploy(new)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (not versions or versions[-1] != "test-other"):
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        stop.set()
        worker.join()
        deploy(served_app.config)

    assert failures == []
    assert versions[0] == "test-primary"
    assert versions[-1] == "test-other"
    switch = versions.index("test-other")
    assert set(versions[switch:]) == {"test-other"}  # no flapping back once switched
    health = httpx.get(f"{served_app.url}/health").json()
    assert health["model_version"] == "test-primary"  # restored


def test_a_checkpoint_that_cannot_load_never_replaces_the_serving_model(
    served_app, client, tmp_path
):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"this is not a checkpoint")
    bad = copy.deepcopy(served_app.config)
    deployment(bad, "Classifier")["user_config"]["model_uri"] = str(broken)
    try:
        deploy(bad)
        response = client.post("/predict", files={"file": ("k.jpg", image_bytes(2))})
        assert response.status_code == 200
        assert response.json()["model_version"] == "test-primary"
        deadline = time.monotonic() + 10
        health = httpx.get(f"{served_app.url}/health").json()
        while health["status"] != "degraded" and time.monotonic() < deadline:
            time.sleep(0.5)
            health = httpx.get(f"{served_app.url}/health").json()
        assert health["status"] == "degraded"
        assert health["model_loaded"] is True
        assert health["model_version"] == "test-primary"
    finally:
        deploy(served_app.config)
    deadline = time.monotonic() + 10
    while httpx.get(f"{served_app.url}/health").json()["status"] != "ok":
        assert time.monotonic() < deadline
        time.sleep(0.5)
