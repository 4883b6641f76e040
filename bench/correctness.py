"""Served probabilities against the CPU pipeline on the same images.

The reference is the project's own pipeline in full precision on the CPU (`prepare_image`,
then `common.inference` with the checkpoint's model and calibration); the served side is
`/predict` of a running application (on a GPU: bf16 autocast, channels-last, normalisation on
the device). Mixed precision moves each probability a little; what matters is that it never
moves a decision: no label may differ where the reference's p lies outside 0.5 +- `band`. The
report gives the largest |dp| (the tolerance this precision needs) and checks it against
`tolerance`: a dp below the band can never flip a label outside it.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np

from bench.inputs import multipart_body
from common.checkpoint import load_checkpoint
from common.image import prepare_image
from common.inference import Precision, forward_probabilities

__all__ = [
    "BAND",
    "TOLERANCE",
    "compare",
    "correctness_images",
    "reference_probabilities",
    "served_probabilities",
]

BAND = 0.02  # labels must agree wherever |p - 0.5| > BAND
TOLERANCE = 0.02  # max |dp| allowed: no larger than the band, so no decision outside it moves


def correctness_images(data_dir: Path, count: int = 64) -> list[Path]:
    """`count` test images of the demo set, half of each class, in a fixed order."""
    half = count // 2
    real = sorted((data_dir / "test" / "REAL").glob("*.png"))[:half]
    fake = sorted((data_dir / "test" / "FAKE").glob("*.png"))[: count - len(real)]
    return real + fake


def reference_probabilities(
    checkpoint: str, images: list[Path], device: str = "cpu", precision: Precision = "fp32"
) -> list[float]:
    """P(AI-generated) from the pipeline in one process, one batch: on the CPU in fp32 (the
    reference), or on `device` in `precision` (to tell precision from serving effects)."""
    model, meta = load_checkpoint(checkpoint, device)
    pixels = np.stack([prepare_image(p.read_bytes(), meta.image_size).pixels for p in images])
    return forward_probabilities(model, meta, pixels, device, precision).tolist()


def served_probabilities(url: str, images: list[Path], timeout_s: float = 30) -> list[float]:
    """P(AI-generated) from `url`/predict, one request per image."""
    out = []
    for path in images:
        body, content_type = multipart_body(path.read_bytes(), filename=path.name)
        request = urllib.request.Request(  # noqa: S310
            f"{url}/predict", data=body, headers={"Content-Type": content_type}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310  # nosec B310
            out.append(float(json.load(response)["probability"]))
    return out


def compare(
    reference: list[float], other: list[float], band: float = BAND, tolerance: float = TOLERANCE
) -> dict:
    """The largest and mean |dp|, and the label flips outside 0.5 +- band."""
    ref, got = np.asarray(reference), np.asarray(other)
    dp = np.abs(ref - got)
    outside = np.abs(ref - 0.5) > band
    flips = int(np.sum(outside & ((ref >= 0.5) != (got >= 0.5))))
    return {
        "images": len(ref),
        # a model whose p hardly varies (a barely trained one) makes a weak check: say so
        "reference_p_min": round(float(ref.min()), 6),
        "reference_p_max": round(float(ref.max()), 6),
        "max_abs_dp": round(float(dp.max()), 6),
        "mean_abs_dp": round(float(dp.mean()), 6),
        "tolerance": tolerance,
        "within_tolerance": bool(dp.max() <= tolerance),
        "band": band,
        "outside_band": int(outside.sum()),
        "label_flips_outside_band": flips,
        "passed": bool(flips == 0 and dp.max() <= tolerance),
    }
