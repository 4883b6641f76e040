"""Outermost ASGI middleware of the ingress: request metrics and the in-flight limit.

Every response, errors from the other middleware included, is counted by route template and
status and timed. Above `limit()` requests in flight in this replica, new ones get a fast 503
with Retry-After instead of waiting in an unbounded queue. A request counts as in flight once
its body has arrived (at once when it has none): uploads still trickling in hold a connection,
which the edge's timeouts bound, but no share of the replica's capacity, so a few dozen slow
clients cannot turn every route, `/health` included, into 503s.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deployments.errors import overloaded
from deployments.metrics import IngressMetrics

__all__ = ["RequestMetricsMiddleware", "route_of"]

_API_PATHS = frozenset({"/predict", "/predict/batch", "/predict/explain", "/predict/compare"})


def route_of(scope: Scope) -> str:
    """The matched route's template (bounded label values), or "unmatched"."""
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


def _has_body(scope: Scope) -> bool:
    for key, value in scope.get("headers", ()):
        key = key.lower()
        if key == b"transfer-encoding" or (key == b"content-length" and value.strip() != b"0"):
            return True
    return False


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
            response = overloaded().response(scope)
            await response(scope, receive, recording_send)
            self._record(scope, status, started)
            return

        counted = False

        def enter() -> None:
            nonlocal counted
            counted = True
            self.inflight += 1
            self.on_inflight(self.inflight)

        async def counting_receive() -> Message:
            message = await receive()
            if not counted and not message.get("more_body", False):
                enter()  # the last body chunk (or a disconnect) is in
            return message

        if not _has_body(scope):
            enter()
        try:
            await self.app(scope, counting_receive, recording_send)
        finally:
            if counted:
                self.inflight -= 1
                self.on_inflight(self.inflight)
            self._record(scope, status, started)

    def _record(self, scope: Scope, status: int, started: float) -> None:
        route = route_of(scope)
        self.metrics.requests.inc(tags={"route": route, "status": str(status)})
        self.metrics.request_latency_ms.observe(
            (time.perf_counter() - started) * 1000.0, tags={"route": route}
        )
