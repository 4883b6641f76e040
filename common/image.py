"""The one image path: bytes -> recognised, checked, decoded, upright RGB -> model-sized uint8.

Serving (the Preprocessor), training, evaluation and the demo data set all go through these
functions; training only adds augmentation on top of `resize_for_model`. Formats are recognised
by their leading bytes, and sizes are checked from the header before any pixel is decoded.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

__all__ = [
    "SUPPORTED_FORMATS",
    "CorruptImage",
    "ImageError",
    "ImageLimits",
    "ImageTooLarge",
    "ImageTooSmall",
    "PreparedImage",
    "UnsupportedImageFormat",
    "decode_image",
    "prepare_image",
    "resize_for_model",
    "resize_pixels",
    "sniff_format",
]

SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP")
_RESAMPLE = Image.Resampling.BILINEAR
_ALPHA_BACKGROUND = (255, 255, 255)  # transparent pixels become white, as on a product page
_SIDEWAYS_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_OBJECT_REPR = re.compile(r"<[^<>]*\bat 0x[0-9a-fA-F]+>")  # `<_io.BytesIO object at 0x7f…>`
_MAX_REASON_CHARS = 200


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


class UnsupportedImageFormat(ImageError):
    status_code = 415
    kind = "unsupported_format"


@dataclass(frozen=True)
class ImageLimits:
    """What an upload may be; defaults are the HTTP contract's."""

    max_bytes: int = 10 * 1024 * 1024  # one file, bytes
    min_side: int = 16  # px
    max_side: int = 10_000  # px
    max_pixels: int = 40_000_000  # decoded pixels (decompression-bomb guard)


@dataclass(frozen=True)
class PreparedImage:
    """What the Preprocessor hands the models: `pixels` is uint8 CHW at the model's side."""

    pixels: np.ndarray
    width: int  # of the upright upload, px
    height: int
    format: str
    num_bytes: int


def sniff_format(data: bytes) -> str:
    """The format named by the file's leading bytes; the name and content type are ignored."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    raise UnsupportedImageFormat("unsupported image format: send a JPEG, PNG or WebP file")


def decode_image(
    data: bytes, limits: ImageLimits = ImageLimits(), draft_size: int | None = None
) -> Image.Image:
    """Check and decode an upload into an upright RGB image.

    `draft_size` lets JPEG decoding downscale cheaply (by 1/2, 1/4, 1/8) while keeping the
    short side at least that large.
    """
    return _decode(data, limits, draft_size)[0]


def resize_for_model(image: Image.Image, size: int) -> np.ndarray:
    """Resize the whole image to `size` x `size` and return uint8 CHW (contiguous)."""
    resized = image.resize((size, size), _RESAMPLE)
    return np.ascontiguousarray(np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1))


def prepare_image(data: bytes, size: int, limits: ImageLimits = ImageLimits()) -> PreparedImage:
    """Bytes in, model-ready uint8 pixels out: the whole serving preprocessing."""
    image, fmt, (width, height) = _decode(data, limits, draft_size=size)
    return PreparedImage(resize_for_model(image, size), width, height, fmt, len(data))


def _decode(
    data: bytes, limits: ImageLimits, draft_size: int | None
) -> tuple[Image.Image, str, tuple[int, int]]:
    """The decoded upright RGB image, its format, and the upload's upright (width, height)."""
    if not data:
        raise CorruptImage("the file is empty")
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(f"the file is {len(data)} bytes; the limit is {limits.max_bytes}")
    fmt = sniff_format(data)
    try:
        image = Image.open(io.BytesIO(data), formats=[fmt])
    except Image.DecompressionBombError:
        raise ImageTooLarge(_too_many_pixels(limits)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise CorruptImage(f"the {fmt} file cannot be read: {_reason(exc, fmt)}") from None
    _check_dimensions(image.size, limits)
    if getattr(image, "n_frames", 1) > 1:
        raise UnsupportedImageFormat("animated images are not supported: send a single frame")
    upright_size = _upright_size(image)
    if draft_size and fmt == "JPEG":
        image.draft(None, _draft_target(image.size, draft_size))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise ImageTooLarge(_too_many_pixels(limits)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise CorruptImage(f"the {fmt} file is damaged: {_reason(exc, fmt)}") from None
    return _to_rgb(_upright(image)), fmt, upright_size


def _check_dimensions(size: tuple[int, int], limits: ImageLimits) -> None:
    width, height = size
    if min(width, height) < limits.min_side:
        raise ImageTooSmall(
            f"the image is {width}x{height} px; each side must be at least {limits.min_side} px"
        )
    if max(width, height) > limits.max_side:
        raise ImageTooLarge(
            f"the image is {width}x{height} px; each side must be at most {limits.max_side} px"
        )
    if width * height > limits.max_pixels:
        raise ImageTooLarge(
            f"the image has {width * height} pixels; the limit is {limits.max_pixels}"
        )


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


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return _high_bit_depth_to_rgb(image)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_ALPHA_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _high_bit_depth_to_rgb(image: Image.Image) -> Image.Image:
    values = np.asarray(image, dtype=np.float64)
    peak = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
    scaled = np.clip(values * (255.0 / peak), 0, 255).round().astype(np.uint8)
    return Image.fromarray(scaled).convert("RGB")  # uint8 2-D -> L


def resize_pixels(pixels: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 CHW pixels to `size` x `size` (only when a model swap changes the side)."""
    return resize_for_model(Image.fromarray(pixels.transpose(1, 2, 0)), size)
