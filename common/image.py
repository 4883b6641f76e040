"""The one image path: bytes -> recognised, checked, decoded, upright RGB -> model-sized uint8.

Serving (the Preprocessor), training, evaluation and the demo data set all go through these
functions; training only adds augmentation on top of `resize_for_model`. Formats are recognised
by their leading bytes, and sizes, frame counts and the pixels to decode are checked from the
header before any pixel is decoded. A multi-picture JPEG (MPO) is its primary picture; an
animated PNG or WebP gives up to `ImageLimits.judged_frames` frames, sampled evenly.
Truncated or damaged data is refused (`CorruptImage`), never decoded in part.

Cost per upload is bounded before decoding: a progressive JPEG may hold at most
`ImageLimits.max_scans` scans (libjpeg decodes every one; counted by a walk over the markers),
and memory stays within a small multiple of the decoded pixels: 16-bit and float greys are
scaled to 8 bits in integer arithmetic, strip by strip; grey pictures stay one channel until
they are resized; transparency is flattened onto white in place. Peak memory of one decode is
at most about 4 bytes per decoded pixel beyond Pillow's own decoded image (measured figures:
docs/performance.md). The wall-clock deadline of a decode is `deployments.decoding`'s job.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

__all__ = [
    "SUPPORTED_FORMATS",
    "CorruptImage",
    "ImageError",
    "ImageLimits",
    "ImageTooCostly",
    "ImageTooLarge",
    "ImageTooSmall",
    "JpegLayout",
    "PreparedImage",
    "UnsupportedImageFormat",
    "declared_pixels",
    "decode_image",
    "jpeg_layout",
    "judged_frame_indices",
    "prepare_frames",
    "prepare_image",
    "resize_for_model",
    "resize_pixels",
    "sniff_format",
]

SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP")
_RESAMPLE = Image.Resampling.BILINEAR
_ALPHA_BACKGROUND = (255, 255, 255)  # transparent pixels become white, as on a product page
_SIDEWAYS_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_READ_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error)  # Pillow's "cannot read"
_OBJECT_REPR = re.compile(r"<[^<>]*\bat 0x[0-9a-fA-F]+>")  # `<_io.BytesIO object at 0x7f…>`
_MAX_REASON_CHARS = 200
# Bytes searched for JPEG markers at a time: bounds the offsets found at once (8 bytes each).
_MARKER_WINDOW = 256 * 1024
# start-of-frame markers SOF0-SOF15 (0xC4, 0xC8 and 0xCC are DHT, JPG and DAC)
_JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STRIP_PIXELS = 1 << 20  # pixels converted at a time from 16-bit/float to 8-bit


class ImageError(ValueError):
    """An upload that cannot be used; `status_code` and `kind` say how the API reports it."""

    status_code = 400
    kind = "bad_image"


class CorruptImage(ImageError):
    kind = "corrupt"


class ImageTooSmall(ImageError):
    kind = "too_small"


class ImageTooLarge(ImageError):
    status_code = 413
    kind = "too_large"


class ImageTooCostly(ImageTooLarge):
    """An upload whose decode ran past its deadline or killed its decoder (413)."""

    kind = "too_costly"


class UnsupportedImageFormat(ImageError):
    status_code = 415
    kind = "unsupported_format"


@dataclass(frozen=True)
class ImageLimits:
    """What an upload may be; defaults are the HTTP contract's."""

    max_bytes: int = 10 * 1024 * 1024  # one file, bytes
    min_side: int = 16  # px
    max_side: int = 10_000  # px
    # Pixels decoded for one upload (decompression-bomb guard): width x height for a still
    # image, frames x width x height for an animation (reaching frame k decodes every frame
    # before it, so judging the last frame decodes them all).
    max_pixels: int = 40_000_000
    max_frames: int = 100  # frames an animated PNG/WebP may hold (from its header)
    judged_frames: int = 8  # frames of an animation judged, evenly spaced, first and last in
    # Scans of a progressive JPEG (libjpeg decodes them all; a baseline JPEG has one per
    # component group, a usual progressive one about 10): a CPU-bomb guard.
    max_scans: int = 100


@dataclass(frozen=True)
class PreparedImage:
    """What the Preprocessor hands the models: `pixels` is uint8 CHW at the model's side."""

    pixels: np.ndarray
    width: int  # of the upright upload, px
    height: int
    format: str
    num_bytes: int
    frame: int = 0  # index of this picture in the file: 0 for a still image, MPO or first frame


@dataclass(frozen=True)
class JpegLayout:
    """What one walk over a JPEG's markers found (`jpeg_layout`): its start-of-frame markers,
    the size its first frame header declares (0 x 0 without one), its scans, counted until
    past `max_scans`, and the code of every marker segment met (`markers`: whether it holds an
    APP1 segment, EXIF or XMP, or an APP11 one, a C2PA manifest's JUMBF)."""

    frames: tuple[int, ...]
    width: int
    height: int
    scans: int
    max_scans: int
    markers: frozenset[int] = frozenset()

    @property
    def complete(self) -> bool:
        """Whether the walk went to the end of the primary picture (it did not stop past
        `max_scans`): `markers` then holds every marker segment it has."""
        return self.scans <= self.max_scans

    @property
    def one_pass(self) -> bool:
        """Whether libjpeg decodes it in one pass: a sequential Huffman frame (baseline or
        extended, what cameras and phones write) with a single scan. Its decoding cost is
        bounded by its size alone (about 12 ms per MB here, with libjpeg's downscaling), unlike
        a progressive JPEG's (every scan is a pass over all the picture's blocks) or a lossless
        or arithmetic-coded one's (no downscaling, or slower decoding). A walk to the second
        scan (`max_scans=1`) is enough to tell."""
        return self.scans == 1 and self.frames in ((0xC0,), (0xC1,))

    def settles(self, max_scans: int) -> bool:
        """Whether this walk says if the JPEG has more than `max_scans` scans: its count is
        exact (the walk reached the end), or it went past at least that many."""
        return self.complete or self.max_scans >= max_scans


def sniff_format(data: bytes) -> str:
    """The format named by the file's leading bytes; the name and content type are ignored."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    raise UnsupportedImageFormat("unsupported image format: send a JPEG, PNG or WebP file")


def declared_pixels(data: bytes) -> int:
    """Pixels the file's header says decoding it means (frames x width x height), read
    without decoding any; 0 when the header cannot be read (decoding will say why)."""
    try:
        with Image.open(io.BytesIO(data), formats=[sniff_format(data)]) as image:
            frames = 1 if image.format == "JPEG" else getattr(image, "n_frames", 1)
            return frames * image.width * image.height
    except Image.DecompressionBombError:
        return Image.MAX_IMAGE_PIXELS or 0
    except (UnsupportedImageFormat, UnidentifiedImageError, *_READ_ERRORS):
        return 0


def decode_image(
    data: bytes,
    limits: ImageLimits = ImageLimits(),
    draft_size: int | None = None,
    frame: int = 0,
    layout: JpegLayout | None = None,
) -> Image.Image:
    """Check and decode an upload into an upright RGB image: a still image, the primary picture
    of a multi-picture JPEG, or frame `frame` of an animation.

    `draft_size` lets JPEG decoding downscale cheaply (by 1/2, 1/4, 1/8) while keeping the
    short side at least that large. `layout`: as for `prepare_frames`.
    """
    image, fmt, frames = _open(data, limits, layout)
    if not 0 <= frame < frames:
        raise ValueError(f"frame {frame} is not in an image of {frames} frame(s)")
    if draft_size and fmt == "JPEG":
        image.draft(None, _draft_target(image.size, draft_size))
    picture = next(_pictures(image, fmt, [frame], limits))[1]
    return picture if picture.mode == "RGB" else picture.convert("RGB")


def resize_for_model(image: Image.Image, size: int) -> np.ndarray:
    """Resize the whole image to `size` x `size` and return uint8 CHW (contiguous) RGB.

    A grey ("L") image is resized first and made RGB after: the same pixels as converting
    first (bilinear works per channel), for a third of the memory."""
    resized = image.resize((size, size), _RESAMPLE)
    if resized.mode != "RGB":
        resized = resized.convert("RGB")
    return np.ascontiguousarray(np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1))


def prepare_frames(
    data: bytes, size: int, limits: ImageLimits = ImageLimits(), layout: JpegLayout | None = None
) -> list[PreparedImage]:
    """Bytes in, model-ready uint8 pixels of every picture to judge out: one for a still image
    or a multi-picture JPEG, up to `limits.judged_frames` for an animation. The whole serving
    preprocessing. `layout`: the JPEG's `jpeg_layout` when the caller has walked its markers
    already, so that they are not walked again where that walk settles `limits.max_scans`."""
    return _prepare(data, size, limits, first_only=False, layout=layout)


def prepare_image(data: bytes, size: int, limits: ImageLimits = ImageLimits()) -> PreparedImage:
    """The first picture of `prepare_frames` (the only one of a still image)."""
    return _prepare(data, size, limits, first_only=True)[0]


def judged_frame_indices(frames: int, judged_frames: int) -> list[int]:
    """Which frames of an animation are judged: all when there are at most `judged_frames`,
    else that many evenly spaced, the first and the last included."""
    judged = min(frames, judged_frames)
    if judged <= 1:
        return [0]
    return [i * (frames - 1) // (judged - 1) for i in range(judged)]


def _prepare(
    data: bytes, size: int, limits: ImageLimits, first_only: bool, layout: JpegLayout | None = None
) -> list[PreparedImage]:
    image, fmt, frames = _open(data, limits, layout)
    width, height = _upright_size(image)
    if fmt == "JPEG":
        image.draft(None, _draft_target(image.size, size))
    indices = [0] if first_only else judged_frame_indices(frames, limits.judged_frames)
    return [
        PreparedImage(resize_for_model(picture, size), width, height, fmt, len(data), index)
        for index, picture in _pictures(image, fmt, indices, limits)
    ]


def _open(
    data: bytes, limits: ImageLimits, layout: JpegLayout | None = None
) -> tuple[Image.Image, str, int]:
    """The opened (not yet decoded) image, its format and its number of frames, once the
    header has passed every limit and a PNG's chunks are whole."""
    if not data:
        raise CorruptImage("the file is empty")
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(f"the file is {len(data)} bytes; the limit is {limits.max_bytes}")
    fmt = sniff_format(data)
    try:
        image = Image.open(io.BytesIO(data), formats=[fmt])
    except Image.DecompressionBombError:
        raise ImageTooLarge(_too_many_pixels(limits)) from None
    except (UnidentifiedImageError, *_READ_ERRORS) as exc:
        raise CorruptImage(f"the {fmt} file cannot be read: {_reason(exc, fmt)}") from None
    # A JPEG's extra pictures (MPO: HDR gain map, preview) are never read: the primary is judged.
    frames = 1 if fmt == "JPEG" else getattr(image, "n_frames", 1)
    _check_dimensions(image.size, frames, limits)
    if fmt == "JPEG":
        if layout is None or not layout.settles(limits.max_scans):
            layout = jpeg_layout(data, limits.max_scans)
        if layout.scans > limits.max_scans:
            raise ImageTooLarge(
                f"the progressive JPEG has more than {limits.max_scans} scans; "
                f"the limit is {limits.max_scans}"
            )
    if fmt == "PNG":
        _verify_png(data)
    return image, fmt, frames


def jpeg_layout(data: bytes, max_scans: int = ImageLimits.max_scans) -> JpegLayout:
    """The start-of-frame markers, declared size, start-of-scan count and marker codes of a
    JPEG's primary picture, in one walk over its markers (`_jpeg_markers`) to the end-of-image
    marker, or until past `max_scans` scans."""
    frames, scans, size, markers = [], 0, (0, 0), set()
    for marker, segment in _jpeg_markers(data):
        markers.add(marker)
        if marker in _JPEG_FRAME_MARKERS:
            # after its length and sample precision: height and width, big-endian
            dimensions = data[segment + 3 : segment + 7]
            if not frames and len(dimensions) == 4:
                height, width = struct.unpack(">HH", dimensions)
                size = (width, height)
            frames.append(marker)
        elif marker == 0xDA:
            scans += 1
            if scans > max_scans:
                break
    return JpegLayout(tuple(frames), *size, scans, max_scans, frozenset(markers))


def _jpeg_markers(data: bytes) -> Iterator[tuple[int, int]]:
    """(marker, offset of its segment's length field) of the marker segments of a JPEG's
    primary picture, in order, found by walking them (lengths skip every header and APP
    payload, such as an EXIF thumbnail) and the entropy-coded data between them (where 0xFF is
    always followed by 0x00, a restart marker or the next marker). Stops at the end-of-image
    marker (MPO pictures follow)."""
    pos, end = 2, len(data)  # after SOI
    for start in _marker_starts(data):
        if start < pos:  # inside the segment just walked past
            continue
        if pos + 4 > end:
            return
        marker, pos = data[start + 1], start + 2
        if marker == 0xD9:  # EOI
            return
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # RSTn, TEM: no length
            continue
        segment, pos = pos, pos + int.from_bytes(data[pos : pos + 2], "big")
        yield marker, segment


def _marker_starts(data: bytes) -> Iterator[int]:
    """Offsets of every 0xFF followed by a marker code (not a stuffed 0x00, not a fill 0xFF),
    in order: where a marker may start, payloads included. Vectorised a window at a time, with
    the GIL released: a regular-expression search through the entropy-coded data held it for
    70 us of every upload, which the Ingress's event loop waited on."""
    octets = np.frombuffer(data, dtype=np.uint8)
    for first in range(0, len(octets) - 1, _MARKER_WINDOW):
        window = octets[first : first + _MARKER_WINDOW + 1]  # and the code after its last byte
        fills = np.flatnonzero(window[:-1] == 0xFF)
        codes = window[fills + 1]
        yield from (fills[(codes != 0x00) & (codes != 0xFF)] + first).tolist()


def _verify_png(data: bytes) -> None:
    """Every chunk from the image data to IEND present with a good CRC: Pillow alone decodes a
    PNG cut short after its pixel data, or damaged in a later frame's, without complaint."""
    try:
        Image.open(io.BytesIO(data), formats=["PNG"]).verify()
    except _READ_ERRORS as exc:
        raise CorruptImage(f"the PNG file is truncated or damaged: {_reason(exc, 'PNG')}") from None


def _pictures(
    image: Image.Image, fmt: str, indices: list[int], limits: ImageLimits
) -> Iterator[tuple[int, Image.Image]]:
    """(index, upright RGB or grey "L" picture) for each frame index, in increasing order."""
    for index in indices:
        try:
            if index:
                image.seek(index)  # decodes (composites) every frame up to this one
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image.load()
        except (Image.DecompressionBombWarning, Image.DecompressionBombError):
            raise ImageTooLarge(_too_many_pixels(limits)) from None
        except _READ_ERRORS as exc:
            where = f"frame {index} of the {fmt} file" if index else f"the {fmt} file"
            raise CorruptImage(f"{where} is truncated or damaged: {_reason(exc, fmt)}") from None
        yield index, _to_rgb_or_grey(_upright(image))


def _check_dimensions(size: tuple[int, int], frames: int, limits: ImageLimits) -> None:
    width, height = size
    if min(width, height) < limits.min_side:
        raise ImageTooSmall(
            f"the image is {width}x{height} px; each side must be at least {limits.min_side} px"
        )
    if max(width, height) > limits.max_side:
        raise ImageTooLarge(
            f"the image is {width}x{height} px; each side must be at most {limits.max_side} px"
        )
    if frames > limits.max_frames:
        raise ImageTooLarge(f"the animation has {frames} frames; the limit is {limits.max_frames}")
    pixels = frames * width * height
    if pixels > limits.max_pixels:
        if frames > 1:
            what = f"the animation has {frames} frames of {width}x{height} px, {pixels} pixels"
        else:
            what = f"the image has {pixels} pixels"
        raise ImageTooLarge(f"{what} to decode; the limit is {limits.max_pixels}")


def _reason(exc: BaseException, fmt: str) -> str:
    """Pillow's complaint as a plain phrase for the client: no object reprs with heap
    addresses, bounded length."""
    if isinstance(exc, UnidentifiedImageError):
        return f"its content is not a valid {fmt} image"
    reason = " ".join(_OBJECT_REPR.sub("the upload", str(exc)).split()).rstrip(".")
    if len(reason) > _MAX_REASON_CHARS:
        reason = reason[: _MAX_REASON_CHARS - 1] + "…"
    return reason or "its content is malformed"


def _too_many_pixels(limits: ImageLimits) -> str:
    # Pillow's own message names its internal limit; the contract's limit is ours.
    return f"the image is over the {limits.max_pixels}-pixel limit"


def _draft_target(size: tuple[int, int], draft_size: int) -> tuple[int, int]:
    # draft() keeps each side >= the request; ask for the short side to stay >= draft_size.
    width, height = size
    scale = draft_size / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _upright(image: Image.Image) -> Image.Image:
    try:
        if image.getexif().get(ExifTags.Base.Orientation, 1) == 1:
            return image  # exif_transpose would return a full copy of an upright image
        return ImageOps.exif_transpose(image)
    except (OSError, ValueError, KeyError, TypeError, SyntaxError):
        return image  # unreadable EXIF: keep the pixels as stored rather than refuse the photo


def _upright_size(image: Image.Image) -> tuple[int, int]:
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except (OSError, ValueError, KeyError, TypeError, SyntaxError):
        orientation = 1
    width, height = image.size
    return (height, width) if orientation in _SIDEWAYS_ORIENTATIONS else (width, height)


def _to_rgb_or_grey(image: Image.Image) -> Image.Image:
    """RGB, or "L" for a grey picture (made RGB once resized): transparent pixels on white."""
    mode = image.mode
    if mode in ("RGB", "L"):
        return image
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return _high_bit_depth_to_grey(image)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        rgba = image if mode == "RGBA" else image.convert("RGBA")
        # pasting through the alpha band flattens onto white in place: one RGB image and the
        # alpha band, instead of an RGBA background, a composite and a copy
        flat = Image.new("RGB", rgba.size, _ALPHA_BACKGROUND)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    if mode == "1":
        return image.convert("L")
    return image.convert("RGB")


# numpy dtype of each high-bit-depth mode's stored pixels
_HIGH_BIT_DEPTH_DTYPES = {"I;16": "<u2", "I;16L": "<u2", "I;16B": ">u2", "I;16N": "=u2",
                          "I": "=i4", "F": "=f4"}  # fmt: skip


def _high_bit_depth_to_grey(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer or float grey -> 8-bit "L": 16-bit ranges scale by 255/65535
    (rounded), values already within 0-255 are kept. Integer arithmetic, a strip of rows at a
    time, so the memory beyond the decoded image is the 1 byte a pixel of the result."""
    width, height = image.size
    high = image.getextrema()[1]
    peak = 65535 if image.mode.startswith("I;16") or high > 255 else 255
    dtype = np.dtype(_HIGH_BIT_DEPTH_DTYPES[image.mode])
    out = np.empty((height, width), dtype=np.uint8)
    rows = max(1, _STRIP_PIXELS // max(1, width))
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        strip = np.frombuffer(image.crop((0, top, width, bottom)).tobytes(), dtype=dtype)
        if dtype.kind == "f":
            strip = np.rint(np.clip(strip, 0, peak) * np.float32(255 / peak))
        else:
            strip = np.clip(strip.astype(np.int64), 0, peak)
            if peak != 255:
                strip = (strip * 255 + peak // 2) // peak  # round(v * 255 / peak), exactly
        out[top:bottom] = strip.reshape(bottom - top, width)
    return Image.fromarray(out)


def resize_pixels(pixels: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 CHW pixels to `size` x `size` (only when a model swap changes the side)."""
    return resize_for_model(Image.fromarray(pixels.transpose(1, 2, 0)), size)
