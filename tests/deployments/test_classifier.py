"""Classifier logic through its DeploymentHandle (no HTTP)."""

import pytest
from ray import serve

from common.image import prepare_image
from tests.conftest import APP_NAME, TEST_IMAGE_SIZE
from tests.images import image_bytes

pytestmark = pytest.mark.serve


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
