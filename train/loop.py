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
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
from timm.scheduler import CosineLRScheduler
from torch import nn
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from common.calibration import calibrated_probabilities
from common.checkpoint import ModelMeta
from common.inference import forward_logits
from common.model import PhotoClassifier, build_model, normalisation, to_model_input
from common.pretrained import resolve_pretrained
from common.rules import is_ai_generated
from train.config import TrainConfig
from train.data import ImageFileDataset, augmentation, list_split, split_validation
from train.run_context import RunContext
from train.train_state import load_train_state, save_train_state

__all__ = [
    "EpochContext",
    "TrainConfig",
    "lr_scheduler",
    "train_fn_per_worker",
    "train_one_epoch",
    "train_transform",
    "validate",
]

# Ray Train V2 sends a worker's print() both to stdout and to its logger (shown twice): log.
_log = logging.getLogger(__name__)


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


def lr_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> CosineLRScheduler:
    """timm's cosine schedule, stepped per batch (`step_update(step)`): a linear warm-up over
    `cfg.warmup_epochs` from lr / warm-up steps to `cfg.lr`, then cosine decay to
    `cfg.min_lr_ratio * cfg.lr` at the last step. It holds no state beyond the step count,
    so a resumed run only needs the step."""
    warmup_steps = cfg.warmup_epochs * steps_per_epoch
    total_steps = cfg.epochs * steps_per_epoch
    return CosineLRScheduler(
        optimizer,
        t_initial=max(1, total_steps - warmup_steps),
        lr_min=cfg.min_lr_ratio * cfg.lr,
        warmup_t=warmup_steps,
        warmup_lr_init=cfg.lr / max(1, warmup_steps),
        warmup_prefix=True,  # the cosine starts after the warm-up, not under it
        t_in_epochs=False,
    )


@dataclass
class EpochContext:
    """What one epoch of training or validation works with, built once per run."""

    model: nn.Module  # as prepared by Ray Train (DDP-wrapped with several workers)
    optimizer: torch.optim.Optimizer
    scheduler: CosineLRScheduler
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module
    meta: ModelMeta  # image size, normalisation, threshold (the serving rule's)
    device: torch.device
    cfg: TrainConfig
    state: dict[str, Any]  # the loop's counters; `step` advances per batch

    @property
    def use_amp(self) -> bool:
        """Mixed precision, only on a GPU (training in fp16 with a GradScaler)."""
        return self.cfg.amp and self.device.type == "cuda"


def train_fn_per_worker(config: dict[str, Any]) -> None:
    """`config` is {"train": TrainConfig as a dict, "run": RunContext as a dict}."""
    cfg = TrainConfig.from_dict(config["train"])
    run = RunContext.from_dict(config.get("run"))
    ctx = ray.train.get_context()
    rank, world_size = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
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
    scheduler = lr_scheduler(optimizer, cfg, len(train_loader))

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
    amp = cfg.amp and device.type == "cuda"
    run_ctx = EpochContext(
        model=model, optimizer=optimizer, scheduler=scheduler,
        scaler=torch.amp.GradScaler("cuda", enabled=amp), loss_fn=nn.BCEWithLogitsLoss(),
        meta=meta, device=device, cfg=cfg, state=state,
    )  # fmt: skip

    for epoch in range(state["epoch"], cfg.epochs):
        if state["epochs_without_improvement"] >= cfg.patience:
            break  # a resumed run that had already stopped early
        if world_size > 1:
            train_loader.sampler.set_epoch(epoch)

        # train, with the learning rate set per batch
        started = time.perf_counter()
        fault = run.fault_for(epoch + 1, rank, world_size)
        train_metrics = train_one_epoch(run_ctx, train_loader, fault)
        elapsed = time.perf_counter() - started
        val_metrics = validate(run_ctx, val_loader)

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


def train_one_epoch(
    ctx: EpochContext, loader: DataLoader, fault: Callable[[], None] | None = None
) -> dict[str, float]:
    """One pass over `loader`, the learning rate set per batch; all-reduced loss and accuracy.
    `fault` (tests only) is called after each step: an injected worker exit, once."""
    model, optimizer, meta, device, cfg = ctx.model, ctx.optimizer, ctx.meta, ctx.device, ctx.cfg
    model.train()
    totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, images
    for pixels, labels in loader:
        # set the learning rate for this step
        ctx.scheduler.step_update(ctx.state["step"])
        # forward, backward, clip, step
        x = to_model_input(pixels, meta.mean, meta.std, device)
        labels = labels.to(device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=ctx.use_amp):
            logits = model(x)
            loss = ctx.loss_fn(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        ctx.scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            ctx.scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        ctx.scaler.step(optimizer)
        ctx.scaler.update()
        ctx.state["step"] += 1
        if fault is not None:
            fault()  # fault injection (tests): this worker process exits here, once
        # keep sums on the CPU: one sync per batch is the price of the per-epoch figures
        predicted = _judged(logits.detach(), meta)
        totals += torch.tensor([
            loss.item() * len(labels), float((predicted == (labels > 0.5)).sum()), len(labels)
        ], dtype=torch.float64)  # fmt: skip
    loss_sum, correct, count = _all_reduce(totals).tolist()
    return {
        "train_loss": loss_sum / max(count, 1),
        "train_accuracy": correct / max(count, 1),
        "train_images": count,
    }


@torch.no_grad()
def validate(ctx: EpochContext, loader: DataLoader) -> dict[str, float]:
    """All-reduced loss, accuracy and F1 on `loader`, through the serving forward pass
    (`common.inference`) and the serving rule (`common.rules`, the checkpoint's threshold)."""
    ctx.model.eval()
    precision = "auto" if ctx.use_amp else "fp32"
    totals = torch.zeros(5, dtype=torch.float64)  # loss sum, tp, fp, fn, tn
    for pixels, labels in loader:
        labels = labels.to(ctx.device)
        logits = forward_logits(ctx.model, ctx.meta, pixels, ctx.device, precision)
        predicted = _judged(logits, ctx.meta)
        positive = labels > 0.5
        totals += torch.tensor([
            float(ctx.loss_fn(logits, labels)) * len(labels),
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


def _judged(logits: torch.Tensor, meta: ModelMeta) -> torch.Tensor:
    """Which images the serving rule calls AI-generated: P >= the checkpoint's threshold."""
    return is_ai_generated(calibrated_probabilities(logits, meta), meta.threshold)


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
