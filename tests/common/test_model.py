import pytest
import torch

from common.model import build_model, gradcam_target_layer, normalisation, to_model_input
from common.pretrained import resolve_pretrained

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
