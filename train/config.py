"""The training run's knobs: one frozen dataclass with every default, no Ray Train import.

`train.loop` (the workers), `train.driver` and `tune.sweep` (building runs), `train.evaluate`
and `train.export` (reading a checkpoint's resolved config) all take a `TrainConfig`; keeping it
here lets evaluation and export run without importing Ray Train.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.config import strict_dataclass
from common.model import ARCHITECTURE

__all__ = ["TrainConfig"]


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a run with its default; the resolved dict goes to MLflow and the checkpoint."""

    data_dir: str = "data/demo"  # CIFAKE layout; local path or gs://
    image_size: int = 64  # px; 224 on T4s, 32 for CIFAKE's native size
    epochs: int = 15
    batch_size: int = 32  # global; each worker takes batch_size // num_workers
    lr: float = 1e-3  # AdamW peak learning rate
    weight_decay: float = 0.01
    warmup_epochs: int = 2  # linear warm-up, then cosine decay to min_lr_ratio * lr
    min_lr_ratio: float = 0.01
    patience: int = 5  # epochs without a better validation F1 before stopping
    dropout: float = 0.3  # head dropout
    augment_strength: float = 1.0  # 0 turns augmentation off; 1 = flip, 15 degrees, jitter 0.2
    # Blur and JPEG recompression (Wang et al., CVPR 2020: sigma 0-3, quality 30-100 at 224+ px).
    # At the demo's 64 px a sigma of 3 would erase the picture: sigma up to 1 px is the same
    # blur relative to the image side as about 3.5 px at 224.
    blur_prob: float = 0.1  # chance of a Gaussian blur per training image; 0 turns it off
    blur_sigma_max: float = 1.0  # px; sigma drawn uniformly from [0.1, blur_sigma_max]
    jpeg_prob: float = 0.5  # chance of a JPEG re-encoding per training image; 0 turns it off
    jpeg_quality_min: int = 30  # quality drawn uniformly from [min, max]
    jpeg_quality_max: int = 100
    # Random resized crops keeping [crop_scale_min, 1] of the area (then back to image_size):
    # the scale changes a re-framed or resized upload brings. 1 turns it off.
    crop_scale_min: float = 1.0
    val_fraction: float = 0.1  # of the train split, stratified
    seed: int = 0
    grad_clip: float = 1.0  # max gradient norm; 0 disables
    amp: bool = True  # mixed precision, used only on a GPU
    architecture: str = ARCHITECTURE  # any timm model name; the checkpoint records it
    # Backbone start: "imagenet" (a package that ships the weights, else timm's hub), a local
    # path or gs:// URI of a weights file, or "none" (random). Unavailable weights stop the run.
    pretrained: str = "imagenet"

    def __post_init__(self) -> None:
        if not (0 <= self.blur_prob <= 1 and 0 <= self.jpeg_prob <= 1):
            raise ValueError("blur_prob and jpeg_prob must lie in [0, 1]")
        if self.blur_sigma_max < 0.1:
            raise ValueError("blur_sigma_max must be at least 0.1 px")
        if not 0 < self.crop_scale_min <= 1:
            raise ValueError("crop_scale_min must lie in (0, 1]")
        if not 1 <= self.jpeg_quality_min <= self.jpeg_quality_max <= 100:
            raise ValueError("need 1 <= jpeg_quality_min <= jpeg_quality_max <= 100")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        raw = dict(raw)
        if "pretrained_path" in raw:  # checkpoints trained before `pretrained` replaced it
            legacy = raw.pop("pretrained_path")
            raw.setdefault("pretrained", legacy or "none")
        return strict_dataclass(cls, raw, "training config")
