"""Request-body size limits as ASGI middleware, enforced before and while the body is read.

A declared Content-Length over the limit is refused at once; a body without one (chunked) is
counted as it arrives, and when it passes the limit the parser is cut off and the client gets
413 instead of whatever the route would have answered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deployments.errors import error_response

__all__ = ["BodySizeLimitMiddleware"]


class BodySizeLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        limits: Mapping[str, int],
        on_reject: Callable[[], None] | None = None,
    ) -> None:
        """`limits` maps an exact path to its largest body in bytes."""
        if any(limit < 1 for limit in limits.values()):
            raise ValueError("body limits must be positive")
        self.app = app
        self.limits = dict(limits)
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.limits.get(scope.get("path", "")) if scope["type"] == "http" else None
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(scope, receive, send, limit)
            return

        received = 0
        exceeded = False
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if exceeded and not response_started:
                response_started = True
                await self._refuse(scope, receive, send, limit)
                return
            if exceeded:
                return  # the route's own answer to a cut-off body is replaced by the 413
            response_started = True
            await send(message)

        await self.app(scope, counting_receive, guarded_send)
        if exceeded and not response_started:
            await self._refuse(scope, receive, send, limit)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        if self.on_reject is not None:
            self.on_reject()
        response = error_response(
            scope, 413, "too_large", f"the request body is over the {limit}-byte limit"
        )
        await response(scope, receive, send)
