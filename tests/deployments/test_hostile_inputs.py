"""Malformed and hostile requests: each gets the right status and the error envelope, and the
application stays healthy."""

import httpx
import pytest
from PIL import Image

from tests.images import animation, crop, encode, image_bytes, mpo, to_mode

pytestmark = pytest.mark.serve


def _truncated(fmt: str) -> bytes:
    data = image_bytes(2, fmt)
    return data[: len(data) // 2]


def _many_frames(fmt: str, count: int = 101) -> bytes:
    """More frames than `max_frames` (100), each tiny: refused from the header."""
    return animation([crop(i % 4, size=(16, 16)) for i in range(count)], fmt)


def _over_the_pixel_budget() -> bytes:
    """4 frames of 3200 x 3200 px: each under the 40 M pixel limit, 41 M decoded together."""
    frames = [Image.new("L", (3200, 3200), 60 * (i + 1)) for i in range(4)]
    return animation(frames, "PNG")


def _cut(data: bytes, keep: float = 0.9) -> bytes:
    return data[: int(len(data) * keep)]


def _one(data: bytes, name: str = "photo.jpg", content_type: str = "image/jpeg") -> dict:
    return {"files": {"file": (name, data, content_type)}}


# (id, request keyword arguments for httpx, expected status, expected error code or None)
CASES = [
    ("empty-file", _one(b""), 400, "corrupt"),
    ("truncated-jpeg", _one(_truncated("JPEG")), 400, "corrupt"),
    ("truncated-png", _one(_truncated("PNG"), "p.png", "image/png"), 400, "corrupt"),
    ("truncated-webp", _one(_truncated("WEBP"), "w.webp", "image/webp"), 400, "corrupt"),
    ("png-without-its-end", _one(image_bytes(2, "PNG")[:-12], "p.png"), 400, "corrupt"),
    ("truncated-apng", _one(_cut(animation([crop(0), crop(1)])), "a.png"), 400, "corrupt"),
    ("truncated-animated-webp", _one(_cut(animation([crop(0), crop(1)], "WEBP")), "a.webp"), 400,
     "corrupt"),
    ("jpeg-magic-then-garbage", _one(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8), 400, "corrupt"),
    ("png-magic-then-zeros", _one(b"\x89PNG\r\n\x1a\n" + b"\0" * 200), 400, "corrupt"),
    ("text-named-jpg", _one(b"I am definitely a JPEG"), 415, "unsupported_format"),
    ("html", _one(b"<!doctype html><script>alert(1)</script>", "x.html", "text/html"), 415,
     "unsupported_format"),
    ("svg", _one(b"<svg xmlns='http://www.w3.org/2000/svg'/>", "x.svg", "image/svg+xml"), 415,
     "unsupported_format"),
    ("pdf", _one(b"%PDF-1.7\n1 0 obj<<>>endobj", "x.pdf", "application/pdf"), 415,
     "unsupported_format"),
    ("gif", _one(encode(crop(0), "GIF"), "x.gif", "image/gif"), 415, "unsupported_format"),
    ("bmp", _one(encode(crop(0), "BMP"), "x.bmp", "image/bmp"), 415, "unsupported_format"),
    ("tiff", _one(encode(crop(0), "TIFF"), "x.tif", "image/tiff"), 415, "unsupported_format"),
    ("apng-with-101-frames", _one(_many_frames("PNG"), "a.png"), 413, "too_large"),
    ("animated-webp-with-101-frames", _one(_many_frames("WEBP"), "a.webp"), 413, "too_large"),
    ("animation-over-the-pixel-budget", _one(_over_the_pixel_budget(), "a.png"), 413,
     "too_large"),
    ("huge-dimensions", _one(encode(Image.new("1", (12_000, 20)), "PNG"), "h.png"), 413,
     "too_large"),
    ("decompression-bomb", _one(encode(Image.new("1", (9_000, 9_000)), "PNG"), "b.png"), 413,
     "too_large"),
    ("too-small", _one(encode(Image.new("RGB", (8, 8)), "PNG"), "s.png"), 400, "too_small"),
    ("file-over-10-mb", _one(b"\xff\xd8\xff" + b"\0" * (10 * 1024 * 1024 + 80_000)), 413,
     "too_large"),
    ("missing-file", {"data": {"note": "no file here"}}, 422, "validation_error"),
    ("no-body", {}, 422, "validation_error"),
    ("extra-field", {"files": {"file": ("a.jpg", image_bytes(0)), "extra": ("b.jpg", b"x")}},
     422, "validation_error"),
    ("duplicate-file-field", {"files": [("file", ("a.jpg", image_bytes(0))),
                                        ("file", ("b.jpg", image_bytes(1)))]},
     422, "validation_error"),
    ("misnamed-field", {"files": {"image": ("a.jpg", image_bytes(0))}}, 422, "validation_error"),
    ("file-as-plain-text-field", {"data": {"file": "not a file"}}, 422, "validation_error"),
    ("json-body", {"json": {"file": "aGVsbG8="}}, 422, "validation_error"),
    ("broken-multipart", {"content": b"--xyz\r\nContent-Disposition: form-data; name=\"file\"",
                          "headers": {"Content-Type": "multipart/form-data; boundary=xyz"}},
     422, "validation_error"),
]  # fmt: skip

VALID_ODD_IMAGES = [
    ("cmyk-jpeg", encode(to_mode(crop(0), "CMYK"), "JPEG")),
    ("16-bit-png", encode(to_mode(crop(0), "I;16"), "PNG")),
    ("palette-png", encode(to_mode(crop(0), "P"), "PNG")),
    ("alpha-png", encode(to_mode(crop(0), "RGBA"), "PNG")),
    ("grey-alpha-png", encode(to_mode(crop(0), "LA"), "PNG")),
    ("png-named-jpg", image_bytes(0, "PNG")),
    ("multi-picture-jpeg", mpo(crop(0), [crop(1, size=(48, 36))])),
    ("apng-with-100-frames", _many_frames("PNG", 100)),
    ("animated-webp", animation([crop(0), crop(1)], "WEBP", lossless=False, quality=80)),
]


def _assert_envelope(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body == {
        "error": error,
        "detail": body["detail"],
        "request_id": response.headers["x-request-id"],
        "status_code": status,
    }
    assert body["detail"] and "Traceback" not in body["detail"] and "ray::" not in body["detail"]


@pytest.mark.parametrize(("request_kwargs", "status", "error"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])  # fmt: skip
def test_hostile_request_gets_the_right_4xx(client, request_kwargs, status, error):
    _assert_envelope(client.post("/predict", **request_kwargs), status, error)


@pytest.mark.parametrize(("data",), [(c[1],) for c in VALID_ODD_IMAGES],
                         ids=[c[0] for c in VALID_ODD_IMAGES])  # fmt: skip
def test_unusual_but_valid_images_are_classified(client, data):
    response = client.post(
        "/predict", files={"file": ("odd.jpg", data, "application/octet-stream")}
    )
    assert response.status_code == 200, response.text


def test_chunked_body_over_the_limit_is_cut_off_with_413(client):
    chunk = b"\0" * (1024 * 1024)

    def body():
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.jpg"\r\n\r\n'
        for _ in range(12):
            yield chunk
        yield b"\r\n--b--\r\n"

    response = client.post(
        "/predict", content=body(), headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    _assert_envelope(response, 413, "too_large")


@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [("GET", "/predict", 405, "method_not_allowed"), ("GET", "/no/such/route", 404, "not_found"),
     ("PUT", "/health", 405, "method_not_allowed")],
)  # fmt: skip
def test_unknown_routes_and_methods_get_the_envelope(client, method, path, status, error):
    _assert_envelope(client.request(method, path), status, error)


def test_the_application_is_healthy_after_the_hostile_inputs(served_app, client):
    for kwargs in [c[1] for c in CASES]:
        client.post("/predict", **kwargs)
    health = httpx.get(f"{served_app.url}/health")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert client.post("/predict", files={"file": ("ok.jpg", image_bytes(5))}).status_code == 200
