import io

import numpy as np
import pytest
from PIL import Image

from common.image import (
    CorruptImage,
    ImageLimits,
    ImageTooLarge,
    ImageTooSmall,
    UnsupportedImageFormat,
    decode_image,
    judged_frame_indices,
    prepare_frames,
    prepare_image,
    sniff_format,
)
from tests.images import (
    FORMAT_MODES,
    animation,
    crop,
    encode,
    image_bytes,
    mpo,
    png_header_only,
    to_mode,
)

SIZE = 32


@pytest.mark.parametrize(("fmt", "mode"), FORMAT_MODES)
def test_every_common_mode_becomes_rgb_uint8_at_model_size(fmt, mode):
    prepared = prepare_image(image_bytes(0, fmt, mode), SIZE)
    assert prepared.pixels.dtype == np.uint8
    assert prepared.pixels.shape == (3, SIZE, SIZE)
    assert prepared.pixels.flags["C_CONTIGUOUS"]
    assert (prepared.width, prepared.height, prepared.format) == (96, 72, fmt)


@pytest.mark.parametrize(("fmt", "mode"), [("PNG", "RGB"), ("PNG", "L"), ("PNG", "I;16")])
def test_lossless_uploads_keep_their_content(fmt, mode):
    source = to_mode(crop(1), mode)
    reference = crop(1) if mode == "RGB" else crop(1).convert("L").convert("RGB")
    decoded = decode_image(encode(source, fmt))
    diff = np.abs(np.asarray(decoded, dtype=int) - np.asarray(reference, dtype=int))
    assert diff.max() <= 1


def test_transparent_pixels_become_white():
    image = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    decoded = decode_image(encode(image, "PNG"))
    assert decoded.getpixel((5, 5)) == (255, 255, 255)


def test_exif_rotated_jpeg_comes_out_upright():
    upright = Image.new("RGB", (32, 64), (220, 20, 20))
    upright.paste((20, 20, 220), (0, 32, 32, 64))  # top red, bottom blue
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # as a sideways camera stores it
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    data = encode(stored, "JPEG", exif=exif.tobytes())

    decoded = decode_image(data)
    assert decoded.size == (32, 64)
    assert decoded.getpixel((16, 8))[0] > 180  # red on top
    assert decoded.getpixel((16, 56))[2] > 180  # blue at the bottom
    assert (prepare_image(data, SIZE).width, prepare_image(data, SIZE).height) == (32, 64)


@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (b"\xff\xd8\xff\xe0rest", "JPEG"),
        (b"\x89PNG\r\n\x1a\nrest", "PNG"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "WEBP"),
    ],
)
def test_format_is_recognised_by_leading_bytes(data, fmt):
    assert sniff_format(data) == fmt


def _truncated(fmt: str) -> bytes:
    data = image_bytes(2, fmt)
    return data[: len(data) // 2]


def _flipped(data: bytes, at: float = 0.5) -> bytes:
    damaged = bytearray(data)
    damaged[int(len(data) * at)] ^= 0xFF
    return bytes(damaged)


def _last_frame_cut(fmt: str) -> bytes:
    data = animation([crop(i) for i in range(3)], fmt)
    return data[: len(data) - len(data) // 10]


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", CorruptImage),
        (b"hello, this is text", UnsupportedImageFormat),
        (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", UnsupportedImageFormat),
        (b"%PDF-1.7\n", UnsupportedImageFormat),
        (encode(crop(0), "GIF"), UnsupportedImageFormat),
        (b"\xff\xd8\xff" + bytes(range(256)) * 4, CorruptImage),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, CorruptImage),
        (_truncated("JPEG"), CorruptImage),
        (_truncated("PNG"), CorruptImage),
        (_truncated("WEBP"), CorruptImage),
        (image_bytes(2, "PNG")[:-12], CorruptImage),
        (_flipped(image_bytes(2, "PNG")), CorruptImage),
        (_last_frame_cut("PNG"), CorruptImage),
        (_last_frame_cut("PNG")[:-1000], CorruptImage),
        (_last_frame_cut("WEBP"), CorruptImage),
        (encode(Image.new("RGB", (8, 40)), "PNG"), ImageTooSmall),
    ],
    ids=[
        "empty",
        "text",
        "svg",
        "pdf",
        "gif",
        "jpeg-garbage",
        "png-garbage",
        "truncated-jpeg",
        "truncated-png",
        "truncated-webp",
        "png-without-iend",
        "png-with-a-damaged-chunk",
        "apng-last-frame-cut",
        "apng-cut-earlier",
        "animated-webp-last-frame-cut",
        "too-small",
    ],
)
def test_malformed_bytes_raise_a_clear_image_error(data, error):
    with pytest.raises(error) as excinfo:
        prepare_image(data, SIZE)
    assert str(excinfo.value)


def test_decompression_bomb_is_refused_before_decoding():
    bomb = encode(Image.new("1", (9_000, 9_000)), "PNG")  # 81 M pixels in a few kB
    assert len(bomb) < 200_000
    with pytest.raises(ImageTooLarge, match="pixels"):
        prepare_image(bomb, SIZE)


def test_side_over_the_limit_is_refused():
    data = encode(Image.new("1", (12_000, 20)), "PNG")
    with pytest.raises(ImageTooLarge, match="at most 10000"):
        prepare_image(data, SIZE)


def test_file_over_the_byte_limit_is_refused():
    with pytest.raises(ImageTooLarge, match="bytes"):
        prepare_image(image_bytes(0), SIZE, ImageLimits(max_bytes=100))


def test_multi_picture_jpeg_is_judged_by_its_primary_picture_alone():
    primary, gain_map = crop(0, size=(96, 72)), crop(1, size=(48, 36))
    data = mpo(primary, [gain_map])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    frames = prepare_frames(data, SIZE)
    assert [(f.frame, f.width, f.height, f.format) for f in frames] == [(0, 96, 72, "JPEG")]
    alone = prepare_image(encode(primary, "JPEG"), SIZE)
    assert np.array_equal(frames[0].pixels, alone.pixels)


def test_multi_picture_jpeg_extra_pictures_are_never_read():
    data = mpo(crop(0), [crop(1)])
    cut = data[: len(data) - 200]  # the second picture cut short, the primary whole
    assert np.array_equal(prepare_image(cut, SIZE).pixels, prepare_image(data, SIZE).pixels)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_animation_frames_are_sampled_evenly_first_and_last_included(fmt):
    sources = [crop(i) for i in range(12)]
    frames = prepare_frames(animation(sources, fmt), SIZE)
    assert [f.frame for f in frames] == [0, 1, 3, 4, 6, 7, 9, 11]
    for prepared in frames:  # lossless: each frame is its source picture
        alone = prepare_image(encode(sources[prepared.frame], "PNG"), SIZE)
        assert np.array_equal(prepared.pixels, alone.pixels), prepared.frame
        assert (prepared.width, prepared.height, prepared.format) == (96, 72, fmt)


def test_a_short_animation_is_judged_on_every_frame_and_any_frame_decodes():
    sources = [crop(i) for i in range(3)]
    data = animation(sources, "PNG")
    assert [f.frame for f in prepare_frames(data, SIZE)] == [0, 1, 2]
    assert np.array_equal(np.asarray(decode_image(data, frame=2)), np.asarray(sources[2]))
    assert np.array_equal(prepare_image(data, SIZE).pixels, prepare_frames(data, SIZE)[0].pixels)


@pytest.mark.parametrize(
    ("frames", "judged", "indices"),
    [(1, 8, [0]), (2, 8, [0, 1]), (8, 8, list(range(8))), (9, 8, [0, 1, 2, 3, 4, 5, 6, 8]),
     (100, 8, [0, 14, 28, 42, 56, 70, 84, 99]), (5, 1, [0]), (5, 2, [0, 4])],
)  # fmt: skip
def test_judged_frame_indices(frames, judged, indices):
    assert judged_frame_indices(frames, judged) == indices


def test_judged_frames_follow_the_limits():
    data = animation([crop(i) for i in range(5)], "WEBP")
    frames = prepare_frames(data, SIZE, ImageLimits(judged_frames=2))
    assert [f.frame for f in frames] == [0, 4]


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_animation_with_too_many_frames_is_refused_before_decoding(fmt):
    data = animation([crop(i % 4, size=(16, 16)) for i in range(6)], fmt)
    with pytest.raises(ImageTooLarge, match="6 frames; the limit is 5"):
        prepare_frames(data, SIZE, ImageLimits(max_frames=5))
    assert len(prepare_frames(data, SIZE, ImageLimits(max_frames=6))) == 6


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_animation_pixel_budget_counts_every_frame_decoded(fmt):
    data = animation([crop(i, size=(40, 30)) for i in range(4)], fmt)  # 4 x 1200 px
    with pytest.raises(ImageTooLarge, match="4 frames of 40x30 px, 4800 pixels to decode"):
        prepare_frames(data, SIZE, ImageLimits(max_pixels=4799))
    with pytest.raises(ImageTooLarge, match="4800 pixels"):  # the first frame alone is no cheaper
        decode_image(data, ImageLimits(max_pixels=4799))
    assert len(prepare_frames(data, SIZE, ImageLimits(max_pixels=4800))) == 4


def test_jpeg_draft_decoding_matches_full_decoding_closely():
    data = encode(crop(0, size=(640, 480)), "JPEG")
    drafted = prepare_image(data, SIZE).pixels.astype(int)
    full = np.asarray(decode_image(data).resize((SIZE, SIZE), Image.Resampling.BILINEAR), dtype=int)
    assert np.abs(drafted - full.transpose(2, 0, 1)).mean() < 4.0


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"\xff\xd8\xff" + b"x" * 100, CorruptImage,
         "the JPEG file cannot be read: its content is not a valid JPEG image"),
        (b"RIFF\0\0\0\0WEBPVP8 " + b"\0" * 40, CorruptImage,
         "the WEBP file cannot be read: could not create decoder object"),
        # 400 M pixels: Pillow refuses it on opening, naming its own internal limit
        (png_header_only(20_000, 20_000), ImageTooLarge,
         "the image is over the 40000000-pixel limit"),
    ],
    ids=["object-repr", "pillow-message", "pillow-limit"],
)  # fmt: skip
def test_error_messages_carry_no_reprs_or_pillow_limits(data, error, message):
    with pytest.raises(error) as excinfo:
        prepare_image(data, SIZE)
    assert str(excinfo.value) == message
