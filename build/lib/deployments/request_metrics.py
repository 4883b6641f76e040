"""Outermost ASGI middleware of the ingress: request metrics and the in-flight limit.

Every response, errors from the other middleware included, is counted by route template and
status and timed. Above `limit()` requests in flight in this replica, new ones get a fast 503
with Retry-After instead of waiting in an unbounded queue.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deployments.errors import error_response
from deployments.metrics import IngressMetrics

__all__ = ["RequestMetricsMiddleware", "route_of"]

OVERLOAD_RETRY_AFTER_S = 1
_API_PATHS = frozenset({"/predict", "/predict/batch", "/predict/explain", "/predict/compare"})


def route_of(scope: Scope) -> str:
    """The matched route's template (bounded label values), or "unmatched"."""
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


class RequestMetricsMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: IngressMetrics,
        limit: Callable[[], int],
        on_inflight: Callable[[int], None],
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.limit = limit
        self.on_inflight = on_inflight  # told the in-flight count whenever it changes
        self.inflight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        if self.inflight >= self.limit():
            path = scope.get("path", "")
            self.metrics.overload_rejections.inc(
                tags={"route": path if path in _API_PATHS else "other"}
            )
            response = error_response(
                scope, 503, "overloaded", "the service is at capacity; retry shortly",
                {"Retry-After": str(OVERLOAD_RETRY_AFTER_S)},
            )  # fmt: skip
            await response(scope, receive, recording_send)
            self._record(scope, status, started)
            return

        self.inflight += 1
        self.on_inflight(self.inflight)
        try:
            await self.app(scope, receive, recording_send)
        finally:
            self.inflight -= 1
            self.on_inflight(self.inflight)
            self._record(scope, status, started)

    def _record(self, scope: Scope, status: int, started: float) -> None:
        route = route_of(scope)
        self.metrics.requests.inc(tags={"route": route, "status": str(status)})
        self.metrics.request_latency_ms.observe(
            (time.perf_counter() - started) * 1000.0, tags={"route": route}
        )
