"""The decode pool: a decode past its deadline is stopped (its worker killed, 413
`too_costly`), the pool goes on decoding, and at most `workers` decodes run at once; a
one-pass JPEG, whose cost its size bounds, decodes in the replica without a worker."""

import asyncio
import threading
import time

import psutil
import pytest

from common.image import ImageLimits, ImageTooCostly, JpegLayout, jpeg_layout, prepare_image
from deployments.decoding import ImageDecoder
from tests.images import crop, encode, grey16_png, image_bytes, scan_bomb

SIZE = 32
UNBOUNDED_SCANS = ImageLimits(max_scans=1_000_000)  # so the bomb reaches the decoder


@pytest.fixture
def decoder():
    decoder = ImageDecoder(workers=2, timeout_s=1.0)
    asyncio.run(decoder.prepare_frames(image_bytes(0, "PNG"), SIZE, ImageLimits()))  # started
    yield decoder
    decoder.close()


def test_a_decode_past_its_deadline_is_stopped_and_the_pool_keeps_working(decoder):
    async def run():
        started = time.perf_counter()
        with pytest.raises(ImageTooCostly, match="longer than 1 s") as refused:
            await decoder.prepare_frames(scan_bomb(), SIZE, UNBOUNDED_SCANS)  # ~16 s of CPU
        stopped_after = time.perf_counter() - started
        frames = await decoder.prepare_frames(image_bytes(1, "PNG"), SIZE, ImageLimits())
        return refused.value, stopped_after, frames

    error, stopped_after, frames = asyncio.run(run())
    assert (error.status_code, error.kind) == (413, "too_costly")
    assert stopped_after < 2.5
    assert frames[0].pixels.shape == (3, SIZE, SIZE)


def test_decodes_beyond_the_pool_size_wait_and_each_gets_the_same_pixels(decoder):
    data = [image_bytes(i, "PNG") for i in range(3)]
    data += [image_bytes(i, "WEBP") for i in range(3)]

    async def run():
        return await asyncio.gather(*(decoder.prepare_frames(d, SIZE, ImageLimits()) for d in data))

    results = asyncio.run(run())
    for d, frames in zip(data, results, strict=True):
        assert (frames[0].pixels == prepare_image(d, SIZE).pixels).all()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_the_overlay_photo_is_decoded_small(decoder, fmt):
    photo = asyncio.run(decoder.overlay_photo(image_bytes(0, fmt), ImageLimits(), 48, 0))
    assert (photo.mode, max(photo.size)) == ("RGB", 48)
    assert photo.size == (48, 36) and crop(0).size == (96, 72)


def _decode_workers() -> set[int]:
    # the fork server and its workers: every process this one started
    return {child.pid for child in psutil.Process().children(recursive=True)}


def test_a_one_pass_jpeg_decodes_without_a_worker_and_the_others_in_one():
    decoder = ImageDecoder(workers=2, timeout_s=5.0)
    baseline, progressive = image_bytes(3), encode(crop(3), progressive=True)
    before = _decode_workers()
    try:
        (frame,) = asyncio.run(decoder.prepare_frames(baseline, SIZE, ImageLimits()))
        assert (frame.pixels == prepare_image(baseline, SIZE).pixels).all()
        assert _decode_workers() == before
        (frame,) = asyncio.run(decoder.prepare_frames(progressive, SIZE, ImageLimits()))
        assert (frame.pixels == prepare_image(progressive, SIZE).pixels).all()
        assert _decode_workers() > before
    finally:
        decoder.close()


def test_big_uploads_leave_a_worker_to_the_usual_photos():
    """Two 40 M pixel uploads and a small photo at once: the big ones take one worker in turn,
    so the photo is decoded before either big one is done."""
    big, finished = grey16_png(), []
    decoder = ImageDecoder(workers=2, timeout_s=60.0)

    async def decode(name: str, data: bytes) -> None:
        await decoder.prepare_frames(data, SIZE, ImageLimits())
        finished.append(name)

    async def run():
        await asyncio.gather(
            decode("big-1", big), decode("big-2", big), decode("photo", image_bytes(2, "PNG"))
        )

    try:
        asyncio.run(decoder.prepare_frames(image_bytes(0, "PNG"), SIZE, ImageLimits()))  # started
        asyncio.run(run())
    finally:
        decoder.close()
    assert finished[0] == "photo", finished


def test_the_read_beside_a_decode_runs_in_the_decodes_thread_hop_or_while_a_worker_decodes():
    """`prepare_frames_and`: a one-pass JPEG's decode and the read share one thread (one hop
    off the event loop); a progressive JPEG goes to a worker and the read still comes back.
    The read is handed the decode's walk over a JPEG's markers: whole for a one-pass JPEG,
    stopped at a progressive one's second scan, none for a PNG."""
    decoder = ImageDecoder(workers=1, timeout_s=5.0)
    baseline, progressive = image_bytes(3), encode(crop(3), progressive=True)
    loop_thread = threading.get_ident()

    def read(data: bytes, layout: JpegLayout | None) -> tuple[int, int, JpegLayout | None]:
        return len(data), threading.get_ident(), layout

    async def both(data: bytes):
        return await decoder.prepare_frames_and(data, SIZE, ImageLimits(), read)

    try:
        (frame,), (length, thread, layout) = asyncio.run(both(baseline))
        assert (frame.pixels == prepare_image(baseline, SIZE).pixels).all()
        assert length == len(baseline) and thread != loop_thread
        assert layout == jpeg_layout(baseline, max_scans=1) and layout.complete
        (frame,), (length, _, layout) = asyncio.run(both(progressive))
        assert (frame.pixels == prepare_image(progressive, SIZE).pixels).all()
        assert length == len(progressive)
        assert layout.scans == 2 and not layout.complete
        png = image_bytes(3, "PNG")
        _, (length, _, layout) = asyncio.run(both(png))
        assert (length, layout) == (len(png), None)
    finally:
        decoder.close()


def test_a_one_pass_jpeg_has_its_markers_walked_once(monkeypatch):
    """The walk that tells a one-pass JPEG (for the thread or the pool) is the one the decode's
    scan limit reads: one walk over the bytes per upload, the overlay's included."""
    from common import image as image_module

    walked = []
    walk = image_module._jpeg_markers
    monkeypatch.setattr(
        image_module, "_jpeg_markers", lambda data: walked.append(data) or walk(data)
    )
    decoder = ImageDecoder(workers=1, timeout_s=5.0)
    photo = image_bytes(3)
    try:
        (frame,) = asyncio.run(decoder.prepare_frames(photo, SIZE, ImageLimits()))
        assert walked == [photo]
        asyncio.run(decoder.overlay_photo(photo, ImageLimits(), 48, 0))
        assert walked == [photo, photo]
    finally:
        decoder.close()
    assert (frame.pixels == prepare_image(photo, SIZE).pixels).all()
