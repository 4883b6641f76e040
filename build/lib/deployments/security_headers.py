"""Browser-facing hardening headers as ASGI middleware, on every response of the app.

Every answer gets `X-Content-Type-Options: nosniff` and a Content-Security-Policy: the strict
policy its path is given (the web page, the Swagger UI), else `default-src 'none'` (JSON, text
and static files are never documents to run). For paths listed in `inline_script_paths` the
SHA-256 of each inline `<script>` of the HTML answer is added to `script-src`, so exactly the
scripts we serve run there (Swagger UI's start-up script) and no other inline one.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Mapping

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["API_POLICY", "DOCS_POLICY", "PAGE_POLICY", "SecurityHeadersMiddleware",
           "inline_script_hashes"]  # fmt: skip

API_POLICY = "default-src 'none'; frame-ancestors 'none'"
# The page loads only its own script and style; the heat map is a data: URL, the preview a
# blob: URL; it talks only to this server.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# Swagger UI (fastapi-offline's bundle, served here) plus its inline start-up script, whose
# hash the middleware adds; its icons are data: URLs in its CSS.
DOCS_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_INLINE_SCRIPT = re.compile(rb"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.DOTALL | re.I)


def inline_script_hashes(html: bytes) -> list[str]:
    """CSP sources (`'sha256-…'`) of the inline scripts of an HTML document, in order."""
    return [
        f"'sha256-{base64.b64encode(hashlib.sha256(body).digest()).decode('ascii')}'"
        for body in _INLINE_SCRIPT.findall(html)
    ]


class SecurityHeadersMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        policies: Mapping[str, str],
        default_policy: str = API_POLICY,
        inline_script_paths: Iterable[str] = (),
    ) -> None:
        """`policies` maps an exact path to its Content-Security-Policy."""
        self.inline_script_paths = frozenset(inline_script_paths)
        missing = [p for p in self.inline_script_paths if "script-src" not in policies.get(p, "")]
        if missing:
            raise ValueError(f"paths with inline scripts need a script-src policy: {missing}")
        self.app = app
        self.policies = dict(policies)
        self.default_policy = default_policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        policy = self.policies.get(path, self.default_policy)
        if path in self.inline_script_paths:
            await self._with_script_hashes(scope, receive, send, policy)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                _set_headers(message, policy)
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _with_script_hashes(
        self, scope: Scope, receive: Receive, send: Send, policy: str
    ) -> None:
        """Hold the (small, HTML) answer until its inline scripts are known."""
        start: Message | None = None
        body = bytearray()

        async def buffering_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] == "http.response.body" and start is not None:
                body.extend(message.get("body", b""))
                if message.get("more_body", False):
                    return
                hashes = inline_script_hashes(bytes(body))
                if hashes:
                    policy_now = policy.replace("script-src", f"script-src {' '.join(hashes)}", 1)
                else:
                    policy_now = policy
                _set_headers(start, policy_now)
                await send(start)
                await send({"type": "http.response.body", "body": bytes(body)})
                return
            await send(message)

        await self.app(scope, receive, buffering_send)


def _set_headers(message: Message, policy: str) -> None:
    headers = MutableHeaders(scope=message)
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Content-Security-Policy"] = policy
