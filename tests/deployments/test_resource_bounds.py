"""Uploads built to cost CPU or memory get a fast 4xx, the replicas' memory stays bounded, and
the application keeps serving: real bombs over real HTTP."""

import contextlib
import os
import threading
import time

import httpx
import psutil
import pytest

from bench.drills import replica_pids
from tests.images import grey16_png, image_bytes, scan_bomb

pytestmark = pytest.mark.serve

# Growth of the ingress replicas and their decode workers (RSS summed over the processes)
# during a batch of ten 40 M pixel 16-bit PNGs: DECODE_WORKERS (2) decodes at once, each at
# most ~6 bytes per decoded pixel, plus the workers' own start-up. Before: ~5 GB.
BATCH_GROWTH_BOUND = 2 * 6 * 40_000_000 + 300 * 2**20  # bytes


def test_a_scan_bomb_gets_a_fast_413_and_the_service_keeps_serving(served_app, client):
    started = time.perf_counter()
    response = client.post("/predict", files={"file": ("bomb.jpg", scan_bomb())})
    elapsed = time.perf_counter() - started
    assert response.status_code == 413, response.text
    body = response.json()
    assert body["error"] == "too_large"
    assert body["detail"] == "the progressive JPEG has more than 100 scans; the limit is 100"
    assert elapsed < 3  # decoding it takes ~16 s of CPU
    assert httpx.get(f"{served_app.url}/health", timeout=10).status_code == 200
    assert client.post("/predict", files={"file": ("ok.jpg", image_bytes(5))}).status_code == 200


def test_a_scan_bomb_explained_gets_the_same_413(client):
    response = client.post("/predict/explain", files={"file": ("bomb.jpg", scan_bomb())})
    assert response.status_code == 413, response.text
    assert response.json()["error"] == "too_large"


def _ingress_processes() -> list[psutil.Process]:
    """This session's ingress replicas (other sessions may share the machine)."""
    found = [psutil.Process(pid) for pid in replica_pids("Ingress", os.getpid())]
    assert found, "no ingress replica of this session"
    return found


def _rss(roots: list[psutil.Process]) -> int:
    total = 0
    for root in roots:
        for process in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += process.memory_info().rss
    return total


def test_a_batch_of_16_bit_png_bombs_keeps_the_replicas_memory_bounded(client):
    bomb = grey16_png()  # ~90 KB, 10000 x 4000 px
    roots = _ingress_processes()
    baseline, peak, done = _rss(roots), 0, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss(roots))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        files = [("files", (f"g{i}.png", bomb, "image/png")) for i in range(10)]
        response = client.post("/predict/batch", files=files, timeout=120)
    finally:
        done.set()
        sampler.join()
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["total"], body["successful"]) == (10, 10), body
    growth = peak - baseline
    print(f"ingress replicas + decoders: +{growth / 2**20:.0f} MiB over {baseline / 2**20:.0f}")
    assert growth < BATCH_GROWTH_BOUND, f"{growth / 2**20:.0f} MiB"
    assert all(root.is_running() for root in roots)  # no replica died
