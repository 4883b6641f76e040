"""Classifier deployment: batched EfficientNet-B0 inference on uint8 pixels (GPU when present).

`@serve.batch` gathers concurrent requests into one forward pass; its size and wait come from
`user_config` and change in place. A new `model_uri` is loaded first and then swapped in, so a
batch already running finishes on the model it started with. The Shadow is this same class
bound a second time with `role="shadow"`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, fields
from typing import Any, Literal

import numpy as np
import ray
import torch
from ray import serve

from common.checkpoint import ModelMeta, load_checkpoint
from common.image import PreparedImage, resize_pixels
from common.model import PhotoClassifier, to_model_input
from common.rules import confidence_for, label_for
from common.settings import Settings

__all__ = ["Classifier", "ClassifierConfig", "ModelInfo", "Prediction"]

logger = logging.getLogger("ray.serve")

Role = Literal["primary", "shadow"]


@dataclass(frozen=True)
class ClassifierConfig:
    """`user_config` of a Classifier; unknown keys are an error."""

    model_uri: str | None = None  # local path, gs://, or models:/name/version
    max_batch_size: int = 16  # also raise max_ongoing_requests: it caps batches too
    batch_wait_timeout_s: float = 0.005
    threshold: float | None = None  # None: the threshold stored in the checkpoint

    @classmethod
    def from_user_config(cls, raw: dict[str, Any]) -> ClassifierConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown Classifier user_config keys: {unknown}")
        config = cls(**raw)
        if config.max_batch_size < 1 or config.batch_wait_timeout_s < 0:
            raise ValueError("max_batch_size must be >= 1 and batch_wait_timeout_s >= 0")
        if config.threshold is not None and not 0.0 < config.threshold < 1.0:
            raise ValueError("threshold must lie strictly between 0 and 1")
        return config


@dataclass(frozen=True)
class ModelInfo:
    loaded: bool
    version: str | None
    image_size: int | None
    threshold: float | None
    uri: str | None
    device: str


@dataclass(frozen=True)
class Prediction:
    probability: float
    prediction: str
    confidence: str
    model_version: str
    model_ms: float  # forward time of the batch this image rode in


@dataclass(frozen=True)
class _LoadedModel:
    model: PhotoClassifier
    meta: ModelMeta
    uri: str


@serve.deployment
class Classifier:
    def __init__(self, role: Role = "primary") -> None:
        settings = Settings.from_env()
        self._role = role
        self._uri_override = settings.model_uri if role == "primary" else settings.shadow_model_uri
        self._device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self._device.type == "cpu":
            # One thread per CPU this replica owns: oversubscribed OpenMP threads are ~10x slower.
            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
            torch.set_num_threads(max(1, int(cpus)))
        self._loaded: _LoadedModel | None = None
        self._threshold_override: float | None = None

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        config = ClassifierConfig.from_user_config(user_config)
        uri = self._uri_override or config.model_uri
        if uri and (self._loaded is None or self._loaded.uri != uri):
            model, meta = await asyncio.to_thread(load_checkpoint, uri, self._device)
            self._loaded = _LoadedModel(model, meta, uri)  # the swap: one assignment
            logger.info("%s model %s loaded from %s", self._role, meta.version, uri)
        self._threshold_override = config.threshold
        self.predict.set_max_batch_size(config.max_batch_size)
        self.predict.set_batch_wait_timeout_s(config.batch_wait_timeout_s)

    def model_info(self) -> ModelInfo:
        loaded = self._loaded
        if loaded is None:
            return ModelInfo(False, None, None, None, None, self._device.type)
        return ModelInfo(
            True,
            loaded.meta.version,
            loaded.meta.image_size,
            self._threshold(loaded),
            loaded.uri,
            self._device.type,
        )

    async def __call__(self, image: PreparedImage) -> Prediction:
        return await self.predict(image)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def predict(self, images: list[PreparedImage]) -> list[Prediction]:
        loaded = self._loaded  # this batch runs on this model even if a swap lands meanwhile
        if loaded is None:
            raise RuntimeError(f"the {self._role} classifier has no model: set model_uri")
        started = time.perf_counter()
        probabilities = await asyncio.to_thread(self._forward, loaded, images)
        model_ms = (time.perf_counter() - started) * 1000.0
        threshold = self._threshold(loaded)
        return [
            Prediction(
                probability=p,
                prediction=label_for(p, threshold),
                confidence=confidence_for(p),
                model_version=loaded.meta.version,
                model_ms=model_ms,
            )
            for p in probabilities
        ]

    def _threshold(self, loaded: _LoadedModel) -> float:
        return (
            self._threshold_override
            if self._threshold_override is not None
            else loaded.meta.threshold
        )

    def _forward(self, loaded: _LoadedModel, images: list[PreparedImage]) -> list[float]:
        size = loaded.meta.image_size
        pixels = np.stack([
            img.pixels if img.pixels.shape[1:] == (size, size) else resize_pixels(img.pixels, size)
            for img in images
        ])  # fmt: skip
        with torch.inference_mode():
            x = to_model_input(
                torch.from_numpy(pixels), loaded.meta.mean, loaded.meta.std, self._device
            )
            return torch.sigmoid(loaded.model(x)).float().cpu().tolist()
