"""Labelled images from a CIFAKE-layout folder (`train|test/REAL|FAKE`), local or `gs://`.

Every image goes through `common.image` (the serving path) to uint8 pixels at the model's side;
augmentation for training works on those uint8 tensors, so resizing is never re-implemented.
The fingerprint hashes the file list and contents, and is recorded with every run.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import fsspec
import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from common.image import ImageLimits, decode_image, resize_for_model
from train.robustness import degrade

__all__ = [
    "CLASS_DIRS",
    "ImageFileDataset",
    "LabelledFiles",
    "augmentation",
    "data_fingerprint",
    "list_split",
    "split_validation",
]

CLASS_DIRS = ("REAL", "FAKE")  # folder name -> label index (0 real, 1 AI-generated)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
# Training images may be any size the serving path accepts, but never bigger.
_TRAIN_LIMITS = ImageLimits()


@dataclass(frozen=True)
class LabelledFiles:
    """Parallel lists of file URIs and labels (0 real, 1 AI-generated)."""

    paths: tuple[str, ...]
    labels: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: Sequence[int]) -> LabelledFiles:
        return LabelledFiles(
            tuple(self.paths[i] for i in indices), tuple(self.labels[i] for i in indices)
        )


def list_split(root: str, split: str) -> LabelledFiles:
    """All images of `root/split/{REAL,FAKE}`, sorted, as URIs fsspec can open."""
    fs, base = fsspec.core.url_to_fs(root)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    prefix = "" if protocol in ("file", "local") else f"{protocol}://"
    paths, labels = [], []
    for label, class_dir in enumerate(CLASS_DIRS):
        folder = f"{base.rstrip('/')}/{split}/{class_dir}"
        if not fs.isdir(folder):
            raise FileNotFoundError(f"missing folder {prefix}{folder} (expected CIFAKE layout)")
        found = sorted(p for p in fs.ls(folder, detail=False) if p.lower().endswith(IMAGE_SUFFIXES))
        paths += [prefix + p for p in found]
        labels += [label] * len(found)
    return LabelledFiles(tuple(paths), tuple(labels))


def split_validation(
    files: LabelledFiles, fraction: float, seed: int
) -> tuple[LabelledFiles, LabelledFiles]:
    """A stratified (train, validation) split of `files`, fixed by `seed`."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(files.labels)
    val_idx: list[int] = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rng.shuffle(members)
        val_idx += members[: max(1, round(len(members) * fraction))].tolist()
    val_set = set(val_idx)
    train_idx = [i for i in range(len(files)) if i not in val_set]
    return files.subset(train_idx), files.subset(sorted(val_idx))


def data_fingerprint(*file_sets: LabelledFiles) -> str:
    """SHA-256 over every (name, label, content hash), in order: changes when any file does."""
    digest = hashlib.sha256()
    for files in file_sets:
        for path, label in zip(files.paths, files.labels, strict=True):
            with fsspec.open(path, "rb") as f:
                content = hashlib.sha256(f.read()).hexdigest()
            digest.update(f"{path.rsplit('/', 3)[-3:]}|{label}|{content}\n".encode())
    return digest.hexdigest()


def augmentation(
    strength: float,
    crop: tuple[int, float] | None = None,
    blur_prob: float = 0.0,
    blur_sigma: tuple[float, float] = (0.1, 1.0),
    jpeg_prob: float = 0.0,
    jpeg_quality: tuple[int, int] = (30, 100),
) -> v2.Transform:
    """On uint8 CHW tensors: flip, rotation up to 15 degrees x strength and colour jitter; with
    `crop` = (side, smallest area fraction) a random resized crop back to `side`; then
    (Wang et al., CVPR 2020) Gaussian blur with probability `blur_prob` (sigma drawn from
    `blur_sigma`, px) and JPEG recompression with probability `jpeg_prob` (quality drawn from
    `jpeg_quality`). Everything off (strength 0, probabilities 0) is the identity."""
    steps: list[v2.Transform] = []
    if strength > 0:
        jitter = 0.2 * strength
        steps += [
            v2.RandomHorizontalFlip(),
            v2.RandomRotation(15 * strength, interpolation=v2.InterpolationMode.BILINEAR),
            v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter),
        ]
    if crop is not None:
        side, scale_min = crop
        steps.append(v2.RandomResizedCrop(side, scale=(scale_min, 1.0), antialias=True))
    if blur_prob > 0:
        kernel = 2 * math.ceil(3 * blur_sigma[1]) + 1  # +-3 sigma of the widest blur
        steps.append(v2.RandomApply([v2.GaussianBlur(kernel, sigma=blur_sigma)], p=blur_prob))
    if jpeg_prob > 0:
        steps.append(v2.RandomApply([v2.JPEG(quality=jpeg_quality)], p=jpeg_prob))
    return v2.Compose(steps) if steps else v2.Identity()


class ImageFileDataset(Dataset):
    """(uint8 CHW pixels, float label) pairs; `transform` runs on the uint8 tensor.

    `condition` (train.robustness.CONDITIONS) degrades each file's bytes before decoding, as a
    marketplace re-encodes an upload; "clean" leaves them as stored.
    """

    def __init__(
        self,
        files: LabelledFiles,
        image_size: int,
        transform: v2.Transform | None = None,
        condition: str = "clean",
    ):
        self.files = files
        self.image_size = image_size
        self.transform = transform
        self.condition = condition

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        with fsspec.open(self.files.paths[index], "rb") as f:
            data = degrade(f.read(), self.condition)
        image = decode_image(data, _TRAIN_LIMITS, draft_size=self.image_size)
        pixels = torch.from_numpy(resize_for_model(image, self.image_size))
        if self.transform is not None:
            pixels = self.transform(pixels)
        return pixels, torch.tensor(float(self.files.labels[index]))
