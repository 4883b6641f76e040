"""The classifier: timm's EfficientNet-B0 backbone with a small binary head.

`build_model` is the only constructor; `gradcam_target_layer` is the only place that knows
where the last conv block is; `to_model_input` turns uint8 pixels into the normalised float
batch on the model's device (images travel as uint8 everywhere else).
"""

from __future__ import annotations

from collections.abc import Sequence

import timm
import torch
from torch import nn

__all__ = [
    "ARCHITECTURE",
    "PhotoClassifier",
    "build_model",
    "gradcam_target_layer",
    "to_model_input",
]

ARCHITECTURE = "efficientnet_b0"
HEAD_HIDDEN = 512  # units in the head's hidden layer
HEAD_DROPOUT = 0.3
# NHWC activations: EfficientNet's depthwise convolutions ran 1.3-2x faster this way here, on
# the CPU (training and inference, 1 or 2 threads) as on GPUs.
MEMORY_FORMAT = torch.channels_last


class PhotoClassifier(nn.Module):
    """Backbone features -> Linear(1280, 512) -> BN -> ReLU -> Dropout -> Linear(512, 1).

    `forward` returns one logit per image; sigmoid(logit) is P(AI-generated).
    """

    def __init__(
        self, backbone: nn.Module, hidden: int = HEAD_HIDDEN, dropout: float = HEAD_DROPOUT
    ):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(
            nn.Linear(backbone.num_features, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x)).squeeze(1)


def build_model(
    architecture: str = ARCHITECTURE,
    pretrained_path: str | None = None,
    hidden: int = HEAD_HIDDEN,
    dropout: float = HEAD_DROPOUT,
) -> PhotoClassifier:
    """A fresh classifier; ImageNet weights only from a local file, never fetched."""
    backbone = timm.create_model(
        architecture,
        pretrained=pretrained_path is not None,
        pretrained_cfg_overlay={"file": pretrained_path} if pretrained_path else None,
        num_classes=0,  # keep the pooled 1280 features; our head classifies
    )
    model = PhotoClassifier(backbone, hidden=hidden, dropout=dropout)
    return model.to(memory_format=MEMORY_FORMAT)


def gradcam_target_layer(model: PhotoClassifier) -> nn.Module:
    """The last conv block's output (conv_head -> bn2 with its activation) for Grad-CAM."""
    return model.backbone.bn2


def to_model_input(
    pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float], device: torch.device | str
) -> torch.Tensor:
    """uint8 NCHW pixels -> float, scaled to [0, 1] and normalised, on `device` (channels-last
    in memory, like the model)."""
    x = pixels.to(device, non_blocking=True).float().div_(255.0)
    mean_t = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return x.sub_(mean_t).div_(std_t).contiguous(memory_format=MEMORY_FORMAT)
