"""Grad-CAM for the Explainer: the heat map of one prepared image, blended over the upload.

captum's `LayerGradCam` on the block `common.model.gradcam_target_layer` picks, for the
predicted class (for "real" the evidence for real, i.e. the negated logit). The probability
comes from the same `common.inference` pass as the Classifier's. This is the Explainer's model
stack (torch, captum, matplotlib): its replica imports it, the application build does not.
"""

from __future__ import annotations

import io
import time

import numpy as np
import torch
from captum.attr import LayerGradCam
from matplotlib import colormaps
from PIL import Image

from common.answers import Explanation
from common.inference import model_input
from common.model import gradcam_target_layer
from common.rules import is_ai_generated
from deployments.model_slot import LoadedModel

__all__ = ["explain"]


def explain(
    loaded: LoadedModel,
    pixels: np.ndarray,
    photo: Image.Image,
    threshold: float,
    *,
    heatmap_opacity: float,
    colormap: str,
    jpeg_quality: int,
) -> Explanation:
    """The explanation of `pixels` (the model's input, uint8 CHW) drawn over `photo`."""
    started = time.perf_counter()
    model, meta = loaded.model, loaded.meta
    # the probability exactly as the Classifier computes it; Grad-CAM needs gradients
    probability = float(loaded.probabilities([pixels])[0])
    target = int(is_ai_generated(probability, threshold))  # 1: evidence for AI, 0: for real
    x = model_input([pixels], meta, loaded.device)
    layer = gradcam_target_layer(model, meta.image_size)  # >= 7 x 7 cells where possible
    cam = LayerGradCam(lambda t: _two_class_logits(model, t), layer)
    attribution = cam.attribute(x, target=target, relu_attributions=True)
    heat = attribution[0, 0].detach().float().cpu().numpy()

    overlay = _blend(photo, heat, heatmap_opacity, colormap)
    buffer = io.BytesIO()
    overlay.save(buffer, format="JPEG", quality=jpeg_quality)
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


def _blend(photo: Image.Image, heat: np.ndarray, opacity: float, colormap: str) -> Image.Image:
    peak = float(heat.max())
    heat = heat / peak if peak > 0 else np.zeros_like(heat)
    heat_image = Image.fromarray(np.uint8(np.clip(heat, 0, 1) * 255))
    heat_image = heat_image.resize(photo.size, Image.Resampling.BILINEAR)
    colours = colormaps[colormap](np.asarray(heat_image) / 255.0)[..., :3]
    mixed = (1 - opacity) * np.asarray(photo, dtype=np.float32) / 255.0
    mixed += opacity * colours
    return Image.fromarray(np.uint8(np.clip(mixed, 0, 1) * 255))
