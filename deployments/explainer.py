"""Explainer deployment: Grad-CAM on a block with enough cells, blended over the upload.

The heat map (`deployments.gradcam`: captum's `LayerGradCam` for the predicted class) is
computed on the same uint8 pixels the Preprocessor made for `/predict`, and its probability
comes from the same `common.inference` pass as the Classifier's. The overlay is the upload at
its own aspect ratio (at most `overlay_max_side` px), returned as JPEG bytes; for an animation,
the frame explained. The upload is decoded again for it under the limits the Ingress sends with
the call. Without a model it raises `NoModelLoaded`, which the Ingress answers with 503.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from ray import serve

from common.answers import Explanation, NoModelLoaded
from common.image import ImageLimits, PreparedImage
from common.settings import apply_log_level, get_settings
from deployments.decoding import ImageDecoder
from deployments.model_slot import (
    ModelSlot,
    replica_cpu_threads,
    replica_device,
    resolve_model_uri,
)

__all__ = ["Explainer", "ExplainerConfig"]


class ExplainerConfig(BaseModel):
    """`user_config` of the Explainer; `model_uri` is the primary's (a YAML anchor). Strict
    types, unknown keys refused, each error naming its key."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    model_uri: str | None = None
    overlay_max_side: int = Field(512, ge=16)  # px, longest side of the returned JPEG
    heatmap_opacity: float = Field(0.45, ge=0, le=1)  # 0 shows only the photo, 1 only the map
    jpeg_quality: int = Field(85, ge=1, le=100)  # Pillow's JPEG quality
    colormap: str = "jet"  # a matplotlib colormap name

    @field_validator("colormap")
    @classmethod
    def _known_colormap(cls, name: str) -> str:
        from matplotlib import colormaps  # validated in the replica, not at the app build

        if name not in colormaps:
            raise ValueError(f"{name!r} is not a matplotlib colormap")
        return name


@serve.deployment
class Explainer:
    def __init__(self) -> None:
        settings = get_settings()
        apply_log_level(settings, "explainer")
        self._uri_override = settings.model_uri
        # Grad-CAM's stack (torch, captum: seconds to import) loads with the replica, not with
        # this module, which the application build imports only to bind the graph.
        from deployments import gradcam

        self._gradcam = gradcam
        self._slot = ModelSlot("explainer", replica_device(), replica_cpu_threads())
        self._decoder = ImageDecoder(settings.decode_workers, settings.decode_timeout_s)
        self._config = ExplainerConfig()
        self._lock = asyncio.Lock()  # captum hooks the shared model: one attribution at a time

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        self._config = ExplainerConfig.model_validate(user_config)
        await self._slot.load(
            resolve_model_uri("explainer", self._config.model_uri, self._uri_override)
        )

    async def check_health(self) -> None:
        """Serve's health check: raises (Serve replaces the replica) when the loaded model
        cannot run a 1-image forward pass; without a model the replica is healthy."""
        if self._lock.locked():
            # an attribution is running on the model now (a broken model fails it and frees
            # the lock); waiting behind queued ones could outlast Serve's health-check timeout
            return
        async with self._lock:  # captum's hooks must not see the probe's forward pass
            await self._slot.check_forward()

    async def __call__(
        self, image: PreparedImage, data: bytes, threshold: float, limits: ImageLimits
    ) -> Explanation:
        loaded = self._slot.current
        if loaded is None:
            raise NoModelLoaded("the explainer has no model: set model_uri")
        config = self._config
        side = config.overlay_max_side
        photo = await self._decoder.overlay_photo(data, limits, side, image.frame)
        async with self._lock:
            return await asyncio.to_thread(
                self._gradcam.explain, loaded, image.pixels, photo, threshold,
                heatmap_opacity=config.heatmap_opacity, colormap=config.colormap,
                jpeg_quality=config.jpeg_quality,
            )  # fmt: skip
