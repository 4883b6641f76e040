"""Classifier deployment: batched EfficientNet-B0 inference on uint8 pixels (GPU when present).

`@serve.batch` gathers concurrent requests into one forward pass (`common.inference`); its size
and wait come from `user_config` (a strict pydantic model) and change in place. The Shadow is
this same class bound a second time with `role="shadow"` and its own `user_config` (no
`model_uri`: no shadow). `check_health` runs a 1-image forward pass, so that Serve replaces a
replica whose model broke after loading.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from common.answers import ModelInfo, NoModelLoaded, Prediction, prediction_for
from common.image import PreparedImage
from common.settings import apply_log_level, get_settings
from deployments.metrics import (
    classifier_metrics,
    declare_classifier_series,
    refresh_gauges_forever,
)
from deployments.model_slot import (
    LoadedModel,
    ModelSlot,
    replica_cpu_threads,
    replica_device,
    resolve_model_uri,
)

__all__ = ["Classifier", "ClassifierConfig"]

logger = logging.getLogger("ray.serve")

Role = Literal["primary", "shadow"]


class ClassifierConfig(BaseModel):
    """`user_config` of a Classifier (and the Shadow): strict types (`"16"` is not an int; an
    int is a float), unknown keys refused, each error naming its key."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    model_uri: str | None = None  # local path, gs://, or models:/name/version
    max_batch_size: int = Field(16, ge=1)  # keep max_ongoing_requests >= this: it caps batches
    batch_wait_timeout_s: float = Field(0.005, ge=0)  # s
    threshold: float | None = Field(None, gt=0, lt=1)  # None: the checkpoint's own
    # Fault injection for resilience drills (make resilience); off in normal operation.
    inject_delay_s: float = Field(0.0, ge=0)  # s, slept before every batch
    inject_failure: bool = False  # fail every batch


@serve.deployment
class Classifier:
    def __init__(self, role: Role = "primary") -> None:
        settings = get_settings()
        apply_log_level(settings, role)
        self._role = role
        self._uri_override = settings.model_uri if role == "primary" else settings.shadow_model_uri
        self._slot = ModelSlot(role, replica_device(), replica_cpu_threads(), fold=True)
        self._config = ClassifierConfig()
        self._metrics = classifier_metrics()
        declare_classifier_series(self._metrics, role)
        self._gauges: asyncio.Task | None = None

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        config = ClassifierConfig.model_validate(user_config)
        previous = self._slot.current
        warm_up = functools.partial(self._warm_up, max_batch_size=config.max_batch_size)
        uri = resolve_model_uri(self._role, config.model_uri, self._uri_override)
        changed = await self._slot.load(uri, prepare=warm_up)
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

    async def check_health(self) -> None:
        """Serve's health check (every `health_check_period_s`): raises, so that Serve replaces
        the replica, when the loaded model cannot run a 1-image forward pass at its own size to
        a finite probability. A replica without a model (a Shadow without `model_uri`) is
        healthy: a new replica would have none either."""
        await self._slot.check_forward()

    def model_info(self) -> ModelInfo:
        loaded = self._slot.current
        if loaded is None:
            return ModelInfo(
                loaded=False, device=self._slot.device, load_error=self._slot.load_error
            )
        return ModelInfo(
            loaded=True,
            version=loaded.meta.version,
            image_size=loaded.meta.image_size,
            threshold=self._threshold(loaded),
            uri=loaded.uri,
            drift_baseline=dict(loaded.meta.drift_baseline),
            device=loaded.device,  # the CPU where a GPU was given but CUDA is missing
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
        """Calibrated P(AI-generated) of each image (`common.inference`; pixels of another side,
        prepared for the model before a swap, are resized there)."""
        return loaded.probabilities([image.pixels for image in images]).tolist()

    def _warm_up(self, loaded: LoadedModel, max_batch_size: int) -> None:
        """One forward pass at every batch size the batcher can form, before traffic meets a
        new model: the first pass at a new input shape picks its kernels (oneDNN, cuDNN) and
        ran 2-7 ms slower on the CPU here, which showed in p99 after a replica restart."""
        started = time.perf_counter()
        size = loaded.meta.image_size
        for batch_size in range(1, max_batch_size + 1):
            pixels = np.zeros((batch_size, 3, size, size), np.uint8)
            loaded.probabilities(pixels)
        logger.info(
            "%s model %s warmed up at batch sizes 1-%d in %.2f s",
            self._role, loaded.meta.version, max_batch_size, time.perf_counter() - started,
        )  # fmt: skip
