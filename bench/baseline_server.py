"""The "before" service: one FastAPI + uvicorn process running the same model one request at a
time (the handler blocks its event loop, as the original service's did), on the CPU or a GPU.

    python -m bench.baseline_server --checkpoint artifacts/demo/model.safetensors --port 8100
"""

from __future__ import annotations

import argparse
import time

import torch
import uvicorn
from fastapi import FastAPI, File, UploadFile
from fastapi.responses import JSONResponse

from common.answers import prediction_for
from common.checkpoint import load_checkpoint
from common.image import ImageError, prepare_image
from common.inference import forward_probabilities
from common.model import fold_batch_norms

__all__ = ["create_app"]


def create_app(checkpoint: str, threads: int, device: str = "cpu") -> FastAPI:
    """The model runs through `common.inference`, as the served Classifier does (on a GPU in
    the same precision), so the two compare serving, not arithmetic."""
    torch.set_num_threads(threads)
    model, meta = load_checkpoint(checkpoint, device)
    model = fold_batch_norms(model)  # the model the Classifier serves
    app = FastAPI(title="baseline")

    @app.post("/predict")
    async def predict(file: UploadFile = File(...)) -> JSONResponse:  # noqa: B008
        started = time.perf_counter()
        try:
            pixels = prepare_image(await file.read(), meta.image_size).pixels
        except ImageError as exc:
            return JSONResponse({"error": exc.kind, "detail": str(exc)}, exc.status_code)
        p = float(forward_probabilities(model, meta, pixels[None], device)[0])
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        answer = prediction_for(p, meta.threshold, model_version=meta.version, model_ms=elapsed_ms)
        return JSONResponse(
            {
                "prediction": answer.prediction,
                "probability": answer.probability,
                "confidence": answer.confidence,
                "model_version": answer.model_version,
                "inference_time_ms": elapsed_ms,
            }
        )

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the cores)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.checkpoint, args.threads, args.device),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
