"""One Ray instance for the whole test session, a tiny real checkpoint, and the Serve app
deployed from `serve_config.yaml` the way `serve run` / `serve deploy` apply it."""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import ray
import torch
import yaml

from common.checkpoint import ModelMeta, save_checkpoint
from common.image import prepare_image
from common.model import build_model, to_model_input
from tests.images import image_bytes

ROOT = Path(__file__).resolve().parents[1]
TEST_IMAGE_SIZE = 32  # px: tiny inputs keep EfficientNet-B0 fast on two cores
APP_NAME = "product-photo-detector"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_checkpoint(path: Path, version: str, seed: int, image_size: int = TEST_IMAGE_SIZE) -> Path:
    """A real EfficientNet-B0 checkpoint: random weights, BatchNorm statistics calibrated on
    real photo crops, so that different images get clearly different probabilities."""
    torch.manual_seed(seed)
    model = build_model()
    meta = ModelMeta(
        image_size=image_size,
        version=version,
        drift_baseline={
            "mean_probability": 0.5,
            "low_confidence_ratio": 0.5,
            "ai_generated_ratio": 0.5,
        },
    )
    pixels = np.stack([prepare_image(image_bytes(i), image_size).pixels for i in range(16)])
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # a plain average over the calibration pass
    model.train()
    with torch.no_grad():
        model(to_model_input(torch.from_numpy(pixels), meta.mean, meta.std, "cpu"))
    save_checkpoint(model.eval(), meta, path)
    return path


@pytest.fixture(scope="session")
def ray_instance():
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private, loopback-only test instance
    ray.init(num_cpus=6, include_dashboard=False, log_to_driver=False)
    yield
    from ray import serve

    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("checkpoints")
    return {
        "primary": make_checkpoint(folder / "primary.safetensors", "test-primary", seed=1),
        "other": make_checkpoint(folder / "other.safetensors", "test-other", seed=2),
    }


def serve_config(port: int, model_uri: Path, **classifier_overrides) -> dict:
    """`serve_config.yaml` with the test's port and checkpoint."""
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    config = copy.deepcopy(config)
    config["http_options"]["port"] = port
    for deployment in config["applications"][0]["deployments"]:
        if deployment["name"] == "Classifier":
            deployment["user_config"].update({"model_uri": str(model_uri), **classifier_overrides})
    return config


def deploy(config: dict) -> None:
    """Apply a config as `serve deploy` does (the controller's apply_config) and wait."""
    from ray.serve._private import api as serve_private_api
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(config)
    client = serve_private_api.serve_start(
        http_options=schema.http_options.model_dump(), proxy_location=schema.proxy_location
    )
    client.deploy_apps(schema, _blocking=True)


@pytest.fixture(scope="session")
def served_app(ray_instance, checkpoints) -> dict:
    """The application from serve_config.yaml on a free loopback port; yields its base URL."""
    port = free_port()
    config = serve_config(port, checkpoints["primary"])
    deploy(config)
    return {"url": f"http://127.0.0.1:{port}", "config": config, "port": port}


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` (sqlite store, proxied artefacts) on a free loopback port; yields
    its tracking URI and stops it at the end of the session."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = open(root / "server.log", "wb")  # noqa: SIM115  (closed after the server stops)
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts")],
        # no job-runner processes (trace rollups, prompt jobs): tracking and registry only
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{uri}/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            log.close()
            pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()}")
        time.sleep(0.5)
    yield uri
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
    log.close()
