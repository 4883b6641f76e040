"""`make observe`'s stack (`python -m observe up`) on free loopback ports for these tests,
scraping the test application's `/metrics`: the test Ray instance runs without a dashboard,
so Ray writes no service-discovery file for it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port

SCRAPE_INTERVAL = "2s"
PROMETHEUS_HOW = "Debian package prometheus; .ci/run installs it"
START_TIMEOUT_S = 120


@dataclass(frozen=True)
class Stack:
    mlflow: str
    prometheus: str
    folder: Path
    output: Path  # what `observe up` printed


def _group_alive(pgid: int) -> bool:
    """A live (not zombie) process is in process group `pgid`: a service and its children."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


@pytest.fixture(scope="package")  # stopped before tests/train starts
def stack(served_app, tmp_path_factory) -> Iterator[Stack]:
    if shutil.which("prometheus") is None:
        pytest.skip(f"prometheus is not installed ({PROMETHEUS_HOW})")
    folder = tmp_path_factory.mktemp("observe")
    mlflow_port, prometheus_port = free_port(), free_port()
    output = folder / "up.log"
    with open(output, "wb") as log:
        up = subprocess.Popen(
            [sys.executable, "-m", "observe", "up", "--dir", str(folder),
             "--mlflow-port", str(mlflow_port), "--prometheus-port", str(prometheus_port),
             "--grafana-port", str(free_port()), "--app-url", served_app.url,
             "--scrape-interval", SCRAPE_INTERVAL],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + START_TIMEOUT_S
    while "Monitoring stack is up" not in output.read_text():
        if up.poll() is not None or time.monotonic() > deadline:
            up.kill()
            pytest.fail(f"`observe up` did not start:\n{output.read_text()}")
        time.sleep(0.5)
    started = json.loads((folder / "observe.json").read_text())
    yield Stack(f"http://127.0.0.1:{mlflow_port}", f"http://127.0.0.1:{prometheus_port}",
                folder, output)  # fmt: skip

    # `make observe-stop`: the supervisor exits and takes every process it started with it
    subprocess.run([sys.executable, "-m", "observe", "stop", "--dir", str(folder)],
                   cwd=ROOT, check=True, timeout=60)  # fmt: skip
    assert up.wait(timeout=30) == 0
    left = {name: pid for name, pid in started["services"].items() if _group_alive(pid)}
    assert not left, f"still running after `observe stop`: {left}"
    assert not (folder / "observe.json").exists()
