"""The offline demo data set: real photo crops vs. crops re-drawn by a small neural generator.

A stand-in for CIFAKE that needs no network. "Real" images are random crops of the photographs
shipped inside scikit-image, scikit-learn and matplotlib. "AI-generated" images are other crops
passed through a convolutional autoencoder (strided-conv encoder, nearest-upsampling decoder,
trained briefly on the same photos) with noise in its latent code, so they carry the smoothing
and upsampling traces of a generator. Everything follows from `seed`; the output uses CIFAKE's
layout (`train|test/REAL|FAKE/*.png`). Needs the `demo` extra.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from common.image import resize_for_model

__all__ = ["DemoConfig", "build_demo_dataset", "load_source_photos"]

SPLITS = ("train", "test")
CLASS_DIRS = ("REAL", "FAKE")  # CIFAKE's folder names: index 0 real, 1 AI-generated


@dataclass(frozen=True)
class DemoConfig:
    seed: int = 0
    size: int = 64  # px, side of every saved image
    train_per_class: int = 400
    test_per_class: int = 100
    generator_steps: int = 200  # autoencoder optimisation steps ("trained briefly")
    generator_batch: int = 32
    latent_noise: float = 0.05  # std of the noise added to the latent code
    min_crop_fraction: float = 0.15  # crop side as a fraction of the photo's short side
    max_crop_fraction: float = 0.6


class _Generator(nn.Module):
    """A small convolutional autoencoder: 3 strided convs down, 3 nearest-upsample convs up."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 16, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 4, stride=2, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.decoder = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(32, 16, 3, padding=1), nn.ReLU(),
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(16, 3, 3, padding=1),
            nn.Sigmoid(),
        )  # fmt: skip

    def forward(self, x: torch.Tensor, noise: float = 0.0) -> torch.Tensor:
        z = self.encoder(x)
        if noise:
            z = z + noise * torch.randn_like(z)
        return self.decoder(z)


def load_source_photos() -> dict[str, Image.Image]:
    """The real photographs that ship inside the demo extra's packages, as RGB images."""
    import matplotlib
    import skimage.data
    import sklearn.datasets

    photos: dict[str, Image.Image] = {}
    for name in (
        "astronaut", "camera", "cat", "coffee", "coins", "moon", "rocket", "brick", "grass",
        "gravel", "immunohistochemistry", "hubble_deep_field", "retina", "clock", "text",
    ):  # fmt: skip
        photos[name] = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    photos["motorcycle"] = Image.fromarray(skimage.data.stereo_motorcycle()[0]).convert("RGB")
    sklearn_images = Path(sklearn.datasets.__file__).parent / "images"
    mpl_data = Path(matplotlib.get_data_path()) / "sample_data"
    for path in (sklearn_images / "china.jpg", sklearn_images / "flower.jpg",
                 mpl_data / "grace_hopper.jpg"):  # fmt: skip
        with Image.open(path) as image:
            photos[path.stem] = image.convert("RGB")
    return photos


def build_demo_dataset(out_dir: Path | str, config: DemoConfig = DemoConfig()) -> dict:
    """Write the data set under `out_dir` (replacing it) and return its manifest."""
    out = Path(out_dir)
    photos = list(load_source_photos().items())
    rng = np.random.default_rng(config.seed)
    with _single_thread_torch():
        torch.manual_seed(config.seed)
        generator = _Generator()
        final_loss = _train_generator(generator, photos, rng, config)
        if out.exists():
            shutil.rmtree(out)
        counts = {}
        for split, per_class in (
            ("train", config.train_per_class),
            ("test", config.test_per_class),
        ):
            real = _random_crops(photos, per_class, rng, config)
            fake = _generate(generator, _random_crops(photos, per_class, rng, config), config)
            for class_dir, images in zip(CLASS_DIRS, (real, fake), strict=True):
                folder = out / split / class_dir
                folder.mkdir(parents=True)
                for i, pixels in enumerate(images):
                    Image.fromarray(pixels).save(
                        folder / f"{split}_{class_dir.lower()}_{i:05d}.png"
                    )
                counts[f"{split}/{class_dir}"] = len(images)
    manifest = {
        "description": "Offline demo set: photo crops (REAL) vs autoencoder re-drawings (FAKE)",
        "config": asdict(config),
        "sources": [name for name, _ in photos],
        "counts": counts,
        "generator_final_mse": round(final_loss, 6),
    }
    (out / "demo_manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def _random_crops(
    photos: list[tuple[str, Image.Image]], count: int, rng: np.random.Generator, config: DemoConfig
) -> list[np.ndarray]:
    """`count` random square crops (HWC uint8 at `config.size`), photos drawn uniformly."""
    crops = []
    for _ in range(count):
        _, photo = photos[rng.integers(len(photos))]
        short = min(photo.size)
        fraction = rng.uniform(config.min_crop_fraction, config.max_crop_fraction)
        side = max(config.size, int(short * fraction))
        side = min(side, short)
        left = int(rng.integers(0, photo.width - side + 1))
        top = int(rng.integers(0, photo.height - side + 1))
        crop = photo.crop((left, top, left + side, top + side))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        crops.append(resize_for_model(crop, config.size).transpose(1, 2, 0))
    return crops


def _to_tensor(crops: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().div(255.0)


def _train_generator(
    generator: _Generator,
    photos: list[tuple[str, Image.Image]],
    rng: np.random.Generator,
    config: DemoConfig,
) -> float:
    optimizer = torch.optim.Adam(generator.parameters(), lr=2e-3)
    loss = torch.tensor(0.0)
    for _ in range(config.generator_steps):
        batch = _to_tensor(_random_crops(photos, config.generator_batch, rng, config))
        loss = nn.functional.mse_loss(generator(batch), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return float(loss.detach())


@torch.no_grad()
def _generate(
    generator: _Generator, crops: list[np.ndarray], config: DemoConfig
) -> list[np.ndarray]:
    generator.eval()
    out = generator(_to_tensor(crops), noise=config.latent_noise)
    pixels = out.mul(255.0).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    return list(pixels)


@contextmanager
def _single_thread_torch() -> Iterator[None]:
    """One thread makes CPU convolutions bit-for-bit repeatable for a seed."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def main(argv: list[str] | None = None) -> None:
    defaults = DemoConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/demo", help="output folder (replaced)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--size", type=int, default=defaults.size, help="image side, px")
    parser.add_argument("--train-per-class", type=int, default=defaults.train_per_class)
    parser.add_argument("--test-per-class", type=int, default=defaults.test_per_class)
    parser.add_argument("--generator-steps", type=int, default=defaults.generator_steps)
    args = parser.parse_args(argv)
    config = DemoConfig(
        seed=args.seed,
        size=args.size,
        train_per_class=args.train_per_class,
        test_per_class=args.test_per_class,
        generator_steps=args.generator_steps,
    )
    manifest = build_demo_dataset(args.out, config)
    print(json.dumps({"out": args.out, **manifest["counts"],
                      "generator_final_mse": manifest["generator_final_mse"]}))  # fmt: skip


if __name__ == "__main__":
    main()
