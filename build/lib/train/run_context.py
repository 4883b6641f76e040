"""What the driver tells the Ray Train workers about a run besides the training knobs: the data
fingerprint, the MLflow run rank 0 logs each epoch to, and a fault to inject (tests only).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["RunContext"]

# An injected fault waits this long before the worker exits: Ray Train's controller collects the
# workers' reports every 2 s, so the previous epoch's checkpoint is registered first, as it is in
# a real run whose epochs take minutes.
_FAULT_DELAY_S = 5.0
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunContext:
    """Passed to every worker in `train_loop_config["run"]`."""

    data_fingerprint: str = ""  # recorded in every checkpoint's metadata
    mlflow_tracking_uri: str = ""  # rank 0 logs each epoch here; "" = not tracked
    mlflow_run_id: str = ""
    fail_at_epoch: int = 0  # fault injection for tests: the last rank exits once mid-epoch
    fail_marker: str = ""  # file that records the fault, so the restarted group does not repeat it

    def __post_init__(self) -> None:
        if self.fail_at_epoch and not self.fail_marker:
            raise ValueError("fault injection (fail_at_epoch) needs a fail_marker file")

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> RunContext:
        return cls(**(raw or {}))

    def epoch_logger(self) -> Callable[[dict[str, Any], int], None] | None:
        """A function logging one epoch's metrics to the MLflow run, or None if untracked."""
        if not self.mlflow_run_id:
            return None
        # imported here: MLflow takes over a second to import; only rank 0 of a tracked run logs
        from mlflow.exceptions import MlflowException

        from train.tracking import RunRef, log_epoch_metrics

        ref = RunRef(self.mlflow_tracking_uri, self.mlflow_run_id)

        def log(metrics: dict[str, Any], epoch: int) -> None:
            try:
                log_epoch_metrics(ref, metrics, epoch)
            except (MlflowException, OSError) as exc:  # a tracking outage must not stop training
                _log.warning("epoch %d not logged to MLflow: %s", epoch, exc)

        return log

    def fault_for(self, epoch: int, rank: int, world_size: int) -> Callable[[], None] | None:
        """The fault to inject during `epoch` (1-based) on this worker: the last rank, once."""
        if self.fail_at_epoch != epoch or rank != world_size - 1:
            return None
        return lambda: _die_once(self.fail_marker)


def _die_once(marker: str) -> None:
    """Kill this worker process, unless the marker says it already happened."""
    if os.path.exists(marker):
        return
    Path(marker).write_text(f"worker {os.getpid()} exited on purpose\n")
    time.sleep(_FAULT_DELAY_S)
    _log.warning("fault injection: worker %d exits now", os.getpid())
    os._exit(1)
