"""The benchmark's fixed input set: JPEGs of realistic product-photo sizes made from the demo
photos (640x480 up to 2000x1500), and the multipart bodies a load generator sends."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

from PIL import Image

__all__ = ["SIZES", "make_inputs", "multipart_body"]

SIZES = [(640, 480), (1024, 768), (1280, 960), (1600, 1200), (2000, 1500)]  # px
_PHOTOS = ("coffee", "cat", "rocket", "astronaut")
JPEG_QUALITY = 90


def make_inputs(folder: Path, per_size: int = 2) -> list[Path]:
    """Write (once) and return `per_size` JPEGs for each size in SIZES."""
    from train.demo_data import load_source_photos  # the demo extra's photographs

    folder.mkdir(parents=True, exist_ok=True)
    wanted = [
        (folder / f"{name}_{w}x{h}.jpg", name, (w, h))
        for (w, h) in SIZES
        for name in _PHOTOS[:per_size]
    ]
    if not all(path.exists() for path, _, _ in wanted):
        photos = load_source_photos()
        for path, name, size in wanted:
            photos[name].resize(size, Image.Resampling.LANCZOS).save(
                path, format="JPEG", quality=JPEG_QUALITY
            )
    return [path for path, _, _ in wanted]


def multipart_body(
    files: bytes | list[bytes], field: str = "file", filename: str = "photo.jpg"
) -> tuple[bytes, str]:
    """(body, content type) of a multipart/form-data request with one or more JPEG files."""
    boundary = uuid.uuid4().hex
    body = io.BytesIO()
    for data in [files] if isinstance(files, bytes) else files:
        body.write(f"--{boundary}\r\n".encode())
        body.write(
            f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n".encode()
        )
        body.write(data)
        body.write(b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    return body.getvalue(), f"multipart/form-data; boundary={boundary}"
