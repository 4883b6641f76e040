"""DriftMonitor deployment: one sliding window of predictions for the whole application.

Every ingress replica sends its predictions here in the background (batched, fire-and-forget),
so the window, the score and `/health` are the same whichever replica answers. Run it with one
replica. The baseline is the primary model's held-out statistics from its checkpoint; a new
model version starts a new window. A log line marks when drift starts and when it ends.

A restart keeps the window: it is written as JSON to `state_path` (atomically, every
`save_interval_s` while it changes, and on shutdown) and read back at start-up, so a replica
Serve restarts on the same node goes on where it stopped; on another node (or with
`state_path: null`) it starts an empty window, as a new model version does. While it is
unreachable the Ingress drops its reports (counted in `ppd_dependency_errors`) and `/health`
answers `degraded`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
from collections import deque
from pathlib import Path
from typing import Any

import ray
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from common.drift import SIGNALS, DriftReport, DriftThresholds, assess_drift, window_statistics
from deployments.metrics import drift_metrics, refresh_gauges_forever

__all__ = ["DriftMonitor", "DriftMonitorConfig"]

logger = logging.getLogger("ray.serve")


class DriftMonitorConfig(BaseModel):
    """`user_config` of the DriftMonitor: strict types, unknown keys refused."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    window_size: int = Field(1000, ge=1)  # predictions kept
    min_samples: int = Field(30, ge=1)  # no verdict on fewer
    mean_probability_threshold: float = Field(0.15, gt=0)  # absolute shift from the baseline
    low_confidence_ratio_threshold: float = Field(0.20, gt=0)
    ai_generated_ratio_threshold: float = Field(0.20, gt=0)
    # Where the window survives a restart: "node" is a file in this node's temp folder named
    # by the application and the Ray node id (a new cluster starts a new window); null: off.
    state_path: str | None = "node"
    save_interval_s: float = Field(5.0, gt=0)

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
        self._saver: asyncio.Task | None = None
        self._dirty = False

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        first = self._gauges is None
        self._config = DriftMonitorConfig.model_validate(user_config)
        if first:
            self._restore()
        self._window = deque(self._window, maxlen=self._config.window_size)
        self._update()
        if first:
            self._gauges = refresh_gauges_forever(lambda: self._set_gauges(self._report()))
        if self._saver is not None:  # a new save_interval_s applies now, not after the old one
            self._saver.cancel()
        self._saver = asyncio.get_running_loop().create_task(self._save_forever())

    async def __del__(self) -> None:
        """Shutdown: write the window one last time."""
        self._save()

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
        self._dirty = True
        self._update()

    def status(self) -> tuple[DriftReport, int]:
        """The current report and the number of predictions recorded since start."""
        return self._report(), self._predictions_total

    def reset(self) -> None:
        self._window.clear()
        self._dirty = True
        self._update()

    # --- the window across restarts ------------------------------------------------------------

    async def _save_forever(self) -> None:
        while True:
            await asyncio.sleep(self._config.save_interval_s)
            if self._dirty:
                await asyncio.to_thread(self._save)

    def _state_path(self) -> str | None:
        path = self._config.state_path
        if path != "node":
            return path
        context = serve.get_replica_context()
        node = ray.get_runtime_context().get_node_id()
        folder = Path(tempfile.gettempdir()) / "ppd-drift"
        folder.mkdir(exist_ok=True)
        return str(folder / f"{context.app_name}-{node}.json")

    def _save(self) -> None:
        path = self._state_path()
        if path is None:
            return
        self._dirty = False
        state = {
            "model_version": self._model_version,
            "baseline": self._baseline,
            "window": list(self._window),
            "predictions_total": self._predictions_total,
        }
        try:
            directory = os.path.dirname(path) or "."
            with tempfile.NamedTemporaryFile("w", dir=directory, delete=False) as handle:
                json.dump(state, handle)
            os.replace(handle.name, path)  # readers see the old file or the new one, whole
        except OSError:
            logger.exception("drift window could not be saved to %s", path)

    def _restore(self) -> None:
        path = self._state_path()
        if path is None or not os.path.exists(path):
            return
        try:
            with open(path, encoding="utf-8") as handle:
                state = json.load(handle)
            window = [(float(p), str(label)) for p, label in state["window"]]
            self._model_version = state["model_version"]
            self._baseline = {str(k): float(v) for k, v in state["baseline"].items()}
            self._predictions_total = int(state["predictions_total"])
        except (OSError, ValueError, KeyError, TypeError):
            logger.exception("drift window in %s could not be read; starting a new one", path)
            return
        self._window = deque(window, maxlen=self._config.window_size)
        logger.info("drift window restored from %s: %d predictions of %s",
                    path, len(window), self._model_version)  # fmt: skip

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
        for signal in SIGNALS:  # 0 until the window has a verdict on it
            shift = report.signals[signal]["shift"] if signal in report.signals else 0.0
            self._metrics.signal.set(shift, tags={"signal": signal})
