"""The HTTP contract over real HTTP, against the app deployed from serve_config.yaml."""

import asyncio

import httpx
import numpy as np
import pytest
import torch

from common.checkpoint import load_checkpoint
from common.image import prepare_image
from common.model import to_model_input
from common.rules import confidence_for, label_for
from tests.images import image_bytes

pytestmark = pytest.mark.serve

PREDICT_FIELDS = {
    "prediction",
    "probability",
    "confidence",
    "inference_time_ms",
    "model_version",
    "request_id",
}
TOLERANCE = 1e-4  # batched vs single passes differ by float rounding (~1e-5 seen); images by >1e-3


def bare_probability(checkpoint, data: bytes) -> float:
    """The `common/` pipeline and model on the same bytes, outside Serve."""
    model, meta = load_checkpoint(checkpoint)
    pixels = torch.from_numpy(prepare_image(data, meta.image_size).pixels)[None]
    with torch.inference_mode():
        return float(torch.sigmoid(model(to_model_input(pixels, meta.mean, meta.std, "cpu")))[0])


@pytest.mark.parametrize(("fmt", "mode"), [("JPEG", "RGB"), ("PNG", "RGBA"), ("WEBP", "RGB")])
def test_predict_answers_every_contract_field(served_app, checkpoints, fmt, mode):
    data = image_bytes(0, fmt, mode)
    response = httpx.post(f"{served_app['url']}/predict", files={"file": ("x.bin", data)})

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == PREDICT_FIELDS
    assert body["model_version"] == "test-primary"
    assert body["request_id"] == response.headers["x-request-id"]
    assert body["inference_time_ms"] > 0
    expected = bare_probability(checkpoints["primary"], data)
    assert body["probability"] == pytest.approx(expected, abs=TOLERANCE)
    assert body["prediction"] == label_for(body["probability"], 0.5)
    assert body["confidence"] == confidence_for(body["probability"])


def test_client_request_id_is_echoed(served_app):
    response = httpx.post(
        f"{served_app['url']}/predict",
        files={"file": ("a.jpg", image_bytes(1))},
        headers={"X-Request-ID": "client-chosen-id-42"},
    )
    assert response.status_code == 200
    assert response.json()["request_id"] == "client-chosen-id-42"
    assert response.headers["x-request-id"] == "client-chosen-id-42"


def test_concurrent_requests_are_batched_without_mixing_images(served_app):
    images = [image_bytes(i) for i in range(8)]
    url = f"{served_app['url']}/predict"

    sequential = []
    for data in images:
        response = httpx.post(url, files={"file": ("i.jpg", data)})
        assert response.status_code == 200
        sequential.append(response.json()["probability"])
    assert min(abs(a - b) for i, a in enumerate(sequential) for b in sequential[i + 1 :]) > 1e-3

    async def send_all() -> list[float]:
        async with httpx.AsyncClient(timeout=60) as client:
            responses = await asyncio.gather(
                *[client.post(url, files={"file": ("i.jpg", images[k % 8])}) for k in range(32)]
            )
        assert [r.status_code for r in responses] == [200] * 32
        return [r.json()["probability"] for r in responses]

    concurrent = asyncio.run(send_all())
    expected = [sequential[k % 8] for k in range(32)]
    assert np.allclose(concurrent, expected, atol=TOLERANCE, rtol=0)


def test_health_reports_the_loaded_model(served_app):
    response = httpx.get(f"{served_app['url']}/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["model_loaded"] is True
    assert body["model_version"] == "test-primary"
    assert body["uptime_seconds"] > 0


def test_liveness(served_app):
    response = httpx.get(f"{served_app['url']}/healthz")
    assert response.status_code == 200
    assert response.json() == {"alive": True}


@pytest.mark.parametrize(
    ("files", "status", "error"),
    [
        ({"file": ("a.txt", b"just some text")}, 415, "unsupported_format"),
        ({"file": ("a.jpg", b"")}, 400, "corrupt"),
        ({"file": ("photo.jpg", image_bytes(0, "PNG"))}, 200, None),  # name says JPEG, bytes PNG
        ({"image": ("a.jpg", image_bytes(0))}, 422, "validation_error"),
    ],
    ids=["text", "empty", "misnamed-but-valid", "wrong-field"],
)
def test_bad_uploads_get_the_error_envelope(served_app, files, status, error):
    response = httpx.post(f"{served_app['url']}/predict", files=files)
    assert response.status_code == status, response.text
    if error:
        body = response.json()
        request_id = response.headers["x-request-id"]
        assert body == {
            "error": error,
            "detail": body["detail"],
            "request_id": request_id,
            "status_code": status,
        }
        assert "Traceback" not in body["detail"] and "ray::" not in body["detail"]
    assert httpx.get(f"{served_app['url']}/health").status_code == 200
