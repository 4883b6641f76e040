"""The limit: the bare pipeline in one process in a tight loop — decode and resize each JPEG
(`common.image`), then the forward pass at the best batch size, with every core."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from common.checkpoint import load_checkpoint
from common.image import prepare_image
from common.model import to_model_input
from deployments.model_slot import autocast_dtype

__all__ = ["measure_limit"]


def measure_limit(
    checkpoint: str,
    images: list[Path],
    batch_sizes: tuple[int, ...] = (1, 4, 8, 16, 32),
    images_per_size: int = 128,
    device: str = "cpu",
    threads: int = 2,
) -> dict:
    """Images/s at each batch size (decode + resize + forward), and the best of them."""
    torch.set_num_threads(threads)
    model, meta = load_checkpoint(checkpoint, device)
    data = [path.read_bytes() for path in images]
    dtype = autocast_dtype(torch.device(device))  # as the Classifier does

    def run(batch_size: int, count: int) -> float:
        started = time.perf_counter()
        done = 0
        while done < count:
            batch = [
                prepare_image(data[(done + i) % len(data)], meta.image_size).pixels
                for i in range(batch_size)
            ]
            pixels = torch.from_numpy(np.stack(batch))
            with (
                torch.inference_mode(),
                torch.autocast(device, dtype, enabled=dtype is not None),
            ):
                x = to_model_input(pixels, meta.mean, meta.std, device)
                torch.sigmoid(model(x).float()).cpu()
            done += batch_size
        return done / (time.perf_counter() - started)

    run(batch_sizes[0], batch_sizes[0] * 2)  # warm-up
    per_batch = {b: round(run(b, max(images_per_size, b * 4)), 2) for b in batch_sizes}
    best = max(per_batch, key=per_batch.get)
    return {"images_per_s": per_batch[best], "best_batch_size": best, "by_batch_size": per_batch}
