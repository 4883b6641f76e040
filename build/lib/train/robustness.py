"""The robustness conditions: an image file's bytes -> the bytes a marketplace would pass on.

Each condition re-encodes the uploaded *file* (never the model's tensor), the way a site
re-compresses, shrinks or crops an upload; the result then takes the normal decode path
(`common.image`), so evaluation (`train.evaluate`) and the HTTP measurement (`bench.http_eval`)
judge exactly the same pixels. Detectors that key on generator traces lose them here (Wang et al.,
CVPR 2020; AIGIBench, NeurIPS 2025).

| condition | what happens to the file |
| --- | --- |
| `jpeg_q90`, `jpeg_q75`, `jpeg_q50` | decoded (upright RGB), saved as JPEG at that quality |
| `half_size` | width and height halved (Lanczos), saved in the source's format |
| `center_crop_80` | the central 80 % of width and height, saved in the source's format |
| `png_to_jpeg` | PNG sources saved as JPEG at quality 95; JPEG and WebP sources pass unchanged |

"Saved in the source's format" is lossless for PNG and WebP (WebP `lossless=True`) and JPEG at
quality 95 for JPEG sources, so geometry conditions change only geometry. `png_to_jpeg` is the
lightest lossy conversion (quality 95, Pillow's 4:2:0 chroma subsampling at that quality): what
changes is the file format and its faint block artefacts, not heavy compression (the `jpeg_q*`
rows cover that). A model that keys on "PNG means generated" shows it in this row.
"""

from __future__ import annotations

import io

from PIL import Image

from common.image import ImageLimits, decode_image, sniff_format

__all__ = ["CONDITIONS", "PNG_TO_JPEG_QUALITY", "degrade"]

CONDITIONS = ("jpeg_q90", "jpeg_q75", "jpeg_q50", "half_size", "center_crop_80", "png_to_jpeg")
PNG_TO_JPEG_QUALITY = 95
_SOURCE_JPEG_QUALITY = 95  # when a geometry condition re-saves a JPEG source
_JPEG_QUALITIES = {"jpeg_q90": 90, "jpeg_q75": 75, "jpeg_q50": 50}
_CROP_FRACTION = 0.8
_LIMITS = ImageLimits()


def degrade(data: bytes, condition: str) -> bytes:
    """The file `data` after `condition` (one of CONDITIONS); `clean` returns it unchanged."""
    if condition == "clean":
        return data
    if condition not in CONDITIONS:
        raise ValueError(f"unknown robustness condition {condition!r}; one of {CONDITIONS}")
    fmt = sniff_format(data)
    if condition == "png_to_jpeg":
        if fmt != "PNG":
            return data
        return _encode(decode_image(data, _LIMITS), "JPEG", PNG_TO_JPEG_QUALITY)
    image = decode_image(data, _LIMITS)
    if condition in _JPEG_QUALITIES:
        return _encode(image, "JPEG", _JPEG_QUALITIES[condition])
    width, height = image.size
    if condition == "half_size":
        image = image.resize((max(1, width // 2), max(1, height // 2)), Image.Resampling.LANCZOS)
    else:  # center_crop_80
        w, h = round(width * _CROP_FRACTION), round(height * _CROP_FRACTION)
        left, top = (width - w) // 2, (height - h) // 2
        image = image.crop((left, top, left + w, top + h))
    return _encode(image, fmt, _SOURCE_JPEG_QUALITY)


def _encode(image: Image.Image, fmt: str, quality: int) -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.save(buffer, format="JPEG", quality=quality)
    elif fmt == "WEBP":
        image.save(buffer, format="WEBP", lossless=True)
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()
