"""Training throughput: Ray Train's `TorchTrainer` vs a plain PyTorch loop, same cores and data.

The plain loop is what a notebook would run: one process, every core as a torch thread, the
same model, data set, augmentation, optimiser and batch size. Ray Train runs the project's own
`train_fn_per_worker` through `train.driver.run_training`, once as one worker owning every core
and once as DDP over one single-thread worker per core; with `--device cuda`, both sides train
on one GPU with AMP (fp16 autocast and a gradient scaler) and Ray Train runs one GPU worker.
Epoch 1 warms up; the figure is the mean training images/s of the epochs after it (validation
excluded on both sides).

    python -m bench.training --help
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import ray
import torch
from torch import nn
from torch.utils.data import DataLoader

from bench.serving import ROOT, machine_description
from common.model import build_model, normalisation, to_model_input
from train.config import TrainConfig
from train.data import ImageFileDataset, list_split, split_validation
from train.driver import run_training
from train.loop import train_transform

__all__ = ["main", "plain_loop_images_per_s", "ray_train_images_per_s"]


def plain_loop_images_per_s(
    cfg: TrainConfig, epochs: int, threads: int, device: str = "cpu"
) -> float:
    """On a GPU with the same mixed precision as the project's loop (`cfg.amp`: fp16
    autocast and a gradient scaler)."""
    torch.set_num_threads(threads)
    use_amp = cfg.amp and device.startswith("cuda")
    torch.manual_seed(cfg.seed)
    train_files, _ = split_validation(list_split(cfg.data_dir, "train"), cfg.val_fraction, cfg.seed)
    loader = DataLoader(
        ImageFileDataset(train_files, cfg.image_size, train_transform(cfg)),
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=True,
    )
    model = build_model(cfg.architecture, dropout=cfg.dropout).to(device).train()
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    mean, std = normalisation(model)  # the same normalisation as training
    rates = []
    for _ in range(epochs):
        started, images = time.perf_counter(), 0
        for pixels, labels in loader:
            x, labels = to_model_input(pixels, mean, std, device), labels.to(device)
            with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
                loss = loss_fn(model(x).float(), labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            images += len(labels)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        rates.append(images / (time.perf_counter() - started))
    return sum(rates[1:]) / len(rates[1:])


def ray_train_images_per_s(
    cfg: TrainConfig, num_workers: int, cpus_per_worker: float, use_gpu: bool = False
) -> float:
    with tempfile.TemporaryDirectory() as storage:
        result = run_training(
            cfg,
            num_workers=num_workers,
            use_gpu=use_gpu,
            cpus_per_worker=cpus_per_worker,
            storage_path=storage,
            name=f"bench-{num_workers}w",
        )
        history = result.metrics_dataframe
    rates = history.sort_values("epoch")["images_per_s"].tolist()
    return sum(rates[1:]) / len(rates[1:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Ray Train vs a plain PyTorch loop (images/s).")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data" / "demo")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3, help="the first one is a warm-up")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--architecture", default=TrainConfig.architecture, help="a timm model")
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench" / "training.json")
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="cuda: both sides on one GPU with AMP, Ray Train as one GPU worker (no DDP)",
    )
    parser.add_argument("--no-ddp", action="store_true", help="skip the DDP layout on the CPU")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads of the plain loop and CPUs of the one Ray Train worker on the CPU "
        "(default: every core)",
    )
    args = parser.parse_args(argv)
    if not (args.data_dir / "train").is_dir():
        print(f"no data set at {args.data_dir}: run `make demo` (or pass --data-dir)")
        return 2
    cores = os.cpu_count() or 1
    cfg = TrainConfig(
        data_dir=str(args.data_dir.resolve()),
        image_size=args.image_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        patience=args.epochs + 1,
        architecture=args.architecture,
        pretrained="none",  # throughput does not depend on where the weights started
    )

    gpu = args.device == "cuda"
    report = {
        "machine": machine_description(),
        "device": args.device,
        "config": {
            "image_size": args.image_size,
            "batch_size": args.batch_size,
            "epochs": args.epochs,
            "amp": cfg.amp and gpu,
        },
    }
    threads = args.threads or cores
    plain = plain_loop_images_per_s(cfg, args.epochs, threads, args.device)
    report["plain_loop"] = round(plain, 2)
    print(f"plain PyTorch loop on {args.device}: {report['plain_loop']} images/s", flush=True)
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    try:
        one = ray_train_images_per_s(
            replace(cfg), num_workers=1, cpus_per_worker=cores - 1 if gpu else threads, use_gpu=gpu
        )
        ddp = None
        if not (gpu or args.no_ddp):
            ddp = ray_train_images_per_s(replace(cfg), num_workers=cores, cpus_per_worker=1)
    finally:
        ray.shutdown()
    report["ray_train_1_worker"] = round(one, 2)
    report["ratio_1_worker"] = round(one / report["plain_loop"], 3)
    where = "1 GPU" if gpu else f"{threads} CPUs"
    print(
        f"Ray Train, 1 worker x {where}: {one:.1f} images/s "
        f"({report['ratio_1_worker']:.2f} x plain)"
    )
    if ddp is not None:
        report["ray_train_ddp"] = round(ddp, 2)
        report["ratio_ddp"] = round(ddp / report["plain_loop"], 3)
        print(
            f"Ray Train, DDP {cores} workers x 1 CPU: {ddp:.1f} images/s "
            f"({report['ratio_ddp']:.2f} x plain)"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
