"""Preprocessor deployment: upload bytes -> checked, upright, model-sized uint8 pixels.

Decoding runs in a worker thread so the replica's event loop keeps accepting requests; the
work itself is `common.image.prepare_image`, the same path training uses. The Ingress sends the
model's input side and the upload limits with every call, so this deployment has no state to
keep in step. The Ingress decodes in its own process instead when `preprocess_in_ingress` is
on (a hop costs more than the decode on a small CPU node; see docs/performance.md).
"""

from __future__ import annotations

import asyncio

from ray import serve

from common.image import ImageLimits, PreparedImage, prepare_image

__all__ = ["Preprocessor"]


@serve.deployment
class Preprocessor:
    async def __call__(self, data: bytes, image_size: int, limits: ImageLimits) -> PreparedImage:
        return await asyncio.to_thread(prepare_image, data, image_size, limits)
