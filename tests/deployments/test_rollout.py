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
