"""The one error envelope: every failure becomes `{error, detail, request_id, status_code}`.

Route handlers raise `ApiError` (or let `common.image.ImageError` through); FastAPI's own 404,
405 and 422 are rewritten into the same shape, so a client parses one format on every status.
Every 503 is built by `unavailable` (or `overloaded`), so each carries the same `Retry-After`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from common.image import ImageError
from deployments.edge_headers import is_safe_request_id
from deployments.schemas import ErrorResponse

__all__ = [
    "ERROR_RESPONSES",
    "RETRY_AFTER_S",
    "ApiError",
    "error_response",
    "install_error_handlers",
    "overloaded",
    "request_id_of",
    "root_cause",
    "unavailable",
]

logger = logging.getLogger("ray.serve")

RETRY_AFTER_S = 2  # the Retry-After of every 503

_HTTP_ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_format",
    422: "validation_error",
    429: "rate_limited",
    503: "unavailable",
}

# For the OpenAPI document: every route may answer with the envelope on these statuses.
ERROR_RESPONSES: dict[int | str, dict] = {
    status: {"model": ErrorResponse, "description": code.replace("_", " ")}
    for status, code in _HTTP_ERROR_CODES.items()
    if status not in (403, 404, 405)
}


class ApiError(Exception):
    """An error the API reports to the client as it is."""

    def __init__(
        self,
        status_code: int,
        error: str,
        detail: str,
        headers: Mapping[str, str] | None = None,
    ):
        super().__init__(detail)
        self.status_code = status_code
        self.error = error
        self.detail = detail
        self.headers = dict(headers or {})

    def response(self, request: Request | Scope) -> JSONResponse:
        """This error as the envelope (`error_response`)."""
        return error_response(request, self.status_code, self.error, self.detail, self.headers)


def unavailable(error: str, detail: str) -> ApiError:
    """A 503 envelope with `Retry-After`."""
    return ApiError(503, error, detail, {"Retry-After": str(RETRY_AFTER_S)})


def overloaded() -> ApiError:
    """The 503 of a replica past its in-flight limit."""
    return unavailable("overloaded", "the service is at capacity; retry shortly")


def request_id_of(request: Request | Scope) -> str:
    """The id Serve's proxy gave this request (the client's X-Request-ID when it is plain, see
    `deployments.edge_headers`, or a new one); empty rather than an unsafe one."""
    headers = request.headers if isinstance(request, Request) else Headers(scope=request)
    request_id = headers.get("x-request-id", "")
    return request_id if is_safe_request_id(request_id) else ""


def error_response(
    request: Request | Scope,
    status_code: int,
    error: str,
    detail: str,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The envelope as a response; ASGI middleware passes its `scope` as `request`."""
    body = ErrorResponse(
        error=error, detail=detail, request_id=request_id_of(request), status_code=status_code
    )
    return JSONResponse(body.model_dump(), status_code=status_code, headers=dict(headers or {}))


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception FastAPI can see through the envelope."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response(request)

    @app.exception_handler(ImageError)
    async def _image_error(request: Request, exc: ImageError) -> JSONResponse:
        cause = root_cause(exc)
        return error_response(request, exc.status_code, exc.kind, str(cause))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_ERROR_CODES.get(exc.status_code, "http_error")
        return error_response(request, exc.status_code, code, str(exc.detail), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(request, 422, "validation_error", _describe(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error in %s %s", request.method, request.url.path)
        return error_response(request, 500, "internal_error", "the server failed; it was logged")


def root_cause(exc: BaseException) -> BaseException:
    """The user exception inside Ray's wrappers (a RayTaskError carries it as `.cause`, and a
    failed upstream DeploymentResponse nests one RayTaskError in another)."""
    seen = 0
    while isinstance(getattr(exc, "cause", None), BaseException) and seen < 10:
        exc, seen = exc.cause, seen + 1
    return exc


def _describe(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "request"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "the request is malformed"
