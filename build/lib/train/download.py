"""Data sources, each written out in CIFAKE's layout (`train|test/REAL|FAKE`) so that every later
stage reads one format: CIFAKE itself (downloaded), the Hugging Face data set
`date3k2/raw_real_fake_images` (the `hf` extra), or the offline demo set (`train.demo_data`).

The output may be a local folder (replaced) or `gs://…` (gcsfs). `python -m train.download`
is the DVC `download` stage; a source that cannot be reached exits EXIT_SOURCE_UNAVAILABLE with
a message saying what to do instead.
"""

from __future__ import annotations

import argparse
import io
import re
import shutil
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import fsspec
from PIL import Image

from common.image import UnsupportedImageFormat, sniff_format
from train.data import CLASS_DIRS

__all__ = [
    "CIFAKE_URL",
    "EXIT_SOURCE_UNAVAILABLE",
    "HF_DATASET",
    "SourceUnavailable",
    "class_dirs_for_labels",
    "download_cifake",
    "download_hf",
    "main",
    "write_hf_dataset",
]

# Kaggle's public download of CIFAKE (Bird & Lotfi, 2024): a zip of train|test/REAL|FAKE JPEGs.
CIFAKE_URL = (
    "https://www.kaggle.com/api/v1/datasets/download/"
    "birdy654/cifake-real-and-ai-generated-synthetic-images"
)
HF_DATASET = "date3k2/raw_real_fake_images"
EXIT_SOURCE_UNAVAILABLE = 5  # exit status when the source cannot be reached
_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}
_FAKE_WORDS = ("fake", "ai", "generated", "synthetic")  # label-name words meaning AI-generated
_SPLITS = ("train", "test")


class SourceUnavailable(RuntimeError):
    """The data source cannot be reached (no network, no such data set, a broken download)."""


def download_cifake(out: str, url: str = CIFAKE_URL, timeout_s: float = 60) -> dict[str, int]:
    """Download and unpack CIFAKE into `out`; returns the image count per split/class."""
    if not url.startswith(("https://", "http://", "file://")):
        raise ValueError(f"unsupported URL scheme: {url}")
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "cifake.zip"
        try:
            # the scheme is checked above: http(s) or a local file:// archive
            with (
                urllib.request.urlopen(url, timeout=timeout_s) as response,  # noqa: S310  # nosec B310
                open(archive, "wb") as f,
            ):
                shutil.copyfileobj(response, f, length=1 << 20)
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(Path(tmp) / "unpacked")
        except (OSError, zipfile.BadZipFile) as exc:
            raise SourceUnavailable(
                f"cannot download CIFAKE from {url}: {exc}. It needs network access to that "
                "address; otherwise fetch the archive elsewhere and pass --url file:///path.zip, "
                "or train offline on the demo set (--source demo)."
            ) from None
        root = _cifake_root(Path(tmp) / "unpacked")
        with _staged(out) as local:
            for split in _SPLITS:
                shutil.copytree(root / split, local / split)
            return _counts(local)


def download_hf(
    out: str,
    name: str = HF_DATASET,
    revision: str = "main",
    test_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, int]:
    """Load the Hugging Face data set `name` at `revision` (a commit hash pins it) and write it
    into `out` (see `write_hf_dataset`)."""
    try:
        import datasets
    except ImportError:
        raise SourceUnavailable(
            "the Hugging Face source needs the `hf` extra: pip install 'product-photo-detector[hf]'"
        ) from None
    try:
        dataset = datasets.load_dataset(name, revision=revision)
    except OSError as exc:  # ConnectionError offline, FileNotFoundError for unknown names
        raise SourceUnavailable(
            f"cannot load the Hugging Face data set {name!r}: {exc}. It needs network access "
            "to huggingface.co (or a copy in the local cache, HF_HOME); offline, train on the "
            "demo set (--source demo)."
        ) from None
    return write_hf_dataset(dataset, out, test_fraction, seed)


def write_hf_dataset(
    dataset: Any, out: str, test_fraction: float = 0.2, seed: int = 0
) -> dict[str, int]:
    """Write a `datasets.DatasetDict` with an Image column and a ClassLabel column to `out`.

    Which label is real and which AI-generated is read from the ClassLabel's names. Splits other
    than train and test join train (validation is re-split from train with a fixed seed); without
    a test split, `test_fraction` of train becomes test (stratified, fixed by `seed`).
    """
    import datasets

    splits = dict(dataset)
    features = next(iter(splits.values())).features
    label_column = _column_of(features, datasets.ClassLabel, "a ClassLabel (the label)")
    image_column = _column_of(features, datasets.Image, "an Image")
    class_dirs = class_dirs_for_labels(features[label_column].names)
    if "test" not in splits:
        parts = splits.pop("train").train_test_split(
            test_size=test_fraction, seed=seed, stratify_by_column=label_column
        )
        splits = {**splits, "train": parts["train"], "test": parts["test"]}
    train = datasets.concatenate_datasets([s for n, s in splits.items() if n != "test"])
    with _staged(out) as local:
        for split, data in (("train", train), ("test", splits["test"])):
            data = data.cast_column(image_column, datasets.Image(decode=False))
            for index, row in enumerate(data):
                class_dir = class_dirs[row[label_column]]
                payload, ext = _image_bytes(row[image_column])
                folder = local / split / class_dir
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{split}_{class_dir.lower()}_{index:06d}{ext}").write_bytes(payload)
        return _counts(local)


def class_dirs_for_labels(names: list[str]) -> dict[int, str]:
    """Label index -> CLASS_DIRS folder, read from the label names ("real", "FAKE", "ai_gen…")."""
    mapping = {}
    for index, name in enumerate(names):
        words = set(re.split(r"[^a-z]+", name.lower()))
        is_real, is_fake = "real" in words, bool(words & set(_FAKE_WORDS))
        if is_real == is_fake:
            raise ValueError(f"cannot tell whether label {name!r} is real or AI-generated "
                             f"(labels: {names})")  # fmt: skip
        mapping[index] = CLASS_DIRS[0] if is_real else CLASS_DIRS[1]
    if sorted(mapping.values()) != sorted(CLASS_DIRS):
        raise ValueError(f"expected one real and one AI-generated label, got {names}")
    return mapping


def _column_of(features: dict, kind: type, what: str) -> str:
    found = [name for name, feature in features.items() if isinstance(feature, kind)]
    if len(found) != 1:
        raise ValueError(f"expected one column holding {what}; the features are {features}")
    return found[0]


def _image_bytes(value: dict[str, Any]) -> tuple[bytes, str]:
    """The file's own bytes and extension; formats serving refuses are re-encoded as PNG."""
    data = value.get("bytes")
    if data is None:
        with fsspec.open(value["path"], "rb") as f:
            data = f.read()
    try:
        return data, _EXTENSIONS[sniff_format(data)]
    except UnsupportedImageFormat:
        with Image.open(io.BytesIO(data)) as image:
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="PNG")
        return buffer.getvalue(), ".png"


def _cifake_root(unpacked: Path) -> Path:
    for candidate in (unpacked, *sorted(p for p in unpacked.rglob("*") if p.is_dir())):
        if all((candidate / s / c).is_dir() for s in _SPLITS for c in CLASS_DIRS):
            return candidate
    raise SourceUnavailable("the downloaded archive holds no train|test/REAL|FAKE folders")


def _counts(root: Path) -> dict[str, int]:
    return {
        f"{s}/{c}": sum(1 for p in (root / s / c).iterdir() if p.is_file())
        for s in _SPLITS
        for c in CLASS_DIRS
    }


@contextmanager
def _staged(out: str) -> Iterator[Path]:
    """A local folder to write into; moved to `out` (local, replaced) or uploaded (gs://)."""
    remote = "://" in out
    parent = Path(tempfile.gettempdir()) if remote else Path(out).resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent, prefix=".download-") as tmp:
        staging = Path(tmp) / "data"
        staging.mkdir()
        yield staging
        if remote:
            fs, path = fsspec.core.url_to_fs(out)
            fs.put(str(staging), path.rstrip("/"), recursive=True)
        else:
            shutil.rmtree(out, ignore_errors=True)
            staging.rename(out)


def main(argv: list[str] | None = None) -> int:
    from train.demo_data import DemoConfig

    demo = DemoConfig()
    parser = argparse.ArgumentParser(
        description="Write a data set in CIFAKE layout (train|test/REAL|FAKE) to a folder or "
        f"gs://; exits {EXIT_SOURCE_UNAVAILABLE} when the source cannot be reached."
    )
    parser.add_argument("--source", choices=("demo", "cifake", "hf"), default="demo")
    parser.add_argument("--out", required=True, help="output folder (replaced) or gs:// URI")
    parser.add_argument("--seed", type=int, default=demo.seed, help="demo set; hf test split")
    group = parser.add_argument_group("demo (offline)")
    group.add_argument("--size", type=int, default=demo.size, help="image side, px")
    group.add_argument("--train-per-class", type=int, default=demo.train_per_class)
    group.add_argument("--test-per-class", type=int, default=demo.test_per_class)
    group.add_argument("--generator-steps", type=int, default=demo.generator_steps)
    group = parser.add_argument_group("cifake")
    group.add_argument("--url", default=CIFAKE_URL, help="the CIFAKE zip (https:// or file://)")
    group = parser.add_argument_group("hf")
    group.add_argument("--hf-name", default=HF_DATASET, help="Hugging Face data set")
    group.add_argument("--hf-revision", default="main", help="branch, tag or commit (pins data)")
    group.add_argument(
        "--test-fraction", type=float, default=0.2,
        help="of train held out as test when the data set has no test split",
    )  # fmt: skip
    args = parser.parse_args(argv)

    try:
        if args.source == "cifake":
            counts = download_cifake(args.out, args.url)
        elif args.source == "hf":
            counts = download_hf(
                args.out, args.hf_name, args.hf_revision, args.test_fraction, args.seed
            )
        else:
            counts = _build_demo(args)
    except SourceUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_SOURCE_UNAVAILABLE
    print(f"{args.source} -> {args.out}: {counts}", flush=True)
    return 0


def _build_demo(args: argparse.Namespace) -> dict[str, int]:
    from train.demo_data import DemoConfig, build_demo_dataset

    config = DemoConfig(
        seed=args.seed,
        size=args.size,
        train_per_class=args.train_per_class,
        test_per_class=args.test_per_class,
        generator_steps=args.generator_steps,
    )
    with _staged(args.out) as local:
        build_demo_dataset(local, config)
        return _counts(local)


if __name__ == "__main__":
    sys.exit(main())
