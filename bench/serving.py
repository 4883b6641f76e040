"""`make bench`: the served graph against the bare model (the limit) and a one-process server.

Run on one machine in one go: the limit in this process, then the plain FastAPI server, then
the Ray Serve application from `serve_config.yaml` (`serve run`, rate limit off), each driven by
the same `hey` load at every concurrency. Prints a table with the ratios and writes JSON;
the baseline's and the served graph's rows carry their CPU per request by process role
(`bench.process_cpu`: which replica to make cheaper when the graph is CPU-bound).

    python -m bench.serving --help
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import platform
import shutil
import subprocess  # nosec B404
import sys
import tempfile
import time
from pathlib import Path

import ray
import torch
import yaml

from bench import process_cpu
from bench.gpu_monitor import GpuSampler
from bench.inputs import make_inputs
from bench.limit import measure_limit
from bench.load import run_load
from bench.server_process import interruptible, serving_env, stop, wait_healthy
from common.checkpoint import load_checkpoint, save_checkpoint

__all__ = [
    "benchmark",
    "gpu_serve_changes",
    "machine_description",
    "main",
    "preprocessor_cores",
    "start_baseline",
    "start_served",
]

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = ROOT / "artifacts" / "demo" / "model.safetensors"
DEFAULT_OUT = ROOT / "artifacts" / "bench" / "serving.json"


def machine_description() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    names = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    cpu = names[0] if names else platform.processor()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": ray.__version__,
    }


def start_baseline(
    checkpoint: Path, port: int, device: str = "cpu", threads: int | None = None
) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "bench.baseline_server",
        "--checkpoint",
        str(checkpoint),
        "--port",
        str(port),
        "--threads",
        str(threads or os.cpu_count() or 1),
        "--device",
        device,
    ]
    return subprocess.Popen(command, cwd=ROOT, preexec_fn=interruptible)  # nosec B603


_DEPLOYMENT_OPTIONS = (
    "num_replicas",
    "ray_actor_options",
    "max_ongoing_requests",
    "max_queued_requests",
)

# --device cuda: one GPU Classifier with big batches, decoding spread over CPU replicas so the
# GPU is the bottleneck (the machine's cores, less the Classifier's and the other deployments').
GPU_CHANGES = {
    "Classifier": {
        "num_replicas": 1,
        "ray_actor_options": {"num_cpus": 2, "num_gpus": 1},
        "max_ongoing_requests": 256,
        "max_queued_requests": 512,
        "max_batch_size": 128,
        "batch_wait_timeout_s": 0.005,
    },
    "Ingress": {
        "preprocess_in_ingress": False,
        "gather_max_images": 64,
        "max_inflight_requests": 256,
        "max_ongoing_requests": 300,
    },
    "Preprocessor": {"ray_actor_options": {"num_cpus": 1}, "max_ongoing_requests": 32},
}


def gpu_serve_changes(cores: int, device: str = "cuda") -> dict[str, dict]:
    """GPU_CHANGES with as many one-core Preprocessor replicas as the cores left over hold
    (Ray must place every replica: the other deployments keep their serve_config CPUs).

    With `device="cpu"` the same graph shape runs without a GPU (Classifier on one core, one
    Preprocessor on half a core) so that a CPU run checks the GPU config's code paths."""
    changes = copy.deepcopy(GPU_CHANGES)
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    others = sum(
        _most_replicas(d) * d.get("ray_actor_options", {}).get("num_cpus", 1)
        for d in config["applications"][0]["deployments"]
        if d["name"] not in ("Classifier", "Preprocessor")
    )
    if device == "cpu":  # and batches a CPU warms up in seconds (it runs every size 1-max)
        changes["Classifier"] |= {"ray_actor_options": {"num_cpus": 0.5}, "max_batch_size": 8}
        changes["Ingress"]["gather_max_images"] = 8
        changes["Preprocessor"] |= {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.5}}
        return changes
    classifier = changes["Classifier"]["ray_actor_options"]["num_cpus"]
    changes["Preprocessor"]["num_replicas"] = max(1, int(cores - classifier - others))
    return changes


def _most_replicas(deployment: dict) -> int:
    """The replicas a serve config's deployment may run at once: its `num_replicas`, or its
    autoscaling's `max_replicas` (Serve's default of one replica when neither is set)."""
    if "autoscaling_config" in deployment:
        return deployment["autoscaling_config"].get("max_replicas", 1)
    return deployment.get("num_replicas", 1)


def preprocessor_cores(changes: dict[str, dict]) -> float:
    """The CPUs a serve config change gives the Preprocessor replicas together."""
    pre = changes["Preprocessor"]
    return pre.get("num_replicas", 1) * pre["ray_actor_options"]["num_cpus"]


def at_image_size(checkpoint: Path, image_size: int, out_dir: Path) -> Path:
    """The same weights saved with another input side (EfficientNet pools globally, so any
    side runs), to measure the graph at the production size with the demo model."""
    model, meta = load_checkpoint(str(checkpoint))
    if meta.image_size == image_size:
        return checkpoint
    path = out_dir / f"model_{image_size}px.safetensors"
    save_checkpoint(model, dataclasses.replace(meta, image_size=image_size), path)
    return path


def with_changes(config: dict, changes: dict[str, dict]) -> dict:
    """A copy of a serve config with some deployments changed: Serve's deployment options
    (num_replicas, ray_actor_options, max_*_requests) or `user_config` entries. A fixed
    `num_replicas` replaces the deployment's `autoscaling_config`, as Serve allows only one."""
    config = copy.deepcopy(config)
    for deployment in config["applications"][0]["deployments"]:
        for key, value in changes.get(deployment["name"], {}).items():
            if key in _DEPLOYMENT_OPTIONS:
                deployment[key] = value
                if key == "num_replicas":
                    deployment.pop("autoscaling_config", None)
            else:
                deployment.setdefault("user_config", {})[key] = value
    return config


def start_served(
    checkpoint: Path,
    port: int,
    config_changes: dict | None = None,
    env: dict | None = None,
    log: Path | None = None,
    root: Path = ROOT,
) -> tuple[subprocess.Popen, Path]:
    """`serve run` of serve_config.yaml on `port`, rate limit off, the checkpoint as MODEL_URI.

    `root` is the checkout served: this one, or another commit's worktree (`bench.ab`), whose
    serve_config.yaml, serving.env and code (first on every Ray process's PYTHONPATH) it runs
    in this environment's Ray and packages."""
    config = yaml.safe_load((root / "serve_config.yaml").read_text())
    config["http_options"]["port"] = port
    config = with_changes(config, config_changes or {})
    handle, path = tempfile.mkstemp(suffix=".yaml", prefix="serve_bench_")
    os.close(handle)
    Path(path).write_text(yaml.safe_dump(config, sort_keys=False))
    serve = Path(sys.executable).with_name("serve")  # beside the interpreter, else the PATH's
    serve = serve if serve.exists() else Path(shutil.which("serve") or serve)
    environment = {
        **os.environ,
        **serving_env(Path(tempfile.mkdtemp(prefix="haproxy-bench-")), root),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
        "MODEL_URI": str(checkpoint),
        "RATE_LIMIT_PER_MINUTE": "0",
        "REQUIRE_AUTH": "false",
        "RAY_ADDRESS": "local",  # a Ray instance of its own, even beside a `ray start` cluster
        **(env or {}),
    }
    log = log or ROOT / "artifacts" / "bench" / "serving_serve_run.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(serve), "run", path],
            cwd=root,
            env=environment,  # nosec B603
            preexec_fn=interruptible,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return process, Path(path)


def benchmark(
    url: str,
    images: list[Path],
    concurrencies: list[int],
    requests: int,
    headers: dict[str, str] | None = None,
    gpu: GpuSampler | None = None,
    cpu_root: int | None = None,
) -> list[dict]:
    """One row per concurrency (after a warm-up); with `gpu`, each row has the GPU's
    utilisation while that level ran; with `cpu_root` (the server's process), the CPU
    milliseconds per request of that process tree, by role (`bench.process_cpu`)."""
    run_load(f"{url}/predict", images, concurrency=2, requests=20, headers=headers)  # warm-up
    rows = []
    for concurrency in concurrencies:
        started = time.monotonic()
        cpu_before = process_cpu.snapshot(cpu_root) if cpu_root is not None else None
        result = run_load(
            f"{url}/predict", images, concurrency, max(requests, concurrency * 4), headers=headers
        )
        rows.append(result.summary())
        if cpu_before is not None:
            rows[-1]["cpu_ms_per_request"] = process_cpu.per_request(
                cpu_before, process_cpu.snapshot(cpu_root), result.requests
            )
        if gpu is not None:
            rows[-1]["gpu"] = gpu.window(started, time.monotonic())
        print(f"  c={concurrency:<3} {rows[-1]}", flush=True)
    return rows


def ratios(limit: dict, baseline: list[dict], served: list[dict]) -> dict:
    by_c = {row["concurrency"]: row for row in served}
    base_by_c = {row["concurrency"]: row for row in baseline}
    out = {}
    for c, row in by_c.items():
        out[c] = {
            "served_over_limit": round(row["images_per_s"] / limit["images_per_s"], 3),
            "served_over_baseline": round(row["images_per_s"] / base_by_c[c]["images_per_s"], 3)
            if base_by_c.get(c, {}).get("images_per_s")
            else None,
            "p50_minus_baseline_ms": round(row["p50_ms"] - base_by_c[c]["p50_ms"], 2)
            if c in base_by_c
            else None,
        }
    return out


def print_table(report: dict) -> None:
    """The figures as a table (and the /predict/batch rows when measured)."""
    print(f"\nmachine: {report['machine']}")
    print(
        f"limit (bare pipeline, best batch {report['limit']['best_batch_size']}): "
        f"{report['limit']['images_per_s']:.1f} images/s"
    )
    header = f"{'system':<9}{'c':>4}{'img/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
    print(header + f"{'served/limit':>14}{'served/base':>13}")
    for system in ("baseline", "served"):
        for row in report[system]:
            line = (
                f"{system:<9}{row['concurrency']:>4}{row['images_per_s']:>9.1f}"
                f"{row['p50_ms']:>9.1f}{row['p99_ms']:>9.1f}{row['errors']:>8}"
            )
            if system == "served":
                r = report["ratios"][row["concurrency"]]
                line += f"{r['served_over_limit']:>14.2f}{(r['served_over_baseline'] or 0):>13.2f}"
            print(line)
            if cpu := row.get("cpu_ms_per_request"):
                print(" " * 13 + "CPU ms/request: " + ", ".join(
                    f"{role} {ms:.1f}" for role, ms in cpu.items() if ms >= 0.1
                ))  # fmt: skip
    for row in report.get("served_batch", []):
        limit_ratio = row["images_per_s"] / report["limit"]["images_per_s"]
        print(
            f"{'batch10':<9}{row['concurrency']:>4}{row['images_per_s']:>9.1f}"
            f"{row['p50_ms']:>9.1f}{row['p99_ms']:>9.1f}{row['errors']:>8}{limit_ratio:>14.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Served graph vs bare model vs plain server.")
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--requests", type=int, default=400, help="per concurrency level")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--image-size",
        type=int,
        help="serve the checkpoint's weights at this input side instead (e.g. 224, the "
        "production size; the demo model is trained at 64)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--baseline-port", type=int, default=8100)
    parser.add_argument("--served-port", type=int, default=8200)
    args = parser.parse_args(argv)
    if not args.checkpoint.exists():
        print(f"no checkpoint at {args.checkpoint}: run `make demo` (or pass --checkpoint)")
        return 2

    if args.image_size:
        args.checkpoint = at_image_size(args.checkpoint, args.image_size, args.out.parent)
    images = make_inputs(ROOT / "artifacts" / "bench" / "inputs")
    report = {
        "machine": machine_description(),
        "device": args.device,
        "checkpoint": str(args.checkpoint),
        "images": [p.name for p in images],
    }
    print("limit: bare pipeline in one process", flush=True)
    report["limit"] = measure_limit(
        str(args.checkpoint), images, device=args.device, threads=os.cpu_count() or 1
    )
    print(f"  {report['limit']}", flush=True)

    print("baseline: one FastAPI process, one request at a time", flush=True)
    baseline = start_baseline(args.checkpoint, args.baseline_port, args.device)
    try:
        wait_healthy(f"http://127.0.0.1:{args.baseline_port}", baseline)
        report["baseline"] = benchmark(
            f"http://127.0.0.1:{args.baseline_port}", images, args.concurrency, args.requests,
            cpu_root=baseline.pid,
        )  # fmt: skip
    finally:
        stop(baseline)

    print("served: Ray Serve application from serve_config.yaml", flush=True)
    changes = gpu_serve_changes(os.cpu_count() or 2) if args.device == "cuda" else {}
    served, config_path = start_served(args.checkpoint, args.served_port, changes)
    try:
        wait_healthy(f"http://127.0.0.1:{args.served_port}", served)
        report["served"] = benchmark(
            f"http://127.0.0.1:{args.served_port}", images, args.concurrency, args.requests,
            cpu_root=served.pid,
        )  # fmt: skip
        print("served, /predict/batch with 10 images a request", flush=True)
        report["served_batch"] = [
            run_load(
                f"http://127.0.0.1:{args.served_port}/predict/batch",
                images,
                c,
                max(8, args.requests // 10),
                images_per_request=10,
            ).summary()
            for c in (1, 4)
        ]
        for row in report["served_batch"]:
            print(f"  c={row['concurrency']:<3} {row}", flush=True)
    finally:
        stop(served)
        config_path.unlink(missing_ok=True)

    report["ratios"] = ratios(report["limit"], report["baseline"], report["served"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
