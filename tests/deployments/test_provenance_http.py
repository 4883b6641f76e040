"""Provenance over HTTP: every case of issue 11 (signed by two throwaway CAs in this process,
the trusted one configured as C2PA_TRUST_ANCHORS) answers exactly the contract's fields on
/predict, /predict/explain and /predict/batch, next to the classifier's own prediction."""

import io

import httpx
import pytest
from PIL import Image

from tests.conftest import counts_from_now
from tests.provenance_fixtures import case_names, cases

pytestmark = pytest.mark.serve

FORMATS = ("JPEG", "PNG", "WEBP")
CASES = [(fmt, name) for fmt in FORMATS for name in case_names(fmt)]


def _expected_verdict(prediction: str, declared: str | None) -> tuple[str, str]:
    if declared == "ai_generated" and prediction != "ai_generated":
        return "ai_generated", "provenance"
    return prediction, "classifier"


@pytest.mark.parametrize(("fmt", "name"), CASES, ids=[f"{f}-{n}" for f, n in CASES])
def test_predict_answers_the_provenance_of_each_case(client, fmt, name):
    case = cases(fmt)[name]
    response = client.post("/predict", files={"file": (f"{name}.bin", case.data)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["provenance"] == case.provenance
    assert (body["verdict"], body["verdict_source"]) == _expected_verdict(
        body["prediction"], case.declared
    )


def test_the_classifier_sees_pixels_only(client):
    """The same pixels with and without an AI declaration: the same probability and
    prediction; only provenance and verdict differ."""
    declared = cases("PNG")["xmp_trained_algorithmic_media"].data
    with Image.open(io.BytesIO(declared)) as image:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")  # lossless, without the XMP packet
    with_mark = client.post("/predict", files={"file": ("a.png", declared)}).json()
    without = client.post("/predict", files={"file": ("b.png", buffer.getvalue())}).json()
    assert with_mark["probability"] == pytest.approx(without["probability"], abs=1e-6)
    assert with_mark["prediction"] == without["prediction"]
    assert with_mark["provenance"]["declared"] == "ai_generated"
    assert without["provenance"]["declared"] is None
    assert with_mark["verdict"] == "ai_generated"
    assert without["verdict"] == without["prediction"]


def test_explain_and_batch_carry_provenance_too(client):
    case = cases("JPEG")["camera_declared_trusted_signer"]
    explained = client.post("/predict/explain", files={"file": ("c.jpg", case.data)})
    assert explained.status_code == 200, explained.text
    assert explained.json()["provenance"] == case.provenance
    assert explained.json()["heatmap_base64"]

    names = ["ai_declared_untrusted_signer", "plain_photo"]
    files = [("files", (f"{n}.jpg", cases("JPEG")[n].data)) for n in names]
    files.append(("files", ("broken.jpg", b"not an image")))
    batch = client.post("/predict/batch", files=files)
    assert batch.status_code == 200, batch.text
    results = batch.json()["results"]
    for name, result in zip(names, results, strict=False):
        assert result["provenance"] == cases("JPEG")[name].provenance
        assert (result["verdict"], result["verdict_source"]) == _expected_verdict(
            result["prediction"], cases("JPEG")[name].declared
        )
    assert results[2]["error"] and results[2]["provenance"] is None


def test_declarations_are_counted_in_metrics(served_app, client):
    url = served_app.url
    declared, agreement = counts_from_now(
        url,
        ("ray_ppd_provenance_declared_total", {"declared": "ai_generated"}),
        ("ray_ppd_provenance_agreement_total", {}),
    )
    for name in ("ai_declared_untrusted_signer", "xmp_trained_algorithmic_media"):
        data = cases("WEBP")[name].data
        assert client.post("/predict", files={"file": ("d.webp", data)}).status_code == 200
    assert declared.wait_for_growth(2) == 2
    assert agreement.wait_for_growth(2) == 2
    text = httpx.get(f"{url}/metrics", timeout=30).text
    assert 'stage="provenance"' in text
