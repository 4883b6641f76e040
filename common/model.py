"""The classifier: a timm EfficientNet backbone (B0 by default) with a small binary head.

`build_model` is the only constructor (any timm architecture a checkpoint names, optionally
starting from `common.pretrained` weights); `normalisation` reads the backbone's own mean/std;
`gradcam_target_layer` is the only place that knows which block Grad-CAM reads; `to_model_input`
turns uint8 pixels into the normalised float batch on the model's device (images travel as
uint8 everywhere else); `fold_batch_norms` is the served form of a model, each BatchNorm folded
into the convolution or linear layer before it.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

import timm
import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from common.pretrained import PretrainedWeights

__all__ = [
    "ARCHITECTURE",
    "GRADCAM_MIN_CELLS",
    "PhotoClassifier",
    "build_model",
    "fold_batch_norms",
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

# Layers whose arithmetic is affine in their weights, so that a BatchNorm after them folds in
# (exact types: timm's StdConv2d, also a Conv2d, standardises its weights and must not fold),
# and the norms that fold: affine normalisation, then (timm's) dropout and activation.
_FOLDABLE_CONVS = (nn.Conv2d, timm.layers.Conv2dSame)
_FOLDABLE_NORMS_2D = (nn.BatchNorm2d, timm.layers.BatchNormAct2d)

logger = logging.getLogger(__name__)


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


class _LayerTracer(fx.Tracer):
    """torch.fx's tracer, with every convolution, linear and batch-norm layer a leaf: timm's
    subclasses (`Conv2dSame`, `BatchNormAct2d`) too, so that each shows as one module call."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        leaf = isinstance(module, nn.Conv2d | nn.Linear | nn.BatchNorm1d | nn.BatchNorm2d)
        return leaf or super().is_leaf_module(module, qualified_name)


def fold_batch_norms(model: nn.Module) -> nn.Module:
    """An inference-only copy of `model` (eval mode): each BatchNorm whose only input is a
    convolution (or a linear layer) folded into that layer's weights, where nothing else reads
    the layer's output, and the layers that pass their input through in eval mode (timm's
    `Identity` placeholders, dropout) left out. The same function to within float rounding
    (probabilities within 6e-6 here) with far fewer module calls: EfficientNet's forward took
    15-20 % less CPU at batches of 1-16 on this CPU (docs/performance.md). timm's
    `BatchNormAct2d` keeps its activation. Pairs are found in the traced graph (torch.fx), not
    by layer names; a model that cannot be traced is returned unfolded (logged)."""
    model = copy.deepcopy(model).eval()
    try:
        graph = _LayerTracer().trace(model)
    except Exception as exc:  # data-dependent control flow: serve it unfolded
        logger.warning("%s: not traceable, BatchNorms left unfolded: %s", type(model).__name__, exc)
        return model
    folded = fx.GraphModule(model, graph, class_name=type(model).__name__)
    layers = dict(folded.named_modules())
    for node in list(graph.nodes):
        module = layers.get(node.target) if node.op == "call_module" else None
        source = node.args[0] if module is not None else None
        if type(module) in (nn.Identity, nn.Dropout):
            node.replace_all_uses_with(source)
            graph.erase_node(node)
        elif _folds_into(module, source, layers):
            layer = layers[source.target]
            fuse = fuse_linear_bn_eval if isinstance(layer, nn.Linear) else fuse_conv_bn_eval
            folded.add_submodule(source.target, fuse(layer, module))
            if (rest := _after_norm(module)) is not None:
                folded.add_submodule(node.target, rest)
            else:
                node.replace_all_uses_with(source)
                graph.erase_node(node)
    folded.delete_all_unused_submodules()
    folded.recompile()
    return folded.to(memory_format=MEMORY_FORMAT)


def _after_norm(norm: nn.Module) -> nn.Module | None:
    """What is left of a folded norm: timm's BatchNormAct2d normalises, then drops and acts;
    the layers among those that do something in eval mode, or None."""
    rest = [layer for layer in (getattr(norm, "drop", None), getattr(norm, "act", None))
            if layer is not None and type(layer) not in (nn.Identity, nn.Dropout)]  # fmt: skip
    return (nn.Sequential(*rest) if len(rest) > 1 else rest[0]) if rest else None


def _folds_into(norm: nn.Module | None, source: object, layers: dict[str, nn.Module]) -> bool:
    """Whether `norm` is a BatchNorm with running statistics whose one input is the output of
    a layer it can fold into, which nothing else reads."""
    if not (isinstance(source, fx.Node) and source.op == "call_module" and len(source.users) == 1):
        return False
    layer = layers[source.target]
    if type(norm) in _FOLDABLE_NORMS_2D:
        return norm.track_running_stats and type(layer) in _FOLDABLE_CONVS
    return type(norm) is nn.BatchNorm1d and norm.track_running_stats and type(layer) is nn.Linear
