"""The cost of one upload is bounded before and while it is decoded: scans counted from the
markers, high bit depth scaled in integers, no full-size copies."""

import random
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from common import image as image_module
from common.image import (
    ImageLimits,
    ImageTooLarge,
    decode_image,
    jpeg_layout,
    prepare_frames,
    prepare_image,
)
from tests.images import crop, encode, grey16_png, mpo, scan_bomb

SIZE = 32


def test_a_progressive_jpeg_with_thousands_of_scans_is_refused_before_decoding():
    bomb = scan_bomb(repeats=5000)
    started = time.perf_counter()
    with pytest.raises(ImageTooLarge, match="more than 100 scans; the limit is 100"):
        prepare_frames(bomb, SIZE)
    assert time.perf_counter() - started < 0.5  # decoding it takes ~16 s


@pytest.mark.parametrize(
    ("data", "scans"),
    [
        (encode(crop(0)), 1),  # baseline, three components interleaved
        (encode(crop(0), progressive=True), 10),  # libjpeg's progressive script
        (encode(crop(0).convert("L"), progressive=True), 6),
        (scan_bomb(side=64, repeats=150), 160),
        # an MPO's second picture (after the primary's EOI) is not counted
        (mpo(crop(0), [crop(1, size=(48, 36))]), 1),
    ],
    ids=["baseline", "progressive", "progressive-grey", "bomb", "mpo"],
)
def test_scans_are_counted_from_the_markers(data, scans):
    assert jpeg_layout(data, max_scans=len(data)).scans == scans  # every scan counted


@pytest.mark.parametrize(
    ("data", "one_pass"),
    [
        (encode(crop(0)), True),  # baseline: what cameras and phones write
        (encode(crop(0).convert("L")), True),
        (mpo(crop(0), [crop(1, size=(48, 36))]), True),  # judged by its primary picture
        (encode(crop(0), progressive=True), False),
        (scan_bomb(side=64, repeats=150), False),
        (encode(crop(0))[:200], False),  # no scan yet: the pool's decoder says what is wrong
        (encode(crop(0), "PNG"), False),
    ],
    ids=["baseline", "baseline-grey", "mpo", "progressive", "bomb", "cut-short", "png"],
)
def test_one_pass_jpegs_are_told_from_the_marker_segments(data, one_pass):
    assert jpeg_layout(data, max_scans=1).one_pass is one_pass


def _markers_byte_by_byte(data: bytes) -> list[int]:
    """The marker walk's rules, applied one byte at a time (no search): the reference."""
    found, pos, end = [], 2, len(data)
    while pos + 4 <= end:
        start = pos
        while start + 1 < end and not (data[start] == 0xFF and data[start + 1] not in (0, 0xFF)):
            start += 1
        if start + 1 >= end:
            break
        marker, pos = data[start + 1], start + 2
        if marker == 0xD9:
            break
        if not (0xD0 <= marker <= 0xD7 or marker == 0x01):
            pos += int.from_bytes(data[pos : pos + 2], "big")
            found.append(marker)
    return found


@pytest.mark.parametrize("window", [7, 256, image_module._MARKER_WINDOW])
def test_the_vectorised_marker_walk_finds_what_a_byte_by_byte_walk_finds(window, monkeypatch):
    """Real JPEGs (baseline with restart markers, progressive, an MPO, a scan bomb) and damaged
    copies of them (bytes flipped to 0xFF or a marker code, cut short), with search windows that
    split markers and fill runs at their edges."""
    monkeypatch.setattr(image_module, "_MARKER_WINDOW", window)
    rng = random.Random(14)
    originals = [
        encode(crop(0), restart_marker_blocks=4),
        encode(crop(1), progressive=True),
        mpo(crop(0), [crop(1, size=(48, 36))]),
        scan_bomb(side=64, repeats=20),
    ]
    for data in originals:
        variants = [data, data[: len(data) // 2]]
        for _ in range(30):
            damaged = bytearray(data)
            for _ in range(rng.randint(1, 8)):
                damaged[rng.randrange(2, len(damaged))] = rng.choice([0xFF, 0xDA, 0xD9, 0xD0, 0])
            variants.append(bytes(damaged))
        for variant in variants:
            walked = [marker for marker, _ in image_module._jpeg_markers(variant)]
            assert walked == _markers_byte_by_byte(variant)
            assert jpeg_layout(variant, max_scans=len(variant)).markers == frozenset(walked)


@pytest.mark.parametrize(
    "data",
    [
        encode(crop(0)),
        encode(crop(0, size=(300, 20)), progressive=True),
        mpo(crop(0), [crop(1, size=(480, 360))]),  # the primary's size, not the largest one's
        encode(crop(0), exif=Image.Exif().tobytes() + encode(crop(1, size=(40, 30)))),
    ],
    ids=["baseline", "progressive", "mpo", "exif-thumbnail"],
)
def test_the_walk_reads_the_size_the_primary_pictures_header_declares(data):
    import io

    layout = jpeg_layout(data)
    assert (layout.width, layout.height) == Image.open(io.BytesIO(data)).size


def test_a_walk_that_stopped_short_of_the_scan_limit_is_walked_again():
    """The decoder's walk stops at the second scan (it only asks "one pass?"): handed to the
    decode, that count cannot settle a limit of 100, so the scan bomb is still refused, while
    a complete count (a one-pass JPEG's) settles any limit."""
    bomb, photo = scan_bomb(side=64, repeats=150), encode(crop(0))
    stopped, complete = jpeg_layout(bomb, max_scans=1), jpeg_layout(photo, max_scans=1)
    assert (stopped.scans, stopped.settles(100), stopped.settles(1)) == (2, False, True)
    assert (complete.scans, complete.settles(100)) == (1, True)
    assert (stopped.complete, complete.complete) == (False, True)  # it met every segment
    with pytest.raises(ImageTooLarge, match="more than 100 scans"):
        prepare_frames(bomb, SIZE, layout=stopped)
    assert prepare_frames(photo, SIZE, layout=complete)[0].pixels.shape == (3, SIZE, SIZE)


def test_an_exif_thumbnail_does_not_count_as_scans():
    thumbnail = encode(crop(1, size=(32, 24)), progressive=True)
    exif = Image.Exif()
    exif[0x010E] = "x" * 40  # ImageDescription, so the thumbnail does not lead the segment
    photo = encode(crop(0), exif=exif.tobytes() + thumbnail)
    assert jpeg_layout(photo).scans == 1
    assert prepare_image(photo, SIZE).pixels.shape == (3, SIZE, SIZE)


def test_a_jpeg_with_100_scans_is_still_decoded():
    assert prepare_image(scan_bomb(side=64, repeats=90), SIZE).pixels.shape == (3, SIZE, SIZE)


def test_the_scan_limit_is_a_setting():
    with pytest.raises(ImageTooLarge, match="more than 5 scans"):
        prepare_image(encode(crop(0), progressive=True), SIZE, ImageLimits(max_scans=5))


@pytest.mark.parametrize("shape", [(37, 53), (2100, 1000)], ids=["one-strip", "three-strips"])
def test_16_bit_grey_scales_exactly_like_the_float_formula(shape):
    rng = np.random.default_rng(0)
    values = rng.integers(0, 65536, size=shape).astype(np.uint16)
    values[0, :3] = (0, 65535, 32896)
    expected = np.clip(values.astype(np.float64) * (255.0 / 65535.0), 0, 255).round()
    got = np.asarray(decode_image(encode(Image.fromarray(values), "PNG")))
    assert got.shape == (*shape, 3) and got.dtype == np.uint8
    assert np.array_equal(got[..., 0], expected.astype(np.uint8))
    assert np.array_equal(got[..., 0], got[..., 2])


def test_grey_pictures_are_resized_before_they_become_rgb_with_the_same_pixels():
    grey = crop(0).convert("L")
    prepared = prepare_image(encode(grey, "PNG"), SIZE)
    via_rgb = np.asarray(grey.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR))
    assert np.array_equal(prepared.pixels.transpose(1, 2, 0), via_rgb)


def test_transparent_pixels_become_white_as_with_alpha_compositing():
    rgba = crop(0).convert("RGBA")
    alpha = np.tile(np.linspace(0, 255, rgba.width).astype(np.uint8), (rgba.height, 1))
    rgba.putalpha(Image.fromarray(alpha))
    flat = np.asarray(decode_image(encode(rgba, "PNG")), dtype=np.int16)
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    reference = np.asarray(Image.alpha_composite(white, rgba).convert("RGB"), dtype=np.int16)
    assert np.abs(flat - reference).max() <= 1  # rounding of the blend


# One decode's peak memory beyond the interpreter's, in a fresh process (ru_maxrss), for a
# 40 M pixel upload: bytes per decoded pixel (docs/performance.md). Before: 27 (16-bit PNG,
# float64), 23 (RGBA PNG), 15 (WebP).
_PEAK = """
import resource, sys
from common.image import prepare_frames
data = sys.stdin.buffer.read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
prepare_frames(data, 32)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


def _rgba_png() -> bytes:
    return encode(Image.new("RGBA", (10_000, 4_000), (10, 200, 30, 128)), "PNG")


@pytest.mark.parametrize(
    ("make", "bytes_per_pixel"),
    [(grey16_png, 4.5), (_rgba_png, 10)],
    ids=["16-bit-grey-png", "rgba-png"],
)
def test_peak_memory_of_one_decode_is_a_small_multiple_of_its_pixels(make, bytes_per_pixel):
    data = make()
    peak = subprocess.run(
        [sys.executable, "-c", _PEAK], input=data, capture_output=True, check=True
    ).stdout
    assert int(peak) / 40_000_000 < bytes_per_pixel
