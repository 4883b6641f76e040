"""The one forward pass (common.inference) against the bare pipeline, on real photo crops."""

import numpy as np
import pytest
import torch

from common.checkpoint import ModelMeta, load_checkpoint
from common.image import prepare_image, resize_pixels
from common.inference import (
    auto_precision,
    autocast_dtype,
    cuda_autocast_dtype,
    forward_logits,
    forward_probabilities,
    model_input,
)
from common.model import to_model_input
from tests.conftest import TEST_IMAGE_SIZE, make_checkpoint
from tests.images import image_bytes

TEMPERATURE = 1.7


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """A real checkpoint (BatchNorm calibrated on photo crops) under temperature scaling."""
    path = make_checkpoint(tmp_path_factory.mktemp("inference") / "m.safetensors", "inf", seed=4)
    model, meta = load_checkpoint(path)
    calibration = {"method": "temperature", "temperature": TEMPERATURE}
    return model, ModelMeta(**{**meta.__dict__, "calibration": calibration})


def _pixels(side: int, count: int = 6) -> np.ndarray:
    return np.stack([prepare_image(image_bytes(i), side).pixels for i in range(count)])


def test_probabilities_are_the_bare_pipelines_with_the_calibration(calibrated):
    model, meta = calibrated
    pixels = _pixels(TEST_IMAGE_SIZE)
    with torch.no_grad():
        x = to_model_input(torch.from_numpy(pixels), meta.mean, meta.std, "cpu")
        expected = torch.sigmoid(model(x) / TEMPERATURE)
    got = forward_probabilities(model, meta, pixels)
    assert got.dtype == torch.float32 and got.device.type == "cpu"
    assert torch.allclose(got, expected, atol=1e-6)
    assert len(set(np.round(got.numpy(), 4))) > 1  # the images really differ
    logits = forward_logits(model, meta, pixels)
    assert torch.allclose(torch.sigmoid(logits / TEMPERATURE), got, atol=1e-7)


def test_numpy_torch_and_a_list_of_images_give_the_same_answer(calibrated):
    model, meta = calibrated
    pixels = _pixels(TEST_IMAGE_SIZE)
    from_numpy = forward_probabilities(model, meta, pixels)
    assert torch.equal(forward_probabilities(model, meta, torch.from_numpy(pixels)), from_numpy)
    assert torch.equal(forward_probabilities(model, meta, list(pixels)), from_numpy)


def test_pixels_of_another_side_are_resized_with_the_serving_resize(calibrated):
    model, meta = calibrated
    large = _pixels(48, count=3)
    resized = np.stack([resize_pixels(image, TEST_IMAGE_SIZE) for image in large])
    expected = forward_probabilities(model, meta, resized)
    assert torch.equal(forward_probabilities(model, meta, large), expected)
    assert torch.equal(forward_probabilities(model, meta, torch.from_numpy(large)), expected)
    # one batch may mix sides (images prepared before a swap and after it)
    mixed = [large[0], resized[1], large[2]]
    assert torch.equal(forward_probabilities(model, meta, mixed), expected)
    assert model_input(large, meta, "cpu").shape == (3, 3, TEST_IMAGE_SIZE, TEST_IMAGE_SIZE)


def test_one_autocast_policy_per_device():
    assert autocast_dtype("cpu") is None  # full precision on the CPU
    assert autocast_dtype(torch.device("cpu")) is None
    assert autocast_dtype("cpu", "bf16") is torch.bfloat16  # explicit: benchmarks compare
    assert autocast_dtype("cuda", "fp16") is torch.float16
    assert autocast_dtype("cuda", "fp32") is None
    assert auto_precision("cpu") == "fp32"  # the name the benchmarks report "auto" under
    if torch.cuda.is_available():
        expected = cuda_autocast_dtype(torch.cuda.get_device_capability())
        assert autocast_dtype("cuda") is expected


def test_a_gpu_without_bf16_tensor_cores_runs_fp16():
    # A T4 (7.5), production's GPU, passes torch.cuda.is_bf16_supported(): bf16 is emulated there
    assert cuda_autocast_dtype((7, 5)) is torch.float16
    assert cuda_autocast_dtype((7, 0)) is torch.float16  # V100
    assert cuda_autocast_dtype((8, 0)) is torch.bfloat16  # A100
    assert cuda_autocast_dtype((8, 9)) is torch.bfloat16  # L4
    assert cuda_autocast_dtype((9, 0)) is torch.bfloat16  # H100, H200


def test_an_explicit_precision_runs_under_autocast(calibrated):
    model, meta = calibrated
    pixels = _pixels(TEST_IMAGE_SIZE)
    full = forward_probabilities(model, meta, pixels)
    bf16 = forward_probabilities(model, meta, pixels, precision="bf16")
    assert bf16.dtype == torch.float32  # probabilities always come back as float32
    assert not torch.equal(bf16, full)  # bf16 arithmetic really ran
    assert torch.isfinite(bf16).all()
