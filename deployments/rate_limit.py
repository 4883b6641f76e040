"""Application-wide rate limits: a RateLimiter deployment holds the counters, middleware asks it.

The counters live in one replica (the `limits` library's moving window over its memory
storage), so a limit holds for the whole application however many ingress replicas there are.
Requests are counted per API key (its digest) when authentication is on, else per client
address; `X-Forwarded-For` is believed only from `TRUSTED_PROXIES`. Failed authentications
are counted per client address by `FailedAuthLimit` (its own budget in the same RateLimiter),
so guessing keys costs the guesser, never a client with a valid key.

The counters are in memory: a RateLimiter restart forgets them (every client starts a fresh
minute). If the limiter cannot be reached in time, the Ingress's `rate_limiter_fails_open`
(`user_config`, default true) decides: the request is let through (availability first) or
refused with 503 + Retry-After; either way it is counted in
`ppd_dependency_errors{dependency="rate_limiter"}` and logged. A failed authentication that
cannot be counted still gets its 401.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import math
import time
from collections.abc import Callable

from limits import RateLimitItemPerMinute, storage, strategies
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from deployments.errors import error_response, unavailable

__all__ = ["FailedAuthLimit", "RateLimitMiddleware", "RateLimiter", "client_address"]

logger = logging.getLogger("ray.serve")
_NAMESPACE = "ppd"


@serve.deployment
class RateLimiter:
    def __init__(self) -> None:
        self._limiter = strategies.MovingWindowRateLimiter(storage.MemoryStorage())

    def hit(self, client: str, per_minute: int) -> tuple[bool, int]:
        """Count one request for `client`; (allowed, seconds until a slot frees up)."""
        item = RateLimitItemPerMinute(per_minute)
        if self._limiter.hit(item, _NAMESPACE, client):
            return True, 0
        stats = self._limiter.get_window_stats(item, _NAMESPACE, client)
        return False, max(1, math.ceil(stats.reset_time - time.time()))


def client_address(scope: Scope, trusted_proxies: frozenset[str]) -> str:
    """The client's address: the TCP peer, or, behind a trusted proxy, the nearest untrusted
    address in X-Forwarded-For (`trusted_proxies`: addresses or CIDR ranges)."""
    peer = (scope.get("client") or ("unknown", 0))[0]
    if not _is_trusted(peer, trusted_proxies):
        return peer
    forwarded = Headers(scope=scope).get("x-forwarded-for", "")
    for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
        if not _is_trusted(hop, trusted_proxies):
            return hop
    return peer


def _is_trusted(address: str, trusted_proxies: frozenset[str]) -> bool:
    """An exact entry of TRUSTED_PROXIES, or inside one of its CIDR ranges (a cloud load
    balancer's proxies, e.g. GKE's 35.191.0.0/16 and 130.211.0.0/22)."""
    if address in trusted_proxies:
        return True
    networks = _networks(trusted_proxies)
    if not networks:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


@functools.cache
def _networks(
    trusted_proxies: frozenset[str],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(p, strict=False) for p in trusted_proxies if "/" in p)


class FailedAuthLimit:
    """At most `per_minute` failed authentications per client address (0: no limit)."""

    def __init__(
        self,
        *,
        limiter: DeploymentHandle,
        per_minute: int,
        trusted_proxies: frozenset[str] = frozenset(),
        timeout_s: float = 2.0,
        on_unreachable: Callable[[], None] | None = None,
    ) -> None:
        if per_minute < 0:
            raise ValueError("per_minute must be >= 0 (0 turns the limit off)")
        self.limiter = limiter
        self.per_minute = per_minute
        self.trusted_proxies = trusted_proxies
        self.timeout_s = timeout_s
        self.on_unreachable = on_unreachable

    async def count_failure(self, scope: Scope) -> int:
        """Count one failed attempt from this request's client: 0 while within the limit,
        else the seconds until the client may try again."""
        if not self.per_minute:
            return 0
        client = f"failed-auth:{client_address(scope, self.trusted_proxies)}"
        try:
            allowed, retry_after = await asyncio.wait_for(
                self.limiter.hit.remote(client, self.per_minute), self.timeout_s
            )
        except Exception:  # unreachable or slow limiter: the client still gets its 401
            logger.exception("rate limiter unavailable; failed authentication not counted")
            if self.on_unreachable is not None:
                self.on_unreachable()
            return 0
        return 0 if allowed else retry_after


class RateLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: DeploymentHandle,
        per_minute: int,
        trusted_proxies: frozenset[str] = frozenset(),
        protected_prefix: str = "/predict",
        timeout_s: float = 2.0,
        fails_open: Callable[[], bool] = lambda: True,
        on_reject: Callable[[], None] | None = None,
        on_unreachable: Callable[[], None] | None = None,
    ) -> None:
        """Per-key (per-address without auth) limit of the protected routes; 0 turns it off.
        `fails_open()`: let a request through when the limiter cannot be asked in time."""
        if per_minute < 0:
            raise ValueError("per_minute must be >= 0 (0 turns the limit off)")
        self.app = app
        self.limiter = limiter
        self.per_minute = per_minute
        self.trusted_proxies = trusted_proxies
        self.protected_prefix = protected_prefix
        self.timeout_s = timeout_s
        self.fails_open = fails_open
        self.on_reject = on_reject
        self.on_unreachable = on_unreachable

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not (
            self.per_minute
            and scope["type"] == "http"
            and scope["path"].startswith(self.protected_prefix)
        ):
            await self.app(scope, receive, send)
            return
        state = scope.get("state", {})
        client = state.get("api_key_id") or client_address(scope, self.trusted_proxies)
        try:
            allowed, retry_after = await asyncio.wait_for(
                self.limiter.hit.remote(client, self.per_minute), self.timeout_s
            )
        except Exception:  # unreachable or slow limiter: the configured policy decides
            if self.on_unreachable is not None:
                self.on_unreachable()
            if not self.fails_open():
                logger.exception("rate limiter unavailable; request refused (fails closed)")
                refusal = unavailable(
                    "unavailable", "the rate limiter is not reachable; retry shortly"
                )
                response = refusal.response(scope)
                await response(scope, receive, send)
                return
            logger.exception("rate limiter unavailable; request let through (fails open)")
            allowed, retry_after = True, 0
        if not allowed:
            if self.on_reject is not None:
                self.on_reject()
            detail = f"more than {self.per_minute} requests a minute; retry in {retry_after} s"
            response = error_response(
                scope, 429, "rate_limited", detail, {"Retry-After": str(retry_after)}
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
