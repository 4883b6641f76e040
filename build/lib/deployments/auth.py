"""API-key authentication as ASGI middleware: checked before a request body is read.

Keys are configured as SHA-256 digests (plain keys are hashed at start-up by
`common.settings`); a presented key is hashed and compared with every configured digest in
constant time. Only the protected routes (`/predict…`) need a key; health, liveness, metrics,
docs and the web page stay open. The key itself is never logged or exported. With a
`FailedAuthLimit`, a client address past its failed attempts gets 429 + Retry-After instead
of 401; a valid key is never refused by it, whoever else failed from the same address.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from deployments.errors import error_response
from deployments.rate_limit import FailedAuthLimit

__all__ = ["API_KEY_HEADER", "ApiKeyMiddleware", "key_matches"]

API_KEY_HEADER = "X-API-Key"
_CHALLENGE = {"WWW-Authenticate": "ApiKey"}


def key_matches(key: str, key_hashes: frozenset[str]) -> bool:
    """Constant-time comparison of sha256(key) with every configured digest (no early exit)."""
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    matched = False
    for expected in key_hashes:
        matched |= hmac.compare_digest(digest, expected)
    return matched


class ApiKeyMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        key_hashes: frozenset[str],
        required: bool,
        protected_prefix: str = "/predict",
        on_failure: Callable[[str], None] | None = None,
        failure_limit: FailedAuthLimit | None = None,
        on_failure_limited: Callable[[], None] | None = None,
    ) -> None:
        if required and not key_hashes:
            raise ValueError("authentication is required but no key hashes are configured")
        self.app = app
        self.key_hashes = key_hashes
        self.required = required
        self.protected_prefix = protected_prefix
        self.on_failure = on_failure
        self.failure_limit = failure_limit
        self.on_failure_limited = on_failure_limited

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not (
            self.required
            and scope["type"] == "http"
            and scope["path"].startswith(self.protected_prefix)
        ):
            await self.app(scope, receive, send)
            return
        key = Headers(scope=scope).get(API_KEY_HEADER)
        if not key or not key_matches(key, self.key_hashes):
            reason = "missing" if not key else "invalid"
            if self.on_failure is not None:
                self.on_failure(reason)
            response = await self._refusal(scope, reason)
            await response(scope, receive, send)
            return
        # The rate limit counts per key: identify it by its digest, never by the key.
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        scope.setdefault("state", {})["api_key_id"] = digest[:16]
        await self.app(scope, receive, send)

    async def _refusal(self, scope: Scope, reason: str) -> Response:
        """401 with the challenge, or 429 once this address failed too often."""
        retry_after = await self.failure_limit.count_failure(scope) if self.failure_limit else 0
        if retry_after:
            if self.on_failure_limited is not None:
                self.on_failure_limited()
            detail = (
                f"more than {self.failure_limit.per_minute} failed authentications a minute "
                f"from this address; retry in {retry_after} s"
            )
            return error_response(
                scope, 429, "rate_limited", detail, {"Retry-After": str(retry_after)}
            )
        detail = f"send a valid API key in the {API_KEY_HEADER} header ({reason} key)"
        return error_response(scope, 401, "unauthorized", detail, _CHALLENGE)
