"""Classifier logic through its DeploymentHandle, and how the Ingress calls it."""

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import ray
import torch
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import ReplicaUnavailableError

from common.image import prepare_image
from deployments.classifier import Classifier
from tests.conftest import (
    APP_NAME,
    METRICS_EXPORT_S,
    TEST_IMAGE_SIZE,
    counts_from_now,
    deployment,
    reconfigured,
)
from tests.images import image_bytes

pytestmark = pytest.mark.serve

HEALTH_CHECK_PERIOD_S = 1
REPLACED_WITHIN_S = 120  # a new replica imports torch and loads the model: slow on 2 busy cores


@serve.deployment(
    health_check_period_s=HEALTH_CHECK_PERIOD_S,
    health_check_timeout_s=30,
    ray_actor_options={"num_cpus": 0.1},
)
class BreakableClassifier(Classifier.func_or_class):
    """The Classifier plus a way in for the test: its process id, and breaking its loaded
    model in place, as corrupted weights or a lost device would."""

    def pid(self) -> int:
        return os.getpid()

    def break_model(self) -> None:
        head = self._slot.current.model.get_submodule("head.0")  # served folded: no head[0]
        head.weight = torch.nn.Parameter(torch.zeros(3, 3))  # the forward pass now raises


@pytest.fixture
def classifier(served_app):
    return serve.get_deployment_handle("Classifier", app_name=APP_NAME)


def test_handle_returns_a_prediction_for_uint8_pixels(classifier):
    prediction = classifier.remote(prepare_image(image_bytes(3), TEST_IMAGE_SIZE)).result()
    assert 0.0 <= prediction.probability <= 1.0
    assert prediction.model_version == "test-primary"


def test_a_batch_request_reaches_the_model_as_one_forward_pass(classifier):
    images = [prepare_image(image_bytes(i), TEST_IMAGE_SIZE) for i in range(8)]
    predictions = classifier.predict_many.remote(images).result()
    assert len(predictions) == 8
    assert {p.batch_size for p in predictions} == {8}
    singles = [classifier.remote(image).result().probability for image in images]
    assert [p.probability for p in predictions] == pytest.approx(singles, abs=1e-4)


def test_model_info_describes_the_loaded_checkpoint(classifier):
    info = classifier.model_info.remote().result()
    assert info.loaded and info.version == "test-primary"
    assert info.image_size == TEST_IMAGE_SIZE
    assert info.threshold == 0.5
    assert info.device == "cpu"
    assert set(info.drift_baseline) >= {"mean_probability", "ai_generated_ratio"}


def test_pixels_of_another_side_are_resized_not_refused(classifier):
    # During a swap to a checkpoint with another input side, images prepared for the old side
    # may still arrive; they are resized rather than failed.
    prediction = classifier.remote(prepare_image(image_bytes(3), 48)).result()
    assert 0.0 <= prediction.probability <= 1.0


def test_the_ingress_sends_concurrent_requests_down_as_one_call(served_app, classifier, api_key):
    # 16 concurrent /predict requests over the two ingress replicas, each gathering up to 8 for
    # up to 1 s: the primary's forward passes (its batch-size histogram) number at most 3
    # (e.g. 9 + 7 -> 8, 1, 7); one call per request would have made many more with no wait.
    url = served_app.url
    images = [image_bytes(i % 8) for i in range(16)]
    singles = {i: classifier.remote(prepare_image(images[i], TEST_IMAGE_SIZE)).result()
               for i in range(8)}  # fmt: skip
    with reconfigured(served_app, {"Ingress": {"gather_max_images": 8, "gather_wait_s": 1.0}}):
        passes, answered = counts_from_now(
            url,
            ("ray_ppd_batch_size_count", {"role": "primary"}),
            ("ray_ppd_predictions_total", {}),
        )

        def send(data: bytes) -> dict:
            with httpx.Client(base_url=url, headers={"X-API-Key": api_key}, timeout=60) as http:
                return http.post("/predict", files={"file": ("g.jpg", data)}).json()

        with ThreadPoolExecutor(max_workers=16) as pool:
            answers = list(pool.map(send, images))
        assert answered.wait_for_growth(16) == 16  # every answer is exported...
        time.sleep(3 * METRICS_EXPORT_S)  # ...and, export rounds later, every forward pass
        assert 1 <= passes.growth() <= 3
    for i, answer in enumerate(answers):  # each caller gets its own image's answer
        assert answer["probability"] == pytest.approx(singles[i % 8].probability, abs=1e-4)


def _classifier_logs() -> str:
    logs = Path(ray._private.worker.global_worker.node.get_logs_dir_path()) / "serve"
    return "".join(path.read_text() for path in sorted(logs.glob("replica_*Classifier*.log")))


def test_a_new_model_or_batch_size_is_warmed_up_before_traffic(served_app):
    max_batch_size = deployment(served_app.config, "Classifier")["user_config"]["max_batch_size"]
    assert f"primary model test-primary warmed up at batch sizes 1-{max_batch_size}" in (
        _classifier_logs()
    )
    with reconfigured(served_app, {"Classifier": {"max_batch_size": 3}}):
        deadline = time.monotonic() + 30
        while "warmed up at batch sizes 1-3 " not in _classifier_logs():
            assert time.monotonic() < deadline, "no warm-up for the new batch size"
            time.sleep(0.5)


def test_a_replica_whose_model_breaks_after_load_is_replaced(served_app, checkpoints):
    user_config = {"model_uri": str(checkpoints["primary"]), "max_batch_size": 2}
    handle = serve.run(
        BreakableClassifier.options(user_config=user_config).bind(),
        name="health-check-test",
        route_prefix=None,
    )
    try:
        image = prepare_image(image_bytes(3), TEST_IMAGE_SIZE)
        expected = handle.remote(image).result().probability
        broken_pid = handle.pid.remote().result()
        handle.break_model.remote().result()
        with pytest.raises(RuntimeError):
            handle.remote(image).result()  # the broken model fails requests ...

        deadline = time.monotonic() + REPLACED_WITHIN_S
        pid = broken_pid
        while pid == broken_pid:  # ... until Serve's health check has it replaced
            assert time.monotonic() < deadline, "the broken replica was not replaced"
            time.sleep(HEALTH_CHECK_PERIOD_S)
            try:
                pid = handle.pid.remote().result(timeout_s=10)
            except (RayActorError, ReplicaUnavailableError, TimeoutError):
                pid = broken_pid  # the old replica going away, the new one starting
        assert handle.remote(image).result().probability == pytest.approx(expected, abs=1e-6)
    finally:
        serve.delete("health-check-test")
