"""Overload answers fast with 503 + Retry-After; logs are JSON lines with the request id and
never contain an API key."""

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest
import ray

from tests.conftest import TEST_KEYS, reconfigured
from tests.images import image_bytes

pytestmark = pytest.mark.serve


def test_requests_over_the_inflight_limit_get_a_fast_503(served_app, api_key):
    data = image_bytes(2)

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            base_url=served_app.url, headers={"X-API-Key": api_key}, timeout=60
        ) as http:
            return await asyncio.gather(
                *[http.post("/predict", files={"file": ("o.jpg", data)}) for _ in range(24)]
            )

    with reconfigured(served_app, {"Ingress": {"max_inflight_requests": 1},
                                   "Classifier": {"inject_delay_s": 0.3}}):  # fmt: skip
        started = time.perf_counter()
        responses = asyncio.run(burst())
        elapsed = time.perf_counter() - started

    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503}
    rejected = [r for r in responses if r.status_code == 503]
    assert rejected and statuses.count(200) >= 1
    for response in rejected:
        assert response.headers["retry-after"] == "2"
        assert response.json()["error"] == "overloaded"
    assert elapsed < 24 * 0.3  # rejections did not queue behind the slow model


def _serve_logs() -> list[Path]:
    logs_dir = Path(ray._private.worker.global_worker.node.get_logs_dir_path()) / "serve"
    return sorted(logs_dir.glob("replica_*Ingress*.log"))


def test_logs_are_json_lines_with_the_request_id_and_no_keys(client):
    request_id = f"log-check-{time.time_ns()}"
    response = client.post(
        "/predict", files={"file": ("l.jpg", image_bytes(0))}, headers={"X-Request-ID": request_id}
    )
    assert response.status_code == 200

    records = []
    deadline = time.monotonic() + 15
    while not records and time.monotonic() < deadline:
        for path in _serve_logs():
            for line in path.read_text().splitlines():
                if request_id in line:
                    records.append(json.loads(line))
        time.sleep(0.5)
    assert records, "no Ingress log line carries the request id"
    assert all(record["request_id"] == request_id for record in records)
    everything = "".join(path.read_text() for path in _serve_logs())
    assert not any(key in everything for key in TEST_KEYS)


def test_an_unsafe_request_id_never_reaches_the_logs(client):
    sent = f"<script>alert({time.time_ns()})</script>" + "x" * 4096
    response = client.post(
        "/predict", files={"file": ("l.jpg", image_bytes(0))}, headers={"X-Request-ID": sent}
    )
    assert response.status_code == 200
    made = response.headers["x-request-id"]
    assert made != sent and response.json()["request_id"] == made

    logged = []
    deadline = time.monotonic() + 15
    while not logged and time.monotonic() < deadline:
        logged = [line for path in _serve_logs() for line in path.read_text().splitlines()
                  if made in line]  # fmt: skip
        time.sleep(0.5)
    assert logged, "no Ingress log line carries the new request id"
    assert all(json.loads(line)["request_id"] == made for line in logged)
    assert not any(sent[:40] in path.read_text() for path in _serve_logs())
