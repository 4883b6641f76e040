"""A short run of `make bench`'s code paths: the limit, the one-process baseline, the load
generator against the served application, and the report."""

import os
import shutil

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from bench.inputs import make_inputs, multipart_body
from bench.limit import measure_limit
from bench.load import run_load
from bench.server_process import free_port, stop, wait_healthy
from bench.serving import (
    ROOT,
    at_image_size,
    benchmark,
    gpu_serve_changes,
    print_table,
    ratios,
    start_baseline,
    with_changes,
)
from common.checkpoint import load_checkpoint

pytestmark = [
    pytest.mark.serve,
    pytest.mark.skipif(
        shutil.which("hey") is None, reason="hey is not installed (apt install hey)"
    ),
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("bench-inputs"), per_size=1)


def test_inputs_are_realistic_jpegs(inputs):
    from PIL import Image

    sizes = [Image.open(path).size for path in inputs]
    assert sizes[0] == (640, 480) and sizes[-1] == (2000, 1500)
    body, content_type = multipart_body(inputs[0].read_bytes())
    assert content_type.startswith("multipart/form-data; boundary=")
    assert body.endswith(b"--\r\n")


def test_limit_baseline_and_served_figures(served_app, checkpoints, inputs, api_key, capsys):
    limit = measure_limit(
        str(checkpoints["primary"]), inputs, batch_sizes=(1, 4), images_per_size=8
    )
    assert limit["images_per_s"] > 0 and limit["best_batch_size"] in (1, 4)

    port = free_port()
    baseline_server = start_baseline(checkpoints["primary"], port)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", baseline_server)
        baseline = benchmark(
            f"http://127.0.0.1:{port}", inputs, [1, 4], requests=8, cpu_root=baseline_server.pid
        )
    finally:
        stop(baseline_server)
    served = benchmark(  # the session's Ray instance runs below this process
        served_app.url, inputs, [1, 4], requests=8, headers={"X-API-Key": api_key},
        cpu_root=os.getpid(),
    )  # fmt: skip

    for row in baseline + served:
        assert row["errors"] == 0, row
        assert row["images_per_s"] > 0 and row["p50_ms"] <= row["p99_ms"]
    # CPU per request by role: the one-process baseline spends some; in the served graph the
    # replicas are found by their deployments' names
    assert sum(row["cpu_ms_per_request"]["total"] for row in baseline) > 0
    for role in ("Ingress", "Classifier"):
        assert sum(row["cpu_ms_per_request"].get(role, 0) for row in served) > 0, served
    report = {
        "machine": {},
        "limit": limit,
        "baseline": baseline,
        "served": served,
        "ratios": ratios(limit, baseline, served),
    }
    assert set(report["ratios"]) == {1, 4}
    print_table(report)
    printed = capsys.readouterr().out
    assert "served/limit" in printed and "CPU ms/request: " in printed


def test_load_generator_counts_every_status(served_app, inputs):
    result = run_load(f"{served_app.url}/predict", inputs, concurrency=2, requests=4)  # no key
    assert result.requests == 4
    assert result.statuses == {401: 4}
    assert result.errors == 4 and result.latencies_ms == []


def test_the_same_weights_can_be_measured_at_another_input_side(checkpoints, tmp_path):
    original, meta = load_checkpoint(checkpoints["primary"])
    resized = at_image_size(checkpoints["primary"], meta.image_size * 2, tmp_path)
    model, resized_meta = load_checkpoint(resized)
    assert resized_meta.image_size == meta.image_size * 2
    assert resized_meta.version == meta.version
    weights = original.state_dict()
    assert all(tensor.equal(weights[name]) for name, tensor in model.state_dict().items())
    assert at_image_size(resized, resized_meta.image_size, tmp_path) == resized


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_the_gpu_graph_changes_give_a_config_serve_accepts(device):
    """serve_config.yaml autoscales the Preprocessor from zero; the GPU graph gives it a fixed
    count, which replaces the autoscaling (Serve refuses a deployment with both)."""
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    changed = with_changes(config, gpu_serve_changes(cores=16, device=device))
    ServeDeploySchema.model_validate(changed)
    (pre,) = (d for d in changed["applications"][0]["deployments"] if d["name"] == "Preprocessor")
    assert "autoscaling_config" not in pre and pre["num_replicas"] >= 1
