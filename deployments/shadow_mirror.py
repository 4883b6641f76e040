"""Shadow traffic: a share of the primary's answered images, mirrored to the Shadow off the
request path, and how the Shadow's answers compare with the primary's (metrics only).

The Ingress offers each answered batch; the chosen images leave in batches through a
`BatchedSender`, so a slow, failing or missing shadow never delays or fails a user's answer: it
shows only in `shadow_errors`, `shadow_comparisons` and `shadow_probability_diff`. The mirror
has its own `MirrorConfig` (the Ingress hands it a new one on reconfigure) and knows nothing of
the Ingress; `flush` sends what is pending at once (replica shutdown).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

from ray.serve.handle import DeploymentHandle

from common.answers import ModelInfo, Prediction
from common.image import PreparedImage
from deployments.background import BatchedSender
from deployments.downstream import fetch_model_info
from deployments.metrics import IngressMetrics

__all__ = ["MAX_PENDING_MIRRORS", "MirrorConfig", "ShadowMirror"]

MAX_PENDING_MIRRORS = 256  # images waiting for a slow shadow; older ones are dropped


@dataclass(frozen=True)
class MirrorConfig:
    fraction: float = 0.0  # share of answered images mirrored
    timeout_s: float = 10.0  # a mirrored call slower than this counts as a shadow error
    flush_interval_s: float = 0.5  # how often mirrored images leave, in one call
    info_ttl_s: float = 2.0  # how long the Shadow's model info is trusted


class ShadowMirror:
    def __init__(self, shadow: DeploymentHandle, metrics: IngressMetrics) -> None:
        self._shadow = shadow
        self._metrics = metrics
        self.config = MirrorConfig()  # replaced whole on reconfigure; read per use
        self._info: tuple[ModelInfo, float] | None = None
        self._sender = BatchedSender(
            "shadow mirror",
            self._send,
            interval=lambda: self.config.flush_interval_s,
            max_pending=MAX_PENDING_MIRRORS,
            on_drop=metrics.shadow_errors.inc,
        )
        # samples traffic for the shadow, nothing secret
        self._random = random.Random()  # noqa: S311  # nosec B311

    def offer(self, images: list[PreparedImage], predictions: list[Prediction]) -> None:
        """Queue `shadow_fraction` of these answered images for the Shadow; never blocks."""
        fraction = self.config.fraction
        if fraction <= 0:
            return
        chosen = [
            (image, prediction)
            for image, prediction in zip(images, predictions, strict=True)
            if self._random.random() < fraction
        ]
        if chosen:
            self._sender.add(chosen)

    async def flush(self) -> None:
        """Send what is pending now (the replica is shutting down)."""
        await self._sender.flush()

    async def _shadow_info(self) -> ModelInfo:
        """The Shadow's model info, cached for `info_ttl_s` (asked once per batch)."""
        now = time.monotonic()
        if self._info is None or now - self._info[1] > self.config.info_ttl_s:
            self._info = (await fetch_model_info(self._shadow), now)
        return self._info[0]

    async def _send(self, chosen: list[tuple[PreparedImage, Prediction]]) -> None:
        try:
            if not (await self._shadow_info()).loaded:
                return
            answers: list[Prediction] = await asyncio.wait_for(
                self._shadow.predict_many.remote([image for image, _ in chosen]),
                self.config.timeout_s,
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
