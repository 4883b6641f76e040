"""Robustness conditions, blur/JPEG augmentation and the temperature fit, on real image bytes."""

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from common.image import prepare_image
from tests.images import crop, encode
from train.calibration import fit_temperature
from train.config import TrainConfig
from train.data import ImageFileDataset, LabelledFiles
from train.loop import train_transform
from train.robustness import CONDITIONS, PNG_TO_JPEG_QUALITY, degrade

PHOTO = crop(0, (96, 72))


def _quantization(quality: int) -> dict:
    """Pillow's JPEG quantisation tables at `quality` (they depend on the quality only)."""
    return Image.open(io.BytesIO(encode(crop(5), "JPEG", quality=quality))).quantization


@pytest.mark.parametrize(("condition", "quality"), [("jpeg_q90", 90), ("jpeg_q75", 75),
                                                    ("jpeg_q50", 50)])  # fmt: skip
@pytest.mark.parametrize("source", ["PNG", "JPEG", "WEBP"])
def test_jpeg_conditions_reencode_any_source_at_their_quality(condition, quality, source):
    out = Image.open(io.BytesIO(degrade(encode(PHOTO, source), condition)))
    assert out.format == "JPEG"
    assert out.size == (96, 72)
    assert out.quantization == _quantization(quality)


@pytest.mark.parametrize("source", ["PNG", "JPEG", "WEBP"])
def test_half_size_halves_both_sides_in_the_source_format(source):
    out = Image.open(io.BytesIO(degrade(encode(PHOTO, source), "half_size")))
    assert (out.format, out.size) == (source, (48, 36))


def test_center_crop_keeps_the_central_80_percent_losslessly():
    out = Image.open(io.BytesIO(degrade(encode(PHOTO, "PNG"), "center_crop_80")))
    assert (out.format, out.size) == ("PNG", (77, 58))
    left, top = (96 - 77) // 2, (72 - 58) // 2
    expected = np.asarray(PHOTO.crop((left, top, left + 77, top + 58)))
    assert np.array_equal(np.asarray(out.convert("RGB")), expected)


def test_png_to_jpeg_converts_png_only():
    png = encode(PHOTO, "PNG")
    out = Image.open(io.BytesIO(degrade(png, "png_to_jpeg")))
    assert (out.format, out.size) == ("JPEG", (96, 72))
    assert out.quantization == _quantization(PNG_TO_JPEG_QUALITY)
    for source in ("JPEG", "WEBP"):
        data = encode(PHOTO, source)
        assert degrade(data, "png_to_jpeg") is data


def test_clean_is_the_file_as_stored_and_unknown_conditions_are_refused():
    data = encode(PHOTO, "PNG")
    assert degrade(data, "clean") is data
    with pytest.raises(ValueError, match="unknown robustness condition 'blur'"):
        degrade(data, "blur")


def test_a_degraded_file_takes_the_serving_decode_path(tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(encode(PHOTO, "PNG"))
    files = LabelledFiles((str(path),), (1,))
    for condition in ("clean", *CONDITIONS):
        pixels, label = ImageFileDataset(files, 32, condition=condition)[0]
        expected = prepare_image(degrade(path.read_bytes(), condition), 32).pixels
        assert np.array_equal(pixels.numpy(), expected), condition
        assert float(label) == 1.0


def test_augmentation_settings_reach_the_transforms():
    cfg = TrainConfig(augment_strength=0, image_size=48, crop_scale_min=0.64, blur_prob=0.3,
                      blur_sigma_max=1.5, jpeg_prob=0.7, jpeg_quality_min=40,
                      jpeg_quality_max=90)  # fmt: skip
    steps = train_transform(cfg).transforms
    assert [type(s) for s in steps] == [v2.RandomResizedCrop, v2.RandomApply, v2.RandomApply]
    assert steps[0].size == (48, 48) and steps[0].scale == (0.64, 1.0)
    (blur,), (jpeg,) = steps[1].transforms, steps[2].transforms
    assert steps[1].p == 0.3 and steps[2].p == 0.7
    assert isinstance(blur, v2.GaussianBlur) and blur.sigma == [0.1, 1.5]
    assert blur.kernel_size == (11, 11)  # +-3 sigma of the widest blur
    assert isinstance(jpeg, v2.JPEG) and list(jpeg.quality) == [40, 90]
    off = TrainConfig(augment_strength=0, crop_scale_min=1, blur_prob=0, jpeg_prob=0)
    assert isinstance(train_transform(off), v2.Identity)


def test_jpeg_augmentation_recompresses_training_pixels():
    pixels = torch.from_numpy(prepare_image(encode(PHOTO, "PNG"), 64).pixels)
    always = train_transform(TrainConfig(augment_strength=0, blur_prob=0, jpeg_prob=1.0,
                                         jpeg_quality_min=30, jpeg_quality_max=30))  # fmt: skip
    out = always(pixels)
    assert out.dtype == torch.uint8 and out.shape == pixels.shape
    assert not torch.equal(out, pixels)


@pytest.mark.parametrize("field", ["blur_prob", "jpeg_prob"])
def test_probabilities_outside_0_1_are_refused(field):
    with pytest.raises(ValueError, match="must lie in"):
        TrainConfig(**{field: 1.5})


def test_temperature_fit_recovers_the_temperature_of_the_data():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, 20_000)
    labels = rng.random(20_000) < 1 / (1 + np.exp(-true_logits))
    fitted = fit_temperature(true_logits * 3.0, labels)  # over-confident by 3x
    assert fitted["method"] == "temperature"
    assert fitted["temperature"] == pytest.approx(3.0, rel=0.05)
    assert fit_temperature(true_logits[:10], np.ones(10)) == {}  # one class: identity


def test_temperature_stays_finite_on_a_perfectly_separated_split():
    logits = np.array([-6.0, -4.0, -3.0, 3.0, 5.0, 8.0])
    fitted = fit_temperature(logits, np.array([0, 0, 0, 1, 1, 1]))
    probabilities = 1 / (1 + np.exp(-logits / fitted["temperature"]))
    assert 0.05 < fitted["temperature"] < 20  # inside the search bounds, not at the edge
    assert probabilities.max() < 0.99 and probabilities.min() > 0.01
