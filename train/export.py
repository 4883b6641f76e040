"""From the best training checkpoint to a serving checkpoint: evaluate, gate, export.

The decision threshold is chosen on the validation split, the figures come from the held-out
test split, and the drift baseline the DriftMonitor needs is stored with them. A model that
fails the quality gate is not exported.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from common.checkpoint import load_checkpoint, save_checkpoint
from train.data import list_split, split_validation
from train.evaluate import (
    QualityGate,
    choose_threshold,
    classification_metrics,
    drift_baseline,
    predict_probabilities,
)
from train.loop import TrainConfig

__all__ = ["QualityGateFailed", "evaluate_and_export"]


class QualityGateFailed(RuntimeError):
    """The held-out figures are below the gate; nothing was exported."""

    def __init__(self, failures: list[str], report: dict[str, Any]):
        super().__init__("quality gate failed: " + "; ".join(failures))
        self.failures = failures
        self.report = report


def evaluate_and_export(
    checkpoint_uri: str,
    cfg: TrainConfig,
    out_uri: str,
    version: str,
    data_fingerprint: str,
    gate: QualityGate = QualityGate(),
) -> dict[str, Any]:
    """Evaluate `checkpoint_uri` on validation and test, gate it, write the serving checkpoint.

    Returns the evaluation report (also written beside a local `out_uri` as evaluation.json).
    """
    model, meta = load_checkpoint(checkpoint_uri)
    train_files, val_files = split_validation(
        list_split(cfg.data_dir, "train"), cfg.val_fraction, cfg.seed
    )
    test_files = list_split(cfg.data_dir, "test")

    val_probs = predict_probabilities(model, meta, val_files)
    threshold = choose_threshold(np.asarray(val_files.labels), val_probs)
    test_probs = predict_probabilities(model, meta, test_files)
    test_metrics = classification_metrics(np.asarray(test_files.labels), test_probs, threshold)
    report = {
        "version": version,
        "threshold": threshold,
        "validation": classification_metrics(np.asarray(val_files.labels), val_probs, threshold),
        "test": test_metrics,
        "drift_baseline": drift_baseline(test_probs, threshold),
        "data_fingerprint": data_fingerprint,
        "split_sizes": {
            "train": len(train_files),
            "validation": len(val_files),
            "test": len(test_files),
        },
        "gate": asdict(gate),
    }
    failures = gate.failures(test_metrics)
    report["gate_passed"] = not failures
    _write_report(out_uri, report)
    if failures:
        raise QualityGateFailed(failures, report)

    final_meta = replace(
        meta,
        threshold=threshold,
        version=version,
        data_fingerprint=data_fingerprint,
        metrics={k: v for k, v in test_metrics.items() if isinstance(v, float)},
        drift_baseline=report["drift_baseline"],
        train_config=asdict(cfg),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    save_checkpoint(model, final_meta, out_uri)
    return report


def _write_report(out_uri: str, report: dict[str, Any]) -> None:
    if "://" in out_uri:
        return  # remote exports carry the figures in the checkpoint metadata and in MLflow
    path = Path(out_uri).with_name("evaluation.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
