"""Explainer deployment: Grad-CAM on a block with enough cells, blended over the upload.

The heat map is computed with captum's `LayerGradCam` for the predicted class (for "real" the
evidence for real, i.e. the negated logit), on the same uint8 pixels the Preprocessor made for
`/predict`, so the probability matches. The overlay is the upload at its own aspect ratio (at
most `overlay_max_side` px), returned as JPEG bytes; for an animation, the frame explained. The
upload is decoded again for it under the limits the Ingress sends with the call.
"""

from __future__ import annotations

import asyncio
import io
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from captum.attr import LayerGradCam
from matplotlib import colormaps
from PIL import Image
from ray import serve

from common.answers import Explanation
from common.calibration import calibrated_probabilities
from common.config import strict_dataclass
from common.image import ImageLimits, PreparedImage, decode_image, resize_pixels
from common.model import gradcam_target_layer, to_model_input
from common.settings import Settings
from deployments.model_slot import LoadedModel, ModelSlot, replica_device

__all__ = ["Explainer", "ExplainerConfig"]


@dataclass(frozen=True)
class ExplainerConfig:
    """`user_config` of the Explainer; `model_uri` is the primary's (a YAML anchor)."""

    model_uri: str | None = None
    overlay_max_side: int = 512  # px, longest side of the returned JPEG
    heatmap_opacity: float = 0.45  # 0 shows only the photo, 1 only the heat map
    jpeg_quality: int = 85
    colormap: str = "jet"

    @classmethod
    def from_user_config(cls, raw: dict[str, Any]) -> ExplainerConfig:
        config = strict_dataclass(cls, raw, "Explainer user_config")
        if not 0.0 <= config.heatmap_opacity <= 1.0 or config.colormap not in colormaps:
            raise ValueError("heatmap_opacity must be in [0, 1] and colormap a matplotlib name")
        return config


@serve.deployment
class Explainer:
    def __init__(self) -> None:
        settings = Settings.from_env()
        self._uri_override = settings.model_uri
        self._slot = ModelSlot("explainer", replica_device())
        self._config = ExplainerConfig()
        self._lock = asyncio.Lock()  # captum hooks the shared model: one attribution at a time

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        self._config = ExplainerConfig.from_user_config(user_config)
        await self._slot.load(self._uri_override or self._config.model_uri)

    async def __call__(
        self, image: PreparedImage, data: bytes, threshold: float, limits: ImageLimits
    ) -> Explanation:
        loaded = self._slot.current
        if loaded is None:
            raise RuntimeError("the explainer has no model: set model_uri")
        async with self._lock:
            return await asyncio.to_thread(self._explain, loaded, image, data, threshold, limits)

    def _explain(
        self,
        loaded: LoadedModel,
        image: PreparedImage,
        data: bytes,
        threshold: float,
        limits: ImageLimits,
    ) -> Explanation:
        started = time.perf_counter()
        meta, model, config = loaded.meta, loaded.model, self._config
        pixels = image.pixels
        if pixels.shape[1:] != (meta.image_size, meta.image_size):
            pixels = resize_pixels(pixels, meta.image_size)
        x = to_model_input(torch.from_numpy(pixels)[None], meta.mean, meta.std, self._slot.device)

        with torch.no_grad():
            probability = float(calibrated_probabilities(model(x), meta)[0])
        target = int(probability >= threshold)  # 1: evidence for AI-generated, 0: for real
        layer = gradcam_target_layer(model, meta.image_size)  # >= 7 x 7 cells where possible
        cam = LayerGradCam(lambda t: _two_class_logits(model, t), layer)
        attribution = cam.attribute(x, target=target, relu_attributions=True)
        heat = attribution[0, 0].detach().float().cpu().numpy()

        photo = decode_image(data, limits, draft_size=config.overlay_max_side, frame=image.frame)
        photo.thumbnail((config.overlay_max_side, config.overlay_max_side))
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
