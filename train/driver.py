"""The training driver: builds Ray Train's `TorchTrainer`, runs it, then evaluates and exports.

The same code trains on CPU workers here and on T4 workers on GKE (`--num-workers`,
`--use-gpu`). `python -m train.driver --help` lists the options.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, fields
from datetime import UTC, datetime
from pathlib import Path

from ray.train import CheckpointConfig, FailureConfig, Result, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from train.data import data_fingerprint, list_split
from train.evaluate import QualityGate
from train.export import QualityGateFailed, evaluate_and_export
from train.loop import TrainConfig, train_fn_per_worker

__all__ = ["best_checkpoint_path", "build_trainer", "main", "run_training"]

DEFAULT_STORAGE = "artifacts/ray_results"


def build_trainer(
    cfg: TrainConfig,
    num_workers: int = 2,
    use_gpu: bool = False,
    cpus_per_worker: float = 1,
    storage_path: str = DEFAULT_STORAGE,
    name: str | None = None,
    max_failures: int = 2,
) -> TorchTrainer:
    """A `TorchTrainer` running `train_fn_per_worker` with `cfg` on `num_workers` workers."""
    return TorchTrainer(
        train_fn_per_worker,
        train_loop_config=asdict(cfg),
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
        ),
    )


def run_training(cfg: TrainConfig, **trainer_options) -> Result:
    """Fit and return Ray Train's result (metrics, best checkpoints, errors)."""
    cfg = TrainConfig(**{**asdict(cfg), "data_dir": _absolute(cfg.data_dir)})
    return build_trainer(cfg, **trainer_options).fit()


def best_checkpoint_path(result: Result) -> str:
    """The directory of the reported checkpoint with the best validation F1."""
    if result.best_checkpoints:
        checkpoint, _ = max(result.best_checkpoints, key=lambda cm: cm[1].get("val_f1", -1.0))
    else:
        checkpoint = result.checkpoint
    if checkpoint is None:
        raise RuntimeError("training reported no checkpoint")
    return checkpoint.path


def main(argv: list[str] | None = None) -> int:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description="Train with Ray Train, evaluate, gate and export.")
    parser.add_argument("--out", default="artifacts/model/model.safetensors",
                        help="where the serving checkpoint goes (local path or gs://)")  # fmt: skip
    parser.add_argument("--num-workers", type=int, default=2, help="Ray Train workers")
    parser.add_argument("--use-gpu", action="store_true", help="one GPU per worker")
    parser.add_argument("--cpus-per-worker", type=float, default=1)
    parser.add_argument(
        "--storage-path", default=DEFAULT_STORAGE, help="Ray Train storage (gs:// on a cluster)"
    )
    parser.add_argument("--name", default=None, help="run name (default: ppd-<UTC time>)")
    parser.add_argument("--max-failures", type=int, default=2, help="worker-group restarts allowed")
    parser.add_argument("--min-accuracy", type=float, default=QualityGate.min_accuracy)
    parser.add_argument("--min-f1", type=float, default=QualityGate.min_f1)
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            kind = type(default) if default is not None else str
            parser.add_argument(flag, type=kind, default=default, help=f"default {default}")
    args = parser.parse_args(argv)

    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    name = args.name or f"ppd-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    fingerprint = data_fingerprint(
        list_split(cfg.data_dir, "train"), list_split(cfg.data_dir, "test")
    )
    print(f"run {name}: data {cfg.data_dir} fingerprint {fingerprint[:12]}", flush=True)
    result = run_training(
        cfg,
        num_workers=args.num_workers,
        use_gpu=args.use_gpu,
        cpus_per_worker=args.cpus_per_worker,
        storage_path=args.storage_path,
        name=name,
        max_failures=args.max_failures,
    )
    cfg = TrainConfig(**{**asdict(cfg), "data_dir": _absolute(cfg.data_dir)})
    gate = QualityGate(min_accuracy=args.min_accuracy, min_f1=args.min_f1)
    version = f"{name}-{fingerprint[:8]}"
    try:
        report = evaluate_and_export(
            str(Path(best_checkpoint_path(result)) / "model.safetensors"),
            cfg, args.out, version, fingerprint, gate,
        )  # fmt: skip
    except QualityGateFailed as exc:
        print(json.dumps(exc.report["test"], indent=2), file=sys.stderr)
        print(f"{exc}; nothing exported", file=sys.stderr)
        return 1
    test = report["test"]
    print(
        f"test accuracy {test['accuracy']:.4f}  f1 {test['f1']:.4f}  "
        f"roc_auc {test['roc_auc']:.4f}  "
        f"threshold {report['threshold']:.2f}  -> {args.out} (version {version})",
        flush=True,
    )
    return 0


def _absolute(uri: str) -> str:
    return uri if "://" in uri else str(Path(uri).expanduser().resolve())


if __name__ == "__main__":
    sys.exit(main())
