"""The model a replica serves, and how it is replaced: load the new checkpoint, then switch.

The Classifier, the Shadow and the Explainer each hold one `ModelSlot`. Loading runs in a worker
thread so requests keep flowing; the switch is a single assignment, so work that already took
`slot.current` finishes on the model it started with. A checkpoint that cannot be loaded never
replaces a working model: the slot keeps serving the old one and reports `load_error` (only a
replica with no model at all fails to start).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import ray
import torch

from common.checkpoint import ModelMeta, load_checkpoint
from common.model import PhotoClassifier

__all__ = ["LoadedModel", "ModelSlot", "autocast_dtype", "replica_device"]

logger = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class LoadedModel:
    model: PhotoClassifier
    meta: ModelMeta
    uri: str


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed precision for inference on a GPU: bf16 where supported (Ampere and newer), fp16
    on a T4; None (full precision) on the CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def replica_device() -> torch.device:
    """CUDA when the replica was given a GPU, else the CPU with one torch thread per CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    # Oversubscribed OpenMP threads made a forward pass 10x slower on a contended core.
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    return torch.device("cpu")


class ModelSlot:
    def __init__(self, role: str, device: torch.device) -> None:
        self.role = role
        self.device = device
        self.current: LoadedModel | None = None
        self.load_error: str | None = None  # why the last requested checkpoint is not serving

    async def load(
        self, uri: str | None, prepare: Callable[[LoadedModel], None] | None = None
    ) -> bool:
        """Make `uri` the current model (None unloads); True when the model changed.

        `prepare` runs on the new model in the loading thread before the switch (a warm-up):
        if it fails, the model counts as one that could not be loaded."""
        if uri is None:
            changed, self.current, self.load_error = self.current is not None, None, None
            return changed
        if self.current is not None and self.current.uri == uri:
            self.load_error = None
            return False
        try:
            model, meta = await asyncio.to_thread(load_checkpoint, uri, self.device)
            candidate = LoadedModel(model, meta, uri)
            if prepare is not None:
                await asyncio.to_thread(prepare, candidate)
        except Exception as exc:  # any failure: bad file, missing object, storage or MLflow error
            if self.current is None:
                raise
            self.load_error = f"{uri}: {exc}"
            logger.exception(
                "%s model from %s could not be loaded; still serving %s",
                self.role, uri, self.current.meta.version,
            )  # fmt: skip
            return False
        self.current, self.load_error = candidate, None
        logger.info("%s model %s loaded from %s", self.role, meta.version, uri)
        return True
