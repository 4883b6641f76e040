"""The validation stage: is a CIFAKE-layout data set fit to train on? Answers with a JSON report.

Checks the folder structure (`train|test/REAL|FAKE`), that every image decodes through
`common.image` (the serving path) in a format and at dimensions serving accepts, the class
balance, and duplicates by content hash within a split and across splits. The data set may be
local or `gs://`. `python -m train.validate DATA_DIR --report FILE` exits EXIT_INVALID_DATA,
naming the files, when a check fails (the DVC `validate` stage).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec

from common.image import (
    CorruptImage,
    ImageError,
    ImageLimits,
    ImageTooLarge,
    ImageTooSmall,
    UnsupportedImageFormat,
    decode_image,
    sniff_format,
)
from train.data import CLASS_DIRS, IMAGE_SUFFIXES

__all__ = ["EXIT_INVALID_DATA", "SPLITS", "ValidationConfig", "main", "validate_dataset"]

SPLITS = ("train", "test")
EXIT_INVALID_DATA = 3  # exit status when a check fails


@dataclass(frozen=True)
class ValidationConfig:
    """What a data set must satisfy; defaults suit CIFAKE and the demo set."""

    min_per_class: int = 1  # images each class needs in each split
    min_class_ratio: float = 0.5  # smallest / largest class, per split
    allow_duplicates_within_split: bool = False  # same bytes twice under one label and split
    limits: ImageLimits = ImageLimits()  # what serving accepts (formats, sides, pixels)
    max_listed: int = 50  # files named per failing check; the rest are counted
    threads: int = 8  # parallel reads (gs:// latency)


@dataclass(frozen=True)
class _FileResult:
    name: str  # relative to the data set root: split/CLASS/file
    split: str
    label: str
    sha256: str
    format: str = ""
    size: tuple[int, int] = (0, 0)
    error: ImageError | None = None


def validate_dataset(root: str, config: ValidationConfig = ValidationConfig()) -> dict[str, Any]:
    """The validation report of the data set at `root`; `report["passed"]` is the verdict."""
    fs, base = fsspec.core.url_to_fs(root)
    base = base.rstrip("/")
    missing, ignored, files = [], [], []
    for split in SPLITS:
        for label in CLASS_DIRS:
            folder = f"{base}/{split}/{label}"
            if not fs.isdir(folder):
                missing.append(f"{split}/{label}")
                continue
            for entry in sorted(fs.ls(folder, detail=True), key=lambda e: e["name"]):
                name = entry["name"].rsplit("/", 1)[-1]
                if entry["type"] == "file" and name.lower().endswith(IMAGE_SUFFIXES):
                    files.append((split, label, entry["name"]))
                else:
                    ignored.append(f"{split}/{label}/{name}")
    with ThreadPoolExecutor(config.threads) as pool:
        results = list(pool.map(lambda f: _check_file(fs, *f, config.limits), files))

    checks = {
        "structure": {"passed": not missing, "missing": missing, "ignored": ignored},
        "decoding": _failures(results, (CorruptImage,), config),
        "formats": {
            **_failures(results, (UnsupportedImageFormat,), config),
            "counts": dict(Counter(r.format for r in results if r.format)),
        },
        "dimensions": {
            **_failures(results, (ImageTooSmall, ImageTooLarge), config),
            **_dimension_summary(results),
        },
        "class_balance": _class_balance(results, config),
        "duplicates": _duplicates(results, config),
    }
    return {
        "data_dir": root,
        "passed": all(check["passed"] for check in checks.values()),
        "files_checked": len(results),
        "checks": checks,
    }


def _check_file(fs, split: str, label: str, path: str, limits: ImageLimits) -> _FileResult:
    with fs.open(path, "rb") as f:
        data = f.read()
    name = f"{split}/{label}/{path.rsplit('/', 1)[-1]}"
    digest = hashlib.sha256(data).hexdigest()
    try:
        image = decode_image(data, limits)
    except ImageError as exc:
        fmt = "" if isinstance(exc, UnsupportedImageFormat | CorruptImage) else _sniff(data)
        return _FileResult(name, split, label, digest, fmt, error=exc)
    return _FileResult(name, split, label, digest, _sniff(data), image.size)


def _sniff(data: bytes) -> str:
    try:
        return sniff_format(data)
    except UnsupportedImageFormat:
        return ""


def _failures(results: list[_FileResult], kinds: tuple[type, ...], config) -> dict[str, Any]:
    failed = [
        {"file": r.name, "error": str(r.error)} for r in results if isinstance(r.error, kinds)
    ]
    return {"passed": not failed, **_listed("failures", failed, config)}


def _dimension_summary(results: list[_FileResult]) -> dict[str, Any]:
    sizes = [r.size for r in results if r.error is None]
    if not sizes:
        return {"sizes": {}}
    common = Counter(f"{w}x{h}" for w, h in sizes).most_common(10)
    return {
        "min_side": min(min(s) for s in sizes),
        "max_side": max(max(s) for s in sizes),
        "sizes": dict(common),  # the ten most common width x height
    }


def _class_balance(results: list[_FileResult], config: ValidationConfig) -> dict[str, Any]:
    counts = {s: dict.fromkeys(CLASS_DIRS, 0) for s in SPLITS}
    for r in results:
        counts[r.split][r.label] += 1
    failures = []
    for split, per_class in counts.items():
        for label, n in per_class.items():
            if n < config.min_per_class:
                failures.append(f"{split}/{label} has {n} images (needs {config.min_per_class})")
        low, high = min(per_class.values()), max(per_class.values())
        if high and low / high < config.min_class_ratio:
            failures.append(
                f"{split}: class ratio {low / high:.2f} is below {config.min_class_ratio}"
            )
    return {"passed": not failures, "counts": counts, "failures": failures}


def _duplicates(results: list[_FileResult], config: ValidationConfig) -> dict[str, Any]:
    by_hash: dict[str, list[_FileResult]] = defaultdict(list)
    for r in results:
        by_hash[r.sha256].append(r)
    within, conflicting, across = [], [], []
    for group in by_hash.values():
        if len(group) < 2:
            continue
        names = [r.name for r in group]
        if len({r.split for r in group}) > 1:
            across.append(names)  # test images seen in training: leakage
        elif len({r.label for r in group}) > 1:
            conflicting.append(names)  # the same bytes under both labels
        else:
            within.append(names)
    passed = not across and not conflicting
    passed = passed and (config.allow_duplicates_within_split or not within)
    return {
        "passed": passed,
        **_listed("across_splits", across, config),
        **_listed("conflicting_labels", conflicting, config),
        **_listed("within_split", within, config),
    }


def _listed(key: str, items: list, config: ValidationConfig) -> dict[str, Any]:
    out = {key: items[: config.max_listed]}
    if len(items) > config.max_listed:
        out[f"{key}_not_listed"] = len(items) - config.max_listed
    return out


def main(argv: list[str] | None = None) -> int:
    defaults = ValidationConfig()
    parser = argparse.ArgumentParser(
        description="Validate a CIFAKE-layout data set (local or gs://) and write a JSON report; "
        f"exits {EXIT_INVALID_DATA} naming the files when a check fails."
    )
    parser.add_argument("data_dir", help="root holding train|test/REAL|FAKE")
    parser.add_argument("--report", required=True, help="where the JSON report goes")
    parser.add_argument("--min-per-class", type=int, default=defaults.min_per_class)
    parser.add_argument("--min-class-ratio", type=float, default=defaults.min_class_ratio)
    parser.add_argument("--allow-duplicates-within-split", action="store_true")
    args = parser.parse_args(argv)
    config = ValidationConfig(
        min_per_class=args.min_per_class,
        min_class_ratio=args.min_class_ratio,
        allow_duplicates_within_split=args.allow_duplicates_within_split,
    )
    report = validate_dataset(args.data_dir, config)
    out = Path(args.report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    if report["passed"]:
        print(f"{args.data_dir}: {report['files_checked']} files, every check passed", flush=True)
        return 0
    for name, check in report["checks"].items():
        if not check["passed"]:
            details = {k: v for k, v in check.items() if k != "passed" and v}
            print(f"FAILED {name}: {json.dumps(details)}", file=sys.stderr)
    print(f"{args.data_dir} is not fit to train on; report: {out}", file=sys.stderr)
    return EXIT_INVALID_DATA


if __name__ == "__main__":
    sys.exit(main())
