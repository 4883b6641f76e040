"""The HTTP layer of the Ingress: FastAPI routes, middleware, offline docs and the web page.

`build_api(ingress)` runs inside each Ingress replica (Serve's `__serve_build_asgi_app__`), so
routes and middleware close over that replica's handles and settings. Routes are thin: read the
upload, one call on the Ingress, shape the response. Middleware order, outermost first:
security headers, request metrics and in-flight limit, body size, API key (and the limit on
failed keys), rate limit.
"""

from __future__ import annotations

import base64
import re
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import aiohttp
import ray
from fastapi import Depends, FastAPI, File, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.datastructures import UploadFile as StarletteUploadFile

from common.answers import Prediction
from common.image import ImageError
from deployments.auth import API_KEY_HEADER, ApiKeyMiddleware
from deployments.body_limit import BodySizeLimitMiddleware
from deployments.errors import ERROR_RESPONSES, ApiError, install_error_handlers, request_id_of
from deployments.metrics import METRIC_PREFIX
from deployments.rate_limit import FailedAuthLimit, RateLimitMiddleware
from deployments.request_metrics import RequestMetricsMiddleware
from deployments.schemas import (
    BatchItem,
    BatchResponse,
    ComparedPrediction,
    CompareResponse,
    ExplainResponse,
    HealthResponse,
    LivenessResponse,
    PredictResponse,
)
from deployments.security_headers import DOCS_POLICY, PAGE_POLICY, SecurityHeadersMiddleware

if TYPE_CHECKING:
    from deployments.ingress import Ingress

__all__ = ["build_api"]

STATIC_DIR = Path(__file__).parent / "static"
MULTIPART_OVERHEAD = 64 * 1024  # bytes of multipart framing allowed on top of the files
METRICS_TIMEOUT_S = 5.0
MAX_FILENAME_CHARS = 100  # of a client's file name echoed in /predict/batch
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')  # name="escaped value"
_ANSI_ESCAPE = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|[@-Z\\-_])")  # CSI and 2-byte sequences

# Declares the key in the OpenAPI document (Swagger's "Authorize"); ApiKeyMiddleware checks it.
_API_KEY_DOC = {"dependencies": [Depends(APIKeyHeader(name=API_KEY_HEADER, auto_error=False))]}


def build_api(ingress: Ingress) -> FastAPI:
    settings = ingress.settings
    api = FastAPIOffline(
        title="Product Photo Detector",
        description="Tells real product photos from AI-generated ones. Send JPEG, PNG or WebP "
        f"files as multipart form data; when authentication is on, send `{API_KEY_HEADER}`.",
        version="1.0.0",
        redoc_url=None,
    )
    install_error_handlers(api)

    # Middleware: Starlette runs the last one added first.
    api.add_middleware(
        RateLimitMiddleware,
        limiter=ingress.rate_limiter,
        per_minute=settings.rate_limit_per_minute,
        trusted_proxies=settings.trusted_proxies,
        on_reject=lambda: ingress.metrics.rate_limited.inc(tags={"limit": "requests"}),
    )
    api.add_middleware(
        ApiKeyMiddleware,
        key_hashes=settings.api_key_hashes,
        required=settings.require_auth,
        on_failure=lambda reason: ingress.metrics.auth_failures.inc(tags={"reason": reason}),
        failure_limit=FailedAuthLimit(
            limiter=ingress.rate_limiter,
            per_minute=settings.auth_failures_per_minute,
            trusted_proxies=settings.trusted_proxies,
        ),
        on_failure_limited=lambda: ingress.metrics.rate_limited.inc(
            tags={"limit": "auth_failures"}
        ),
    )
    single = settings.max_file_bytes + MULTIPART_OVERHEAD
    api.add_middleware(
        BodySizeLimitMiddleware,
        limits={
            "/predict": single,
            "/predict/explain": single,
            "/predict/compare": single,
            "/predict/batch": settings.max_batch_bytes + MULTIPART_OVERHEAD,
        },
        on_reject=lambda: ingress.metrics.validation_errors.inc(tags={"kind": "body_too_large"}),
    )
    api.add_middleware(
        RequestMetricsMiddleware,
        metrics=ingress.metrics,
        limit=lambda: ingress.config.max_inflight_requests,
        on_inflight=ingress.set_inflight,
    )
    api.add_middleware(
        SecurityHeadersMiddleware,
        policies={"/": PAGE_POLICY, "/docs": DOCS_POLICY},
        inline_script_paths=["/docs"],
    )

    @api.post("/predict", response_model=PredictResponse, responses=ERROR_RESPONSES,
              tags=["predict"], **_API_KEY_DOC)  # fmt: skip
    async def predict(
        request: Request, file: Annotated[UploadFile, File(description="JPEG, PNG or WebP")]
    ) -> PredictResponse:
        """Classify one image as real or AI-generated."""
        data = await _single_upload(request)
        prediction, elapsed_ms = await ingress.predict(data)
        return PredictResponse(
            **_verdict(prediction),
            inference_time_ms=round(elapsed_ms, 3),
            model_version=prediction.model_version,
            request_id=request_id_of(request),
        )

    @api.post("/predict/batch", response_model=BatchResponse, responses=ERROR_RESPONSES,
              tags=["predict"], **_API_KEY_DOC)  # fmt: skip
    async def predict_batch(
        request: Request,
        files: Annotated[list[UploadFile], File(description="up to 10 images, repeated field")],
    ) -> BatchResponse:
        """Classify several images in one request; a bad file fails alone."""
        uploads = await _uploads(request, "files", settings.max_batch_files)
        results, version, elapsed_ms = await ingress.predict_batch([data for _, data in uploads])
        items = [
            BatchItem(filename=name, error=str(result))
            if isinstance(result, ImageError)
            else BatchItem(filename=name, **_verdict(result))
            for (name, _), result in zip(uploads, results, strict=True)
        ]
        failed = sum(item.error is not None for item in items)
        return BatchResponse(
            results=items,
            total=len(items),
            successful=len(items) - failed,
            failed=failed,
            total_inference_time_ms=round(elapsed_ms, 3),
            model_version=version,
        )

    @api.post("/predict/explain", response_model=ExplainResponse, responses=ERROR_RESPONSES,
              tags=["predict"], **_API_KEY_DOC)  # fmt: skip
    async def predict_explain(
        request: Request, file: Annotated[UploadFile, File(description="JPEG, PNG or WebP")]
    ) -> ExplainResponse:
        """Classify one image and show where the evidence is (Grad-CAM heat map)."""
        data = await _single_upload(request)
        explanation, prediction, elapsed_ms = await ingress.explain(data)
        return ExplainResponse(
            **_verdict(prediction),
            inference_time_ms=round(elapsed_ms, 3),
            model_version=prediction.model_version,
            request_id=request_id_of(request),
            heatmap_base64=base64.b64encode(explanation.heatmap_jpeg).decode("ascii"),
        )

    @api.post("/predict/compare", response_model=CompareResponse, responses=ERROR_RESPONSES,
              tags=["predict"], **_API_KEY_DOC)  # fmt: skip
    async def predict_compare(
        request: Request, file: Annotated[UploadFile, File(description="JPEG, PNG or WebP")]
    ) -> CompareResponse:
        """Run the primary and the shadow model on the same image."""
        data = await _single_upload(request)
        primary, shadow, message = await ingress.compare(data)
        return CompareResponse(
            primary=_compared(primary),
            shadow=_compared(shadow) if shadow else None,
            frames=primary.frames,
            agreement=(primary.prediction == shadow.prediction) if shadow else None,
            difference=round(abs(primary.probability - shadow.probability), 6) if shadow else None,
            message=message,
        )

    @api.get("/health", response_model=HealthResponse, tags=["operations"],
             responses={503: {"model": HealthResponse, "description": "not ready"}})  # fmt: skip
    async def health() -> JSONResponse:
        """Readiness: 200 once the primary model is loaded, else 503."""
        body = HealthResponse(**await ingress.health())
        return JSONResponse(body.model_dump(), status_code=200 if body.model_loaded else 503)

    @api.get("/healthz", response_model=LivenessResponse, tags=["operations"])
    async def healthz() -> LivenessResponse:
        """Liveness: this ingress replica answers."""
        return LivenessResponse(alive=True)

    @api.get("/metrics", response_class=PlainTextResponse, tags=["operations"])
    async def metrics() -> PlainTextResponse:
        """The application's metrics from every replica on every node, Prometheus text."""
        return PlainTextResponse(
            await _application_metrics(), media_type="text/plain; version=0.0.4"
        )

    @api.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    api.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return api


def _verdict(prediction: Prediction) -> dict:
    return {
        "prediction": prediction.prediction,
        "probability": prediction.probability,
        "confidence": prediction.confidence,
        "frames": prediction.frames,
    }


def _compared(prediction: Prediction) -> ComparedPrediction:
    return ComparedPrediction(
        prediction=prediction.prediction,
        probability=prediction.probability,
        confidence=prediction.confidence,
        model_version=prediction.model_version,
    )


async def _single_upload(request: Request) -> bytes:
    """The one `file` of a single-image request (duplicates and stray fields are refused)."""
    uploads = await _uploads(request, "file", 1)
    return uploads[0][1]


async def _uploads(request: Request, field: str, max_files: int) -> list[tuple[str, bytes]]:
    """(filename, bytes) of every upload under `field`, in order; refuses other fields."""
    form = await request.form()  # parsed once by FastAPI already; this is its cached copy
    unexpected = sorted({key for key in form if key != field})
    if unexpected:
        raise ApiError(422, "validation_error", f"unexpected form fields: {unexpected}; "
                       f"send the image(s) as `{field}`")  # fmt: skip
    values = form.getlist(field)
    if not all(isinstance(v, StarletteUploadFile) for v in values):
        raise ApiError(422, "validation_error", f"`{field}` must be a file upload")
    if max_files == 1 and len(values) != 1:
        raise ApiError(422, "validation_error", f"send exactly one `{field}`, not {len(values)}")
    if len(values) > max_files:
        raise ApiError(413, "too_large", f"{len(values)} files; at most {max_files} per request")
    return [(_safe_filename(v.filename, i), await v.read()) for i, v in enumerate(values)]


def _safe_filename(name: str | None, index: int) -> str:
    """The base name a client gave, safe to show: no folders, no ANSI escape sequences, no
    control, format (bidi override) or separator characters, at most MAX_FILENAME_CHARS."""
    base = _ANSI_ESCAPE.sub("", re.split(r"[/\\]", name or "")[-1])
    base = "".join(c for c in base if unicodedata.category(c)[0] != "C"
                   and unicodedata.category(c) not in ("Zl", "Zp")).strip()  # fmt: skip
    if len(base) > MAX_FILENAME_CHARS:
        base = base[: MAX_FILENAME_CHARS - 1] + "…"
    return base if base.strip(".") else f"file-{index}"


async def _application_metrics() -> str:
    """`ray_ppd_*` families from every alive node's Ray metrics endpoint."""
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("MetricsExportPort")]
    texts = []
    timeout = aiohttp.ClientTimeout(total=METRICS_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for node in nodes:
            url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
            try:
                async with session.get(url) as response:
                    texts.append(await response.text())
            except (aiohttp.ClientError, TimeoutError):
                continue  # a node that cannot be read now is missing from this scrape
    return _only_application_families(texts)


def _only_application_families(texts: list[str]) -> str:
    seen_headers: set[str] = set()
    lines = []
    for text in texts:
        for line in text.splitlines():
            if line.startswith("#"):
                parts = line.split(maxsplit=3)
                if (
                    len(parts) >= 3
                    and parts[2].startswith(METRIC_PREFIX)
                    and line not in seen_headers
                ):
                    seen_headers.add(line)
                    lines.append(line)
            elif line.startswith(METRIC_PREFIX):
                lines.append(_without_runtime_labels(line))
    return "\n".join(lines) + "\n"


def _without_runtime_labels(sample: str) -> str:
    """A sample line keeping only the lowercase labels: Serve's (application, deployment,
    replica), ours (route, status, kind, ...) and `le`. Ray's runtime labels are CamelCase
    (SessionName, WorkerId, NodeAddress, JobId, Version, Component) and say where the
    cluster runs, not what the application does: the open route does not show them."""
    name, brace, rest = sample.partition("{")
    if not brace:
        return sample
    labels, _, value = rest.rpartition("}")
    kept = [m.group(0) for m in _LABEL.finditer(labels) if m.group(1).islower()]
    return f"{name}{{{','.join(kept)}}}{value}"
