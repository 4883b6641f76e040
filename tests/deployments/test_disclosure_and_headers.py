"""What the service tells a client about itself: plain error details, only plain request ids,
sanitised file names, and the hardening headers on every kind of answer."""

import re

import httpx
import pytest

from deployments.security_headers import PAGE_POLICY, inline_script_hashes
from tests.images import image_bytes, png_header_only

pytestmark = pytest.mark.serve

SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@pytest.mark.parametrize(
    ("data", "status", "error", "detail"),
    [
        (b"\xff\xd8\xff" + b"x" * 100, 400, "corrupt",
         "the JPEG file cannot be read: its content is not a valid JPEG image"),
        (png_header_only(20_000, 20_000), 413, "too_large",
         "the image is over the 40000000-pixel limit"),
    ],
    ids=["object-repr", "pillow-limit"],
)  # fmt: skip
def test_image_errors_are_plain_sentences(client, data, status, error, detail):
    response = client.post("/predict", files={"file": ("x.jpg", data)})
    assert response.status_code == status
    assert response.json() == {
        "error": error,
        "detail": detail,
        "request_id": response.headers["x-request-id"],
        "status_code": status,
    }
    batch = client.post("/predict/batch", files=[("files", ("x.jpg", data))])
    assert batch.json()["results"][0]["error"] == detail


@pytest.mark.parametrize(
    "sent",
    ["<script>alert(1)</script>", "a" * 129, "x" * 5000, "two words", "semi;colon", "é-accent"],
    ids=["html", "129-chars", "5-kb", "space", "semicolon", "non-ascii"],
)
def test_an_unsafe_request_id_is_replaced_by_a_new_one(client, sent):
    response = client.post(
        "/predict",
        files={"file": ("a.jpg", image_bytes(0))},
        headers={"X-Request-ID": sent.encode("utf-8")},
    )
    assert response.status_code == 200
    echoed = response.headers.get_list("x-request-id")
    assert len(echoed) == 1 and echoed[0] != sent and SAFE_ID.fullmatch(echoed[0])
    assert response.json()["request_id"] == echoed[0]


def test_a_plain_request_id_of_128_characters_is_kept(client):
    sent = "Req-1.2:3_" + "z" * 118
    response = client.get("/healthz", headers={"X-Request-ID": sent})
    assert response.headers.get_list("x-request-id") == [sent]


def test_batch_returns_sanitised_base_names(client):
    names = ["../../etc/passwd", "C:\\Users\\me\\photo.jpg", "\x1b[31mred\x1b[0m.jpg",
             "invoice\u202egpj.exe", "a" * 300 + ".jpg", "..",
             "zero\u200bwidth\u2028line.png"]  # fmt: skip
    response = client.post(
        "/predict/batch", files=[("files", (name, image_bytes(i))) for i, name in enumerate(names)]
    )
    assert response.status_code == 200, response.text
    assert [item["filename"] for item in response.json()["results"]] == [
        "passwd", "photo.jpg", "red.jpg", "invoicegpj.exe", "a" * 99 + "…", "file-5",
        "zerowidthline.png",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("POST", "/predict", 401), ("GET", "/health", 200), ("GET", "/healthz", 200),
     ("GET", "/metrics", 200), ("GET", "/openapi.json", 200), ("GET", "/docs", 200),
     ("GET", "/", 200), ("GET", "/static/app.js", 200),
     ("GET", "/static-offline-docs/swagger-ui.css", 200), ("GET", "/no/such/route", 404)],
)  # fmt: skip
def test_every_answer_says_nosniff_and_cannot_be_framed(served_app, method, path, status):
    response = httpx.request(method, f"{served_app.url}{path}", timeout=30)
    assert response.status_code == status
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


def test_the_page_gets_a_strict_policy(served_app):
    response = httpx.get(f"{served_app.url}/")
    assert response.headers["content-security-policy"] == PAGE_POLICY
    assert "'unsafe-inline'" not in PAGE_POLICY and "'unsafe-eval'" not in PAGE_POLICY


def test_the_docs_allow_exactly_their_inline_script(served_app):
    response = httpx.get(f"{served_app.url}/docs")
    hashes = inline_script_hashes(response.content)
    assert len(hashes) == 1
    policy = response.headers["content-security-policy"]
    assert f"script-src {hashes[0]} 'self';" in policy
    assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy


def test_api_answers_get_a_policy_that_allows_nothing(served_app):
    response = httpx.get(f"{served_app.url}/health")
    assert (
        response.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    )
