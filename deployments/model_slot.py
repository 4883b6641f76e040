"""The model a replica serves, and how it is replaced: load the new checkpoint, then switch.

The Classifier, the Shadow and the Explainer each hold one `ModelSlot`. Loading runs in a worker
thread so requests keep flowing; the switch is a single assignment, so work that already took
`slot.current` finishes on the model it started with. A checkpoint that cannot be loaded never
replaces a working model: the slot keeps serving the old one and reports `load_error` (only a
replica with no model at all fails to start). `check_forward` is the replicas' health check: a
1-image forward pass of the current model. The Classifier's slots serve the model with its
BatchNorms folded (`common.model.fold_batch_norms`: the same probabilities, less CPU); the
Explainer's keeps the trained layers, which Grad-CAM hooks.

This module imports no torch: the model stack (torch, timm: about 3 s of CPU on a quiet core
here, torch._dynamo and sympy included, which timm's torchvision imports pull in) is imported
by the first load (`_load_model`). So the application build, which imports the deployment
modules only to bind the graph, and a Shadow without a model never pay for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import ray

if TYPE_CHECKING:
    from torch import nn

    from common.checkpoint import ModelMeta
    from common.inference import Pixels

__all__ = [
    "LoadedModel",
    "ModelSlot",
    "ModelUnhealthy",
    "replica_cpu_threads",
    "replica_device",
    "resolve_model_uri",
]

logger = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class LoadedModel:
    model: nn.Module  # a PhotoClassifier, or its fold_batch_norms form
    meta: ModelMeta
    uri: str
    device: str  # "cuda" or "cpu"

    def probabilities(self, pixels: Pixels) -> np.ndarray:
        """Calibrated P(AI-generated) of uint8 pixels (`common.inference`, the one forward
        pass of serving, evaluation and training)."""
        from common.inference import forward_probabilities  # imported with the model already

        return forward_probabilities(self.model, self.meta, pixels, self.device)


def replica_device() -> str:
    """ "cuda" when Ray gave this replica a GPU, else "cpu" (Ray hides the GPUs of a replica
    that asked for none, so this is what torch would find)."""
    gpus = ray.get_runtime_context().get_accelerator_ids().get("GPU", [])
    return "cuda" if gpus else "cpu"


def replica_cpu_threads() -> int:
    """One torch thread per CPU Ray gave this replica (at least one): oversubscribed OpenMP
    threads made a forward pass 10x slower on a contended core."""
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    return max(1, int(cpus))


class ModelUnhealthy(RuntimeError):
    """The loaded model cannot run a forward pass (raised to Serve's health check)."""


def resolve_model_uri(role: str, configured: str | None, override: str | None) -> str | None:
    """The checkpoint a replica of `role` serves: the environment's override (`MODEL_URI`,
    `SHADOW_MODEL_URI`) wins over `user_config`'s `model_uri`, deliberately (an operator's
    explicit choice for the process); logged at start-up and on every reconfigure, with the
    value it ignores, so a `serve deploy` of a new `model_uri` under an override says so."""
    if override is None:
        logger.info("%s model_uri from user_config: %s", role, configured)
        return configured
    if configured is not None and configured != override:
        logger.warning("%s model_uri from the environment: %s (user_config's %s is ignored)",
                       role, override, configured)  # fmt: skip
    else:
        logger.info("%s model_uri from the environment: %s", role, override)
    return override


class ModelSlot:
    def __init__(
        self, role: str, device: str, cpu_threads: int | None = None, fold: bool = False
    ) -> None:
        self.role = role
        self.device = device
        self.cpu_threads = cpu_threads  # torch's threads on the CPU (None: torch's default)
        self.fold = fold  # serve fold_batch_norms(model): forward passes only, no layer hooks
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
            candidate = await asyncio.to_thread(
                _load_model, uri, self.device, self.cpu_threads, self.fold
            )
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
        # after a CPU fallback the slot stays on the CPU: no CUDA check and warning per reload
        self.current, self.load_error, self.device = candidate, None, candidate.device
        logger.info("%s model %s loaded from %s", self.role, candidate.meta.version, uri)
        return True

    async def check_forward(self) -> None:
        """Raise ModelUnhealthy unless the current model (if any) turns one blank image at its
        own side into a finite probability. Run in a worker thread like every forward pass;
        a 1-image pass costs about what one request does."""
        loaded = self.current
        if loaded is None:
            return
        try:
            p = await asyncio.to_thread(_probe, loaded)
        except Exception as exc:  # whatever broke it, the replica cannot serve this model
            raise ModelUnhealthy(
                f"{self.role} model {loaded.meta.version} cannot run a forward pass: {exc!r}"
            ) from exc
        if not np.isfinite(p):
            raise ModelUnhealthy(f"{self.role} model {loaded.meta.version} answers p={p}")


def _load_model(uri: str, device: str, cpu_threads: int | None, fold: bool) -> LoadedModel:
    import torch

    from common.checkpoint import load_checkpoint
    from common.model import fold_batch_norms

    if device == "cuda" and not torch.cuda.is_available():
        # Ray gave this replica a GPU that torch cannot use: no driver, or a cluster whose
        # GPUs are only declared (tests/deploy/test_gke_config_two_nodes.py). As before
        # replica_device() asked Ray instead of torch: the CPU, said loudly, and in ModelInfo.
        logger.warning("the replica was given a GPU, but torch finds no CUDA: the CPU serves")
        device = "cpu"
    if device == "cpu" and cpu_threads is not None:
        torch.set_num_threads(cpu_threads)
    model, meta = load_checkpoint(uri, device)
    return LoadedModel(fold_batch_norms(model) if fold else model, meta, uri, device)


def _probe(loaded: LoadedModel) -> float:
    size = loaded.meta.image_size
    return float(loaded.probabilities(np.zeros((1, 3, size, size), np.uint8))[0])
