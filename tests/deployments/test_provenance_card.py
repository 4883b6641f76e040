"""The web page's provenance card in headless Chromium (Debian's), from answers in the contract's
shape. The page is served as the application serves it (same files, same Content-Security-Policy)
by a bare Starlette app that also keeps what the page uploads, so no model is needed; the
answers' `provenance` is what `read_provenance` gives for the real signed test files."""

import shutil
import socket
import threading
import time

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from common.provenance import read_provenance, verdict_for
from deployments.security_headers import PAGE_POLICY, SecurityHeadersMiddleware
from tests.conftest import ROOT
from tests.images import crop, encode
from tests.provenance_fixtures import (
    C2PA_STORE_UUID,
    CAMERA_FIRMWARE,
    CAPTURE,
    TRUSTED,
    cases,
    sign,
    trust_anchors_pem,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = ROOT / "test-artifacts"
STATIC_DIR = ROOT / "deployments" / "static"  # what the Ingress serves at / and /static
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
CARD_FIELDS = ("prov-declared", "prov-validation", "prov-signer", "prov-source-type",
               "prov-generator", "prov-camera")  # fmt: skip

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)",
                allow_module_level=True)  # fmt: skip


uploads: list[bytes] = []  # what the page sent to /predict/explain


@pytest.fixture(scope="module")
def page_url():
    async def index(request):
        return FileResponse(STATIC_DIR / "index.html")

    async def keep_upload(request):
        async with request.form() as form:
            uploads.append(await form["file"].read())
        detail = {"error": "unavailable", "detail": "no model in this test", "status_code": 503}
        return JSONResponse(detail, status_code=503)

    routes = [
        Route("/", index),
        Route("/predict/explain", keep_upload, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC_DIR)),
    ]
    app = Starlette(routes=routes)
    app.add_middleware(SecurityHeadersMiddleware, policies={"/": PAGE_POLICY})
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, page_url):
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    page = context.new_page()
    page.problems = []  # script errors and Content-Security-Policy refusals
    page.on("pageerror", lambda error: page.problems.append(str(error)))
    page.on("console", lambda m: page.problems.append(m.text)
            if "Content Security Policy" in m.text else None)  # fmt: skip
    page.goto(f"{page_url}/")
    yield page
    context.close()


def _answer(data: bytes, prediction: str) -> dict:
    provenance = read_provenance(data, trust_anchors_pem=trust_anchors_pem())
    verdict, source = verdict_for(prediction, provenance)
    return {
        "prediction": prediction,
        "probability": 0.9 if prediction == "ai_generated" else 0.1,
        "confidence": "high",
        "model_version": "test",
        "inference_time_ms": 12.0,
        "frames": 1,
        "heatmap_base64": "",
        "provenance": provenance.to_dict(),
        "verdict": verdict,
        "verdict_source": source,
    }


def _card(page, body: dict) -> dict[str, str]:
    page.evaluate("body => { showResult(body); showProvenance(body); }", body)
    texts = {field: page.text_content(f"#{field}") for field in CARD_FIELDS}
    texts["verdict"] = (
        page.text_content("#prov-verdict") if page.is_visible("#prov-verdict") else ""
    )
    return texts


@pytest.mark.parametrize(
    ("name", "prediction", "expected"),
    [
        (
            "ai_declared_untrusted_signer",
            "real",
            {
                "prov-declared": "AI-generated (the file says so)",
                "prov-validation": "valid signature, unknown signer",
                "prov-signer": "Unknown Test Signer Ltd",
                "prov-source-type": "AI-generated (signed manifest)",
                "prov-generator": "Test Image Generator 2.0 (wrote the manifest)",
                "prov-camera": "none",
                "verdict": "Verdict: AI-generated. The file declares it, although the "
                'classifier\'s answer is "Real photo".',
            },
        ),
        (
            "camera_declared_trusted_signer",
            "ai_generated",
            {
                "prov-declared": "camera capture (signed by a trusted signer)",
                "prov-validation": "valid, from a trusted signer",
                "prov-signer": "Trusted Test Camera Co",
                "prov-source-type": "camera capture (signed manifest)",
                "prov-generator": "Test Camera Firmware 3.1 (wrote the manifest)",
                "prov-camera": "Testcam X100 (EXIF, unsigned)",
                "verdict": "A trusted signer says a camera captured this, yet the classifier "
                "finds it AI-generated. The verdict stays the classifier's: a genuine capture "
                "can still show a screen or a print.",
            },
        ),
        (
            "camera_declared_tampered",
            "real",
            {
                "prov-declared": "nothing declared",
                "prov-validation": "invalid: changed after signing, or damaged",
                "prov-signer": "Trusted Test Camera Co",
                "prov-source-type": "camera capture (signed manifest)",
                "prov-generator": "Test Camera Firmware 3.1 (wrote the manifest)",
                "prov-camera": "Testcam X100 (EXIF, unsigned)",
                "verdict": "",
            },
        ),
        (
            "xmp_trained_algorithmic_media",
            "ai_generated",
            {
                "prov-declared": "AI-generated (the file says so)",
                "prov-validation": "none in the file",
                "prov-signer": "none",
                "prov-source-type": "AI-generated (XMP, unsigned)",
                "prov-generator": "none",
                "prov-camera": "none",
                "verdict": "",
            },
        ),
        (
            "stable_diffusion_parameters",
            "real",
            {
                "prov-declared": "AI-generated (the file says so)",
                "prov-validation": "none in the file",
                "prov-signer": "none",
                "prov-source-type": "none",
                "prov-generator": "Stable Diffusion web UI (traces in the file)",
                "prov-camera": "none",
                "verdict": "Verdict: AI-generated. The file declares it, although the "
                'classifier\'s answer is "Real photo".',
            },
        ),
    ],
)
def test_the_card_shows_what_the_file_declares(page, name, prediction, expected):
    body = _answer(cases("PNG")[name].data, prediction)
    assert _card(page, body) == expected
    assert page.is_visible("#provenance")
    c2pa = body["provenance"]["c2pa"]
    badge = f"badge {c2pa['validation']}" if c2pa else ""
    assert page.get_attribute("#prov-validation", "class") == badge
    assert page.problems == []
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"provenance_card_{name}.png"), full_page=True)


def test_an_answer_without_provenance_shows_no_card(page):
    body = _answer(cases("PNG")["plain_photo"].data, "real")
    for field in ("provenance", "verdict", "verdict_source"):
        del body[field]
    page.evaluate("body => { showResult(body); showProvenance(body); }", body)
    assert page.is_visible("#card")
    assert page.is_hidden("#provenance")
    assert page.problems == []


def test_a_large_photo_with_content_credentials_is_sent_unchanged(page, tmp_path):
    large = encode(crop(0, size=(500, 400)).resize((3000, 2400)), "PNG")  # over the redraw side
    signed = sign(large, "PNG", TRUSTED, CAPTURE, CAMERA_FIRMWARE)
    path = tmp_path / "signed.png"
    path.write_bytes(signed)
    uploads.clear()
    with page.expect_response("**/predict/explain"):
        page.set_input_files("#file-input", str(path))
    assert len(uploads) == 1
    assert uploads[0] == signed  # a redraw as JPEG would have dropped the manifest
    assert C2PA_STORE_UUID in uploads[0]
    assert page.problems == []
