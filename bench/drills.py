"""Fault drills against a served application: each does one thing to it under bounded load
(`hey`) and returns a one-line verdict.

A `Target` says how to reach and change the application — `serve run` + `serve deploy` for
`make resilience` (bench/resilience.py), the test session's application for the smoke run in
`make test` — and a `DrillSize` how much load each drill sends; the drills are the same code.
"""

from __future__ import annotations

import os
import signal
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench import process_cpu
from bench.load import LoadResult, run_load
from bench.serving import with_changes

__all__ = ["DRILLS", "DrillSize", "Target", "Verdict", "replica_pids", "run_drills"]

APP = "product-photo-detector"


@dataclass(frozen=True)
class DrillSize:
    """Requests per drill (the issue's figures by default) and when the fault lands."""

    sustained: int = 5000  # at concurrency 32
    killed: int = 3000  # at concurrency 16, a Classifier replica SIGKILLed meanwhile
    shadow: int = 1200  # per run, three runs (no shadow, slow shadow, failing shadow)
    rollout: int = 1500  # at concurrency 8 across a `serve deploy`
    overload_factor: int = 8  # requests = this x the concurrency (4x the in-flight capacity)
    memory: int = 10_000  # RSS compared at a tenth of this and at the end
    fault_after_s: float = 2.0  # seconds into the load when the fault or deploy happens


@dataclass
class Verdict:
    drill: str
    passed: bool
    summary: str
    figures: dict = field(default_factory=dict)

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'}  {self.drill:<24} {self.summary}"


@dataclass
class Target:
    """How a drill reaches and changes the application."""

    url: str
    headers: Callable[[], dict[str, str]]  # per load run (a fresh API key where limits apply)
    deploy: Callable[[dict], None]  # apply a whole serve config, as `serve deploy` does
    config: dict  # the config the application runs with now
    images: list[Path]
    ray_root: int  # the process that started the application's Ray instance

    def replica_pids(self, deployment: str) -> list[int]:
        return replica_pids(deployment, self.ray_root)

    def load(self, concurrency: int, requests: int) -> LoadResult:
        return run_load(f"{self.url}/predict", self.images, concurrency, requests, self.headers())

    def deploy_changes(self, changes: dict[str, dict]) -> None:
        self.deploy(with_changes(self.config, changes))

    def restore(self) -> None:
        self.deploy(self.config)


def replica_pids(deployment: str, ray_root: int) -> list[int]:
    """PIDs of the live replicas of `deployment` in the Ray instance that `ray_root` started
    (Ray titles them ServeReplica:app:name), and not another instance's on the machine."""
    title = f"ServeReplica:{APP}:{deployment}"
    return sorted(pid for pid, command in process_cpu.tree(ray_root).items() if title in command)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def _under_load(
    target: Target, concurrency: int, requests: int, action: Callable[[], None], delay_s: float
) -> LoadResult:
    """Run `action` `delay_s` seconds into a load run; return the load's result."""
    box: dict[str, LoadResult] = {}
    worker = threading.Thread(target=lambda: box.update(r=target.load(concurrency, requests)))
    worker.start()
    time.sleep(delay_s)
    action()
    worker.join()
    return box["r"]


def sustained_load(target: Target, size: DrillSize) -> Verdict:
    result = target.load(concurrency=32, requests=size.sustained)
    fives = sum(n for status, n in result.statuses.items() if status >= 500)
    passed = fives == 0 and result.requests >= size.sustained
    s = result.summary()
    return Verdict(
        "sustained_load",
        passed,
        f"{result.requests} requests at c=32: "
        f"{s['images_per_s']} img/s, p99 {s['p99_ms']} ms, 5xx {fives}",
        s,
    )


def replica_killed(target: Target, size: DrillSize) -> Verdict:
    """SIGKILL one Classifier replica under load; the ingress retries once on another and
    Serve starts a replacement."""
    before = target.replica_pids("Classifier")
    if len(before) < 2:
        return Verdict("classifier_killed", False, f"needs >= 2 Classifier replicas: {before}")
    result = _under_load(
        target, 16, size.killed, lambda: os.kill(before[0], signal.SIGKILL), size.fault_after_s
    )

    def replaced() -> bool:  # as many Classifier replicas as before, the killed one not among them
        return len(set(target.replica_pids("Classifier")) - {before[0]}) >= len(before)

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not replaced():
        time.sleep(1)
    back = replaced()
    success = result.ok / max(result.requests, 1)
    passed = success >= 0.999 and back and result.requests >= size.killed
    return Verdict(
        "classifier_killed",
        passed,
        f"{success:.2%} of {result.requests} succeeded; replacement replica up: {back}",
        result.summary(),
    )


SHADOW_VARIANTS = {
    "no_shadow": {"Ingress": {"shadow_fraction": 0.0}},
    "slow_shadow": {"Ingress": {"shadow_fraction": 1.0}, "Shadow": {"inject_delay_s": 2.0}},
    "failing_shadow": {"Ingress": {"shadow_fraction": 1.0}, "Shadow": {"inject_failure": True}},
}


P50_LIMIT, P99_LIMIT = 1.10, 1.50  # the shadow drill's slowdown limits (see shadow_faults)


def shadow_faults(target: Target, size: DrillSize, rounds: int = 3) -> Verdict:
    """Primary latency with no shadow vs a shadow that sleeps 2 s vs one that fails, in
    interleaved rounds (A/B/C/A/B/C/...): each variant's figure is the median over its rounds,
    so a noisy moment of a shared machine lands on every variant alike instead of deciding.

    The p50 carries the verdict at x1.10 (P50_LIMIT); the p99, the 4 slowest of a 400-request
    round, only at x1.50 (P99_LIMIT). On a shared two-core machine the p99 of such rounds moved by
    x0.81-1.42 with no change at all, while a shadow that leaked into the primary path would
    show far above either limit: a 2 s sleep in 2 % of the calls puts the p99 at 2 s,
    tens of times the no-shadow p99 (45-130 ms here)."""
    per_round: dict[str, list[dict]] = {name: [] for name in SHADOW_VARIANTS}
    try:
        for _ in range(rounds):
            for name, changes in SHADOW_VARIANTS.items():
                target.deploy_changes(changes)
                target.load(4, 32)  # settle: connections, the first mirrored batches
                per_round[name].append(target.load(4, max(32, size.shadow // rounds)).summary())
    finally:
        target.restore()
    return shadow_verdict(per_round)


def shadow_verdict(per_round: dict[str, list[dict]]) -> Verdict:
    """The shadow drill's verdict from each variant's round summaries (p50_ms, p99_ms, errors)."""
    rounds = len(per_round["no_shadow"])

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in per_round[name])

    slowdown = {
        name.removesuffix("_shadow"): (
            median(name, "p50_ms") / median("no_shadow", "p50_ms"),
            median(name, "p99_ms") / median("no_shadow", "p99_ms"),
        )
        for name in SHADOW_VARIANTS
        if name != "no_shadow"
    }
    errors = sum(r["errors"] for runs in per_round.values() for r in runs)
    within = all(p50 <= P50_LIMIT and p99 <= P99_LIMIT for p50, p99 in slowdown.values())
    each = ", ".join(f"{name} p50 x{a:.2f} p99 x{b:.2f}" for name, (a, b) in slowdown.items())
    return Verdict(
        "shadow_slow_or_failing",
        errors == 0 and within,
        f"medians of {rounds} interleaved rounds vs no shadow (at most p50 x{P50_LIMIT:.2f}, "
        f"p99 x{P99_LIMIT:.2f}): {each}; errors {errors}",
        per_round,
    )


def rollout_under_load(target: Target, size: DrillSize, new_model_uri: str) -> Verdict:
    """`serve deploy` of another model URI during a load run: no request fails and the
    answers' model version switches."""
    before = httpx.get(f"{target.url}/health", timeout=10).json()["model_version"]
    new = with_changes(
        target.config,
        {"Classifier": {"model_uri": new_model_uri}, "Explainer": {"model_uri": new_model_uri}},
    )
    try:
        result = _under_load(
            target, 8, size.rollout, lambda: target.deploy(new), size.fault_after_s
        )
        after = httpx.get(f"{target.url}/health", timeout=10).json()["model_version"]
    finally:
        target.restore()
    passed = result.errors == 0 and result.requests >= size.rollout and after != before
    return Verdict(
        "rollout_under_load",
        passed,
        f"{result.requests} requests across the deploy, "
        f"{result.errors} failed; version {before} -> {after}",
        result.summary(),
    )


def overload(target: Target, size: DrillSize) -> Verdict:
    """4x the ingresses' in-flight capacity at once: fast 503s with Retry-After and a bounded
    p99 for the requests that were accepted."""
    ingress = next(
        d for d in target.config["applications"][0]["deployments"] if d["name"] == "Ingress"
    )
    capacity = ingress.get("user_config", {}).get("max_inflight_requests", 64)
    concurrency = 4 * capacity * ingress.get("num_replicas", 1)
    requests = concurrency * size.overload_factor
    probe: dict[str, httpx.Response] = {}

    def probe_for_a_503() -> None:
        """Requests of our own, alongside the load, to read a 503's headers (hey cannot)."""
        data = target.images[0].read_bytes()

        def post(_: int) -> httpx.Response:
            return httpx.post(
                f"{target.url}/predict",
                files={"file": ("p.jpg", data)},
                headers=target.headers(),
                timeout=30,
            )

        with ThreadPoolExecutor(max_workers=8) as pool:
            for _ in range(5):
                rejected = [r for r in pool.map(post, range(8)) if r.status_code == 503]
                if rejected:
                    probe["r"] = rejected[0]
                    return

    result = _under_load(target, concurrency, requests, probe_for_a_503, size.fault_after_s / 2)
    rejected = result.statuses.get(503, 0)
    other = {s: n for s, n in result.statuses.items() if s not in (200, 503)}
    retry_after = "r" in probe and probe["r"].headers.get("retry-after", "").isdigit()
    s = result.summary()
    passed = rejected > 0 and not other and retry_after and s["p99_ms"] < 30_000
    return Verdict(
        "overload_4x",
        passed,
        f"c={concurrency}: {result.ok} ok, {rejected} fast 503s "
        f"(Retry-After: {retry_after}), other {other}; accepted p99 {s['p99_ms']} ms",
        s,
    )


def memory_growth(target: Target, size: DrillSize) -> Verdict:
    early = max(1, size.memory // 10)
    deployments = ("Ingress", "Preprocessor", "Classifier", "Shadow", "Explainer", "DriftMonitor")
    target.load(8, early)
    at_early = {d: {pid: rss_mib(pid) for pid in target.replica_pids(d)} for d in deployments}
    target.load(8, size.memory - early)
    at_end = {d: {pid: rss_mib(pid) for pid in target.replica_pids(d)} for d in deployments}
    growth = {
        f"{d}:{pid}": round(at_end[d][pid] / before - 1.0, 4)
        for d in deployments
        for pid, before in at_early[d].items()
        if pid in at_end[d] and before
    }
    peak = {d: round(max(at_end[d].values(), default=0.0), 1) for d in deployments}
    worst = max(growth.values(), default=0.0)
    passed = bool(growth) and worst <= 0.10
    return Verdict(
        "memory",
        passed,
        f"RSS growth from request {early} to {size.memory}: worst {worst:+.1%}; peak MiB {peak}",
        {"growth": growth, "peak_rss_mib": peak},
    )


DRILLS = (
    "sustained_load",
    "classifier_killed",
    "shadow_slow_or_failing",
    "rollout_under_load",
    "overload_4x",
    "memory",
)


def run_drills(
    target: Target, size: DrillSize, new_model_uri: str, only: tuple[str, ...] = DRILLS
) -> list[Verdict]:
    """The drills named in `only`, in order, printing each verdict as it comes."""
    drills = {
        "sustained_load": lambda: sustained_load(target, size),
        "classifier_killed": lambda: replica_killed(target, size),
        "shadow_slow_or_failing": lambda: shadow_faults(target, size),
        "rollout_under_load": lambda: rollout_under_load(target, size, new_model_uri),
        "overload_4x": lambda: overload(target, size),
        "memory": lambda: memory_growth(target, size),
    }
    verdicts = []
    for name in only:
        verdict = drills[name]()
        print(verdict.line(), flush=True)
        verdicts.append(verdict)
    return verdicts
