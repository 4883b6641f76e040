"""Shadow traffic: a share of the primary's answered images, mirrored to the Shadow off the
request path, and how the Shadow's answers compare with the primary's (metrics only).

The Ingress offers each answered batch; the chosen images leave in batches through a
`BatchedSender`, so a slow, failing or missing shadow never delays or fails a user's answer: it
shows only in `shadow_errors`, `shadow_comparisons` and `shadow_probability_diff`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ray.serve.handle import DeploymentHandle

from common.answers import ModelInfo, Prediction
from common.image import PreparedImage
from deployments.background import BatchedSender
from deployments.classifier import fetch_model_info
from deployments.metrics import IngressMetrics

if TYPE_CHECKING:
    from deployments.ingress import IngressConfig

__all__ = ["MAX_PENDING_MIRRORS", "ShadowMirror"]

MAX_PENDING_MIRRORS = 256  # images waiting for a slow shadow; older ones are dropped


class ShadowMirror:
    def __init__(
        self,
        shadow: DeploymentHandle,
        metrics: IngressMetrics,
        config: Callable[[], IngressConfig],  # read per use: user_config changes apply at once
    ) -> None:
        self._shadow = shadow
        self._metrics = metrics
        self._config = config
        self._info: tuple[ModelInfo, float] | None = None
        self._sender = BatchedSender(
            "shadow mirror",
            self._send,
            interval=lambda: config().shadow_flush_interval_s,
            max_pending=MAX_PENDING_MIRRORS,
            on_drop=metrics.shadow_errors.inc,
        )
        # samples traffic for the shadow, nothing secret
        self._random = random.Random()  # noqa: S311  # nosec B311

    def offer(self, images: list[PreparedImage], predictions: list[Prediction]) -> None:
        """Queue `shadow_fraction` of these answered images for the Shadow; never blocks."""
        fraction = self._config().shadow_fraction
        if fraction <= 0:
            return
        chosen = [
            (image, prediction)
            for image, prediction in zip(images, predictions, strict=True)
            if self._random.random() < fraction
        ]
        if chosen:
            self._sender.add(chosen)

    async def _shadow_info(self) -> ModelInfo:
        """The Shadow's model info, cached for `model_info_ttl_s` (asked once per batch)."""
        now = time.monotonic()
        if self._info is None or now - self._info[1] > self._config().model_info_ttl_s:
            self._info = (await fetch_model_info(self._shadow), now)
        return self._info[0]

    async def _send(self, chosen: list[tuple[PreparedImage, Prediction]]) -> None:
        try:
            if not (await self._shadow_info()).loaded:
                return
            answers: list[Prediction] = await asyncio.wait_for(
                self._shadow.predict_many.remote([image for image, _ in chosen]),
                self._config().shadow_timeout_s,
            )
        except Exception:  # a slow, failing or missing shadow only shows in its metrics
            self._metrics.shadow_errors.inc(len(chosen))
            return
        for (_, primary), shadow in zip(chosen, answers, strict=True):
            agreement = "agree" if primary.prediction == shadow.prediction else "disagree"
            self._metrics.shadow_comparisons.inc(tags={"agreement": agreement})
            self._metrics.shadow_probability_diff.observe(
                abs(primary.probability - shadow.probability)
            )
