"""Ray Tune sweeps over the `train/` driver, with ASHA early stopping.

Each trial is `train_driver_fn`: the same tracked `TorchTrainer` as `train.driver` (the Train V2
way: Tune runs a function that calls `TorchTrainer.fit()`, and `TuneReportCallback` forwards each
epoch's report), its Ray Train run named after the trial id and its MLflow run a child of the
sweep's. Re-running with the same `--name` resumes an interrupted sweep (`Tuner.restore`); each
unfinished trial's Train run then resumes from its last checkpoint. The best trial's best
checkpoint is evaluated, gated, exported in the serving format and registered in MLflow.
`python -m tune.sweep --help` lists the options.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ray
import ray.train
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import BasicVariantGenerator

from common.checkpoint import CHECKPOINT_FILENAME
from common.pretrained import PretrainedError
from train import tracking
from train.data import data_fingerprint, list_split
from train.driver import (
    EXIT_PRETRAINED_UNAVAILABLE,
    best_checkpoint_path,
    pretrained_origin,
    report_pretrained_error,
    train_tracked,
)
from train.evaluate import add_gate_arguments, gate_from_args
from train.export import EXIT_GATE_FAILED, QualityGateFailed, evaluate_and_export
from train.loop import TrainConfig

__all__ = ["SEARCH_SPACE", "best_checkpoint", "main", "run_sweep", "train_driver_fn"]

# What a sweep varies; every other TrainConfig field comes from the command line.
SEARCH_SPACE: dict[str, Any] = {
    "lr": tune.loguniform(1e-4, 3e-3),  # AdamW peak learning rate
    "weight_decay": tune.loguniform(1e-4, 1e-1),
    "batch_size": tune.choice([16, 32, 64]),  # global
    "dropout": tune.uniform(0.1, 0.5),  # head dropout
    "augment_strength": tune.uniform(0.0, 1.0),  # 1 = flip, 15 degrees, jitter 0.2
    "blur_prob": tune.choice([0.0, 0.1, 0.5]),  # Wang et al.'s settings: off, 0.1, 0.5
    "jpeg_prob": tune.choice([0.0, 0.1, 0.5]),
}
METRIC, MODE = "val_f1", "max"
DEFAULT_STORAGE = "artifacts/tune"
# A trial only waits on TorchTrainer.fit() while its Ray Train workers hold the CPUs and GPUs;
# Tune needs a non-zero request to schedule it, so it asks for a sliver of a CPU.
TRIAL_CPUS = 0.01
EXIT_INTERRUPTED = 130  # the sweep was stopped (Ctrl-C) before every trial finished


def train_driver_fn(config: dict[str, Any]) -> None:
    """One trial: a tracked Ray Train run of the trial's config, reporting each epoch to Tune."""
    trial_id = tune.get_context().get_trial_id()
    cfg = _trial_config(config)
    _, run = train_tracked(
        cfg,
        name=_train_run_name(config, trial_id),
        fingerprint=config["data_fingerprint"],
        parent=tracking.RunRef.from_dict(config["mlflow_parent"]),
        storage_path=config["train_storage_path"],
        callbacks=[TuneReportCallback()],
        **config["scaling"],
    )
    tracking.finish_run(run)


def run_sweep(
    base: TrainConfig,
    name: str,
    num_samples: int,
    scaling: dict[str, Any],
    storage_path: str = DEFAULT_STORAGE,
    grace_period: int = 1,
    max_concurrent_trials: int = 0,
    seed: int | None = None,
) -> tuple[tune.ResultGrid, tracking.RunRef, str]:
    """Run (or resume) sweep `name`; returns Tune's results, the parent MLflow run, fingerprint."""
    base = replace(base, data_dir=_absolute(base.data_dir))
    storage = _absolute(storage_path)
    fingerprint = data_fingerprint(
        list_split(base.data_dir, "train"), list_split(base.data_dir, "test")
    )
    parent = tracking.start_run(
        f"sweep-{name}",
        params={**asdict(base), "num_samples": num_samples, "data_fingerprint": fingerprint},
        tags={"data_fingerprint": fingerprint, "sweep": name},
    )
    trainable = tune.with_resources(train_driver_fn, {"CPU": TRIAL_CPUS})
    experiment = f"{storage}/{name}"
    if tune.Tuner.can_restore(experiment):
        print(f"resuming sweep {name} from {experiment}", flush=True)
        tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_errored=True)
    else:
        constants = {
            "base": asdict(base),
            "sweep": name,
            "data_fingerprint": fingerprint,
            "mlflow_parent": asdict(parent),
            "scaling": scaling,
            "train_storage_path": f"{storage}/{name}-train",
        }
        tuner = tune.Tuner(
            trainable,
            param_space={**SEARCH_SPACE, **constants},
            tune_config=tune.TuneConfig(
                metric=METRIC,
                mode=MODE,
                num_samples=num_samples,
                scheduler=ASHAScheduler(
                    time_attr="epoch", max_t=base.epochs, grace_period=grace_period
                ),
                search_alg=BasicVariantGenerator(random_state=seed),
                max_concurrent_trials=max_concurrent_trials or _concurrent_trials(scaling),
            ),
            run_config=tune.RunConfig(name=name, storage_path=storage),
        )
    results = tuner.fit()
    return results, parent, fingerprint


def best_checkpoint(results: tune.ResultGrid) -> tuple[tune.Result, str]:
    """The best trial (best validation F1 at any epoch) and its best checkpoint, as kept by the
    trial's own Ray Train run (the best two by validation F1)."""
    best = results.get_best_result(METRIC, MODE, scope="all")
    run_path = f"{best.config['train_storage_path']}/{_train_run_name(best.config, best)}"
    return best, best_checkpoint_path(ray.train.Result.from_path(run_path))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    base = TrainConfig(
        data_dir=args.data_dir, image_size=args.image_size, epochs=args.epochs,
        warmup_epochs=min(args.warmup_epochs, args.epochs), seed=args.seed,
        architecture=args.architecture, pretrained=args.pretrained,
    )  # fmt: skip
    try:
        pretrained_origin(base)  # every trial would fail the same way: stop before the first
    except PretrainedError as exc:
        return report_pretrained_error(base, exc)
    name = args.name or f"sweep-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    scaling = {"num_workers": args.num_workers, "cpus_per_worker": args.cpus_per_worker,
               "use_gpu": args.use_gpu}  # fmt: skip
    print(f"sweep {name}: resume an interrupted sweep with --name {name}", flush=True)
    if not ray.is_initialized():
        ray.init()  # now rather than inside Tune: the default concurrency reads its resources
    results, parent, fingerprint = run_sweep(
        base, name, args.num_samples, scaling, args.storage_path, args.grace_period,
        args.max_concurrent_trials, args.seed,
    )  # fmt: skip
    for result in results:
        if result.error:
            print(f"trial {result.path} failed: {result.error}", file=sys.stderr)
    if results.num_terminated + results.num_errors < len(results):
        print(f"sweep {name} interrupted; resume it with --name {name}", file=sys.stderr)
        return EXIT_INTERRUPTED

    best, checkpoint = best_checkpoint(results)
    trial_id = best.metrics["trial_id"]
    cfg = _trial_config(best.config)
    trial_run = tracking.start_run(_train_run_name(best.config, trial_id), {}, parent=parent)
    tracking.set_tags(parent, {"best_trial": trial_id})
    version = f"{name}-{trial_id}-{fingerprint[:8]}"
    print(f"best trial {trial_id} ({checkpoint}): {cfg}", flush=True)

    gate = gate_from_args(args)
    remote = "://" in args.out
    report_dir = Path(tempfile.mkdtemp()) if remote else Path(args.out).parent
    try:
        report = evaluate_and_export(
            str(Path(checkpoint) / CHECKPOINT_FILENAME), cfg, args.out, version, fingerprint,
            gate, report_dir,
        )  # fmt: skip
    except QualityGateFailed as exc:
        tracking.log_evaluation(trial_run, exc.report, exc.report["files"])
        for run in (trial_run, parent):
            tracking.finish_run(run)
        print(f"{exc}; nothing exported", file=sys.stderr)
        return EXIT_GATE_FAILED
    tracking.log_evaluation(trial_run, report, report["files"])
    model_uri = tracking.register_checkpoint(trial_run, args.out, args.register_as, version)
    for run in (trial_run, parent):
        tracking.finish_run(run)
    test = report["test"]
    print(
        f"test accuracy {test['accuracy']:.4f}  f1 {test['f1']:.4f}  "
        f"-> {args.out} (version {version}), registered as {model_uri}",
        flush=True,
    )
    return 0


def _train_run_name(config: dict[str, Any], trial: str | tune.Result) -> str:
    """The trial's Ray Train run (and MLflow run) name: the sweep's name and the trial id."""
    trial_id = trial if isinstance(trial, str) else trial.metrics["trial_id"]
    return f"{config['sweep']}_trial_{trial_id}"


def _trial_config(config: dict[str, Any]) -> TrainConfig:
    return TrainConfig.from_dict({**config["base"], **{k: config[k] for k in SEARCH_SPACE}})


def _concurrent_trials(scaling: dict[str, Any]) -> int:
    """As many trials as the cluster's CPUs (or GPUs) can run side by side, at least one."""
    resources = ray.cluster_resources() if ray.is_initialized() else {}
    if scaling.get("use_gpu"):
        return max(1, int(resources.get("GPU", 1) // scaling["num_workers"]))
    per_trial = scaling["num_workers"] * scaling["cpus_per_worker"] + TRIAL_CPUS
    return max(1, int(resources.get("CPU", per_trial) // per_trial))


def _parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(
        description="Sweep lr, weight decay, batch size, dropout and augmentation (strength, "
        "blur and JPEG probabilities) with Ray Tune and ASHA; evaluate, gate, export and "
        "register the best trial. Exits "
        f"{EXIT_GATE_FAILED} when the quality gate refuses it."
    )
    parser.add_argument("--data-dir", default=defaults.data_dir, help="CIFAKE layout, or gs://")
    parser.add_argument("--name", help="sweep name (default: sweep-<UTC time>); an existing "
                        "sweep of that name is resumed")  # fmt: skip
    parser.add_argument("--num-samples", type=int, default=8, help="trials")
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="per trial (max_t)")
    parser.add_argument("--grace-period", type=int, default=2, help="epochs before ASHA may stop")
    parser.add_argument("--warmup-epochs", type=int, default=defaults.warmup_epochs)
    parser.add_argument("--image-size", type=int, default=defaults.image_size, help="px")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--architecture", default=defaults.architecture, help="a timm model")
    parser.add_argument("--pretrained", default=defaults.pretrained,
                        help="imagenet, a weights file (path or gs://) or none; "
                        f"exits {EXIT_PRETRAINED_UNAVAILABLE} when it cannot be had")  # fmt: skip
    parser.add_argument("--num-workers", type=int, default=1, help="Ray Train workers per trial")
    parser.add_argument("--cpus-per-worker", type=float, default=1)
    parser.add_argument("--use-gpu", action="store_true", help="one GPU per worker")
    parser.add_argument("--max-concurrent-trials", type=int, default=0,
                        help="0: as many as the cluster's resources allow")  # fmt: skip
    parser.add_argument("--storage-path", default=DEFAULT_STORAGE, help="gs:// on a cluster")
    parser.add_argument("--out", default="artifacts/sweep/model.safetensors",
                        help="serving checkpoint of the best trial (path or gs://)")  # fmt: skip
    add_gate_arguments(parser)
    parser.add_argument("--register-as", default=tracking.REGISTERED_MODEL)
    return parser


def _absolute(uri: str) -> str:
    return uri if "://" in uri else str(Path(uri).expanduser().resolve())


if __name__ == "__main__":
    sys.exit(main())
