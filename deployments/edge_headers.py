"""Serve's HTTP proxy callback: what a client may not tell Serve, dropped before Serve reads it.

`RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=deployments.edge_headers:proxy_middlewares`
(serving.env, the RayService) makes Serve wrap its HTTP servers (the Python proxy, and each
ingress replica's direct-ingress server behind HAProxy) in this middleware, outside Serve's own
request handling. There it removes:

- `x-request-timeout-seconds` and `x-request-disconnect-disabled`: Serve honours them as
  per-request hints (a client could get a plain-text 408 at will, lift the 60 s
  `request_timeout_s` with `0` or `-1`, or keep work running after it hung up). The server's
  deadline and disconnect policy are the operator's, from `serve_config.yaml`.
- an X-Request-ID longer than `MAX_REQUEST_ID_LENGTH` or with a character outside letters,
  digits and `-_.:` (or several of them), so Serve makes a new one, and that one is what the
  answer, the envelope and every log line carry.
"""

from __future__ import annotations

import re

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["CLIENT_HINT_HEADERS", "MAX_REQUEST_ID_LENGTH", "EdgeHeadersMiddleware",
           "is_safe_request_id", "proxy_middlewares"]  # fmt: skip

MAX_REQUEST_ID_LENGTH = 128  # characters
# Serve's per-request hints (ray.serve._private.constants), never a client's to set
CLIENT_HINT_HEADERS = frozenset({b"x-request-timeout-seconds", b"x-request-disconnect-disabled"})
_REQUEST_ID = b"x-request-id"
_SAFE_ID = re.compile(rb"[A-Za-z0-9._:-]{1,%d}" % MAX_REQUEST_ID_LENGTH)


def is_safe_request_id(value: str | bytes) -> bool:
    """1-128 characters, each a letter, a digit or one of `-_.:`."""
    raw = value.encode("latin-1", "replace") if isinstance(value, str) else value
    return _SAFE_ID.fullmatch(raw) is not None


class EdgeHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = scope["headers"]
            ids = [value for key, value in headers if key.lower() == _REQUEST_ID]
            # several ids, or one that is not plain: none of them is believed
            drop_ids = bool(ids) and not (len(ids) == 1 and is_safe_request_id(ids[0]))
            kept = [
                (key, value)
                for key, value in headers
                if key.lower() not in CLIENT_HINT_HEADERS
                and not (drop_ids and key.lower() == _REQUEST_ID)
            ]
            if len(kept) != len(headers):
                scope = dict(scope)
                scope["headers"] = kept
        await self.app(scope, receive, send)


def proxy_middlewares() -> list[Middleware]:
    """What Serve's HTTP proxy callback returns: the middleware around its HTTP servers."""
    return [Middleware(EdgeHeadersMiddleware)]
