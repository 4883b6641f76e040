"""`make resilience`: fault drills against the served application on loopback.

Each scenario drives bounded load with the benchmark's `hey` client, does one thing to the
application (kill a replica, slow or break the shadow, roll out a model, overload it, run it
long), prints a one-line verdict and counts towards the exit status. A `Target` says how to reach
and change the application: `serve run` + `serve deploy` for `make resilience`, the test
session's application for the smoke run in `make test` — the scenarios are the same code.
"""

from __future__ import annotations

import argparse
import copy
import os
import signal
import subprocess  # nosec B404
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from bench.inputs import make_inputs
from bench.load import LoadResult, run_load
from bench.serving import ROOT, interruptible, serving_env, stop, wait_healthy, with_changes

__all__ = ["SCENARIOS", "ServeRunTarget", "Target", "Verdict", "main"]

APP = "product-photo-detector"


@dataclass
class Verdict:
    scenario: str
    passed: bool
    summary: str
    figures: dict = field(default_factory=dict)

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'}  {self.scenario:<22} {self.summary}"


@dataclass
class Target:
    """How a scenario reaches and changes the application."""

    url: str
    headers: dict[str, str]
    deploy: Callable[[dict], None]  # apply a whole serve config (as `serve deploy` does)
    config: dict  # the config the application runs with now
    images: list[Path]

    def with_changes(self, changes: dict[str, dict]) -> dict:
        """The current config with some deployments' settings changed."""
        return with_changes(self.config, changes)

    def load(self, concurrency: int, requests: int) -> LoadResult:
        return run_load(f"{self.url}/predict", self.images, concurrency, requests, self.headers)


def replica_pids(deployment: str) -> list[int]:
    """PIDs of the replica processes of `deployment` (Ray names them ServeReplica:app:name)."""
    pattern = f"ServeReplica:{APP}:{deployment}"
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False)  # noqa: S607  # nosec B603 B607
    return sorted(int(pid) for pid in found.stdout.split())


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def _under_load(
    target: Target,
    concurrency: int,
    requests: int,
    action: Callable[[], None],
    delay_s: float = 2.0,
) -> LoadResult:
    """Run `action` `delay_s` seconds into a load run; return the load's result."""
    box: dict[str, LoadResult] = {}
    worker = threading.Thread(target=lambda: box.update(r=target.load(concurrency, requests)))
    worker.start()
    time.sleep(delay_s)
    action()
    worker.join()
    return box["r"]


# --- the scenarios ---------------------------------------------------------------------


def sustained_load(target: Target, scale: float) -> Verdict:
    requests = max(200, int(5000 * scale))
    result = target.load(concurrency=32, requests=requests)
    fives = {s: n for s, n in result.statuses.items() if s >= 500}
    passed = not fives and result.requests >= requests
    s = result.summary()
    return Verdict(
        "sustained_load",
        passed,
        f"{result.requests} requests at c=32: {s['images_per_s']} img/s, "
        f"p99 {s['p99_ms']} ms, 5xx {sum(fives.values())}",
        s,
    )


def replica_killed(target: Target, scale: float) -> Verdict:
    """SIGKILL one of the Classifier's replicas under load; the ingress retries once on another
    and Serve starts a replacement."""
    before = replica_pids("Classifier")
    if len(before) < 2:
        return Verdict(
            "classifier_killed", False, f"needs >= 2 Classifier replicas, found {before}"
        )
    requests = max(300, int(3000 * scale))
    result = _under_load(target, 16, requests, lambda: os.kill(before[0], signal.SIGKILL))
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and len(set(replica_pids("Classifier")) - {before[0]}) < 2:
        time.sleep(1)
    back = len(set(replica_pids("Classifier")) - {before[0]}) >= len(before)
    success = result.ok / max(result.requests, 1)
    passed = success >= 0.999 and back and result.requests >= requests
    return Verdict(
        "classifier_killed",
        passed,
        f"{success:.2%} of {result.requests} succeeded; replica back: {back}",
        result.summary(),
    )


def shadow_faults(target: Target, scale: float) -> Verdict:
    """Primary latency with no shadow vs a shadow that sleeps 2 s vs one that fails."""
    requests = max(100, int(800 * scale))
    runs = {}
    for name, changes in (
        ("no_shadow", {"Ingress": {"shadow_fraction": 0.0}}),
        ("slow_shadow", {"Ingress": {"shadow_fraction": 1.0}, "Shadow": {"inject_delay_s": 2.0}}),
        (
            "failing_shadow",
            {"Ingress": {"shadow_fraction": 1.0}, "Shadow": {"inject_failure": True}},
        ),
    ):
        target.deploy(target.with_changes(changes))
        target.load(4, 20)  # settle
        runs[name] = target.load(4, requests).summary()
    target.deploy(target.config)
    base = runs["no_shadow"]
    worst = max(
        max(r["p50_ms"] / base["p50_ms"], r["p99_ms"] / base["p99_ms"])
        for k, r in runs.items()
        if k != "no_shadow"
    )
    errors = sum(r["errors"] for r in runs.values())
    passed = errors == 0 and worst <= 1.10
    return Verdict(
        "shadow_slow_or_failing",
        passed,
        f"worst p50/p99 vs no shadow x{worst:.2f}; errors {errors}",
        runs,
    )


def rollout_under_load(target: Target, scale: float, new_model_uri: str) -> Verdict:
    requests = max(200, int(1500 * scale))
    new = copy.deepcopy(target.config)
    for deployment in new["applications"][0]["deployments"]:
        if deployment["name"] in ("Classifier", "Explainer"):
            deployment["user_config"]["model_uri"] = new_model_uri
    try:
        result = _under_load(target, 8, requests, lambda: target.deploy(new))
        version = httpx.get(f"{target.url}/health", timeout=10).json()["model_version"]
    finally:
        target.deploy(target.config)
    passed = result.errors == 0 and result.requests >= requests
    return Verdict(
        "rollout_under_load",
        passed,
        f"{result.requests} requests across the deploy, {result.errors} failed; "
        f"now serving {version}",
        result.summary(),
    )


def overload(target: Target, scale: float) -> Verdict:
    """4x the ingress's in-flight capacity at once: fast 503s with Retry-After, bounded p99."""
    ingress = next(
        d for d in target.config["applications"][0]["deployments"] if d["name"] == "Ingress"
    )
    capacity = ingress.get("user_config", {}).get("max_inflight_requests", 64)
    replicas = ingress.get("num_replicas", 1)
    concurrency = 4 * capacity * replicas
    requests = max(concurrency * 2, int(concurrency * 8 * scale))
    probe: dict[str, httpx.Response] = {}

    def probe_once() -> None:
        data = target.images[0].read_bytes()
        for _ in range(40):
            response = httpx.post(
                f"{target.url}/predict",
                files={"file": ("p.jpg", data)},
                headers=target.headers,
                timeout=30,
            )
            if response.status_code == 503:
                probe["r"] = response
                return

    result = _under_load(target, concurrency, requests, probe_once, delay_s=1.0)
    other = {s: n for s, n in result.statuses.items() if s not in (200, 503)}
    rejected = result.statuses.get(503, 0)
    retry_after = "r" in probe and "retry-after" in probe["r"].headers
    s = result.summary()
    bounded = s["p99_ms"] < 1000 * 30
    passed = rejected > 0 and not other and retry_after and bounded
    return Verdict(
        "overload_4x",
        passed,
        f"c={concurrency}: {result.ok} ok, {rejected} fast 503s (Retry-After: "
        f"{retry_after}), other {other}; accepted p99 {s['p99_ms']} ms",
        s,
    )


def memory_growth(target: Target, scale: float) -> Verdict:
    total = max(2000, int(10_000 * scale))
    early = max(200, total // 10)
    deployments = ("Ingress", "Preprocessor", "Classifier", "Shadow", "Explainer", "DriftMonitor")
    target.load(8, early)
    at_early = {d: {pid: rss_mib(pid) for pid in replica_pids(d)} for d in deployments}
    target.load(8, total - early)
    at_end = {d: {pid: rss_mib(pid) for pid in replica_pids(d)} for d in deployments}
    growth = {}
    for d in deployments:
        for pid, before in at_early[d].items():
            if pid in at_end[d] and before:
                growth[f"{d}:{pid}"] = round(at_end[d][pid] / before - 1.0, 4)
    peak = {d: round(max(at_end[d].values(), default=0.0), 1) for d in deployments}
    worst = max(growth.values(), default=0.0)
    passed = bool(growth) and worst <= 0.10
    return Verdict(
        "memory",
        passed,
        f"RSS growth from request {early} to {total}: worst {worst:+.1%}; peak MiB {peak}",
        {"growth": growth, "peak_rss_mib": peak},
    )


SCENARIOS = (
    "sustained_load",
    "classifier_killed",
    "shadow_slow_or_failing",
    "rollout_under_load",
    "overload_4x",
    "memory",
)


def run_all(target: Target, scale: float, new_model_uri: str) -> list[Verdict]:
    verdicts = []
    for scenario in (
        lambda: sustained_load(target, scale),
        lambda: replica_killed(target, scale),
        lambda: shadow_faults(target, scale),
        lambda: rollout_under_load(target, scale, new_model_uri),
        lambda: overload(target, scale),
        lambda: memory_growth(target, scale),
    ):
        verdict = scenario()
        print(verdict.line(), flush=True)
        verdicts.append(verdict)
    return verdicts


# --- make resilience: `serve run` + `serve deploy` ---------------------------------------


class ServeRunTarget:
    """`serve run` of serve_config.yaml on loopback; changes go through `serve deploy`."""

    def __init__(self, checkpoint: Path, shadow_checkpoint: Path, port: int) -> None:
        config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
        config["http_options"]["port"] = port
        for deployment in config["applications"][0]["deployments"]:
            if deployment["name"] in ("Classifier", "Explainer"):
                deployment["user_config"]["model_uri"] = str(checkpoint)
            if deployment["name"] == "Shadow":
                deployment["user_config"]["model_uri"] = str(shadow_checkpoint)
        config["applications"][0]["runtime_env"] = {"env_vars": {"RATE_LIMIT_PER_MINUTE": "0"}}
        self.config = config
        self.url = f"http://127.0.0.1:{port}"
        self._files: list[Path] = []

    def _write(self, config: dict) -> Path:
        handle, path = tempfile.mkstemp(suffix=".yaml", prefix="serve_resilience_")
        os.close(handle)
        Path(path).write_text(yaml.safe_dump(config, sort_keys=False))
        self._files.append(Path(path))
        return Path(path)

    def start(self) -> subprocess.Popen:
        serve = Path(sys.executable).with_name("serve")
        log = ROOT / "artifacts" / "bench" / "resilience_serve_run.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **serving_env(Path(tempfile.mkdtemp(prefix="haproxy-drill-")))}
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [str(serve), "run", str(self._write(self.config))],  # nosec B603
                cwd=ROOT,
                env=env,
                preexec_fn=interruptible,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_healthy(self.url, self.process)
        return self.process

    def deploy(self, config: dict) -> None:
        serve = Path(sys.executable).with_name("serve")
        env = {**os.environ, "RAY_AUTH_MODE": "token"}
        subprocess.run(
            [str(serve), "deploy", str(self._write(config))],
            cwd=ROOT,
            env=env,  # nosec B603
            check=True,
            capture_output=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # until the new config is running
            status = subprocess.run(
                [str(serve), "status"],
                env=env,
                capture_output=True,  # nosec B603
                text=True,
                check=False,
            ).stdout
            if "status: RUNNING" in status and "UPDATING" not in status:
                return
            time.sleep(1)
        raise TimeoutError("serve deploy did not finish within 120 s")

    def close(self) -> None:
        stop(self.process)
        for path in self._files:
            path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fault drills against `serve run` on loopback.")
    parser.add_argument(
        "--checkpoint", type=Path, default=ROOT / "artifacts" / "demo" / "model.safetensors"
    )
    parser.add_argument(
        "--shadow-checkpoint",
        type=Path,
        default=None,
        help="default: the primary checkpoint (a shadow of the same model)",
    )
    parser.add_argument("--scale", type=float, default=1.0, help="request counts x this")
    parser.add_argument("--port", type=int, default=8300)
    args = parser.parse_args(argv)
    if not args.checkpoint.exists():
        print(f"no checkpoint at {args.checkpoint}: run `make demo` (or pass --checkpoint)")
        return 2
    server = ServeRunTarget(args.checkpoint, args.shadow_checkpoint or args.checkpoint, args.port)
    server.start()
    try:
        target = Target(
            url=server.url,
            headers={},
            deploy=server.deploy,
            config=server.config,
            images=make_inputs(ROOT / "artifacts" / "bench" / "inputs"),
        )
        verdicts = run_all(target, args.scale, str(args.shadow_checkpoint or args.checkpoint))
    finally:
        server.close()
    failed = [v.scenario for v in verdicts if not v.passed]
    print(f"\n{len(verdicts) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
