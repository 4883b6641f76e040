"""The application's metrics, made with `ray.serve.metrics` inside each replica.

Ray's exporter aggregates them for the node (prefix `ray_`, counters get `_total`), so the
whole application's series are on every node's metrics port beside Ray's own `ray_serve_*`
families; `GET /metrics` gathers the `ray_ppd_*` ones from every node. Label values are fixed
vocabularies (routes, statuses, labels, kinds): never a key, a file name or a client address.

Counters and gauges are exported from start-up with a zero series for every label value known
in advance (Prometheus: "avoid missing metrics"), so an alert or a `rate()` sees 0 rather than
nothing; histograms appear with their first observation (every request makes some).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from ray.serve.metrics import Counter, Gauge, Histogram

__all__ = [
    "API_ROUTES",
    "GAUGE_REFRESH_S",
    "METRIC_PREFIX",
    "ClassifierMetrics",
    "DriftMetrics",
    "IngressMetrics",
    "classifier_metrics",
    "declare_classifier_series",
    "drift_metrics",
    "export_zero",
    "ingress_metrics",
    "refresh_gauges_forever",
]

METRIC_PREFIX = "ray_ppd_"  # what the names below become on the metrics port
# Ray drops a gauge that is not set again within two export intervals, so replicas re-set
# theirs this often (seconds) even when nothing changed.
GAUGE_REFRESH_S = 5.0

_LATENCY_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]
_PROBABILITY = [round(0.1 * i, 1) for i in range(1, 10)]
_BATCH_SIZES = [1, 2, 4, 8, 16, 32, 64, 128]
_BYTES = [10_000, 50_000, 100_000, 500_000, 1_000_000, 2_000_000, 5_000_000, 10_000_000]
_PIXELS = [10_000, 100_000, 300_000, 1_000_000, 3_000_000, 10_000_000, 40_000_000]
_FILES = [1, 2, 3, 5, 10, 20]

API_ROUTES = ("/predict", "/predict/batch", "/predict/explain", "/predict/compare")
# The label values known in advance, per counter of the Ingress (zero series at start-up).
_INGRESS_SERIES = {
    "requests": [{"route": r, "status": s} for r in API_ROUTES
                 for s in ("200", "400", "401", "413", "415", "422", "429", "500", "503")],
    "predictions": [{"label": label, "confidence": c} for label in ("real", "ai_generated")
                    for c in ("high", "medium", "low")],
    "validation_errors": [{"kind": k} for k in ("bad_image", "corrupt", "too_small", "too_large",
                                                "unsupported_format", "body_too_large")],
    "rate_limited": [{"limit": "requests"}, {"limit": "auth_failures"}],
    "auth_failures": [{"reason": "missing"}, {"reason": "invalid"}],
    "overload_rejections": [{"route": r} for r in (*API_ROUTES, "other")],
    "shadow_comparisons": [{"agreement": "agree"}, {"agreement": "disagree"}],
    "shadow_errors": [{}],
    "retries": [{"route": r} for r in ("predict", "batch", "explain", "compare", "decode")],
    "dependency_errors": [{"dependency": "rate_limiter"}, {"dependency": "drift_monitor"}],
    "provenance_declared": [{"declared": d} for d in ("ai_generated", "camera", "none")],
    "provenance_agreement": [{"agreement": "agree"}, {"agreement": "disagree"}],
}  # fmt: skip


@dataclass(frozen=True)
class IngressMetrics:
    requests: Counter
    request_latency_ms: Histogram
    stage_latency_ms: Histogram
    predictions: Counter
    probability: Histogram
    image_bytes: Histogram
    image_pixels: Histogram
    batch_files: Histogram
    validation_errors: Counter
    rate_limited: Counter
    auth_failures: Counter
    overload_rejections: Counter
    inflight_requests: Gauge
    shadow_comparisons: Counter
    shadow_probability_diff: Histogram
    shadow_errors: Counter
    retries: Counter
    dependency_errors: Counter
    provenance_declared: Counter
    provenance_agreement: Counter


@dataclass(frozen=True)
class ClassifierMetrics:
    batch_size: Histogram
    model_info: Gauge
    model_loaded: Gauge
    model_swaps: Counter
    model_load_failures: Counter


@dataclass(frozen=True)
class DriftMetrics:
    score: Gauge
    signal: Gauge
    detected: Gauge
    window_size: Gauge


@cache
def ingress_metrics() -> IngressMetrics:
    """One set per replica process, created on first use inside the replica, with the zero
    series of every counter."""
    metrics = _new_ingress_metrics()
    for name, tag_sets in _INGRESS_SERIES.items():
        for tags in tag_sets:
            export_zero(getattr(metrics, name), tags)
    metrics.inflight_requests.set(0)
    return metrics


def export_zero(counter: Counter, tags: dict[str, str]) -> None:
    """Export `counter`'s series for `tags` at 0. `Counter.inc` refuses 0, so this records
    the point the way `inc` does (`Metric._record`), adding nothing to the count."""
    counter._record(0, tags=tags or None)


def _new_ingress_metrics() -> IngressMetrics:
    return IngressMetrics(
        requests=Counter("ppd_http_requests", "HTTP requests by route and status",
                         tag_keys=("route", "status")),
        request_latency_ms=Histogram("ppd_http_request_latency_ms", "HTTP latency by route, ms",
                                     boundaries=_LATENCY_MS, tag_keys=("route",)),
        stage_latency_ms=Histogram("ppd_stage_latency_ms",
                                   "time per stage (decode: the upload's whole read; provenance, "
                                   "queue, model, explain), ms",
                                   boundaries=_LATENCY_MS, tag_keys=("stage",)),
        predictions=Counter("ppd_predictions", "predictions by label and confidence",
                            tag_keys=("label", "confidence")),
        probability=Histogram("ppd_probability", "P(AI-generated) of answered predictions",
                              boundaries=_PROBABILITY),
        image_bytes=Histogram("ppd_image_bytes", "uploaded file sizes, bytes", boundaries=_BYTES),
        image_pixels=Histogram("ppd_image_pixels", "uploaded image sizes, pixels",
                               boundaries=_PIXELS),
        batch_files=Histogram("ppd_batch_files", "files per /predict/batch request",
                              boundaries=_FILES),
        validation_errors=Counter("ppd_validation_errors", "refused uploads by kind",
                                  tag_keys=("kind",)),
        rate_limited=Counter("ppd_rate_limited", "requests refused by a rate limit: per key "
                             "(limit=requests) or per address for failed keys (auth_failures)",
                             tag_keys=("limit",)),
        auth_failures=Counter("ppd_auth_failures", "requests with a missing or invalid key",
                              tag_keys=("reason",)),
        overload_rejections=Counter("ppd_overload_rejections",
                                    "requests answered 503 because the graph was saturated",
                                    tag_keys=("route",)),
        inflight_requests=Gauge("ppd_inflight_requests", "requests in this ingress replica"),
        shadow_comparisons=Counter("ppd_shadow_comparisons",
                                   "mirrored predictions by agreement with the primary",
                                   tag_keys=("agreement",)),
        shadow_probability_diff=Histogram("ppd_shadow_probability_diff",
                                          "|P(primary) - P(shadow)| of mirrored predictions",
                                          boundaries=[0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5]),
        shadow_errors=Counter("ppd_shadow_errors", "mirrored requests the shadow failed"),
        retries=Counter("ppd_retries", "inference calls retried after a replica died",
                        tag_keys=("route",)),
        dependency_errors=Counter("ppd_dependency_errors",
                                  "RateLimiter or DriftMonitor calls that failed or timed out",
                                  tag_keys=("dependency",)),
        provenance_declared=Counter("ppd_provenance_declared",
                                    "answered uploads by what their provenance declares "
                                    "(ai_generated, camera, none)", tag_keys=("declared",)),
        provenance_agreement=Counter("ppd_provenance_agreement",
                                     "declared uploads by whether the classifier's label "
                                     "agrees with the declaration", tag_keys=("agreement",)),
    )  # fmt: skip


def declare_classifier_series(metrics: ClassifierMetrics, role: str) -> None:
    """The zero series of a Classifier replica of `role` (primary or shadow)."""
    for counter in (metrics.model_swaps, metrics.model_load_failures):
        export_zero(counter, {"role": role})
    metrics.model_loaded.set(0, tags={"role": role})


@cache
def classifier_metrics() -> ClassifierMetrics:
    return ClassifierMetrics(
        batch_size=Histogram("ppd_batch_size", "images per forward pass",
                             boundaries=_BATCH_SIZES, tag_keys=("role",)),
        model_info=Gauge("ppd_model_info", "1 for the model version a replica serves",
                         tag_keys=("role", "version")),
        model_loaded=Gauge("ppd_model_loaded", "1 when a replica has a model loaded",
                           tag_keys=("role",)),
        model_swaps=Counter("ppd_model_swaps", "model checkpoints swapped in", tag_keys=("role",)),
        model_load_failures=Counter("ppd_model_load_failures",
                                    "checkpoints that could not be loaded (the old model stays)",
                                    tag_keys=("role",)),
    )  # fmt: skip


@cache
def drift_metrics() -> DriftMetrics:
    return DriftMetrics(
        score=Gauge("ppd_drift_score", "drift score: the largest signal / its threshold"),
        signal=Gauge("ppd_drift_signal", "shift of each drift signal from the baseline",
                     tag_keys=("signal",)),
        detected=Gauge("ppd_drift_detected", "1 while drift is detected"),
        window_size=Gauge("ppd_drift_window_size", "predictions in the drift window"),
    )  # fmt: skip


def refresh_gauges_forever(
    refresh: Callable[[], None], every_s: float = GAUGE_REFRESH_S
) -> asyncio.Task:
    """Call `refresh` now and every `every_s` seconds, on the replica's event loop."""

    async def loop() -> None:
        while True:
            refresh()
            await asyncio.sleep(every_s)

    return asyncio.get_running_loop().create_task(loop())
