"""DriftMonitor deployment: one sliding window of predictions for the whole application.

Every ingress replica sends its predictions here in the background (batched, fire-and-forget),
so the window, the score and `/health` are the same whichever replica answers. Run it with one
replica. The baseline is the primary model's held-out statistics from its checkpoint; a new
model version starts a new window. A log line marks when drift starts and when it ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

from ray import serve

from common.config import strict_dataclass
from common.drift import SIGNALS, DriftReport, DriftThresholds, assess_drift, window_statistics
from deployments.metrics import drift_metrics, refresh_gauges_forever

__all__ = ["DriftMonitor", "DriftMonitorConfig"]

logger = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class DriftMonitorConfig:
    """`user_config` of the DriftMonitor."""

    window_size: int = 1000  # predictions kept
    min_samples: int = 30  # no verdict on fewer
    mean_probability_threshold: float = 0.15  # absolute shift from the baseline
    low_confidence_ratio_threshold: float = 0.20
    ai_generated_ratio_threshold: float = 0.20

    @classmethod
    def from_user_config(cls, raw: dict[str, Any]) -> DriftMonitorConfig:
        config = strict_dataclass(cls, raw, "DriftMonitor user_config")
        if config.window_size < 1 or config.min_samples < 1:
            raise ValueError("window_size and min_samples must be at least 1")
        return config

    def thresholds(self) -> DriftThresholds:
        return DriftThresholds(
            mean_probability=self.mean_probability_threshold,
            low_confidence_ratio=self.low_confidence_ratio_threshold,
            ai_generated_ratio=self.ai_generated_ratio_threshold,
            min_samples=self.min_samples,
        )


@serve.deployment
class DriftMonitor:
    def __init__(self) -> None:
        self._config = DriftMonitorConfig()
        self._window: deque[tuple[float, str]] = deque(maxlen=self._config.window_size)
        self._baseline: dict[str, float] = {}
        self._model_version: str | None = None
        self._detected = False
        self._predictions_total = 0  # since this replica started, over all model versions
        self._metrics = drift_metrics()
        self._gauges: asyncio.Task | None = None

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        self._config = DriftMonitorConfig.from_user_config(user_config)
        self._window = deque(self._window, maxlen=self._config.window_size)
        self._update()
        if self._gauges is None:
            self._gauges = refresh_gauges_forever(lambda: self._set_gauges(self._report()))

    def record(
        self, predictions: list[tuple[float, str]], model_version: str, baseline: dict[str, float]
    ) -> None:
        """Add (probability, label) pairs from the model `model_version` to the window."""
        if model_version != self._model_version:
            self._window.clear()  # a new model has a new baseline
            self._model_version = model_version
        self._baseline = dict(baseline)
        self._window.extend(predictions)
        self._predictions_total += len(predictions)
        self._update()

    def status(self) -> tuple[DriftReport, int]:
        """The current report and the number of predictions recorded since start."""
        return self._report(), self._predictions_total

    def reset(self) -> None:
        self._window.clear()
        self._update()

    def _report(self) -> DriftReport:
        probabilities = [p for p, _ in self._window]
        labels = [label for _, label in self._window]
        current = window_statistics(probabilities, 0.5, labels)
        return assess_drift(current, self._baseline, self._config.thresholds())

    def _update(self) -> None:
        report = self._report()
        if report.detected != self._detected:
            self._detected = report.detected
            if report.detected:
                logger.warning("drift detected: score %.2f over %d predictions of %s: %s",
                               report.score, report.window_size, self._model_version,
                               report.signals)  # fmt: skip
            else:
                logger.info("drift ended: score %.2f over %d predictions",
                            report.score, report.window_size)  # fmt: skip
        self._set_gauges(report)

    def _set_gauges(self, report: DriftReport) -> None:
        self._metrics.score.set(report.score)
        self._metrics.detected.set(int(report.detected))
        self._metrics.window_size.set(report.window_size)
        for signal in SIGNALS:
            if signal in report.signals:
                self._metrics.signal.set(report.signals[signal]["shift"], tags={"signal": signal})
