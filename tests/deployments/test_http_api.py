"""The HTTP contract over real HTTP, against the app deployed from serve_config.yaml."""

import asyncio
import base64
import io

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from common.checkpoint import load_checkpoint
from common.image import prepare_image
from common.model import to_model_input
from common.rules import confidence_for, label_for
from tests.conftest import reconfigured
from tests.images import animation, crop, encode, image_bytes, mpo

pytestmark = pytest.mark.serve

PREDICT_FIELDS = {
    "prediction", "probability", "confidence", "frames", "provenance", "verdict",
    "verdict_source", "inference_time_ms", "model_version", "request_id",
}  # fmt: skip
TOLERANCE = 1e-4  # batched vs single passes differ by float rounding (~1e-5 seen); images by >1e-3


def bare_probability(checkpoint, data: bytes) -> float:
    """The `common/` pipeline and model on the same bytes, outside Serve."""
    model, meta = load_checkpoint(checkpoint)
    pixels = torch.from_numpy(prepare_image(data, meta.image_size).pixels)[None]
    with torch.inference_mode():
        return float(torch.sigmoid(model(to_model_input(pixels, meta.mean, meta.std, "cpu")))[0])


@pytest.mark.parametrize(("fmt", "mode"), [("JPEG", "RGB"), ("PNG", "RGBA"), ("WEBP", "RGB")])
def test_predict_answers_every_contract_field(client, checkpoints, fmt, mode):
    data = image_bytes(0, fmt, mode)
    response = client.post("/predict", files={"file": ("x.bin", data)})

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == PREDICT_FIELDS
    assert body["model_version"] == "test-primary"
    assert body["frames"] == 1
    assert body["request_id"] == response.headers["x-request-id"]
    assert body["inference_time_ms"] > 0
    expected = bare_probability(checkpoints["primary"], data)
    assert body["probability"] == pytest.approx(expected, abs=TOLERANCE)
    assert body["prediction"] == label_for(body["probability"], 0.5)
    assert body["confidence"] == confidence_for(body["probability"])


def test_client_request_id_is_echoed(client):
    response = client.post(
        "/predict",
        files={"file": ("a.jpg", image_bytes(1))},
        headers={"X-Request-ID": "client-chosen-id-42"},
    )
    assert response.status_code == 200
    assert response.json()["request_id"] == "client-chosen-id-42"
    assert response.headers["x-request-id"] == "client-chosen-id-42"


def test_concurrent_requests_are_batched_without_mixing_images(client, served_app, api_key):
    images = [image_bytes(i) for i in range(8)]
    sequential = []
    for data in images:
        response = client.post("/predict", files={"file": ("i.jpg", data)})
        assert response.status_code == 200
        sequential.append(response.json()["probability"])
    assert min(abs(a - b) for i, a in enumerate(sequential) for b in sequential[i + 1 :]) > 1e-3

    async def send_all() -> list[float]:
        async with httpx.AsyncClient(
            base_url=served_app.url, headers={"X-API-Key": api_key}, timeout=60
        ) as http:
            responses = await asyncio.gather(
                *[
                    http.post("/predict", files={"file": ("i.jpg", images[k % 8])})
                    for k in range(32)
                ]
            )
        assert [r.status_code for r in responses] == [200] * 32
        return [r.json()["probability"] for r in responses]

    concurrent = asyncio.run(send_all())
    expected = [sequential[k % 8] for k in range(32)]
    assert np.allclose(concurrent, expected, atol=TOLERANCE, rtol=0)


def test_batch_keeps_request_order_and_fails_items_alone(client):
    good = [image_bytes(i) for i in range(3)]
    singles = [
        client.post("/predict", files={"file": ("s", d)}).json()["probability"] for d in good
    ]
    files = [
        ("files", ("a.jpg", good[0])),
        ("files", ("notes.txt", b"not an image")),
        ("files", ("b.png", good[1])),
        ("files", ("empty.jpg", b"")),
        ("files", ("c.webp", good[2])),
    ]
    response = client.post("/predict/batch", files=files)

    assert response.status_code == 200, response.text
    body = response.json()
    assert [r["filename"] for r in body["results"]] == [
        "a.jpg", "notes.txt", "b.png", "empty.jpg", "c.webp",
    ]  # fmt: skip
    assert (body["total"], body["successful"], body["failed"]) == (5, 3, 2)
    assert body["model_version"] == "test-primary"
    ok = [r for r in body["results"] if r["error"] is None]
    assert [r["probability"] for r in ok] == pytest.approx(singles, abs=TOLERANCE)
    assert "unsupported image format" in body["results"][1]["error"]
    assert body["results"][1]["prediction"] is None
    assert body["results"][3]["error"] == "the file is empty"


def test_batch_over_the_file_count_limit_is_refused(client):
    files = [("files", (f"{i}.jpg", image_bytes(i))) for i in range(11)]
    response = client.post("/predict/batch", files=files)
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"


def test_explain_returns_a_heat_map_at_the_uploads_aspect_ratio(client):
    data = encode(crop(2, size=(300, 180)), "JPEG")
    predicted = client.post("/predict", files={"file": ("p.jpg", data)}).json()
    response = client.post("/predict/explain", files={"file": ("p.jpg", data)})

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == PREDICT_FIELDS | {"heatmap_base64"}
    assert body["probability"] == pytest.approx(predicted["probability"], abs=TOLERANCE)
    assert body["prediction"] == predicted["prediction"]
    heatmap = Image.open(io.BytesIO(base64.b64decode(body["heatmap_base64"])))
    assert heatmap.format == "JPEG"
    assert heatmap.size == (300, 180)  # under overlay_max_side: the upload's own size
    assert np.asarray(heatmap).std() > 5  # a picture, not a blank


def test_explain_downscales_large_uploads_keeping_the_ratio(client):
    data = encode(crop(0, size=(512, 384)).resize((1024, 768)), "JPEG")
    body = client.post("/predict/explain", files={"file": ("big.jpg", data)}).json()
    heatmap = Image.open(io.BytesIO(base64.b64decode(body["heatmap_base64"])))
    assert heatmap.size == (512, 384)


def test_compare_runs_primary_and_shadow(client, checkpoints):
    data = image_bytes(4)
    response = client.post("/predict/compare", files={"file": ("c.jpg", data)})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["primary"]["model_version"] == "test-primary"
    assert body["shadow"]["model_version"] == "test-other"
    p, s = body["primary"]["probability"], body["shadow"]["probability"]
    assert s == pytest.approx(bare_probability(checkpoints["other"], data), abs=TOLERANCE)
    assert body["difference"] == pytest.approx(abs(p - s), abs=1e-6)
    assert body["agreement"] == (body["primary"]["prediction"] == body["shadow"]["prediction"])


def test_health_reports_models_and_drift(served_app):
    response = httpx.get(f"{served_app.url}/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["model_loaded"] is True
    assert body["model_version"] == "test-primary"
    assert body["shadow_model_version"] == "test-other"
    assert body["uptime_seconds"] > 0
    assert set(body["drift"]) == {"window_size", "signals"}
    assert isinstance(body["drift_detected"], bool)


def test_liveness(served_app):
    response = httpx.get(f"{served_app.url}/healthz")
    assert response.status_code == 200
    assert response.json() == {"alive": True}


def test_openapi_lists_every_route_with_schemas_and_errors(served_app):
    spec = httpx.get(f"{served_app.url}/openapi.json").json()
    routes = {
        "/predict": "post", "/predict/batch": "post", "/predict/explain": "post",
        "/predict/compare": "post", "/health": "get", "/healthz": "get", "/metrics": "get",
    }  # fmt: skip
    for path, method in routes.items():
        assert method in spec["paths"][path], path
    for path in ("/predict", "/predict/batch", "/predict/explain", "/predict/compare"):
        operation = spec["paths"][path]["post"]
        assert {"200", "400", "401", "413", "415", "422", "429", "503"} <= set(
            operation["responses"]
        )
        assert operation["security"] == [{"APIKeyHeader": []}]
        assert "multipart/form-data" in operation["requestBody"]["content"]
    schemas = spec["components"]["schemas"]
    assert {"PredictResponse", "BatchResponse", "ExplainResponse", "CompareResponse",
            "HealthResponse", "ErrorResponse"} <= set(schemas)  # fmt: skip


# --- multi-picture JPEGs and animations ------------------------------------------------------


def _frames_with_the_top_one_inside(checkpoint, count: int, top_at: int) -> tuple[list, list]:
    """`count` distinct real crops and their bare probabilities, ordered so that the frame most
    likely AI-generated sits at `top_at` (neither the first nor the last)."""
    sources = [crop(i) for i in range(count)]
    alone = [bare_probability(checkpoint, encode(frame, "PNG")) for frame in sources]
    order = sorted(range(count), key=lambda i: alone[i])
    top = order.pop()
    order.insert(top_at, top)
    return [sources[i] for i in order], [alone[i] for i in order]


def test_multi_picture_jpeg_is_judged_as_its_primary_jpeg(client, checkpoints):
    primary = crop(3, size=(120, 90))
    data = mpo(primary, [crop(0, size=(60, 45))])  # an HDR gain map's place
    alone = encode(primary, "JPEG")
    assert bare_probability(checkpoints["primary"], data) == pytest.approx(
        bare_probability(checkpoints["primary"], alone), abs=1e-6
    )
    response = client.post("/predict", files={"file": ("phone.jpg", data, "image/jpeg")})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["frames"] == 1
    expected = bare_probability(checkpoints["primary"], alone)
    assert body["probability"] == pytest.approx(expected, abs=TOLERANCE)
    assert body["prediction"] == label_for(body["probability"], 0.5)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_animation_answers_with_its_most_generated_frame(client, checkpoints, fmt):
    frames, alone = _frames_with_the_top_one_inside(checkpoints["primary"], 5, top_at=2)
    response = client.post("/predict", files={"file": ("a.bin", animation(frames, fmt))})

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == PREDICT_FIELDS
    assert body["frames"] == 5
    assert body["probability"] == pytest.approx(max(alone), abs=TOLERANCE)
    assert abs(body["probability"] - alone[0]) > 1e-3  # not just the first frame
    assert body["prediction"] == label_for(body["probability"], 0.5)
    assert body["confidence"] == confidence_for(body["probability"])


def test_long_animation_is_judged_on_eight_evenly_spaced_frames(client, checkpoints):
    frames, alone = _frames_with_the_top_one_inside(checkpoints["primary"], 12, top_at=2)
    judged = [0, 1, 3, 4, 6, 7, 9, 11]  # frame 2, the top one, falls between two samples
    response = client.post("/predict", files={"file": ("a.png", animation(frames, "PNG"))})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["frames"] == 8
    assert body["probability"] == pytest.approx(max(alone[i] for i in judged), abs=TOLERANCE)


def test_batch_judges_each_uploads_frames(client, checkpoints):
    frames, alone = _frames_with_the_top_one_inside(checkpoints["primary"], 4, top_at=1)
    still = image_bytes(6)
    files = [
        ("files", ("still.jpg", still)),
        ("files", ("anim.webp", animation(frames, "WEBP"))),
        ("files", ("phone.jpg", mpo(crop(5), [crop(6, size=(48, 36))]))),
        ("files", ("cut.png", animation(frames, "PNG")[:-300])),
    ]
    response = client.post("/predict/batch", files=files)

    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["frames"] for r in results] == [1, 4, 1, None]
    expected = [
        bare_probability(checkpoints["primary"], still),
        max(alone),
        bare_probability(checkpoints["primary"], encode(crop(5), "JPEG")),
    ]
    assert [r["probability"] for r in results[:3]] == pytest.approx(expected, abs=TOLERANCE)
    assert "truncated or damaged" in results[3]["error"]


def test_explain_shows_the_animations_most_generated_frame(client, checkpoints):
    frames, alone = _frames_with_the_top_one_inside(checkpoints["primary"], 3, top_at=1)
    response = client.post("/predict/explain", files={"file": ("a.png", animation(frames))})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["frames"] == 3
    assert body["probability"] == pytest.approx(max(alone), abs=TOLERANCE)
    heatmap = Image.open(io.BytesIO(base64.b64decode(body["heatmap_base64"])))
    assert heatmap.size == frames[1].size
    # the overlay is drawn over the frame explained, not the first one
    explained = np.asarray(heatmap.convert("L"), dtype=float)
    errors = [np.abs(explained - np.asarray(f.convert("L"), dtype=float)).mean() for f in frames]
    assert int(np.argmin(errors)) == 1


def test_compare_takes_each_models_most_generated_frame(client, checkpoints):
    frames = [crop(i) for i in range(3)]
    data = animation(frames, "WEBP")
    response = client.post("/predict/compare", files={"file": ("a.webp", data)})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["frames"] == 3
    for role, name in (("primary", "primary"), ("shadow", "other")):
        alone = [bare_probability(checkpoints[name], encode(f, "PNG")) for f in frames]
        assert body[role]["probability"] == pytest.approx(max(alone), abs=TOLERANCE), role


def test_the_preprocessor_deployment_judges_frames_and_the_explainer_keeps_the_limits(
    served_app, client, checkpoints
):
    """The GKE path (`preprocess_in_ingress: false`, k8s/templates/serve-overlay.yaml) gives the
    same answers, and the Explainer decodes under the Ingress's limits, not its own defaults."""
    frames, alone = _frames_with_the_top_one_inside(checkpoints["primary"], 3, top_at=1)
    data = animation(frames, "WEBP")
    wide = encode(crop(0, size=(300, 40)).resize((12_000, 40)), "PNG")  # over the default side
    with reconfigured(served_app, {"Ingress": {"preprocess_in_ingress": False,
                                               "max_side": 12_000}}):  # fmt: skip
        response = client.post("/predict", files={"file": ("a.webp", data)})
        assert response.status_code == 200, response.text
        assert response.json()["frames"] == 3
        assert response.json()["probability"] == pytest.approx(max(alone), abs=TOLERANCE)

        cut = client.post("/predict", files={"file": ("a.webp", data[: len(data) // 2])})
        assert (cut.status_code, cut.json()["error"]) == (400, "corrupt")
        many = animation([crop(i % 4, size=(16, 16)) for i in range(101)], "PNG")
        refused = client.post("/predict", files={"file": ("a.png", many)})
        assert (refused.status_code, refused.json()["error"]) == (413, "too_large")

        explained = client.post("/predict/explain", files={"file": ("wide.png", wide)})
        assert explained.status_code == 200, explained.text
    assert client.post("/predict/explain", files={"file": ("w.png", wide)}).status_code == 413
