"""Serve's HTTP proxy callback: a client's X-Request-ID is kept only when it is short and plain.

`RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=deployments.request_id:proxy_middlewares`
(serving.env, the RayService) makes Serve wrap its HTTP servers (the proxy, and each ingress
replica's direct-ingress server behind HAProxy) in this middleware, outside Serve's own
request-id middleware. An id longer than `MAX_REQUEST_ID_LENGTH` or with a character outside
letters, digits and `-_.:` is dropped there, so Serve makes a new one, and that one is what the
answer, the envelope and every log line carry.
"""

from __future__ import annotations

import re

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["MAX_REQUEST_ID_LENGTH", "RequestIdFilterMiddleware", "is_safe_request_id",
           "proxy_middlewares"]  # fmt: skip

MAX_REQUEST_ID_LENGTH = 128  # characters
_HEADER = b"x-request-id"
_SAFE_ID = re.compile(rb"[A-Za-z0-9._:-]{1,%d}" % MAX_REQUEST_ID_LENGTH)


def is_safe_request_id(value: str | bytes) -> bool:
    """1-128 characters, each a letter, a digit or one of `-_.:`."""
    raw = value.encode("latin-1", "replace") if isinstance(value, str) else value
    return _SAFE_ID.fullmatch(raw) is not None


class RequestIdFilterMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            ids = [value for key, value in scope["headers"] if key.lower() == _HEADER]
            if ids and not (len(ids) == 1 and is_safe_request_id(ids[0])):
                # several ids, or one that is not plain: none of them is believed
                scope = dict(scope)
                scope["headers"] = [(k, v) for k, v in scope["headers"] if k.lower() != _HEADER]
        await self.app(scope, receive, send)


def proxy_middlewares() -> list[Middleware]:
    """What Serve's HTTP proxy callback returns: the middleware around its HTTP servers."""
    return [Middleware(RequestIdFilterMiddleware)]
