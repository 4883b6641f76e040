"""Classifier logic through its DeploymentHandle (no HTTP)."""

import pytest
from ray import serve

from common.image import prepare_image
from tests.conftest import APP_NAME, TEST_IMAGE_SIZE
from tests.images import image_bytes

pytestmark = pytest.mark.serve


def test_handle_returns_a_prediction_for_uint8_pixels(served_app):
    handle = serve.get_deployment_handle("Classifier", app_name=APP_NAME)
    prediction = handle.remote(prepare_image(image_bytes(3), TEST_IMAGE_SIZE)).result()
    assert 0.0 <= prediction.probability <= 1.0
    assert prediction.model_version == "test-primary"


def test_model_info_describes_the_loaded_checkpoint(served_app):
    handle = serve.get_deployment_handle("Classifier", app_name=APP_NAME)
    info = handle.model_info.remote().result()
    assert info.loaded and info.version == "test-primary"
    assert info.image_size == TEST_IMAGE_SIZE
    assert info.threshold == 0.5
    assert info.device == "cpu"


def test_pixels_of_another_side_are_resized_not_refused(served_app):
    # During a swap to a checkpoint with another input side, images prepared for the old side
    # may still arrive; they are resized rather than failed.
    handle = serve.get_deployment_handle("Classifier", app_name=APP_NAME)
    prediction = handle.remote(prepare_image(image_bytes(3), 48)).result()
    assert 0.0 <= prediction.probability <= 1.0
