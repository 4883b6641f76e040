"""One Ray instance for the whole test session, tiny real checkpoints, and the Serve app
deployed from `serve_config.yaml` the way `serve run` / `serve deploy` apply it."""

from __future__ import annotations

import copy
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import ray
import torch
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bench.server_process import free_port, serving_env
from common.checkpoint import ModelMeta, save_checkpoint
from common.drift import window_statistics
from common.image import prepare_image
from common.model import build_model, to_model_input
from common.settings import hash_api_key
from tests.images import image_bytes
from tests.provenance_fixtures import write_trust_anchors

ROOT = Path(__file__).resolve().parents[1]
TEST_IMAGE_SIZE = 32  # px: tiny inputs keep EfficientNet-B0 fast on two cores
APP_NAME = "product-photo-detector"
DEPLOY_TIMEOUT_S = 300  # until the application is RUNNING after a deploy
BASELINE_IMAGES = range(16)  # image_bytes(i) used to calibrate BatchNorm and the drift baseline
TEST_KEYS = [f"test-key-{i:03d}" for i in range(120)]  # one fresh key per test that needs one
RATE_LIMIT_PER_MINUTE = 120
AUTH_FAILURES_PER_MINUTE = 20  # the default, per client address
METRICS_EXPORT_S = 2  # how often replicas export metrics in the test session
HAPROXY_CLIENT_TIMEOUT_S = 5  # s: HAProxy cuts a client idle this long mid-request
APP_ENV = {  # the keys join these as a file of digests (API_KEY_HASHES_FILE): see app_config
    "REQUIRE_AUTH": "true",
    "RATE_LIMIT_PER_MINUTE": str(RATE_LIMIT_PER_MINUTE),
    "AUTH_FAILURES_PER_MINUTE": str(AUTH_FAILURES_PER_MINUTE),
    # the test client (or HAProxy in front) is the trusted edge: a test picks its client
    # address with X-Forwarded-For, so failed keys of one test never limit another
    "TRUSTED_PROXIES": "127.0.0.1",
}


def make_checkpoint(path: Path, version: str, seed: int, image_size: int = TEST_IMAGE_SIZE) -> Path:
    """A real EfficientNet-B0 checkpoint: random weights, BatchNorm statistics calibrated on
    real photo crops (so different images get clearly different probabilities), and a drift
    baseline measured on those same crops."""
    torch.manual_seed(seed)
    model = build_model()
    meta = ModelMeta(image_size=image_size, version=version)
    pixels = np.stack([prepare_image(image_bytes(i), image_size).pixels for i in BASELINE_IMAGES])
    x = to_model_input(torch.from_numpy(pixels), meta.mean, meta.std, "cpu")
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # a plain average over the calibration pass
    model.train()
    with torch.no_grad():
        model(x)
        model.eval()
        probabilities = torch.sigmoid(model(x)).tolist()
    meta = ModelMeta(
        image_size=image_size,
        version=version,
        drift_baseline=window_statistics(probabilities, meta.threshold),
    )
    save_checkpoint(model, meta, path)
    return path


@pytest.fixture(scope="session")
def ray_instance():
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private, loopback-only test instance
    # The tuned serving settings (serving.env): Serve's HAProxy front end (the binary bundled
    # with ray[serve]), with files of this session's own in a private folder...
    # (a short path under /tmp, for its Unix sockets: removed at the end of the session)
    haproxy_files = Path(tempfile.mkdtemp(prefix="haproxy-tests-"))
    os.environ.update(serving_env(haproxy_files))
    # ...and a shorter idle-client deadline than serving.env's 30 s, so the slow-client tests
    # take seconds (HAPROXY_CLIENT_TIMEOUT_S)
    os.environ["RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S"] = str(HAPROXY_CLIENT_TIMEOUT_S)
    # Tests call handles synchronously from this driver, which needs Serve's router loop.
    os.environ["RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP"] = "1"
    # Ingress replicas listen on ports from Serve's range (30000-31000 HTTP, 40000-41000
    # gRPC), and HAProxy's fallback proxy on 8500, with SO_REUSEPORT: two Serve instances on
    # one machine would share those ports and the kernel split each one's connections between
    # them. This session keeps out of what a `make serve` or a benchmark takes
    # (test_make_serve.py met it).
    os.environ |= {
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(free_port()),
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": "31100",
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": "31600",
        "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": "41100",
        "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": "41600",
    }
    # address="local": an instance of its own, even where `ray start` left a cluster running
    # Replicas export their metrics every 2 s instead of Ray's 10 s: the tests that wait for a
    # count to reach /metrics wait a fifth as long.
    ray.init(address="local", num_cpus=6, include_dashboard=False, log_to_driver=False,
             _system_config={"metrics_report_interval_ms": METRICS_EXPORT_S * 1000})  # fmt: skip
    yield
    from ray import serve

    serve.shutdown()
    ray.shutdown()
    shutil.rmtree(haproxy_files, ignore_errors=True)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("checkpoints")
    return {
        "primary": make_checkpoint(folder / "primary.safetensors", "test-primary", seed=1),
        "other": make_checkpoint(folder / "other.safetensors", "test-other", seed=2),
    }


def deployment(config: dict, name: str) -> dict:
    return next(d for d in config["applications"][0]["deployments"] if d["name"] == name)


def app_config(port: int, checkpoints: dict[str, Path], folder: Path) -> dict:
    """`serve_config.yaml` with the test's port, checkpoints, keys and two ingress replicas
    (the key digests and the C2PA trust anchors are written to `folder`)."""
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    config["http_options"]["port"] = port
    app = config["applications"][0]
    # Keys as the RayService mounts them: a file of SHA-256 digests. Plain keys in runtime_env
    # env_vars would be written to Ray's logs (tests/deployments/test_secrets_in_logs.py greps
    # for them).
    hashes = folder / "api-key-hashes"
    hashes.write_text("".join(hash_api_key(key) + "\n" for key in TEST_KEYS))
    anchors = write_trust_anchors(folder / "c2pa-roots.pem")
    app["runtime_env"] = {"env_vars": {**APP_ENV, "API_KEY_HASHES_FILE": str(hashes),
                                       "C2PA_TRUST_ANCHORS": str(anchors)}}  # fmt: skip
    deployment(config, "Ingress")["num_replicas"] = 2
    for name, checkpoint in (("Classifier", "primary"), ("Explainer", "primary"),
                             ("Shadow", "other")):  # fmt: skip
        deployment(config, name)["user_config"]["model_uri"] = str(checkpoints[checkpoint])
    return config


def deploy(config: dict) -> None:
    """Apply a config as `serve deploy` does (the controller's apply_config) and wait."""
    from ray.serve._private import api as serve_private_api
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(config)
    options = {"http_options": schema.http_options.model_dump(),
               "proxy_location": schema.proxy_location}  # fmt: skip
    try:
        client = serve_private_api.serve_start(**options)
    except (ray.exceptions.ActorDiedError, TimeoutError):
        # Serve gives its proxy (HAProxy's manager) a fixed 60 s to start; on two loaded cores
        # it may need more, and the controller replaces it: connect again, wait below.
        client = serve_private_api.serve_start(**options)
    # deploy_apps(_blocking=True) gives up after a fixed 60 s: too short on two cores shared
    # with other Ray instances (seen here: 35 s to build the app, replicas later still).
    client.deploy_apps(schema)
    client._wait_for_application_running(APP_NAME, timeout_s=DEPLOY_TIMEOUT_S)
    client.wait_for_proxies_serving(wait_for_applications_running=True)


def running_replicas() -> dict[str, int]:
    """Each deployment's RUNNING replicas now, as `serve status` counts them."""
    from ray import serve

    deployments = serve.status().applications[APP_NAME].deployments
    return {name: status.replica_states.get("RUNNING", 0) for name, status in deployments.items()}


@dataclass(frozen=True)
class ServedApp:
    url: str
    config: dict
    replicas_at_start: dict[str, int]  # RUNNING replicas once the deploy had finished


@pytest.fixture(scope="session")
def served_app(ray_instance, checkpoints, tmp_path_factory) -> ServedApp:
    """The application from serve_config.yaml on a free loopback port."""
    port = free_port()
    config = app_config(port, checkpoints, tmp_path_factory.mktemp("app"))
    deploy(config)
    return ServedApp(f"http://127.0.0.1:{port}", config, running_replicas())


@contextmanager
def reconfigured(app: ServedApp, user_configs: dict[str, dict]) -> Iterator[dict]:
    """Redeploy with some deployments' user_config changed (in place), then restore."""
    config = copy.deepcopy(app.config)
    for name, changes in user_configs.items():
        deployment(config, name).setdefault("user_config", {}).update(changes)
    deploy(config)
    try:
        yield config
    finally:
        deploy(app.config)


def _series_in(text: str, sample: str, labels: dict[str, str]) -> dict[tuple, float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == sample and labels.items() <= s.labels.items()
    }


def metric_series(url: str, sample: str, **labels: str) -> dict[tuple, float]:
    """Each replica's series of `sample` (e.g. `ray_ppd_shadow_errors_total`) in the app's
    GET /metrics whose labels include `labels`, keyed by its labels."""
    return _series_in(httpx.get(f"{url}/metrics", timeout=30).text, sample, labels)


def metric_value(url: str, sample: str, **labels: str) -> float:
    """The sum of `metric_series` over the replicas."""
    return sum(metric_series(url, sample, **labels).values())


@dataclass
class MetricCount:
    """How much a counter (or a histogram's _sum/_count) grows from now on, over the
    replicas: a series that disappears (its replica was replaced) does not count as a fall."""

    url: str
    sample: str
    labels: dict[str, str]
    before: dict[tuple, float]

    def growth(self) -> float:
        after = metric_series(self.url, self.sample, **self.labels)
        return sum(value - self.before.get(key, 0.0) for key, value in after.items())

    def wait_for_growth(self, expected: float, timeout_s: float = 60) -> float:
        """The growth once it reaches `expected` (replicas export every few seconds), or
        what it is after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while (grown := self.growth()) < expected and time.monotonic() < deadline:
            time.sleep(1)
        return grown


def counts_from_now(url: str, *queries: tuple[str, dict[str, str]]) -> list[MetricCount]:
    """A `MetricCount` for each (sample, labels) query, from the replicas' settled values (all
    the same twice, one export round apart), so traffic of earlier tests still being exported
    is not counted. One settling for all of them: each takes an export round or two."""

    def read() -> list[dict[tuple, float]]:
        text = httpx.get(f"{url}/metrics", timeout=30).text
        return [_series_in(text, sample, labels) for sample, labels in queries]

    before = read()
    while True:
        time.sleep(METRICS_EXPORT_S * 1.5)
        again = read()
        if again == before:
            return [MetricCount(url, sample, labels, series)
                    for (sample, labels), series in zip(queries, before, strict=True)]  # fmt: skip
        before = again


def count_from_now(url: str, sample: str, **labels: str) -> MetricCount:
    """`counts_from_now` of one sample."""
    (count,) = counts_from_now(url, (sample, labels))
    return count


_keys = itertools.cycle(TEST_KEYS)


def next_api_key() -> str:
    """A key no other test used recently, so rate limits of one test never touch another."""
    return next(_keys)


_addresses = (f"198.51.{i // 250}.{i % 250 + 1}" for i in itertools.count())


def next_client_address() -> str:
    """A client address (TEST-NET-2) no other test used, sent as X-Forwarded-For."""
    return next(_addresses)


@pytest.fixture
def api_key() -> str:
    return next_api_key()


@pytest.fixture
def client(served_app, api_key) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served_app.url, headers={"X-API-Key": api_key}, timeout=60) as http:
        yield http


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
