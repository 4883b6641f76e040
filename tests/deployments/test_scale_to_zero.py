"""The Preprocessor and the Explainer scale to zero (serve_config.yaml's `min_replicas: 0`):
the application starts without them, and the first call that needs one starts it and answers.
(The Preprocessor's first call is in test_ingress_structure.py, which checks its replica.)"""

import pytest

from tests.conftest import running_replicas
from tests.images import image_bytes

pytestmark = pytest.mark.serve

ALWAYS_UP = ("Ingress", "Classifier", "Shadow", "DriftMonitor", "RateLimiter")


def test_the_application_starts_without_the_preprocessor_and_the_explainer(served_app):
    at_start = served_app.replicas_at_start
    assert at_start["Preprocessor"] == 0, at_start
    assert at_start["Explainer"] == 0, at_start
    assert all(at_start[name] >= 1 for name in ALWAYS_UP), at_start


def test_an_explain_starts_the_explainer_and_is_answered(served_app, client):
    """Whichever /predict/explain of the session comes first meets the Explainer at zero
    replicas, and every such test asserts its exact answer; this one also sees the replica."""
    response = client.post("/predict/explain", files={"file": ("e.jpg", image_bytes(3))})
    assert response.status_code == 200, response.text
    assert response.json()["heatmap_base64"]
    assert running_replicas()["Explainer"] == 1
