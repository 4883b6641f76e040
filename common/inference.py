"""The one forward pass from uint8 pixels to calibrated P(AI-generated), for every caller.

`forward_probabilities(model, meta, pixels)` resizes where the side differs from the
checkpoint's (`common.image.resize_pixels`), normalises on the model's device
(`common.model.to_model_input`), runs the model under the one autocast policy of that device
(`autocast_dtype`) and calibrates (`common.calibration`). The Classifier, the Explainer, the
evaluation, training's validation and the benchmarks all call it (or `forward_logits`, the same
pass before calibration), so a probability means the same number everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import nn

from common.calibration import calibrated_probabilities
from common.checkpoint import ModelMeta
from common.image import resize_pixels
from common.model import to_model_input

__all__ = [
    "PRECISIONS",
    "Pixels",
    "Precision",
    "auto_precision",
    "autocast_dtype",
    "cuda_autocast_dtype",
    "forward_logits",
    "forward_probabilities",
    "model_input",
]

Precision = Literal["auto", "bf16", "fp16", "fp32"]
# Explicit precisions, for the benchmarks that compare them; "auto" is the device's policy.
PRECISIONS: dict[str, torch.dtype | None] = {
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp32": None,
}
# uint8 pixels: an NCHW array or tensor, or a sequence of CHW arrays (sides may differ)
Pixels = np.ndarray | torch.Tensor | Sequence[np.ndarray]


def autocast_dtype(device: torch.device | str, precision: Precision = "auto") -> torch.dtype | None:
    """The autocast dtype for inference on `device`; None means full precision.

    "auto" is the one policy: on a GPU, `cuda_autocast_dtype` of its compute capability; full
    precision on the CPU. An explicit `precision` is for the benchmarks that compare precisions.
    """
    if precision != "auto":
        return PRECISIONS[precision]
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return cuda_autocast_dtype(torch.cuda.get_device_capability(device))


def auto_precision(device: torch.device | str) -> Precision:
    """The explicit precision that "auto" picks on `device` ("bf16", "fp16" or "fp32")."""
    dtype = autocast_dtype(device)
    return next(name for name, explicit in PRECISIONS.items() if explicit is dtype)


def cuda_autocast_dtype(capability: tuple[int, int]) -> torch.dtype:
    """The "auto" dtype of a CUDA GPU of compute `capability`: bf16 where its tensor cores run
    bf16 (Ampere, 8.0, and newer), fp16 before that (a T4 is 7.5).

    `torch.cuda.is_bf16_supported()` is not this test: by default it also counts bf16 that is
    only emulated, which a T4 passes, and emulated bf16 runs without the tensor cores.
    """
    major, _minor = capability
    return torch.bfloat16 if major >= 8 else torch.float16


def model_input(pixels: Pixels, meta: ModelMeta, device: torch.device | str) -> torch.Tensor:
    """uint8 pixels -> the model's float input on `device`: resized to `meta.image_size` where
    an image's side differs (a swap to a checkpoint of another side), then normalised."""
    return to_model_input(_at_side(pixels, meta.image_size), meta.mean, meta.std, device)


def forward_logits(
    model: nn.Module,
    meta: ModelMeta,
    pixels: Pixels,
    device: torch.device | str | None = None,
    precision: Precision = "auto",
) -> torch.Tensor:
    """The raw logit of each image (float32, on the model's device), from one forward pass in
    inference mode under `autocast_dtype(device, precision)`. `device` defaults to the one the
    model's weights are on. The model must already be in eval mode."""
    device = torch.device(device) if device is not None else _device_of(model)
    dtype = autocast_dtype(device, precision)
    with torch.inference_mode(), torch.autocast(device.type, dtype, enabled=dtype is not None):
        return model(model_input(pixels, meta, device)).float()


def forward_probabilities(
    model: nn.Module,
    meta: ModelMeta,
    pixels: Pixels,
    device: torch.device | str | None = None,
    precision: Precision = "auto",
) -> torch.Tensor:
    """Calibrated P(AI-generated) of each image, a float32 CPU tensor (`forward_logits`, then
    `meta.calibration`)."""
    logits = forward_logits(model, meta, pixels, device, precision)
    return calibrated_probabilities(logits, meta).cpu()


def _at_side(pixels: Pixels, size: int) -> torch.Tensor:
    """A uint8 NCHW tensor of `pixels`, each image resized to `size` only where it differs."""
    if isinstance(pixels, torch.Tensor):
        if pixels.shape[-2:] == (size, size):
            return pixels
        pixels = pixels.cpu().numpy()
    if isinstance(pixels, np.ndarray) and pixels.shape[-2:] == (size, size):
        return torch.from_numpy(pixels)
    return torch.from_numpy(np.stack([
        image if image.shape[1:] == (size, size) else resize_pixels(image, size)
        for image in pixels
    ]))  # fmt: skip


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
