"""From the best training checkpoint to a serving checkpoint: gate, export, register.

The decision threshold is chosen on the validation split, the figures come from the held-out
test split, and the drift baseline the DriftMonitor needs is stored with them (`train.evaluate`).
A model that fails the quality gate is not exported: `python -m train.export` then exits with
EXIT_GATE_FAILED and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.checkpoint import ModelMeta, load_checkpoint, save_checkpoint
from common.model import PhotoClassifier
from train.evaluate import (
    REPORT_FILENAME,
    QualityGate,
    add_gate_arguments,
    evaluate_model,
    gate_from_args,
    gated_metrics,
)
from train.loop import TrainConfig

__all__ = [
    "EXIT_GATE_FAILED",
    "QualityGateFailed",
    "evaluate_and_export",
    "export_checkpoint",
    "main",
]

EXIT_GATE_FAILED = 4  # exit status of every CLI whose export the quality gate refused


class QualityGateFailed(RuntimeError):
    """The held-out figures are below the gate; nothing was exported."""

    def __init__(self, failures: list[str], report: dict[str, Any]):
        super().__init__("quality gate failed: " + "; ".join(failures))
        self.failures = failures
        self.report = report


def export_checkpoint(
    model: PhotoClassifier,
    meta: ModelMeta,
    report: dict[str, Any],
    out_uri: str,
    version: str,
    gate: QualityGate = QualityGate(),
) -> str:
    """Gate on the report's test figures (clean and robustness), then write the serving
    checkpoint to `out_uri` (path or gs://).

    The checkpoint's metadata takes the threshold, calibration, held-out metrics (gated_metrics)
    and drift baseline from the report. Raises QualityGateFailed (and writes nothing) below the
    gate.
    """
    metrics = gated_metrics(report)
    failures = gate.failures(metrics)
    if failures:
        raise QualityGateFailed(failures, report)
    final_meta = replace(
        meta,
        threshold=report["threshold"],
        calibration=report.get("calibration", {}),
        version=version,
        data_fingerprint=report["data_fingerprint"],
        metrics=metrics,
        drift_baseline=report["drift_baseline"],
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    return save_checkpoint(model, final_meta, out_uri)


def evaluate_and_export(
    checkpoint_uri: str,
    cfg: TrainConfig,
    out_uri: str,
    version: str,
    data_fingerprint: str,
    gate: QualityGate = QualityGate(),
    report_dir: Path | str | None = None,
) -> dict[str, Any]:
    """Evaluate `checkpoint_uri` on validation and test, gate it, write the serving checkpoint.

    The report (with the gate's verdict) and figures go to `report_dir`, by default beside a
    local `out_uri`, whether or not the gate passes; `report["files"]` lists them.
    """
    model, meta = load_checkpoint(checkpoint_uri)
    meta = replace(meta, train_config=asdict(cfg))
    evaluation = evaluate_model(model, meta, cfg)
    report = {**evaluation.report, "version": version, "data_fingerprint": data_fingerprint}
    report["gate"] = asdict(gate)
    report["gate_passed"] = not gate.failures(gated_metrics(report))
    if report_dir is None and "://" not in out_uri:
        report_dir = Path(out_uri).parent
    files = [] if report_dir is None else replace(evaluation, report=report).write(report_dir)
    report["files"] = [str(f) for f in files]
    export_checkpoint(model, meta, report, out_uri, version, gate)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Gate an evaluated checkpoint and export it in the serving format; "
        f"exits {EXIT_GATE_FAILED} (writing nothing) when the quality gate refuses it."
    )
    parser.add_argument("checkpoint", help="checkpoint URI (path, gs://, models:/, runs:/)")
    parser.add_argument("--evaluation", required=True, help=f"{REPORT_FILENAME} of `evaluate`")
    parser.add_argument("--out", required=True, help="serving checkpoint path or gs:// URI")
    parser.add_argument("--version", help="model version (default: from --run-info)")
    add_gate_arguments(parser)
    parser.add_argument(
        "--run-info", help="run.json from `train.driver --checkpoint-out`: register in its run"
    )
    parser.add_argument("--register-as", default="product-photo-detector",
                        help="MLflow registered model name (with --run-info)")  # fmt: skip
    args = parser.parse_args(argv)

    report = json.loads(Path(args.evaluation).read_text())
    info = json.loads(Path(args.run_info).read_text()) if args.run_info else {}
    version = args.version or info.get("version")
    if not version:
        parser.error("--version is needed without --run-info")
    gate = gate_from_args(args)
    model, meta = load_checkpoint(args.checkpoint)
    run = None
    if args.run_info:
        from train import tracking  # MLflow only when tracked

        run = tracking.run_from_info(args.run_info)
        passed = not gate.failures(gated_metrics(report))
        tracking.set_tags(run, {"quality_gate": "passed" if passed else "failed"})
    try:
        export_checkpoint(model, meta, report, args.out, version, gate)
    except QualityGateFailed as exc:
        print(f"{exc}; nothing exported", file=sys.stderr)
        return EXIT_GATE_FAILED
    print(f"exported {args.out} (version {version})", flush=True)
    if run is not None:
        uri = tracking.register_checkpoint(run, args.out, args.register_as, version)
        print(f"registered {uri}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
