"""Deploys a serve config on a two-node local Ray cluster and exercises every route over HTTP.

Run by tests/deploy/test_gke_config_two_nodes.py in a process of its own (a Ray cluster of
`ray.cluster_utils.Cluster` cannot share a process with the test session's `ray.init`), from a
folder outside the source tree, with PYTHONPATH naming the installed wheel:

    python gke_local_driver.py CONFIG.json IMAGES.json RESULT.json API_KEY

The two nodes stand for the cluster's groups: the head node takes the CPU workers' part (6
CPUs: the two `cpu` pods' 3 each; the GKE head itself runs nothing), the worker node is the
`t4` group (6 CPUs and one logical GPU, as a T4 pod declares), so the GPU requests of the GKE
overlay (Classifier 0.5, Shadow 0.25, Explainer 0.25) are met as written and Serve's spreading
finds the room it finds on GKE. torch sees no CUDA device here and runs on the CPU.
"""

from __future__ import annotations

import base64
import json
import sys
import time
import traceback
from pathlib import Path

import httpx
import ray
from ray.cluster_utils import Cluster
from ray.serve._private import api as serve_private_api
from ray.serve.schema import ServeDeploySchema

APP_NAME = "product-photo-detector"
DEPLOY_TIMEOUT_S = 900


def _shadow_comparisons(metrics_text: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics_text.splitlines()
        if line.startswith("ray_ppd_shadow_comparisons_total")
    )


def main(config_path: str, images_path: str, result_path: str, api_key: str) -> None:
    config = json.loads(Path(config_path).read_text())
    images = [base64.b64decode(i) for i in json.loads(Path(images_path).read_text())]
    cluster = Cluster(
        initialize_head=True,
        connect=True,
        head_node_args={"num_cpus": 6, "include_dashboard": False},
    )
    try:
        cluster.add_node(num_cpus=6, num_gpus=1)
        cluster.wait_for_nodes()
        result = _run(config, images, api_key)
    except Exception:  # the first failure, before the teardown's noise buries it
        result = {"error": traceback.format_exc()}
    finally:
        ray.shutdown()  # the driver leaves first: the cluster refuses to remove its node
        cluster.shutdown()
    Path(result_path).write_text(json.dumps(result))


def _run(config: dict, images: list[bytes], api_key: str) -> dict:
    started = time.monotonic()
    schema = ServeDeploySchema.model_validate(config)
    client = serve_private_api.serve_start(
        http_options=schema.http_options.model_dump(), proxy_location=schema.proxy_location
    )
    client.deploy_apps(schema)
    client._wait_for_application_running(APP_NAME, timeout_s=DEPLOY_TIMEOUT_S)
    client.wait_for_proxies_serving(wait_for_applications_running=True)
    deployed_s = time.monotonic() - started

    url = f"http://127.0.0.1:{config['http_options']['port']}"
    result: dict = {"deployed_s": deployed_s, "statuses": {}, "probabilities": []}
    with httpx.Client(base_url=url, timeout=120, headers={"X-API-Key": api_key}) as http:
        for route in ("/", "/docs", "/openapi.json", "/healthz", "/health", "/metrics"):
            result["statuses"][route] = http.get(route).status_code
        before = _shadow_comparisons(http.get("/metrics").text)
        for data in images:
            answer = http.post("/predict", files={"file": ("x.png", data)})
            result["statuses"]["/predict"] = answer.status_code
            result["probabilities"].append(answer.json().get("probability"))
        files = [("files", (f"{i}.png", data)) for i, data in enumerate(images[:3])]
        batch = http.post("/predict/batch", files=files)
        result["statuses"]["/predict/batch"] = batch.status_code
        result["batch_probabilities"] = [r["probability"] for r in batch.json()["results"]]
        one = {"file": ("x.png", images[0])}
        explain = http.post("/predict/explain", files=one)
        result["statuses"]["/predict/explain"] = explain.status_code
        result["explain_has_heatmap"] = bool(explain.json().get("heatmap_base64"))
        compare = http.post("/predict/compare", files=one)
        result["statuses"]["/predict/compare"] = compare.status_code
        result["compare_shadow"] = (compare.json().get("shadow") or {}).get("model_version")
        result["statuses"]["no key"] = http.post(
            "/predict", files=one, headers={"X-API-Key": ""}
        ).status_code
        deadline = time.monotonic() + 60  # Ray's exporter publishes every few seconds
        after = before
        while after <= before and time.monotonic() < deadline:
            time.sleep(3)
            after = _shadow_comparisons(http.get("/metrics").text)
        result["shadow_comparisons"] = after - before
    result["total_s"] = time.monotonic() - started
    return result


if __name__ == "__main__":
    main(*sys.argv[1:5])
