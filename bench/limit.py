"""The limit: the bare pipeline in one process in a tight loop — decode and resize each JPEG
(`common.image`), then the forward pass at the best batch size, with every core; and for a GPU
machine, decoding on the Preprocessors' cores and the device's forward pass measured apart."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from common.checkpoint import load_checkpoint
from common.image import prepare_image
from common.inference import Precision, auto_precision, forward_probabilities
from common.model import fold_batch_norms

__all__ = ["decode_rate", "forward_rates", "measure_limit", "measure_split_limit"]


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
    model = fold_batch_norms(model)  # the model the Classifier serves
    data = [path.read_bytes() for path in images]

    def run(batch_size: int, count: int) -> float:
        started = time.perf_counter()
        done = 0
        while done < count:
            batch = [
                prepare_image(data[(done + i) % len(data)], meta.image_size).pixels
                for i in range(batch_size)
            ]
            forward_probabilities(model, meta, np.stack(batch), device)  # as the Classifier does
            done += batch_size
        return done / (time.perf_counter() - started)

    run(batch_sizes[0], batch_sizes[0] * 2)  # warm-up
    per_batch = {b: round(run(b, max(images_per_size, b * 4)), 2) for b in batch_sizes}
    best = max(per_batch, key=per_batch.get)
    return {"images_per_s": per_batch[best], "best_batch_size": best, "by_batch_size": per_batch}


# --- The GPU limit: CPU decoding and the device's forward pass measured apart ----------------
#
# On a GPU machine the served graph decodes on Preprocessor replicas (one core each) while the
# Classifier's GPU runs the forward pass, so its ceiling is the slower of the two stages, each
# measured alone: decoding in as many processes as the serve config gives the Preprocessors,
# and the batched forward (uint8 to the device, normalise there, forward, probabilities back:
# the Classifier's own `common.inference` path) with pre-decoded pixels.

_worker_data: list[bytes] = []


def _load_worker_data(paths: list[str]) -> None:
    _worker_data[:] = [Path(p).read_bytes() for p in paths]


def _decode_some(job: tuple[int, int, int]) -> int:
    start, count, image_size = job
    for i in range(start, start + count):
        prepare_image(_worker_data[i % len(_worker_data)], image_size)
    return count


def decode_rate(images: list[Path], image_size: int, processes: int, count: int = 512) -> dict:
    """Images/s of `common.image.prepare_image` (decode, EXIF, RGB, resize) in `processes`
    single-thread processes, as the Preprocessor replicas run it."""
    import multiprocessing

    context = multiprocessing.get_context("fork")  # call before CUDA is initialised
    chunk = max(1, count // (processes * 4))
    jobs = [(i, min(chunk, count - i), image_size) for i in range(0, count, chunk)]
    with context.Pool(processes, _load_worker_data, ([str(p) for p in images],)) as pool:
        pool.map(_decode_some, [(i, 2, image_size) for i in range(processes)])  # warm-up
        started = time.perf_counter()
        done = sum(pool.map(_decode_some, jobs))
        wall = time.perf_counter() - started
    return {"processes": processes, "images": done, "images_per_s": round(done / wall, 2)}


def forward_rates(
    checkpoint: str,
    images: list[Path],
    device: str = "cpu",
    precisions: tuple[Precision, ...] = ("bf16", "fp32"),
    batch_sizes: tuple[int, ...] = (1, 8, 32, 64, 128),
    images_per_size: int = 1024,
    threads: int = 1,
) -> dict[str, dict[int, float]]:
    """Images/s of the batched forward pass, {precision: {batch size: images/s}}."""
    torch.set_num_threads(threads)
    model, meta = load_checkpoint(checkpoint, device)  # builds the architecture it names
    model = fold_batch_norms(model)  # the model the Classifier serves
    decoded = [prepare_image(path.read_bytes(), meta.image_size).pixels for path in images]
    synchronize = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def forward(pixels: torch.Tensor, precision: Precision) -> None:
        forward_probabilities(model, meta, pixels, device, precision)

    rates: dict[str, dict[int, float]] = {}
    for precision in precisions:
        rates[precision] = {}
        for batch_size in batch_sizes:
            batch = np.stack([decoded[i % len(decoded)] for i in range(batch_size)])
            pixels = torch.from_numpy(batch)
            for _ in range(2):  # the first pass at a shape picks its kernels
                forward(pixels, precision)
            iterations = max(2, images_per_size // batch_size)
            synchronize()
            started = time.perf_counter()
            for _ in range(iterations):
                forward(pixels, precision)
            synchronize()
            rates[precision][batch_size] = round(
                iterations * batch_size / (time.perf_counter() - started), 2
            )
            print(
                f"  forward {precision} batch {batch_size}: {rates[precision][batch_size]}",
                flush=True,
            )
    return rates


def measure_split_limit(
    checkpoint: str,
    images: list[Path],
    decode_processes: int,
    device: str = "cpu",
    precisions: tuple[Precision, ...] = ("bf16", "fp32"),
    batch_sizes: tuple[int, ...] = (1, 8, 32, 64, 128),
    decode_images: int = 1024,
    images_per_size: int = 1024,
    threads: int = 1,
) -> dict:
    """The limit of a graph that decodes on CPU processes and infers on `device`: the slower
    of decoding (on `decode_processes` cores) and the best batched forward in the precision
    the Classifier uses there (`common.inference.auto_precision`), which is measured beside
    `precisions` whether they name it or not."""
    _, meta = load_checkpoint(checkpoint)
    decode = decode_rate(images, meta.image_size, decode_processes, decode_images)  # before CUDA
    print(
        f"  decode on {decode_processes} processes: {decode['images_per_s']} images/s", flush=True
    )
    served = auto_precision(device)
    precisions = tuple(dict.fromkeys((served, *precisions)))  # the served one is always measured
    forward = forward_rates(
        checkpoint, images, device, precisions, batch_sizes, images_per_size, threads
    )
    by_batch = forward[served]
    best_batch = max(by_batch, key=by_batch.get)
    limit = min(decode["images_per_s"], by_batch[best_batch])
    return {
        "images_per_s": limit,
        "bound_by": "decode" if decode["images_per_s"] <= by_batch[best_batch] else "forward",
        "image_size": meta.image_size,
        "architecture": meta.architecture,
        "decode": decode,
        "forward": {name: {str(b): r for b, r in rates.items()} for name, rates in forward.items()},
        "served_precision": served,
        "best_batch_size": best_batch,
        "forward_images_per_s": by_batch[best_batch],
    }
