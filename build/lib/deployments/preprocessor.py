"""Preprocessor deployment: upload bytes -> checked, upright, model-sized uint8 pixels of every
picture to judge (one for a still image, up to `judged_frames` for an animation).

Decoding runs in a worker thread so the replica's event loop keeps accepting requests; the
work itself is `common.image.prepare_frames`, the same path training uses. The Ingress sends the
model's input side and the upload limits with every call, so this deployment has no state to
keep in step. The Ingress decodes in its own process instead when `preprocess_in_ingress` is
on (a hop costs more than the decode on a small CPU node; see docs/performance.md).
"""

from __future__ import annotations

import asyncio

from ray import serve

from common.image import ImageLimits, PreparedImage, prepare_frames

__all__ = ["Preprocessor"]


@serve.deployment
class Preprocessor:
    async def __call__(
        self, data: bytes, image_size: int, limits: ImageLimits
    ) -> list[PreparedImage]:
        return await asyncio.to_thread(prepare_frames, data, image_size, limits)
