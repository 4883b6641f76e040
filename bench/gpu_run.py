"""The stages of the GPU run (`bench/gpu_run.sh`), one per call, each writing its JSON file.

    python -m bench.gpu_run STAGE --out DIR [--device cuda|cpu] [--quick]

Stages, in the order the script runs them: `env` (machine, GPU, driver and CUDA versions),
`data` (the demo set, built when missing), `checkpoint` (three short epochs of the project's Ray
Train driver at 224 px: a real checkpoint in the serving format), `limit` (decode on the
Preprocessors' cores, and the batched forward in bf16 and fp32), `served` (the GPU serve
config under load with GPU utilisation, then the correctness check), `baseline` (the
one-process server on the same device), `training` (Ray Train against a plain loop, with AMP
on a GPU) and `summary` (the table for docs/performance.md and the two targets). Each stage
reads what earlier ones wrote under DIR and is stopped from outside by the script's timeouts;
SIGTERM unwinds it so that servers it started are stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["STAGES", "main"]

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = "model.safetensors"
LOAD_LEVELS = (1, 16, 64, 256)
BATCH_SIZES = (1, 8, 32, 64, 128)


def _write(out: Path, name: str, report: dict) -> Path:
    path = out / f"{name}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{name}: written to {path}", flush=True)
    return path


def _read(out: Path, name: str) -> dict | None:
    path = out / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _cores() -> int:
    return os.cpu_count() or 1


def _threads(args) -> int:
    """Torch threads of the one-process baseline and plain loop: every core, but one in a
    quick rehearsal (on a busy machine two spinning OpenMP threads ran 100x slower here)."""
    return 1 if args.quick else _cores()


def _checkpoint(args) -> Path:
    path = args.out / CHECKPOINT
    if not path.exists():
        raise SystemExit(f"no checkpoint at {path}: the checkpoint stage has not run")
    return path


def stage_env(args) -> dict:
    import importlib.metadata as md

    from bench.gpu_monitor import gpu_description
    from bench.serving import machine_description

    versions = {}
    for name in ("torch", "torchvision", "timm", "ray", "fastapi", "starlette", "pillow", "numpy"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    return {
        "machine": machine_description(),
        "gpu": gpu_description(),
        "packages": versions,
        "hey": shutil.which("hey"),
        "haproxy": shutil.which("haproxy"),
        "device": args.device,
        "quick": args.quick,
    }


def stage_data(args) -> dict:
    from train.demo_data import DemoConfig, build_demo_dataset

    manifest = args.data_dir / "demo_manifest.json"
    if manifest.exists():
        return {"data_dir": str(args.data_dir), "built": False}
    started = time.perf_counter()
    full = ROOT / "data" / "demo"
    if args.quick and (full / "demo_manifest.json").exists():
        return _subset(full, args.data_dir, {"train": 24, "test": 32}) | {
            "seconds": round(time.perf_counter() - started, 1)
        }
    config = (
        DemoConfig(train_per_class=24, test_per_class=32, generator_steps=30)
        if args.quick
        else DemoConfig()
    )
    build_demo_dataset(args.data_dir, config)
    return {
        "data_dir": str(args.data_dir),
        "built": True,
        "config": {
            "train_per_class": config.train_per_class,
            "test_per_class": config.test_per_class,
        },
        "seconds": round(time.perf_counter() - started, 1),
    }


def _subset(source: Path, dest: Path, per_class: dict[str, int]) -> dict:
    """The first files of each split and class of an existing demo set (a quick run)."""
    for split, count in per_class.items():
        for label in ("REAL", "FAKE"):
            (dest / split / label).mkdir(parents=True, exist_ok=True)
            for path in sorted((source / split / label).glob("*.png"))[:count]:
                shutil.copyfile(path, dest / split / label / path.name)
    info = {"subset_of": str(source), "per_class": per_class}
    (dest / "demo_manifest.json").write_text(json.dumps(info) + "\n")
    return {"data_dir": str(dest), "built": True, **info}


def stage_checkpoint(args) -> dict:
    """A few epochs of `train.driver.run_training` at `--image-size`; its checkpoint (the
    serving format: safetensors weights and metadata naming the architecture) is copied out."""
    import ray

    from common.checkpoint import CHECKPOINT_FILENAME, load_checkpoint
    from train.config import TrainConfig
    from train.driver import best_checkpoint_path, run_training

    gpu = args.device == "cuda"
    cfg = TrainConfig(
        data_dir=str(args.data_dir.resolve()),
        image_size=args.image_size,
        epochs=args.checkpoint_epochs,
        warmup_epochs=0,
        batch_size=args.train_batch_size,
        patience=2,
        # EfficientNet-B0 as production serves it; no hub on the GPU machine, and speed does
        # not depend on where the weights started
        architecture="efficientnet_b0",
        pretrained="none",
    )
    started = time.perf_counter()
    ray.init(num_cpus=_cores(), include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as storage:
            result = run_training(
                cfg,
                num_workers=1,
                use_gpu=gpu,
                cpus_per_worker=max(1, _cores() - 1),
                storage_path=storage,
                name="gpu-run-checkpoint",
            )
            source = Path(best_checkpoint_path(result)) / CHECKPOINT_FILENAME
            shutil.copyfile(source, args.out / CHECKPOINT)
            metrics = result.metrics or {}
    finally:
        ray.shutdown()
    _, meta = load_checkpoint(str(args.out / CHECKPOINT))  # the serving side's own check
    return {
        "path": str(args.out / CHECKPOINT),
        "architecture": meta.architecture,
        "image_size": meta.image_size,
        "version": meta.version,
        "epochs": args.checkpoint_epochs,
        "train_images_per_s": round(float(metrics.get("images_per_s", 0.0)), 2),
        "val_accuracy": metrics.get("val_accuracy"),
        "seconds": round(time.perf_counter() - started, 1),
    }


def _images(args) -> list[Path]:
    from bench.inputs import make_inputs

    return make_inputs(args.out / "inputs", per_size=1 if args.quick else 2)


def stage_limit(args) -> dict:
    from bench.limit import measure_split_limit
    from bench.serving import gpu_serve_changes, preprocessor_cores

    decode_cores = preprocessor_cores(gpu_serve_changes(_cores(), args.device))
    report = measure_split_limit(
        str(_checkpoint(args)),
        _images(args),
        decode_processes=max(1, int(decode_cores)),
        device=args.device,
        batch_sizes=tuple(args.batch_sizes),
        decode_images=64 if args.quick else 2048,
        images_per_size=16 if args.quick else 1024,
        threads=1 if args.device == "cuda" else _threads(args),
    )
    report["preprocessor_cores"] = decode_cores
    return report


def stage_served(args) -> dict:
    """The GPU serve config under `hey` at each concurrency with nvidia-smi sampling; then the
    correctness check against the CPU pipeline on the same server (written to correctness.json)."""
    from bench.correctness import (
        compare,
        correctness_images,
        reference_probabilities,
        served_probabilities,
    )
    from bench.gpu_monitor import GpuSampler
    from bench.server_process import free_port, stop, wait_healthy
    from bench.serving import benchmark, gpu_serve_changes, start_served
    from common.inference import auto_precision

    checkpoint, images = _checkpoint(args), _images(args)
    changes = gpu_serve_changes(_cores(), args.device)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    served, config_path = start_served(checkpoint, port, changes, log=args.out / "serve_run.log")
    report: dict = {"config_changes": changes, "url": url}
    try:
        wait_healthy(url, served, timeout_s=240)
        report["startup_s"] = round(time.monotonic() - started, 1)
        with GpuSampler() as gpu:
            report["levels"] = benchmark(url, images, args.concurrency, args.requests, gpu=gpu)
        _write(args.out, "served", report)

        print("correctness: served probabilities against the CPU pipeline", flush=True)
        sample = correctness_images(args.data_dir, 64)
        served_p = served_probabilities(url, sample)
    finally:
        stop(served)
        config_path.unlink(missing_ok=True)
    reference = reference_probabilities(str(checkpoint), sample)
    correctness = {"served_device": args.device, "served": compare(reference, served_p)}
    if args.device == "cuda":  # the precision alone, without serving in between
        for precision in dict.fromkeys(("fp32", "bf16", auto_precision("cuda"))):
            direct = reference_probabilities(str(checkpoint), sample, "cuda", precision)
            correctness[f"direct_{precision}"] = compare(reference, direct)
    correctness["probabilities"] = {"reference_cpu_fp32": reference, "served": served_p}
    _write(args.out, "correctness", correctness)
    return report


def stage_baseline(args) -> dict:
    from bench.gpu_monitor import GpuSampler
    from bench.server_process import free_port, stop, wait_healthy
    from bench.serving import benchmark, start_baseline

    port = free_port()
    process = start_baseline(_checkpoint(args), port, args.device, _threads(args))
    try:
        wait_healthy(f"http://127.0.0.1:{port}", process)
        with GpuSampler() as gpu:
            levels = benchmark(
                f"http://127.0.0.1:{port}", _images(args), args.concurrency, args.requests, gpu=gpu
            )
    finally:
        stop(process)
    return {"device": args.device, "levels": levels}


def stage_training(args) -> dict:
    from bench import training

    out = args.out / "training.json"
    argv = [
        "--data-dir", str(args.data_dir), "--image-size", str(args.image_size),
        "--epochs", "2" if args.quick else "3", "--batch-size", str(args.train_batch_size),
        "--device", args.device, "--out", str(out), "--no-ddp", "--threads", str(_threads(args)),
    ]  # fmt: skip
    if training.main(argv) != 0:
        raise SystemExit("bench.training failed")
    return json.loads(out.read_text())


def stage_summary(args) -> dict:
    from bench.gpu_summary import summarise

    summary = summarise(args.out)
    (args.out / "summary.md").write_text(summary["markdown"])
    print(summary["markdown"], flush=True)
    return summary


STAGES = {
    "env": stage_env,
    "data": stage_data,
    "checkpoint": stage_checkpoint,
    "limit": stage_limit,
    "served": stage_served,
    "baseline": stage_baseline,
    "training": stage_training,
    "summary": stage_summary,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=list(STAGES))
    parser.add_argument("--out", type=Path, required=True, help="the run's output folder")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny counts (a CPU rehearsal)")
    parser.add_argument(
        "--data-dir", type=Path, help="demo set (default: data/demo; quick: OUT/data)"
    )
    parser.add_argument("--image-size", type=int, help="default 224 (quick: 64)")
    parser.add_argument("--concurrency", type=int, nargs="+", help=f"default {LOAD_LEVELS}")
    parser.add_argument("--requests", type=int, help="per level (at least 4 x concurrency)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", help=f"default {BATCH_SIZES}")
    parser.add_argument("--train-batch-size", type=int, help="default 64 (quick: 16)")
    parser.add_argument(
        "--checkpoint-epochs",
        type=int,
        help="default 3 (quick: 1): enough for probabilities that vary from image to image, "
        "so that the correctness check has something to compare",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # `timeout` sends SIGTERM: unwind (finally blocks stop `serve run` and the baseline)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(124))
    args.out.mkdir(parents=True, exist_ok=True)
    if args.data_dir is None:
        args.data_dir = args.out / "data" if args.quick else ROOT / "data" / "demo"
    args.concurrency = args.concurrency or ([1, 4] if args.quick else list(LOAD_LEVELS))
    args.requests = args.requests or (8 if args.quick else 400)
    args.batch_sizes = args.batch_sizes or ([1, 8] if args.quick else list(BATCH_SIZES))
    args.train_batch_size = args.train_batch_size or (16 if args.quick else 64)
    args.image_size = args.image_size or (64 if args.quick else 224)
    args.checkpoint_epochs = args.checkpoint_epochs or (1 if args.quick else 3)
    if args.device == "cuda" and args.stage not in ("env", "data", "summary"):
        import torch

        if not torch.cuda.is_available():
            print("--device cuda, but torch sees no GPU", file=sys.stderr)
            return 3
    report = STAGES[args.stage](args)
    if args.stage not in ("served", "summary"):  # served writes its own, before correctness
        _write(args.out, args.stage, report)
    elif args.stage == "summary":
        _write(args.out, "summary", {k: v for k, v in report.items() if k != "markdown"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
