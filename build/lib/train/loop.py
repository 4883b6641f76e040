"""The per-worker Ray Train loop: one run's story, top to bottom.

`train_fn_per_worker(config)` runs on every Ray Train worker. Data arrives through
`ray.train.torch.prepare_data_loader` (a DistributedSampler over an image-file Dataset): the
files are plain local or `gs://` paths every worker can read, decoding reuses the serving image
path per item, and for data sets of this size that is simpler and as fast as converting them to
a Ray Data pipeline. Each epoch reports all-reduced metrics and (from rank 0) a checkpoint that
holds the serving-format weights and the optimiser state, both as safetensors; a restarted
worker group resumes from the latest one.

Rank 0 also logs each epoch's metrics to MLflow, as Ray Train's experiment-tracking guide does:
the metrics are already all-reduced there, the same code logs under `TorchTrainer.fit()` and
under a Tune trial, and Train V2's controller callbacks are a developer API that runs in
another process.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from common.checkpoint import ModelMeta
from common.config import strict_dataclass
from common.model import ARCHITECTURE, PhotoClassifier, build_model, normalisation, to_model_input
from common.pretrained import resolve_pretrained
from train.data import ImageFileDataset, augmentation, list_split, split_validation
from train.run_context import RunContext
from train.train_state import load_train_state, save_train_state

__all__ = ["TrainConfig", "lr_factor", "train_fn_per_worker", "train_transform"]

# Ray Train V2 sends a worker's print() both to stdout and to its logger (shown twice): log.
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a run with its default; the resolved dict goes to MLflow and the checkpoint."""

    data_dir: str = "data/demo"  # CIFAKE layout; local path or gs://
    image_size: int = 64  # px; 224 on T4s, 32 for CIFAKE's native size
    epochs: int = 15
    batch_size: int = 32  # global; each worker takes batch_size // num_workers
    lr: float = 1e-3  # AdamW peak learning rate
    weight_decay: float = 0.01
    warmup_epochs: int = 2  # linear warm-up, then cosine decay to min_lr_ratio * lr
    min_lr_ratio: float = 0.01
    patience: int = 5  # epochs without a better validation F1 before stopping
    dropout: float = 0.3  # head dropout
    augment_strength: float = 1.0  # 0 turns augmentation off; 1 = flip, 15 degrees, jitter 0.2
    # Blur and JPEG recompression (Wang et al., CVPR 2020: sigma 0-3, quality 30-100 at 224+ px).
    # At the demo's 64 px a sigma of 3 would erase the picture: sigma up to 1 px is the same
    # blur relative to the image side as about 3.5 px at 224.
    blur_prob: float = 0.1  # chance of a Gaussian blur per training image; 0 turns it off
    blur_sigma_max: float = 1.0  # px; sigma drawn uniformly from [0.1, blur_sigma_max]
    jpeg_prob: float = 0.5  # chance of a JPEG re-encoding per training image; 0 turns it off
    jpeg_quality_min: int = 30  # quality drawn uniformly from [min, max]
    jpeg_quality_max: int = 100
    # Random resized crops keeping [crop_scale_min, 1] of the area (then back to image_size):
    # the scale changes a re-framed or resized upload brings. 1 turns it off.
    crop_scale_min: float = 1.0
    val_fraction: float = 0.1  # of the train split, stratified
    seed: int = 0
    grad_clip: float = 1.0  # max gradient norm; 0 disables
    amp: bool = True  # mixed precision, used only on a GPU
    architecture: str = ARCHITECTURE  # any timm model name; the checkpoint records it
    # Backbone start: "imagenet" (a package that ships the weights, else timm's hub), a local
    # path or gs:// URI of a weights file, or "none" (random). Unavailable weights stop the run.
    pretrained: str = "imagenet"

    def __post_init__(self) -> None:
        if not (0 <= self.blur_prob <= 1 and 0 <= self.jpeg_prob <= 1):
            raise ValueError("blur_prob and jpeg_prob must lie in [0, 1]")
        if self.blur_sigma_max < 0.1:
            raise ValueError("blur_sigma_max must be at least 0.1 px")
        if not 0 < self.crop_scale_min <= 1:
            raise ValueError("crop_scale_min must lie in (0, 1]")
        if not 1 <= self.jpeg_quality_min <= self.jpeg_quality_max <= 100:
            raise ValueError("need 1 <= jpeg_quality_min <= jpeg_quality_max <= 100")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        raw = dict(raw)
        if "pretrained_path" in raw:  # checkpoints trained before `pretrained` replaced it
            legacy = raw.pop("pretrained_path")
            raw.setdefault("pretrained", legacy or "none")
        return strict_dataclass(cls, raw, "training config")


def train_transform(cfg: TrainConfig) -> v2.Transform:
    """The training augmentation `cfg` asks for (train.data.augmentation)."""
    return augmentation(
        cfg.augment_strength,
        crop=(cfg.image_size, cfg.crop_scale_min) if cfg.crop_scale_min < 1 else None,
        blur_prob=cfg.blur_prob,
        blur_sigma=(0.1, cfg.blur_sigma_max),
        jpeg_prob=cfg.jpeg_prob,
        jpeg_quality=(cfg.jpeg_quality_min, cfg.jpeg_quality_max),
    )


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Linear warm-up to 1, then cosine decay to `min_ratio` at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def train_fn_per_worker(config: dict[str, Any]) -> None:
    """`config` is {"train": TrainConfig as a dict, "run": RunContext as a dict}."""
    cfg = TrainConfig.from_dict(config["train"])
    run = RunContext.from_dict(config.get("run"))
    ctx = ray.train.get_context()
    rank, world_size = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    use_amp = cfg.amp and device.type == "cuda"
    torch.manual_seed(cfg.seed + rank)
    if device.type == "cpu":
        # One thread per CPU this worker owns: oversubscribed OpenMP threads are ~10x slower.
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
        torch.set_num_threads(max(1, int(cpus)))

    # data: the same stratified validation split on every worker and in evaluation
    train_files, val_files = split_validation(
        list_split(cfg.data_dir, "train"), cfg.val_fraction, cfg.seed
    )
    per_worker_batch = max(1, cfg.batch_size // world_size)
    train_loader = ray.train.torch.prepare_data_loader(DataLoader(
        ImageFileDataset(train_files, cfg.image_size, train_transform(cfg)),
        batch_size=per_worker_batch, shuffle=True, drop_last=len(train_files) > per_worker_batch,
    ))  # fmt: skip
    val_loader = ray.train.torch.prepare_data_loader(
        DataLoader(ImageFileDataset(val_files, cfg.image_size), batch_size=per_worker_batch)
    )
    tracker = run.epoch_logger() if rank == 0 else None
    nodes = _worker_node_ids(world_size)

    # model and optimiser: the backbone's own normalisation goes into the checkpoint
    weights = resolve_pretrained(cfg.pretrained, cfg.architecture)
    model = build_model(cfg.architecture, pretrained=weights, dropout=cfg.dropout)
    mean, std = normalisation(model)
    meta = ModelMeta(
        architecture=cfg.architecture, image_size=cfg.image_size, mean=mean, std=std,
        dropout=cfg.dropout, train_config=asdict(cfg), data_fingerprint=run.data_fingerprint,
        pretrained=weights.origin if weights else {"spec": "none"},
    )  # fmt: skip
    model = ray.train.torch.prepare_model(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    loss_fn = nn.BCEWithLogitsLoss()
    steps_per_epoch = len(train_loader)
    warmup_steps, total_steps = cfg.warmup_epochs * steps_per_epoch, cfg.epochs * steps_per_epoch

    # resume: the latest reported checkpoint, if this run was restarted
    state = {"epoch": 0, "step": 0, "best_val_f1": -1.0, "epochs_without_improvement": 0}
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as ckpt_dir:
            state = load_train_state(Path(ckpt_dir), _unwrap(model), optimizer)
        if rank == 0:
            _log.info("resuming from epoch %d (step %d)", state["epoch"], state["step"])
    resumed_from_epoch = state["epoch"]
    if rank == 0:
        _log.info("%d workers on %d node(s)", world_size, len(set(nodes)))

    for epoch in range(state["epoch"], cfg.epochs):
        if state["epochs_without_improvement"] >= cfg.patience:
            break  # a resumed run that had already stopped early
        if world_size > 1:
            train_loader.sampler.set_epoch(epoch)

        # train, with the learning rate set per batch
        started = time.perf_counter()
        train_metrics = _train_one_epoch(
            model, train_loader, optimizer, scaler, loss_fn, meta, device, use_amp, cfg,
            state, warmup_steps, total_steps, run.fault_for(epoch + 1, rank, world_size),
        )  # fmt: skip
        elapsed = time.perf_counter() - started
        val_metrics = _evaluate(model, val_loader, loss_fn, meta, device, use_amp)

        # early stopping on validation F1 (identical on every worker: metrics are all-reduced)
        improved = val_metrics["val_f1"] > state["best_val_f1"]
        state["best_val_f1"] = max(state["best_val_f1"], val_metrics["val_f1"])
        state["epochs_without_improvement"] = (
            0 if improved else state["epochs_without_improvement"] + 1
        )
        state["epoch"] = epoch + 1
        metrics = {
            "epoch": epoch + 1, **train_metrics, **val_metrics,
            "lr": optimizer.param_groups[0]["lr"], "epoch_time_s": elapsed,
            "images_per_s": train_metrics["train_images"] / elapsed,
            "images_per_s_per_worker": train_metrics["train_images"] / elapsed / world_size,
            "best_val_f1": state["best_val_f1"], "resumed_from_epoch": resumed_from_epoch,
            "num_nodes": len(set(nodes)), "worker_node_ids": ",".join(nodes),
        }  # fmt: skip
        if tracker is not None:
            tracker(metrics, epoch + 1)

        # report: every worker (it is a barrier), a checkpoint from rank 0 only
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if rank == 0:
                epoch_meta = ModelMeta(**{**asdict(meta), "version": f"epoch-{epoch + 1}"})
                save_train_state(Path(tmp), _unwrap(model), epoch_meta, optimizer, state)
                ckpt = ray.train.Checkpoint.from_directory(tmp)
                _log.info(_progress_line(metrics, cfg.epochs))
            ray.train.report(metrics, checkpoint=ckpt)
        if state["epochs_without_improvement"] >= cfg.patience:
            break


def _train_one_epoch(
    model, loader, optimizer, scaler, loss_fn, meta, device, use_amp, cfg, state,
    warmup_steps, total_steps, fault=None,
) -> dict[str, float]:  # fmt: skip
    model.train()
    totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, images
    for pixels, labels in loader:
        # set the learning rate for this step
        lr = cfg.lr * lr_factor(state["step"], warmup_steps, total_steps, cfg.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        # forward, backward, clip, step
        x = to_model_input(pixels, meta.mean, meta.std, device)
        labels = labels.to(device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            logits = model(x)
            loss = loss_fn(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        state["step"] += 1
        if fault is not None:
            fault()  # fault injection (tests): this worker process exits here, once
        # keep sums on the CPU: one sync per batch is the price of the per-epoch figures
        totals += torch.tensor([
            loss.item() * len(labels), float(((logits > 0).float() == labels).sum()), len(labels)
        ], dtype=torch.float64)  # fmt: skip
    loss_sum, correct, count = _all_reduce(totals).tolist()
    return {
        "train_loss": loss_sum / max(count, 1),
        "train_accuracy": correct / max(count, 1),
        "train_images": count,
    }


@torch.no_grad()
def _evaluate(model, loader, loss_fn, meta, device, use_amp) -> dict[str, float]:
    model.eval()
    totals = torch.zeros(5, dtype=torch.float64)  # loss sum, tp, fp, fn, tn
    for pixels, labels in loader:
        labels = labels.to(device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            logits = model(to_model_input(pixels, meta.mean, meta.std, device)).float()
        predicted = logits > 0
        positive = labels > 0.5
        totals += torch.tensor([
            float(loss_fn(logits, labels)) * len(labels),
            float((predicted & positive).sum()), float((predicted & ~positive).sum()),
            float((~predicted & positive).sum()), float((~predicted & ~positive).sum()),
        ], dtype=torch.float64)  # fmt: skip
    loss_sum, tp, fp, fn, tn = _all_reduce(totals).tolist()
    count = tp + fp + fn + tn
    return {
        "val_loss": loss_sum / max(count, 1),
        "val_accuracy": (tp + tn) / max(count, 1),
        "val_f1": 2 * tp / max(2 * tp + fp + fn, 1),
    }


def _all_reduce(totals: torch.Tensor) -> torch.Tensor:
    """Sum a small CPU tensor over all workers (gloo or NCCL)."""
    if not torch.distributed.is_initialized():
        return totals
    device = ray.train.torch.get_device()
    on_device = totals.to(device)
    torch.distributed.all_reduce(on_device)
    return on_device.cpu()


def _worker_node_ids(world_size: int) -> list[str]:
    """The Ray node id of every worker, in rank order (the same list on every worker)."""
    node_id = ray.get_runtime_context().get_node_id()
    if world_size == 1 or not torch.distributed.is_initialized():
        return [node_id]
    nodes: list[str] = [""] * world_size
    torch.distributed.all_gather_object(nodes, node_id)
    return nodes


def _unwrap(model: nn.Module) -> PhotoClassifier:
    return model.module if hasattr(model, "module") else model


def _progress_line(m: dict[str, float], epochs: int) -> str:
    return (
        f"epoch {int(m['epoch'])}/{epochs}  train_loss {m['train_loss']:.4f}  "
        f"train_acc {m['train_accuracy']:.3f}  val_loss {m['val_loss']:.4f}  "
        f"val_acc {m['val_accuracy']:.3f}  val_f1 {m['val_f1']:.3f}  lr {m['lr']:.2e}  "
        f"{m['images_per_s']:.1f} img/s ({m['images_per_s_per_worker']:.1f} per worker)"
    )
