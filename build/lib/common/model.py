"""The classifier: a timm EfficientNet backbone (B0 by default) with a small binary head.

`build_model` is the only constructor (any timm architecture a checkpoint names, optionally
starting from `common.pretrained` weights); `normalisation` reads the backbone's own mean/std;
`gradcam_target_layer` is the only place that knows which block Grad-CAM reads; `to_model_input`
turns uint8 pixels into the normalised float batch on the model's device (images travel as
uint8 everywhere else).
"""

from __future__ import annotations

from collections.abc import Sequence

import timm
import torch
from torch import nn

from common.pretrained import PretrainedWeights

__all__ = [
    "ARCHITECTURE",
    "GRADCAM_MIN_CELLS",
    "PhotoClassifier",
    "build_model",
    "gradcam_target_layer",
    "normalisation",
    "to_model_input",
]

ARCHITECTURE = "efficientnet_b0"
HEAD_HIDDEN = 512  # units in the head's hidden layer
HEAD_DROPOUT = 0.3
# NHWC activations: EfficientNet's depthwise convolutions ran 1.3-2x faster this way here, on
# the CPU (training and inference, 1 or 2 threads) as on GPUs.
MEMORY_FORMAT = torch.channels_last
# Grad-CAM reads the deepest block whose map has at least this many cells a side: at 224 px the
# last block (7 x 7); at the demo's 64 px the stride-8 block (8 x 8), since the last is 2 x 2.
GRADCAM_MIN_CELLS = 7


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
    pretrained: PretrainedWeights | None = None,
    hidden: int = HEAD_HIDDEN,
    dropout: float = HEAD_DROPOUT,
) -> PhotoClassifier:
    """A fresh classifier on timm's `architecture`, its backbone from `pretrained` when given
    (see `common.pretrained.resolve_pretrained`); nothing is ever fetched here."""
    # num_classes=0 keeps the pooled features: our head classifies
    backbone = timm.create_model(architecture, pretrained=False, num_classes=0)
    if pretrained is not None:
        backbone.load_state_dict(pretrained.state_dict, strict=True)
    model = PhotoClassifier(backbone, hidden=hidden, dropout=dropout)
    return model.to(memory_format=MEMORY_FORMAT)


def normalisation(model: PhotoClassifier) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) the backbone's weights expect, from its timm pretrained config."""
    config = timm.data.resolve_data_config({}, model=model.backbone)
    return tuple(config["mean"]), tuple(config["std"])


def gradcam_target_layer(model: PhotoClassifier, image_size: int) -> nn.Module:
    """The deepest block whose activation map has >= GRADCAM_MIN_CELLS cells a side at
    `image_size` px: the last conv block (conv_head -> bn2) when it is that large, else the
    deepest stage of timm's `feature_info` that is (the shallowest one if none is)."""
    backbone = model.backbone
    if image_size // backbone.feature_info[-1]["reduction"] >= GRADCAM_MIN_CELLS:
        return backbone.bn2
    stages = [info for info in backbone.feature_info
              if image_size // info["reduction"] >= GRADCAM_MIN_CELLS]  # fmt: skip
    return backbone.get_submodule((stages or backbone.feature_info[:1])[-1]["module"])


def to_model_input(
    pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float], device: torch.device | str
) -> torch.Tensor:
    """uint8 NCHW pixels -> float, scaled to [0, 1] and normalised, on `device` (channels-last
    in memory, like the model)."""
    x = pixels.to(device, non_blocking=True).float().div_(255.0)
    mean_t = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return x.sub_(mean_t).div_(std_t).contiguous(memory_format=MEMORY_FORMAT)
