"""The Explainer over HTTP: without a model it answers 503 with the error envelope."""

import pytest

from tests.conftest import reconfigured
from tests.images import image_bytes

pytestmark = pytest.mark.serve


def test_an_explainer_without_a_model_answers_503_with_the_envelope(served_app, client):
    with reconfigured(served_app, {"Explainer": {"model_uri": None}}):
        response = client.post(
            "/predict/explain",
            files={"file": ("p.jpg", image_bytes(2))},
            headers={"X-Request-ID": "explainer-without-model"},
        )
        classified = client.post("/predict", files={"file": ("p.jpg", image_bytes(2))})

    assert response.status_code == 503, response.text
    assert response.json() == {
        "error": "not_ready",
        "detail": "the model is not loaded yet",
        "request_id": "explainer-without-model",
        "status_code": 503,
    }
    assert response.headers["Retry-After"] == "2"
    assert classified.status_code == 200  # the Classifier still has its model
