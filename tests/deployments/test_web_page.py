"""The web page and the Swagger UI in headless Chromium (Debian's), with the network blocked."""

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT
from tests.images import animation, crop, encode, mpo

pytestmark = pytest.mark.serve

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
    "--disable-background-networking", "--disable-component-update",
]  # fmt: skip

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)",
                allow_module_level=True)  # fmt: skip


@pytest.fixture
def page(served_app):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1000, "height": 900})

        # Only our own server is reachable: proves the page and the docs need no internet.
        def only_our_server(route):
            if route.request.url.startswith(served_app.url):
                return route.continue_()
            return route.abort()

        context.route("**/*", only_our_server)
        yield context.new_page()
        browser.close()


@pytest.fixture
def csp_violations(page) -> list[str]:
    """What Chromium reports as refused by the page's Content-Security-Policy."""
    found: list[str] = []
    page.on("console", lambda m: found.append(m.text) if "Content Security Policy" in m.text
            else None)  # fmt: skip
    return found


def test_upload_shows_the_card_and_the_heat_map(
    served_app, page, csp_violations, api_key, tmp_path
):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(encode(crop(1, size=(400, 300)), "JPEG"))
    page.goto(f"{served_app.url}/")

    # auth is on: the first try reveals the key field
    page.set_input_files("#file-input", str(photo))
    page.wait_for_selector("#key-box:not([hidden])", timeout=30_000)
    page.fill("#api-key", api_key)
    page.click("#key-save")
    page.set_input_files("#file-input", str(photo))

    page.wait_for_selector("#result:not([hidden])", timeout=60_000)
    page.wait_for_function("document.getElementById('heatmap').naturalWidth > 0")
    assert page.text_content("#label") in {"AI-generated", "Real photo"}
    assert re.fullmatch(r"\d{1,2}%|\d\.\d%|[<>] (1|99)%", page.text_content("#percent"))
    assert page.is_hidden("#frames")
    assert page.eval_on_selector("#heatmap", "i => i.naturalWidth / i.naturalHeight") == (
        pytest.approx(4 / 3, abs=0.02)
    )
    assert page.locator("#history li").count() == 1
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web_page.png"), full_page=True)
    assert (ARTIFACTS / "web_page.png").stat().st_size > 10_000
    assert csp_violations == []  # preview (blob:), heat map (data:), script and style all allowed


def test_large_photos_are_downscaled_in_the_browser(served_app, page, api_key, tmp_path):
    photo = tmp_path / "large.png"  # > 2048 px: the page redraws it as a smaller JPEG
    photo.write_bytes(encode(crop(0, size=(500, 400)).resize((3000, 2400)), "PNG"))
    _signed_in(page, served_app, api_key)
    with page.expect_request("**/predict/explain") as request:
        page.set_input_files("#file-input", str(photo))
    body = request.value.post_data_buffer
    assert b"image/jpeg" in body[:400]
    assert len(body) < 9 * 1024 * 1024
    page.wait_for_selector("#result:not([hidden])", timeout=60_000)


def _signed_in(page, served_app, api_key) -> None:
    page.goto(f"{served_app.url}/")
    page.evaluate(f"sessionStorage.setItem('ppd-api-key', '{api_key}')")
    page.goto(f"{served_app.url}/")


@pytest.mark.parametrize(
    ("name", "data", "frames"),
    [
        ("spin.png", animation([crop(i, size=(200, 150)) for i in range(3)], "PNG"), 3),
        ("spin.webp", animation([crop(i, size=(200, 150)) for i in range(2)], "WEBP"), 2),
        # wider than the page's 2048 px redraw limit: sent as it is all the same
        ("phone.jpg", mpo(crop(2, size=(300, 200)).resize((2400, 1600)), [crop(3)]), 1),
    ],
    ids=["apng", "animated-webp", "multi-picture-jpeg"],
)
def test_animations_and_multi_picture_jpegs_reach_the_server_unchanged(
    served_app, page, client, api_key, tmp_path, name, data, frames
):
    path = tmp_path / name
    path.write_bytes(data)
    _signed_in(page, served_app, api_key)
    with page.expect_response("**/predict/explain", timeout=60_000) as response:
        page.set_input_files("#file-input", str(path))
    # Chromium does not expose a file's bytes in the request; the answer shows what arrived:
    # every frame, and the same probability as the file sent straight to the API (a redraw
    # would be one JPEG frame, smaller, with another probability).
    answer = response.value.json()
    direct = client.post("/predict", files={"file": (name, data)}).json()
    assert (answer["frames"], direct["frames"]) == (frames, frames)
    assert answer["probability"] == pytest.approx(direct["probability"], abs=1e-4)

    page.wait_for_selector("#result:not([hidden])", timeout=60_000)
    if frames > 1:
        assert page.text_content("#frames").startswith(f"{frames} frames judged")
        assert f"{frames} frames" in page.text_content("#history li")
    else:
        assert page.is_hidden("#frames")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"web_page_{name.replace('.', '_')}.png"))


def test_an_animation_over_the_upload_limit_is_not_sent_as_one_frame(
    served_app, page, api_key, tmp_path
):
    noise = np.random.default_rng(0).integers(0, 256, (4, 1100, 1100, 3), dtype=np.uint8)
    path = tmp_path / "big.png"
    path.write_bytes(animation([Image.fromarray(frame) for frame in noise], "PNG"))
    assert path.stat().st_size > 9 * 1024 * 1024
    _signed_in(page, served_app, api_key)
    sent = []
    page.on("request", lambda r: sent.append(r.url) if "/predict" in r.url else None)
    page.set_input_files("#file-input", str(path))
    page.wait_for_selector("#status.error", timeout=30_000)
    assert "keep only its first frame" in page.text_content("#status")
    assert sent == []


def test_probabilities_are_shown_with_honest_precision(served_app, page):
    page.goto(f"{served_app.url}/")
    shown = page.evaluate(
        "[1.0, 0.999999, 0.994, 0.988, 0.873, 0.5, 0.0734, 0.0101, 0.004, 0.0].map(formatPercent)"
    )
    assert shown == ["> 99%", "> 99%", "> 99%", "99%", "87%", "50%", "7.3%", "1%", "< 1%", "< 1%"]


def test_swagger_ui_renders_offline(served_app, page, csp_violations):
    page.goto(f"{served_app.url}/docs")
    page.wait_for_selector(".opblock", timeout=30_000)
    paths = page.locator(".opblock-summary-path").all_text_contents()
    assert {"/predict", "/predict/batch", "/predict/explain", "/predict/compare", "/health"} <= {
        p.replace("\u200b", "") for p in paths
    }
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "swagger_ui.png"))
    assert csp_violations == []  # its inline start-up script runs by hash, nothing else inline


def test_the_page_and_the_docs_refuse_to_be_framed(served_app, page, csp_violations):
    frames = "".join(f'<iframe src="{served_app.url}{path}"></iframe>' for path in ("/", "/docs"))
    page.set_content(frames)
    page.wait_for_timeout(2_000)
    assert len([v for v in csp_violations if "frame-ancestors" in v]) == 2
    assert all(frame.url in ("about:blank", "") or "chrome-error" in frame.url
               for frame in page.frames[1:])  # fmt: skip


def test_artifacts_folder_is_ignored_by_git():
    assert "/test-artifacts/" in Path(ROOT / ".gitignore").read_text()
