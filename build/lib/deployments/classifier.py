"""Classifier deployment: batched EfficientNet-B0 inference on uint8 pixels (GPU when present).

`@serve.batch` gathers concurrent requests into one forward pass; its size and wait come from
`user_config` and change in place. The Shadow is this same class bound a second time with
`role="shadow"` and its own `user_config` (no `model_uri`: no shadow).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from ray import serve
from ray.serve.handle import DeploymentHandle

from common.answers import ModelInfo, NoModelLoaded, Prediction, prediction_for
from common.calibration import calibrated_probabilities
from common.config import strict_dataclass
from common.image import PreparedImage, resize_pixels
from common.model import to_model_input
from common.settings import Settings
from deployments.metrics import classifier_metrics, refresh_gauges_forever
from deployments.model_slot import LoadedModel, ModelSlot, autocast_dtype, replica_device

__all__ = ["Classifier", "ClassifierConfig", "fetch_model_info"]

logger = logging.getLogger("ray.serve")

Role = Literal["primary", "shadow"]


@dataclass(frozen=True)
class ClassifierConfig:
    """`user_config` of a Classifier; unknown keys are an error."""

    model_uri: str | None = None  # local path, gs://, or models:/name/version
    max_batch_size: int = 16  # keep max_ongoing_requests >= this: it caps batches too
    batch_wait_timeout_s: float = 0.005
    threshold: float | None = None  # None: the threshold stored in the checkpoint
    # Fault injection for resilience drills (make resilience); off in normal operation.
    inject_delay_s: float = 0.0  # sleep this long before every batch
    inject_failure: bool = False  # fail every batch

    @classmethod
    def from_user_config(cls, raw: dict[str, Any]) -> ClassifierConfig:
        config = strict_dataclass(cls, raw, "Classifier user_config")
        if config.max_batch_size < 1 or config.batch_wait_timeout_s < 0:
            raise ValueError("max_batch_size must be >= 1 and batch_wait_timeout_s >= 0")
        if config.threshold is not None and not 0.0 < config.threshold < 1.0:
            raise ValueError("threshold must lie strictly between 0 and 1")
        return config


async def fetch_model_info(handle: DeploymentHandle, timeout_s: float = 5.0) -> ModelInfo:
    """What a Classifier (or Shadow) replica serves; TimeoutError past `timeout_s`."""
    return await asyncio.wait_for(handle.model_info.remote(), timeout_s)


@serve.deployment
class Classifier:
    def __init__(self, role: Role = "primary") -> None:
        settings = Settings.from_env()
        self._role = role
        self._uri_override = settings.model_uri if role == "primary" else settings.shadow_model_uri
        self._slot = ModelSlot(role, replica_device())
        self._config = ClassifierConfig()
        self._metrics = classifier_metrics()
        self._gauges: asyncio.Task | None = None

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        config = ClassifierConfig.from_user_config(user_config)
        previous = self._slot.current
        warm_up = functools.partial(self._warm_up, max_batch_size=config.max_batch_size)
        changed = await self._slot.load(self._uri_override or config.model_uri, prepare=warm_up)
        if self._slot.load_error:
            self._metrics.model_load_failures.inc(tags={"role": self._role})
        if changed:
            self._metrics.model_swaps.inc(tags={"role": self._role})
            if previous is not None:
                self._metrics.model_info.set(
                    0, tags={"role": self._role, "version": previous.meta.version}
                )
        current = self._slot.current
        if not changed and current and config.max_batch_size != self._config.max_batch_size:
            await asyncio.to_thread(warm_up, current)
        self._config = config
        if self._gauges is None:
            self._gauges = refresh_gauges_forever(self._set_gauges)
        self._set_gauges()
        self.predict.set_max_batch_size(config.max_batch_size)
        self.predict.set_batch_wait_timeout_s(config.batch_wait_timeout_s)

    def model_info(self) -> ModelInfo:
        loaded = self._slot.current
        if loaded is None:
            return ModelInfo(
                loaded=False, device=self._slot.device.type, load_error=self._slot.load_error
            )
        return ModelInfo(
            loaded=True,
            version=loaded.meta.version,
            image_size=loaded.meta.image_size,
            threshold=self._threshold(loaded),
            uri=loaded.uri,
            drift_baseline=dict(loaded.meta.drift_baseline),
            device=self._slot.device.type,
            load_error=self._slot.load_error,
        )

    async def __call__(self, image: PreparedImage) -> Prediction:
        return await self.predict(image)

    async def predict_many(self, images: list[PreparedImage]) -> list[Prediction]:
        """Several images from one request: they join the same batch queue as single calls."""
        return list(await asyncio.gather(*(self.predict(image) for image in images)))

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def predict(self, images: list[PreparedImage]) -> list[Prediction]:
        loaded = self._slot.current  # this batch runs on this model even if a swap lands now
        if loaded is None:
            raise NoModelLoaded(f"the {self._role} classifier has no model: set model_uri")
        if self._config.inject_delay_s:
            await asyncio.sleep(self._config.inject_delay_s)
        if self._config.inject_failure:
            raise RuntimeError(f"injected failure in the {self._role} classifier")
        started = time.perf_counter()
        probabilities = await asyncio.to_thread(self._forward, loaded, images)
        model_ms = (time.perf_counter() - started) * 1000.0
        self._metrics.batch_size.observe(len(images), tags={"role": self._role})
        threshold = self._threshold(loaded)
        version, size = loaded.meta.version, len(images)
        return [
            prediction_for(p, threshold, model_version=version, model_ms=model_ms, batch_size=size)
            for p in probabilities
        ]

    def _set_gauges(self) -> None:
        current = self._slot.current
        self._metrics.model_loaded.set(int(current is not None), tags={"role": self._role})
        if current is not None:
            tags = {"role": self._role, "version": current.meta.version}
            self._metrics.model_info.set(1, tags=tags)

    def _threshold(self, loaded: LoadedModel) -> float:
        override = self._config.threshold
        return override if override is not None else loaded.meta.threshold

    def _forward(self, loaded: LoadedModel, images: list[PreparedImage]) -> list[float]:
        size = loaded.meta.image_size
        pixels = np.stack([
            img.pixels if img.pixels.shape[1:] == (size, size) else resize_pixels(img.pixels, size)
            for img in images
        ])  # fmt: skip
        return self._probabilities(loaded, pixels)

    def _probabilities(self, loaded: LoadedModel, pixels: np.ndarray) -> list[float]:
        """Calibrated P(AI-generated) for a uint8 NCHW batch."""
        meta, device = loaded.meta, self._slot.device
        dtype = autocast_dtype(device)
        with torch.inference_mode(), torch.autocast(device.type, dtype, enabled=dtype is not None):
            x = to_model_input(torch.from_numpy(pixels), meta.mean, meta.std, device)
            return calibrated_probabilities(loaded.model(x), meta).cpu().tolist()

    def _warm_up(self, loaded: LoadedModel, max_batch_size: int) -> None:
        """One forward pass at every batch size the batcher can form, before traffic meets a
        new model: the first pass at a new input shape picks its kernels (oneDNN, cuDNN) and
        ran 2-7 ms slower on the CPU here, which showed in p99 after a replica restart."""
        started = time.perf_counter()
        size = loaded.meta.image_size
        for batch_size in range(1, max_batch_size + 1):
            self._probabilities(loaded, np.zeros((batch_size, 3, size, size), np.uint8))
        logger.info(
            "%s model %s warmed up at batch sizes 1-%d in %.2f s",
            self._role, loaded.meta.version, max_batch_size, time.perf_counter() - started,
        )  # fmt: skip
