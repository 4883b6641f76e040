"""Explainer deployment: Grad-CAM on a block with enough cells, blended over the upload.

The heat map is computed with captum's `LayerGradCam` for the predicted class (for "real" the
evidence for real, i.e. the negated logit), on the same uint8 pixels the Preprocessor made for
`/predict`, and its probability comes from the same `common.inference` pass as the
Classifier's. The overlay is the upload at its own aspect ratio (at most `overlay_max_side` px),
returned as JPEG bytes; for an animation, the frame explained. The upload is decoded again for
it under the limits the Ingress sends with the call. Without a model it raises
`NoModelLoaded`, which the Ingress answers with 503.
"""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

import numpy as np
import torch
from captum.attr import LayerGradCam
from matplotlib import colormaps
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, field_validator
from ray import serve

from common.answers import Explanation, NoModelLoaded
from common.image import ImageLimits, PreparedImage
from common.inference import forward_probabilities, model_input
from common.model import gradcam_target_layer
from common.rules import is_ai_generated
from common.settings import apply_log_level, get_settings
from deployments.decoding import ImageDecoder
from deployments.model_slot import LoadedModel, ModelSlot, replica_device, resolve_model_uri

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
        if name not in colormaps:
            raise ValueError(f"{name!r} is not a matplotlib colormap")
        return name


@serve.deployment
class Explainer:
    def __init__(self) -> None:
        settings = get_settings()
        apply_log_level(settings, "explainer")
        self._uri_override = settings.model_uri
        self._slot = ModelSlot("explainer", replica_device())
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
        side = self._config.overlay_max_side
        photo = await self._decoder.overlay_photo(data, limits, side, image.frame)
        async with self._lock:
            return await asyncio.to_thread(self._explain, loaded, image, photo, threshold)

    def _explain(
        self,
        loaded: LoadedModel,
        image: PreparedImage,
        photo: Image.Image,
        threshold: float,
    ) -> Explanation:
        started = time.perf_counter()
        meta, model, config, device = loaded.meta, loaded.model, self._config, self._slot.device
        # the probability exactly as the Classifier computes it; Grad-CAM needs gradients
        probability = float(forward_probabilities(model, meta, [image.pixels], device)[0])
        target = int(is_ai_generated(probability, threshold))  # 1: evidence for AI, 0: for real
        x = model_input([image.pixels], meta, device)
        layer = gradcam_target_layer(model, meta.image_size)  # >= 7 x 7 cells where possible
        cam = LayerGradCam(lambda t: _two_class_logits(model, t), layer)
        attribution = cam.attribute(x, target=target, relu_attributions=True)
        heat = attribution[0, 0].detach().float().cpu().numpy()

        overlay = _blend(photo, heat, config)
        buffer = io.BytesIO()
        overlay.save(buffer, format="JPEG", quality=config.jpeg_quality)
        return Explanation(
            probability=probability,
            model_version=meta.version,
            heatmap_jpeg=buffer.getvalue(),
            width=overlay.width,
            height=overlay.height,
            explain_ms=(time.perf_counter() - started) * 1000.0,
        )


def _two_class_logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(real, ai_generated) scores from the single logit z: (-z, z)."""
    z = model(x)
    return torch.stack([-z, z], dim=1)


def _blend(photo: Image.Image, heat: np.ndarray, config: ExplainerConfig) -> Image.Image:
    peak = float(heat.max())
    heat = heat / peak if peak > 0 else np.zeros_like(heat)
    heat_image = Image.fromarray(np.uint8(np.clip(heat, 0, 1) * 255))
    heat_image = heat_image.resize(photo.size, Image.Resampling.BILINEAR)
    colours = colormaps[config.colormap](np.asarray(heat_image) / 255.0)[..., :3]
    mixed = (1 - config.heatmap_opacity) * np.asarray(photo, dtype=np.float32) / 255.0
    mixed += config.heatmap_opacity * colours
    return Image.fromarray(np.uint8(np.clip(mixed, 0, 1) * 255))
