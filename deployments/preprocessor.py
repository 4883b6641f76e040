"""Preprocessor deployment: upload bytes -> checked, upright, model-sized uint8 pixels of every
picture to judge (one for a still image, up to `judged_frames` for an animation).

The work is `common.image.prepare_frames`, the same path training uses, run by
`deployments.decoding.ImageDecoder`: in worker processes, at most `DECODE_WORKERS` at once,
each killed past `DECODE_TIMEOUT_S` (413 `too_costly`), so the replica's event loop keeps
accepting requests and no upload holds a core for long. The Ingress sends the model's input
side and the upload limits with every call, so this deployment has no state to keep in step.
The Ingress decodes in its own replica instead when `preprocess_in_ingress` is on (a hop
costs more than the decode on a small CPU node; see docs/performance.md).
"""

from __future__ import annotations

from ray import serve

from common.image import ImageLimits, PreparedImage
from common.settings import get_settings
from deployments.decoding import ImageDecoder

__all__ = ["Preprocessor"]


@serve.deployment
class Preprocessor:
    def __init__(self) -> None:
        settings = get_settings()
        self._decoder = ImageDecoder(settings.decode_workers, settings.decode_timeout_s)

    async def __call__(
        self, data: bytes, image_size: int, limits: ImageLimits
    ) -> list[PreparedImage]:
        return await self._decoder.prepare_frames(data, image_size, limits)
