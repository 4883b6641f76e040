import pytest
import torch

from common.image import prepare_image
from common.model import (
    build_model,
    fold_batch_norms,
    gradcam_target_layer,
    normalisation,
    to_model_input,
)
from common.pretrained import resolve_pretrained
from tests.images import image_bytes

# timm 1.0.31 efficientnet_b0 without classifier (4,007,548) + our head (657,409)
EXPECTED_PARAMETERS = 4_664_957


def test_model_outputs_one_logit_per_image():
    model = build_model().eval()
    with torch.no_grad():
        logits = model(torch.randn(3, 3, 32, 32))
    assert logits.shape == (3,)


def test_parameter_count_is_backbone_plus_head():
    model = build_model()
    assert sum(p.numel() for p in model.parameters()) == EXPECTED_PARAMETERS
    assert [type(m).__name__ for m in model.head] == [
        "Linear",
        "BatchNorm1d",
        "ReLU",
        "Dropout",
        "Linear",
    ]
    assert model.head[0].in_features == 1280 and model.head[0].out_features == 512
    assert model.head[3].p == 0.3


@pytest.mark.parametrize(
    ("image_size", "module", "cells"),
    [
        (224, "bn2", 7),
        (256, "bn2", 8),
        (64, "blocks.2", 8),
        (112, "blocks.4", 7),
        (32, "blocks.1", 8),
    ],
)
def test_gradcam_reads_the_deepest_block_with_at_least_7_cells_a_side(image_size, module, cells):
    model = build_model().eval()
    layer = gradcam_target_layer(model, image_size)
    assert layer is model.backbone.get_submodule(module)
    seen = []
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    with torch.no_grad():
        model(torch.zeros(1, 3, image_size, image_size))
    handle.remove()
    assert tuple(seen[0][-2:]) == (cells, cells)


def test_normalisation_is_the_backbones_own():
    assert normalisation(build_model()) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert normalisation(build_model("tf_efficientnet_lite0")) == ((0.5,) * 3, (0.5,) * 3)


def test_normalisation_happens_on_the_model_side():
    pixels = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    x = to_model_input(pixels, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "cpu")
    assert x.dtype == torch.float32
    assert torch.allclose(x, torch.full_like(x, 2.0))


def test_pretrained_backbone_weights_come_from_a_local_file(tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(7)
    source = timm.create_model("efficientnet_b0", num_classes=1000)
    path = tmp_path / "efficientnet_b0.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))

    model = build_model(pretrained=resolve_pretrained(str(path), "efficientnet_b0"))
    for name, value in model.backbone.state_dict().items():
        assert torch.equal(value, source.state_dict()[name]), name


def _with_running_statistics(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Trained-looking BatchNorm statistics, so that folding them in is not a no-op."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
            features = module.num_features
            module.running_mean.copy_(torch.rand(features, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(features, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(features, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(features, generator=generator) - 0.5)
    return model.eval()


def _norms(model: torch.nn.Module) -> int:
    return sum(isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("architecture", ["efficientnet_b0", "tf_efficientnet_lite0", "resnet18"])
def test_folded_batch_norms_give_the_same_logits_with_no_norm_left(architecture):
    """Every BatchNorm after a convolution (timm's BatchNormAct2d, the 'same'-padded convs of
    the TF ports) or a linear layer (our head) folds in; real photo pixels, 1e-4 at most."""
    model = _with_running_statistics(build_model(architecture), seed=3)
    folded = fold_batch_norms(model)
    pixels = torch.stack(
        [torch.from_numpy(prepare_image(image_bytes(i), 64).pixels) for i in range(4)]
    )
    x = to_model_input(pixels, *normalisation(model), "cpu")
    with torch.inference_mode():
        expected, got = model(x), folded(x)
    assert _norms(model) > 0 and _norms(folded) == 0  # the model itself is left as it was
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4), (got - expected).abs().max()


def test_a_norm_that_does_not_only_follow_a_plain_layer_stays():
    """A weight-standardised conv (timm's StdConv2d) rescales its weights on every pass, and a
    conv whose output is also read elsewhere must keep it unnormalised: neither folds."""
    from timm.layers import StdConv2d

    standardised = torch.nn.Sequential(StdConv2d(3, 4, 3), torch.nn.BatchNorm2d(4))

    class Branching(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.norm = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            return self.norm(y) + y

    for model in (standardised, Branching()):
        model = _with_running_statistics(model, seed=4)
        folded = fold_batch_norms(model)
        x = torch.randn(2, 3, 16, 16)
        assert _norms(folded) == 1
        assert torch.allclose(folded(x), model(x), atol=1e-6)


def test_an_untraceable_model_is_served_unfolded(caplog):
    class DataDependent(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.norm = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)

        def forward(self, x):
            return self.norm(self.conv(x)) if x.sum() > 0 else x

    model = _with_running_statistics(DataDependent(), seed=5)
    folded = fold_batch_norms(model)
    x = torch.rand(1, 3, 8, 8)
    assert type(folded) is DataDependent and folded is not model
    assert torch.equal(folded(x), model(x))
    assert "not traceable, BatchNorms left unfolded" in caplog.text
