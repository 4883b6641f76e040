"""Capacity and cost on paper: replicas, nodes and list-price cost for a target rate, from
per-replica figures (docs/capacity.md is this module's output; a test keeps them equal).

    python -m bench.capacity            # print the tables of docs/capacity.md
    python -m bench.capacity --write    # rewrite them in docs/capacity.md
    python -m bench.capacity --rate 2000 --p99-ms 200

CPU figures are this repository's own (docs/performance.md, `make bench`); no GPU run exists,
so the T4 figure is a published one with a stated planning factor. Prices are list prices.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "capacity.md"
BEGIN, END = "<!-- capacity:begin -->", "<!-- capacity:end -->"
HOURS_A_MONTH = 730

# --- per-image work, measured here (docs/performance.md, 2 vCPU AMD EPYC, 64 px demo model)
INGRESS_CPU_MS = 4.4 - 2.7  # ingress core time per image without the JPEG decode
DECODE_CPU_MS_64PX = 2.7  # JPEG decode (draft) + EXIF + RGB + resize, at 64 px
HAPROXY_CPU_MS = 0.3  # Serve's HAProxy front end per request
SERVE_CALL_MS = 0.7  # a replica's Serve request path per call (Classifier, beyond the forward)
P99_OVER_P50 = 391.1 / 231.8  # served, 224 px, c=16: the tail the graph adds to its median
# --- assumptions (not measured: no 224 px decode split, no GPU run)
DECODE_FACTOR_224PX = 1.5  # JPEG draft stops one scale step higher for a 224 px target
EAGER_OVER_TENSORRT = 2.0  # eager PyTorch fp32 (channels-last) vs TensorRT fp32, planning
# --- published: EfficientNet-B0, 224 px, NVIDIA T4, TensorRT 8.0.3.4 fp32, batch 8: 9.3304 ms
# (PaddlePaddle/PaddleClas, docs/zh_CN/models/ImageNet1k/EfficientNet.md, "T4 GPU")
T4_BATCH, T4_BATCH_MS = 8, 9.3304
# --- how hard each stage runs: Serve autoscaling targets this share of a replica's capacity
UTILISATION = 0.6
GATHER_MS, BATCH_WAIT_MS, HOP_MS = 5.0, 10.0, 1.5  # ingress gather, Classifier wait, per hop
SHADOW_CAP = 100.0  # mirrored images/s at most: ample for the agreement metrics and alerts
SHADOW_FRACTION = 0.1  # k8s/release.sh's default share, lowered at scale to keep SHADOW_CAP
# --- the limits the shipped config sets (k8s/templates/serve-overlay.yaml, the base, terraform)
LIMITS = {
    "Ingress max_replicas": 8,
    "Preprocessor max_replicas": 12,
    "Classifier max_replicas": 6,
    "t4 group maxReplicas / t4_max_nodes": 4,
    "cpu group maxReplicas": 6,
    "cpu_max_nodes": 8,
}

# --- list prices, USD, us-central1 (cloud.google.com pricing pages; see docs/capacity.md)
PRICES = {
    "n2-standard-4": 0.194236,  # per hour, on-demand
    "n1-standard-8": 0.379998,
    "n1-standard-8 spot": 0.0800,  # spot prices change (at most daily)
    "nvidia-tesla-t4": 0.35,  # per GPU-hour
    "nvidia-tesla-t4 spot": 0.14,
    "gke cluster": 0.10,  # cluster management fee per hour
    "redis standard gb": 0.064,  # Memorystore for Redis, Standard tier, per GB-hour (M1)
    "lb forwarding rule": 0.025,  # per hour
}
CPU_NODE_RAY_CPUS = 3  # n2-standard-4: 4 vCPUs, 3 for Ray (the rest: HAProxy, kubelet, system)


@dataclass(frozen=True)
class Plan:
    rate: float  # images/s
    ingress: int
    preprocessor: int
    t4: int  # T4 nodes (two 0.5-GPU Classifier replicas each; the Shadow's share included)
    shadow_fraction: float
    cpu_nodes: int  # workers + the head's node
    rate_limiter_cores: float  # one RateLimiter replica's load, in cores
    haproxy_cores: float
    p50_ms: float
    p99_ms: float

    def monthly(self, spot: bool) -> float:
        gpu_node = (
            PRICES["n1-standard-8 spot"] + PRICES["nvidia-tesla-t4 spot"]
            if spot
            else PRICES["n1-standard-8"] + PRICES["nvidia-tesla-t4"]
        )
        hourly = (
            self.cpu_nodes * PRICES["n2-standard-4"]
            + self.t4 * gpu_node
            + PRICES["gke cluster"]
            + PRICES["redis standard gb"] * 1
            + PRICES["lb forwarding rule"]
        )
        return hourly * HOURS_A_MONTH

    def per_million(self, spot: bool) -> float:
        return self.monthly(spot) / (self.rate * 3600 * HOURS_A_MONTH / 1e6)


def t4_images_per_second() -> float:
    return T4_BATCH / (T4_BATCH_MS * EAGER_OVER_TENSORRT / 1000)


def plan(rate: float) -> Plan:
    decode_ms = DECODE_CPU_MS_64PX * DECODE_FACTOR_224PX
    ingress = max(2, math.ceil(rate * INGRESS_CPU_MS / 1000 / UTILISATION))
    preprocessor = max(2, math.ceil(rate * decode_ms / 1000 / UTILISATION))
    shadow_fraction = min(SHADOW_FRACTION, SHADOW_CAP / rate)
    per_t4 = t4_images_per_second() * UTILISATION
    t4 = max(1, math.ceil(rate * (1 + shadow_fraction) / per_t4))
    cpu_nodes = 1 + math.ceil((ingress + preprocessor) / CPU_NODE_RAY_CPUS)  # 1 CPU each
    gpu_ms = T4_BATCH_MS * EAGER_OVER_TENSORRT
    p50 = 4 * HOP_MS + HAPROXY_CPU_MS + INGRESS_CPU_MS + GATHER_MS + decode_ms + BATCH_WAIT_MS
    p50 += gpu_ms
    return Plan(
        rate=rate,
        ingress=ingress,
        preprocessor=preprocessor,
        t4=t4,
        shadow_fraction=shadow_fraction,
        cpu_nodes=cpu_nodes,
        rate_limiter_cores=rate * SERVE_CALL_MS / 1000,
        haproxy_cores=rate * HAPROXY_CPU_MS / 1000,
        p50_ms=p50,
        p99_ms=p50 * P99_OVER_P50,
    )


def needs(p: Plan) -> dict[str, float]:
    """What the plan needs of each limit in LIMITS (the same keys)."""
    return {
        "Ingress max_replicas": p.ingress,
        "Preprocessor max_replicas": p.preprocessor,
        "Classifier max_replicas": 2 * p.t4,
        "t4 group maxReplicas / t4_max_nodes": p.t4,
        "cpu group maxReplicas": p.cpu_nodes - 1,
        "cpu_max_nodes": p.cpu_nodes,
    }


def bottleneck(p: Plan) -> str:
    """What gives out first at this rate with the shipped config: the largest need / limit."""
    ratios = {name: need / LIMITS[name] for name, need in needs(p).items()}
    ratios["RateLimiter (one replica, cores)"] = p.rate_limiter_cores / UTILISATION
    name = max(ratios, key=ratios.get)
    if ratios[name] <= 1:
        return "none: the shipped bounds hold; the GPU (one T4) is the stage nearest its limit"
    return f"{name} ({ratios[name]:.1f}x its limit)"


def changes(p: Plan) -> str:
    """The config this rate needs beyond the shipped one."""
    out = [f"{name} {LIMITS[name]} -> {need:.0f}" for name, need in needs(p).items()
           if need > LIMITS[name]]  # fmt: skip
    if p.rate_limiter_cores > UTILISATION:
        out.append("RateLimiter counters to Redis (`limits` RedisStorage on Memorystore)")
    if p.shadow_fraction < SHADOW_FRACTION:
        out.append(f"`release.sh shadow URI {p.shadow_fraction:.2g}`")
    return "; ".join(out) or "none"


def default_sizes_monthly() -> float:
    """The cluster at rest with the default sizes: the head, two CPU workers and a node for
    the system pods (kube-prometheus-stack, KubeRay, MLflow) on n2-standard-4, one T4 node
    (the Classifier's min_replicas 1), the fee, the Redis and the load balancer; on-demand."""
    hourly = (
        4 * PRICES["n2-standard-4"]
        + PRICES["n1-standard-8"]
        + PRICES["nvidia-tesla-t4"]
        + PRICES["gke cluster"]
        + PRICES["redis standard gb"]
        + PRICES["lb forwarding rule"]
    )
    return hourly * HOURS_A_MONTH


def markdown(rates: tuple[float, ...] = (100, 1000, 10000)) -> str:
    plans = [plan(r) for r in rates]
    lines = [
        f"T4 planning figure: {t4_images_per_second():.0f} images/s per T4 "
        f"({T4_BATCH} / ({T4_BATCH_MS} ms x {EAGER_OVER_TENSORRT})), run at {UTILISATION:.0%}.",
        "",
        "| images/s | Ingress | Preprocessor | Classifier (T4 nodes) | CPU nodes | shadow share "
        "| p50 / p99 ms (est.) | on-demand $/month | spot T4 $/month | $/M images on-demand "
        "| $/M images spot |",
        "| --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: |",
    ]
    for p in plans:
        lines.append(
            f"| {p.rate:,.0f} | {p.ingress} | {p.preprocessor} | {2 * p.t4} ({p.t4}) | "
            f"{p.cpu_nodes} | {p.shadow_fraction:.2g} | {p.p50_ms:.0f} / {p.p99_ms:.0f} | "
            f"{p.monthly(False):,.0f} | {p.monthly(True):,.0f} | {p.per_million(False):.2f} | "
            f"{p.per_million(True):.2f} |"
        )
    lines += [
        "",
        "| images/s | RateLimiter cores | HAProxy cores | first bottleneck (shipped config) "
        "| config changes |",
        "| --: | --: | --: | --- | --- |",
    ]
    for p in plans:
        lines.append(
            f"| {p.rate:,.0f} | {p.rate_limiter_cores:.2f} | {p.haproxy_cores:.2f} | "
            f"{bottleneck(p)} | {changes(p)} |"
        )
    lines += ["", f"Default sizes at rest, on-demand: {default_sizes_monthly():,.0f} $/month."]
    return "\n".join(lines) + "\n"


_BLOCK = re.compile(re.escape(BEGIN) + r"\n(.*?)" + re.escape(END), re.DOTALL)


def doc_block(text: str) -> str:
    """The generated part of docs/capacity.md, between its two marker lines."""
    match = _BLOCK.search(text)
    if match is None:
        raise SystemExit(f"{DOC} has no {BEGIN} ... {END} block")
    return match.group(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite docs/capacity.md's tables")
    parser.add_argument("--rate", type=float, help="one rate (images/s) instead of the table's")
    parser.add_argument("--p99-ms", type=float, default=200.0, help="the p99 budget (ms)")
    args = parser.parse_args(argv)
    if args.rate:
        p = plan(args.rate)
        print(markdown((args.rate,)), end="")
        return 0 if p.p99_ms < args.p99_ms else 1
    text = markdown()
    if args.write:
        doc = DOC.read_text()
        doc_block(doc)  # the markers must be there
        DOC.write_text(_BLOCK.sub(lambda _: f"{BEGIN}\n{text}{END}", doc, count=1))
        print(f"wrote {DOC.relative_to(ROOT)}")
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
