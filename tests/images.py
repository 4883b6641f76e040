"""Real image bytes for tests: crops of the photographs shipped with scikit-image, encoded as
the formats and modes clients send."""

from __future__ import annotations

import io
import struct
import zlib
from functools import cache

import numpy as np
from PIL import Image

from bench.hostile import grey16_png, scan_bomb  # noqa: F401  (re-exported for tests)

# (format, mode) pairs each encoder accepts as they are
FORMAT_MODES = [
    ("JPEG", "RGB"),
    ("JPEG", "L"),
    ("JPEG", "CMYK"),
    ("PNG", "RGB"),
    ("PNG", "L"),
    ("PNG", "LA"),
    ("PNG", "P"),
    ("PNG", "RGBA"),
    ("PNG", "I;16"),
    ("WEBP", "RGB"),
    ("WEBP", "RGBA"),
]


@cache
def photo(name: str = "astronaut") -> Image.Image:
    """A real photograph as RGB."""
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")


def crop(index: int, size: tuple[int, int] = (96, 72)) -> Image.Image:
    """Distinct real crops: index selects the photo and the offset."""
    names = ("astronaut", "coffee", "chelsea", "rocket")
    source = photo(names[index % len(names)])
    left, top = 13 * (index // len(names)), 7 * (index // len(names))
    return source.crop((left, top, left + size[0], top + size[1]))


def to_mode(image: Image.Image, mode: str) -> Image.Image:
    if mode == "I;16":
        gray = np.asarray(image.convert("L"), dtype=np.uint16) * 257
        return Image.fromarray(gray)  # uint16 -> I;16
    if mode == "LA":
        return image.convert("L").convert("LA")
    if mode == "RGBA":
        rgba = image.convert("RGBA")
        rgba.putalpha(200)
        return rgba
    if mode == "P":
        return image.convert("P", palette=Image.Palette.ADAPTIVE)
    return image.convert(mode)


def encode(image: Image.Image, fmt: str = "JPEG", **params) -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        params.setdefault("quality", 92)
    if fmt == "WEBP":
        params.setdefault("quality", 92)
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def image_bytes(index: int = 0, fmt: str = "JPEG", mode: str = "RGB") -> bytes:
    return encode(to_mode(crop(index), mode), fmt)


def animation(frames: list[Image.Image], fmt: str = "PNG", **params) -> bytes:
    """An animated PNG (APNG) or WebP; WebP frames are lossless so each decodes to its source."""
    if fmt == "WEBP":
        params.setdefault("lossless", True)
    params.setdefault("duration", 100)
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], **params)


def mpo(primary: Image.Image, extra: list[Image.Image], quality: int = 92) -> bytes:
    """A multi-picture JPEG (MPO), as phones store an HDR gain map and cameras a preview."""
    return encode(primary, "MPO", save_all=True, append_images=extra, quality=quality)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG of a few bytes that declares `width` x `height` px (its pixel data is missing)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))  # fmt: skip
