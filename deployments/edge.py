"""The Ingress's edge: the ASGI middleware every request passes before it reaches a route.

Order, outermost first: security headers, request metrics and the in-flight limit, body size,
API key (and the limit on failed keys), rate limit. The chain needs what exists only inside an
Ingress replica (its settings, metrics, `user_config` and the RateLimiter handle), while the
FastAPI app it wraps is defined at import time for `@serve.ingress(app)`. So the app carries
one `ReplicaEdge`, which builds the chain on the replica's first request from the Ingress
instance Serve is running there (`serve.get_replica_context().servable_object`, the object
Serve's own class-based routes resolve `self` from).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.types import ASGIApp, Receive, Scope, Send

from common.settings import Settings
from deployments.auth import ApiKeyMiddleware
from deployments.body_limit import BodySizeLimitMiddleware
from deployments.metrics import IngressMetrics
from deployments.rate_limit import FailedAuthLimit, RateLimitMiddleware
from deployments.request_metrics import RequestMetricsMiddleware
from deployments.security_headers import DOCS_POLICY, PAGE_POLICY, SecurityHeadersMiddleware

__all__ = ["MULTIPART_OVERHEAD", "EdgeParts", "ReplicaEdge", "build_edge"]

MULTIPART_OVERHEAD = 64 * 1024  # bytes of multipart framing allowed on top of the files


@dataclass(frozen=True)
class EdgeParts:
    """What the edge of one Ingress replica is made of."""

    settings: Settings
    metrics: IngressMetrics
    rate_limiter: DeploymentHandle
    inflight_limit: Callable[[], int]  # read per request: a user_config change applies at once
    on_inflight: Callable[[int], None]
    limiter_fails_open: Callable[[], bool]


def build_edge(app: ASGIApp, parts: EdgeParts) -> ASGIApp:
    """`app` wrapped in the edge middleware (the innermost is added first)."""
    settings, metrics = parts.settings, parts.metrics
    app = RateLimitMiddleware(
        app,
        limiter=parts.rate_limiter,
        per_minute=settings.rate_limit_per_minute,
        trusted_proxies=settings.trusted_proxies,
        fails_open=parts.limiter_fails_open,
        on_reject=lambda: metrics.rate_limited.inc(tags={"limit": "requests"}),
        on_unreachable=lambda: metrics.dependency_errors.inc(tags={"dependency": "rate_limiter"}),
    )
    app = ApiKeyMiddleware(
        app,
        key_hashes=settings.api_key_hashes,
        required=settings.require_auth,
        on_failure=lambda reason: metrics.auth_failures.inc(tags={"reason": reason}),
        failure_limit=FailedAuthLimit(
            limiter=parts.rate_limiter,
            per_minute=settings.auth_failures_per_minute,
            trusted_proxies=settings.trusted_proxies,
            on_unreachable=lambda: metrics.dependency_errors.inc(
                tags={"dependency": "rate_limiter"}
            ),
        ),
        on_failure_limited=lambda: metrics.rate_limited.inc(tags={"limit": "auth_failures"}),
    )
    single = settings.max_file_bytes + MULTIPART_OVERHEAD
    app = BodySizeLimitMiddleware(
        app,
        limits={
            "/predict": single,
            "/predict/explain": single,
            "/predict/compare": single,
            "/predict/batch": settings.max_batch_bytes + MULTIPART_OVERHEAD,
        },
        on_reject=lambda: metrics.validation_errors.inc(tags={"kind": "body_too_large"}),
    )
    app = RequestMetricsMiddleware(
        app, metrics=metrics, limit=parts.inflight_limit, on_inflight=parts.on_inflight
    )
    return SecurityHeadersMiddleware(
        app, policies={"/": PAGE_POLICY, "/docs": DOCS_POLICY}, inline_script_paths=["/docs"]
    )


class ReplicaEdge:
    """Starlette middleware: the edge chain of the Ingress replica serving the request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._chain: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan: before the replica serves anything
            await self.app(scope, receive, send)
            return
        if self._chain is None:
            ingress = serve.get_replica_context().servable_object
            self._chain = build_edge(self.app, ingress.edge_parts())
        await self._chain(scope, receive, send)
